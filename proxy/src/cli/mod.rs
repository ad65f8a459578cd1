//! Envoy's command line (1.40), as pilot-agent passes it, parsed into plain [`Options`].
//!
//! Flags keep Envoy's spelling, defaults and checks: a bad value or an unknown flag exits
//! non-zero with a message naming the flag, a flag given twice is an error (as in Envoy).
//! Flags we do not implement yet are accepted only if they cannot change traffic behaviour;
//! those are listed in [`Options::no_effect`] and logged once.
//!
//! | flag | decision |
//! |---|---|
//! | `-c/--config-path`, `--config-yaml` | implemented ([`crate::bootstrap`]) |
//! | `--mode serve\|validate\|init_only` | `validate` implemented; `serve` and `init_only` load the bootstrap, then stop: the server is not written yet |
//! | `--allow-unknown-static-fields` (`--allow-unknown-fields`, deprecated) | implemented |
//! | `--reject-unknown-dynamic-fields`, `--ignore-unknown-dynamic-fields` | parsed into [`Options::dynamic_unknown_fields`] for the xDS layer |
//! | `--service-cluster`, `--service-node`, `--service-zone` | implemented (node overrides) |
//! | `-l/--log-level`, `--component-log-level` | implemented (components checked against Envoy's list, mapped to our modules) |
//! | `--log-format`, `--log-format-escaped`, `--log-path` | implemented (spdlog pattern subset, see `log_format`) |
//! | `--admin-address-path`, `--local-address-ip-version`, `--concurrency`, `--drain-time-s`, `--drain-strategy` | parsed into [`Options`] for the server |
//! | `--file-flush-interval-msec`, `--file-flush-min-size-kb` | parsed; no effect until access logs exist; logged |
//! | `--stats-tag` | checked as Envoy does; no effect until stats exist; logged |
//! | `--disable-hot-restart` | accepted: hot restart is always off here |
//! | `--base-id`, `--use-dynamic-base-id`, `--base-id-path`, `--socket-path`, `--socket-mode`, `--parent-shutdown-time-s`, `--skip-hot-restart-parent-stats`, `--skip-hot-restart-on-no-parent` | hot restart only: accepted, no effect, logged (`--socket-mode` checked as Envoy does) |
//! | `--restart-epoch` | 0, or any with `--disable-hot-restart`: accepted, no effect; above 0 otherwise: error (a hot restart would expect a parent to hand over) |
//! | `--hot-restart-version` | prints `disabled`, exits 0 |
//! | `--enable-core-dump`, `--enable-mutex-tracing`, `--enable-fine-grain-logging`, `--log-stacktrace-single-entry`, `--cpuset-threads` | accepted, no effect, logged (the default concurrency already follows the cpuset) |
//! | `--skip-deprecated-logs` | accepted: we log no deprecated-field warnings anyway |
//! | `--disable-extensions` | error: it changes which configs are accepted, and we cannot disable extensions |
//! | `--version` | prints Envoy's version line format, exits 0 |
//! | `-h/--help` | prints usage, exits 0 |
//! | `--`, `--ignore_rest` | everything after is ignored, as in Envoy |
//! | anything else | error |

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::bootstrap::{self, NodeOverrides};
use crate::proto::UnknownFields;

pub mod log_format;
pub mod logging;

mod flags;

use flags::Flags;

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run in the given mode.
    Run(Box<Options>),
    /// `--version`.
    Version,
    /// `--hot-restart-version`.
    HotRestartVersion,
    /// `-h/--help`: the usage text.
    Help(String),
}

/// Everything the command line configures.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub mode: Mode,
    /// The bootstrap flags: `-c`, `--config-yaml`, `--allow-unknown-static-fields`,
    /// `--service-*`.
    pub bootstrap: bootstrap::Config,
    pub admin_address_path: Option<PathBuf>,
    pub local_address_ip_version: IpVersion,
    /// Worker threads: `--concurrency`, at least 1; by default the CPUs this process may use.
    pub concurrency: u32,
    pub log: LogOptions,
    pub dynamic_unknown_fields: DynamicUnknownFields,
    pub drain_time: Duration,
    pub drain_strategy: DrainStrategy,
    pub parent_shutdown_time: Duration,
    pub file_flush_interval: Duration,
    pub file_flush_min_size_kb: Option<u32>,
    /// `--stats-tag name:value`, in order.
    pub stats_tags: Vec<(String, String)>,
    /// Flags given that this proxy accepts but that change nothing (yet).
    pub no_effect: Vec<&'static str>,
}

/// `-l`, `--component-log-level`, `--log-format`, `--log-format-escaped`, `--log-path`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub level: LogLevel,
    /// Envoy component name and level, in order.
    pub components: Vec<(String, LogLevel)>,
    /// An spdlog pattern.
    pub format: Option<String>,
    pub format_escaped: bool,
    pub path: Option<PathBuf>,
}

/// `--mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Validate the configuration, then serve traffic.
    #[default]
    Serve,
    /// Validate the configuration and exit.
    Validate,
    /// Initialize the server, then exit without serving.
    #[value(name = "init_only")]
    InitOnly,
}

// === impl Mode ===

impl Mode {
    /// The name as given to `--mode`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Serve => "serve",
            Mode::Validate => "validate",
            Mode::InitOnly => "init_only",
        }
    }
}

/// `--local-address-ip-version`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum IpVersion {
    #[default]
    V4,
    V6,
}

/// `--drain-strategy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum DrainStrategy {
    /// Refuse more and more new connections over the drain time.
    #[default]
    Gradual,
    /// Refuse new connections at once when draining starts.
    Immediate,
}

/// Envoy's log levels (`-l`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Trace,
    Debug,
    #[default]
    Info,
    #[value(alias = "warn")]
    Warning,
    Error,
    Critical,
    Off,
}

/// What the xDS layer does with unknown fields in dynamic resources.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DynamicUnknownFields {
    /// Envoy's default: accept, warn.
    #[default]
    Warn,
    /// `--reject-unknown-dynamic-fields`: NACK.
    Reject,
    /// `--ignore-unknown-dynamic-fields`: accept silently.
    Ignore,
}

/// A command line that cannot be run. Messages start with `error:` and name the flag.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad flag syntax or value, an unknown flag: clap's message.
    #[error("{0}")]
    Usage(String),
    #[error(
        "error: --component-log-level: component log level not correctly specified '{0}' \
         (expected <component>:<level>)"
    )]
    ComponentLevelSyntax(String),
    #[error(
        "error: --component-log-level: invalid log level specified '{0}' (one of: trace, \
         debug, info, warning, warn, error, critical, off)"
    )]
    ComponentLevel(String),
    #[error("error: --component-log-level: invalid component specified '{0}'")]
    Component(String),
    #[error(
        "error: --stats-tag: misformatted stats-tag '{0}' (expected <tag>:<value>, the tag \
         alphanumeric, the value without '.')"
    )]
    StatsTag(String),
    #[error("error: --socket-mode: invalid socket-mode '{0}' (expected an octal file mode)")]
    SocketMode(String),
    #[error("error: --restart-epoch: cannot use --restart-epoch={0} with --use-dynamic-base-id")]
    EpochWithDynamicBaseId(u32),
    #[error(
        "error: --restart-epoch {0}: hot restart is not supported; omit the flag or add \
         --disable-hot-restart"
    )]
    HotRestart(u32),
    #[error("error: --disable-extensions: disabling extensions is not supported")]
    DisableExtensions,
}

/// Envoy's logger (component) names, as Envoy 1.40 lists them under /logging.
pub const ENVOY_COMPONENTS: &[&str] = &[
    "a2a",
    "admin",
    "ai_protocol_manager",
    "alternate_protocols_cache",
    "aws",
    "assert",
    "backtrace",
    "basic_auth",
    "cache_filter",
    "client",
    "config",
    "connection",
    "conn_handler",
    "compression",
    "credential_injector",
    "decompression",
    "dns",
    "dubbo",
    "envoy_bug",
    "ext_authz",
    "ext_proc",
    "rocketmq",
    "file",
    "filter",
    "forward_proxy",
    "geolocation",
    "grpc",
    "happy_eyeballs",
    "hc",
    "health_checker",
    "http",
    "http2",
    "hystrix",
    "init",
    "io",
    "jwt",
    "json_rpc",
    "kafka",
    "key_value_store",
    "lua",
    "local_rate_limit",
    "main",
    "matcher",
    "mcp",
    "misc",
    "mongo",
    "multi_connection",
    "notification",
    "oauth2",
    "quic",
    "quic_stream",
    "pool",
    "rate_limit_quota",
    "rbac",
    "rds",
    "redis",
    "router",
    "runtime",
    "stats",
    "secret",
    "sse",
    "tap",
    "testing",
    "thrift",
    "tracing",
    "upstream",
    "udp",
    "wasm",
    "websocket",
    "golang",
    "stats_sinks",
    "dynamic_modules",
    "ip_tagging",
];

/// Parses a command line (the first item is the program name).
pub fn parse<I, T>(args: I) -> Result<Command, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    // Envoy (TCLAP) takes `--ignore_rest` as another spelling of `--`.
    let args = args.into_iter().map(|a| {
        let a: OsString = a.into();
        if a == "--ignore_rest" { "--".into() } else { a }
    });
    let flags = match Flags::try_parse_from(args) {
        Ok(flags) => flags,
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
            return Ok(Command::Help(e.render().to_string()));
        }
        Err(e) => {
            return Err(CliError::Usage(
                e.render().to_string().trim_end().to_string(),
            ));
        }
    };
    if flags.version {
        return Ok(Command::Version);
    }
    if flags.hot_restart_version {
        return Ok(Command::HotRestartVersion);
    }
    Options::from_flags(flags).map(|o| Command::Run(Box::new(o)))
}

/// Envoy's `--version` line: `<program>  version: <sha>/<version>/<status>/<build>/<ssl>`.
/// The SHA and status come from `PROXY_BUILD_SCM_REVISION` / `PROXY_BUILD_SCM_STATUS` at
/// build time when set.
pub fn version_line(program: &str) -> String {
    let revision = option_env!("PROXY_BUILD_SCM_REVISION")
        .unwrap_or("0000000000000000000000000000000000000000");
    let status = option_env!("PROXY_BUILD_SCM_STATUS").unwrap_or("Distribution");
    let build = if cfg!(debug_assertions) {
        "DEBUG"
    } else {
        "RELEASE"
    };
    format!(
        "{program}  version: {revision}/{}/{status}/{build}/rustls",
        env!("CARGO_PKG_VERSION")
    )
}

// === impl Options ===

impl Options {
    fn from_flags(f: Flags) -> Result<Self, CliError> {
        let no_effect = f.no_effect();
        if let Some(epoch) = f.restart_epoch.filter(|e| *e > 0) {
            if f.use_dynamic_base_id {
                return Err(CliError::EpochWithDynamicBaseId(epoch));
            }
            if !f.disable_hot_restart {
                return Err(CliError::HotRestart(epoch));
            }
        }
        if f.disable_extensions
            .as_deref()
            .is_some_and(|s| !s.is_empty())
        {
            return Err(CliError::DisableExtensions);
        }
        let socket_path = f.socket_path.as_deref().unwrap_or("@envoy_domain_socket");
        if let Some(mode) = &f.socket_mode
            && !socket_path.starts_with('@')
            && u32::from_str_radix(mode, 8).is_err()
        {
            return Err(CliError::SocketMode(mode.clone()));
        }
        let stats_tags = f
            .stats_tag
            .iter()
            .map(|t| parse_stats_tag(t))
            .collect::<Result<_, _>>()?;
        let components = match &f.component_log_level {
            Some(list) => parse_component_levels(list)?,
            None => Vec::new(),
        };
        let dynamic_unknown_fields = if f.reject_unknown_dynamic_fields {
            DynamicUnknownFields::Reject
        } else if f.ignore_unknown_dynamic_fields {
            DynamicUnknownFields::Ignore
        } else {
            DynamicUnknownFields::Warn
        };
        let allow_unknown = f.allow_unknown_static_fields || f.allow_unknown_fields;
        Ok(Options {
            mode: f.mode.unwrap_or_default(),
            bootstrap: bootstrap::Config {
                // Empty means not given, as in Envoy.
                config_path: f.config_path.filter(|p| !p.as_os_str().is_empty()),
                config_yaml: f.config_yaml.filter(|y| !y.is_empty()),
                unknown_fields: if allow_unknown {
                    UnknownFields::Ignore
                } else {
                    UnknownFields::Reject
                },
                node: NodeOverrides {
                    cluster: f.service_cluster.filter(|s| !s.is_empty()),
                    id: f.service_node.filter(|s| !s.is_empty()),
                    zone: f.service_zone.filter(|s| !s.is_empty()),
                },
                log_format_on_command_line: f.log_format.is_some(),
            },
            admin_address_path: f.admin_address_path,
            local_address_ip_version: f.local_address_ip_version.unwrap_or_default(),
            concurrency: f.concurrency.unwrap_or_else(default_concurrency).max(1),
            log: LogOptions {
                level: f.log_level.unwrap_or_default(),
                components,
                format: f.log_format,
                format_escaped: f.log_format_escaped,
                path: f.log_path,
            },
            dynamic_unknown_fields,
            drain_time: Duration::from_secs(f.drain_time_s.unwrap_or(600).into()),
            drain_strategy: f.drain_strategy.unwrap_or_default(),
            parent_shutdown_time: Duration::from_secs(
                f.parent_shutdown_time_s.unwrap_or(900).into(),
            ),
            file_flush_interval: Duration::from_millis(
                f.file_flush_interval_msec.unwrap_or(10_000).into(),
            ),
            file_flush_min_size_kb: f.file_flush_min_size_kb,
            stats_tags,
            no_effect,
        })
    }
}

fn default_concurrency() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
}

fn parse_component_levels(list: &str) -> Result<Vec<(String, LogLevel)>, CliError> {
    list.split(',')
        .map(|item| {
            let parts: Vec<&str> = item.split(':').collect();
            let [component, level] = parts[..] else {
                return Err(CliError::ComponentLevelSyntax(item.to_string()));
            };
            let level = LogLevel::from_str(level, false)
                .map_err(|_| CliError::ComponentLevel(level.to_string()))?;
            if !ENVOY_COMPONENTS.contains(&component) {
                return Err(CliError::Component(component.to_string()));
            }
            Ok((component.to_string(), level))
        })
        .collect()
}

fn parse_stats_tag(tag: &str) -> Result<(String, String), CliError> {
    let bad = || CliError::StatsTag(tag.to_string());
    let (name, value) = tag.split_once(':').ok_or_else(bad)?;
    let name_ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !name_ok || value.contains('.') {
        return Err(bad());
    }
    Ok((name.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests;
