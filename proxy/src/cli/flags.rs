//! The flags exactly as Envoy 1.40 spells them (`envoy --help`), before checks and defaults.

use std::path::PathBuf;

use clap::Parser;

use super::{DrainStrategy, IpVersion, LogLevel, Mode};

/// Envoy's command line. Values are `None` when not given, so defaults live in one place
/// (`Options::from_flags`).
#[derive(Debug, Parser)]
#[command(
    name = "proxy",
    about = "Envoy-compatible sidecar proxy: takes Envoy's command line, bootstrap and xDS",
    disable_version_flag = true,
    max_term_width = 100
)]
pub(super) struct Flags {
    /// Path to configuration file
    #[arg(short = 'c', long = "config-path", value_name = "string", value_parser = path)]
    pub config_path: Option<PathBuf>,
    /// Inline YAML configuration, merges with the contents of --config-path
    #[arg(long = "config-yaml", value_name = "string")]
    pub config_yaml: Option<String>,
    /// serve (default): validate configs and then serve traffic; validate: validate configs
    /// and exit; init_only: initialize, then exit
    #[arg(long, value_enum, value_name = "string")]
    pub mode: Option<Mode>,
    /// Allow unknown fields in static configuration
    #[arg(long = "allow-unknown-static-fields")]
    pub allow_unknown_static_fields: bool,
    /// Allow unknown fields in static configuration (DEPRECATED)
    #[arg(long = "allow-unknown-fields")]
    pub allow_unknown_fields: bool,
    /// Reject unknown fields in dynamic configuration
    #[arg(long = "reject-unknown-dynamic-fields")]
    pub reject_unknown_dynamic_fields: bool,
    /// Ignore unknown fields in dynamic configuration
    #[arg(long = "ignore-unknown-dynamic-fields")]
    pub ignore_unknown_dynamic_fields: bool,
    /// Skips the logging of deprecated field warnings
    #[arg(long = "skip-deprecated-logs")]
    pub skip_deprecated_logs: bool,
    /// Admin address path
    #[arg(long = "admin-address-path", value_name = "string", value_parser = path)]
    pub admin_address_path: Option<PathBuf>,
    /// The local IP address version (v4 or v6)
    #[arg(long = "local-address-ip-version", value_enum, value_name = "string")]
    pub local_address_ip_version: Option<IpVersion>,
    /// # of worker threads to run
    #[arg(long, value_name = "uint32_t")]
    pub concurrency: Option<u32>,
    /// Get the default # of worker threads from cpuset size
    #[arg(long = "cpuset-threads")]
    pub cpuset_threads: bool,
    /// Base ID so that multiple envoys can run on the same host if needed
    #[arg(long = "base-id", value_name = "uint32_t")]
    pub base_id: Option<u32>,
    /// The server chooses a base ID dynamically
    #[arg(long = "use-dynamic-base-id")]
    pub use_dynamic_base_id: bool,
    /// Path to which the base ID is written
    #[arg(long = "base-id-path", value_name = "string", value_parser = path)]
    pub base_id_path: Option<PathBuf>,
    /// Log level: trace, debug, info, warning|warn, error, critical, off [default: info]
    #[arg(short = 'l', long = "log-level", value_enum, value_name = "string")]
    pub log_level: Option<LogLevel>,
    /// Comma-separated list of component log levels, e.g. upstream:debug,config:trace
    #[arg(long = "component-log-level", value_name = "string")]
    pub component_log_level: Option<String>,
    /// Log message format in spdlog syntax [default: "[%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v"]
    #[arg(long = "log-format", value_name = "string")]
    pub log_format: Option<String>,
    /// Escape c-style escape sequences in the application logs
    #[arg(long = "log-format-escaped")]
    pub log_format_escaped: bool,
    /// Logger mode: enable file level log control (Fine-Grain Logger) or not
    #[arg(long = "enable-fine-grain-logging")]
    pub enable_fine_grain_logging: bool,
    /// Path to logfile
    #[arg(long = "log-path", value_name = "string", value_parser = path)]
    pub log_path: Option<PathBuf>,
    /// Emit the entire stack trace in a single log entry
    #[arg(long = "log-stacktrace-single-entry")]
    pub log_stacktrace_single_entry: bool,
    /// Hot restart epoch #
    #[arg(long = "restart-epoch", value_name = "uint32_t")]
    pub restart_epoch: Option<u32>,
    /// Hot restart compatibility version
    #[arg(long = "hot-restart-version")]
    pub hot_restart_version: bool,
    /// Cluster name
    #[arg(long = "service-cluster", value_name = "string")]
    pub service_cluster: Option<String>,
    /// Node name
    #[arg(long = "service-node", value_name = "string")]
    pub service_node: Option<String>,
    /// Zone name
    #[arg(long = "service-zone", value_name = "string")]
    pub service_zone: Option<String>,
    /// Interval for log flushing in msec [default: 10000]
    #[arg(long = "file-flush-interval-msec", value_name = "uint32_t")]
    pub file_flush_interval_msec: Option<u32>,
    /// Minimum size in KB for log flushing
    #[arg(long = "file-flush-min-size-kb", value_name = "uint32_t")]
    pub file_flush_min_size_kb: Option<u32>,
    /// Hot restart and LDS removal drain time in seconds [default: 600]
    #[arg(long = "drain-time-s", value_name = "uint32_t")]
    pub drain_time_s: Option<u32>,
    /// Drain sequence behaviour, one of 'gradual' (default) or 'immediate'
    #[arg(long = "drain-strategy", value_enum, value_name = "string")]
    pub drain_strategy: Option<DrainStrategy>,
    /// Hot restart parent shutdown time in seconds [default: 900]
    #[arg(long = "parent-shutdown-time-s", value_name = "uint32_t")]
    pub parent_shutdown_time_s: Option<u32>,
    /// Disable hot restart functionality
    #[arg(long = "disable-hot-restart")]
    pub disable_hot_restart: bool,
    /// When hot restarting, reset all stats in the child process
    #[arg(long = "skip-hot-restart-parent-stats")]
    pub skip_hot_restart_parent_stats: bool,
    /// When hot restarting with epoch>0, start normally if there is no parent
    #[arg(long = "skip-hot-restart-on-no-parent")]
    pub skip_hot_restart_on_no_parent: bool,
    /// Path to hot restart socket file
    #[arg(long = "socket-path", value_name = "string")]
    pub socket_path: Option<String>,
    /// Socket file permission
    #[arg(long = "socket-mode", value_name = "string")]
    pub socket_mode: Option<String>,
    /// Enable core dumps
    #[arg(long = "enable-core-dump")]
    pub enable_core_dump: bool,
    /// Enable mutex contention tracing functionality
    #[arg(long = "enable-mutex-tracing")]
    pub enable_mutex_tracing: bool,
    /// Comma-separated list of extensions to disable
    #[arg(long = "disable-extensions", value_name = "string")]
    pub disable_extensions: Option<String>,
    /// A universal tag for all stats, as tag:value (repeatable)
    #[arg(long = "stats-tag", value_name = "string")]
    pub stats_tag: Vec<String>,
    /// Displays version information and exits
    #[arg(long)]
    pub version: bool,
    /// Everything after `--` (or `--ignore_rest`) is ignored
    #[arg(last = true, hide = true)]
    pub ignored: Vec<String>,
}

/// A path, possibly empty: Envoy takes `-c ''` as "not given" rather than an error.
fn path(value: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(value))
}

// === impl Flags ===

impl Flags {
    /// The flags given that are accepted but change nothing in this proxy (yet).
    pub(super) fn no_effect(&self) -> Vec<&'static str> {
        let given: [(bool, &'static str); 17] = [
            (self.base_id.is_some(), "--base-id"),
            (self.use_dynamic_base_id, "--use-dynamic-base-id"),
            (self.base_id_path.is_some(), "--base-id-path"),
            (self.restart_epoch.is_some(), "--restart-epoch"),
            (self.socket_path.is_some(), "--socket-path"),
            (self.socket_mode.is_some(), "--socket-mode"),
            (
                self.parent_shutdown_time_s.is_some(),
                "--parent-shutdown-time-s",
            ),
            (
                self.skip_hot_restart_parent_stats,
                "--skip-hot-restart-parent-stats",
            ),
            (
                self.skip_hot_restart_on_no_parent,
                "--skip-hot-restart-on-no-parent",
            ),
            (self.enable_core_dump, "--enable-core-dump"),
            (self.enable_mutex_tracing, "--enable-mutex-tracing"),
            (
                self.enable_fine_grain_logging,
                "--enable-fine-grain-logging",
            ),
            (
                self.log_stacktrace_single_entry,
                "--log-stacktrace-single-entry",
            ),
            (self.cpuset_threads, "--cpuset-threads"),
            (
                self.file_flush_interval_msec.is_some(),
                "--file-flush-interval-msec",
            ),
            (
                self.file_flush_min_size_kb.is_some(),
                "--file-flush-min-size-kb",
            ),
            (!self.stats_tag.is_empty(), "--stats-tag"),
        ];
        given
            .into_iter()
            .filter_map(|(set, flag)| set.then_some(flag))
            .collect()
    }
}
