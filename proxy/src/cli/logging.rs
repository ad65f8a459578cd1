//! Logging as Envoy's flags ask: `-l` level, `--component-log-level`, `--log-format`
//! (and the bootstrap's `application_log_config`), `--log-format-escaped`, `--log-path`.
//!
//! Envoy's components (loggers) map to our tracing targets by [`COMPONENT_TARGETS`]; a valid
//! Envoy component with no module of ours yet is accepted and changes nothing. `RUST_LOG`,
//! when set, replaces the levels from the flags (a debugging aid).

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::envoy::config::bootstrap::v3::bootstrap::application_log_config::log_format::LogFormat as BootstrapLogFormat;
use envoy_types::pb::google::protobuf::value::Kind;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::log_format::{LogFormat, Pattern, Record};
use super::{LogLevel, LogOptions};

/// Envoy components and the tracing targets of ours that do their job.
pub const COMPONENT_TARGETS: &[(&str, &[&str])] = &[
    ("admin", &["proxy::admin"]),
    (
        "config",
        &[
            "proxy::config",
            "proxy::bootstrap",
            "proxy::proto",
            "xds_client",
        ],
    ),
    ("connection", &["proxy::listener"]),
    ("conn_handler", &["proxy::listener"]),
    ("filter", &["proxy::tcp"]),
    ("http", &["proxy::http"]),
    ("main", &["proxy::server", "proxy::cli"]),
    ("rbac", &["proxy::rbac"]),
    ("secret", &["proxy::tls"]),
    ("stats", &["proxy::metrics"]),
    ("upstream", &["proxy::upstream"]),
];

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("--log-path: cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot install the logger: {0}")]
    Install(String),
}

/// Changes the line format after start-up (for the bootstrap's `application_log_config`)
/// and the levels (`POST /logging`).
#[derive(Clone)]
pub struct LogHandle {
    format: Arc<RwLock<LogFormat>>,
    reload: Arc<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>,
    /// The level every component currently logs at (Envoy has per-logger levels; ours are
    /// set together).
    level: Arc<RwLock<LogLevel>>,
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle").finish_non_exhaustive()
    }
}

/// Formats events as Envoy's log lines.
struct EnvoyFormatter {
    format: Arc<RwLock<LogFormat>>,
    escape: bool,
}

// === impl LogHandle ===

impl LogHandle {
    /// Uses `format` for all lines from now on.
    pub fn set_format(&self, format: LogFormat) {
        *self.format.write().unwrap_or_else(PoisonError::into_inner) = format;
    }

    /// Sets every component's level (`POST /logging?level=debug`).
    pub fn set_level(&self, level: LogLevel) -> Result<(), String> {
        let options = LogOptions {
            level,
            ..LogOptions::default()
        };
        (self.reload)(EnvFilter::new(directives(&options)))?;
        *self.level.write().unwrap_or_else(PoisonError::into_inner) = level;
        Ok(())
    }

    /// The current level.
    pub fn level(&self) -> LogLevel {
        *self.level.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Installs the global subscriber: stderr, or the `--log-path` file.
pub fn init(options: &LogOptions) -> Result<LogHandle, LogError> {
    let format = Arc::new(RwLock::new(match &options.format {
        Some(pattern) => LogFormat::Text(Pattern::parse(pattern)),
        None => LogFormat::default(),
    }));
    let writer = match &options.path {
        Some(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| LogError::Open {
                    path: path.clone(),
                    source,
                })?;
            BoxMakeWriter::new(Mutex::new(file))
        }
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(options))
        .with_writer(writer)
        .event_format(EnvoyFormatter {
            format: format.clone(),
            escape: options.format_escaped,
        })
        .with_filter_reloading();
    let reload_handle = builder.reload_handle();
    builder
        .try_init()
        .map_err(|e| LogError::Install(e.to_string()))?;
    let reload = move |filter: EnvFilter| reload_handle.reload(filter).map_err(|e| e.to_string());
    Ok(LogHandle {
        format,
        reload: Arc::new(reload),
        level: Arc::new(RwLock::new(options.level)),
    })
}

/// The line format a bootstrap asks for in `application_log_config.log_format`, if any.
pub fn bootstrap_log_format(bootstrap: &Bootstrap) -> Option<LogFormat> {
    let format = bootstrap
        .application_log_config
        .as_ref()?
        .log_format
        .as_ref()?
        .log_format
        .as_ref()?;
    Some(match format {
        BootstrapLogFormat::TextFormat(pattern) => LogFormat::Text(Pattern::parse(pattern)),
        BootstrapLogFormat::JsonFormat(fields) => {
            let mut fields: Vec<(String, Pattern)> = fields
                .fields
                .iter()
                .map(|(key, value)| {
                    let pattern = match &value.kind {
                        Some(Kind::StringValue(s)) => s.as_str(),
                        _ => "",
                    };
                    (key.clone(), Pattern::parse(pattern))
                })
                .collect();
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            LogFormat::Json(fields)
        }
    })
}

/// The filter for `-l` and `--component-log-level`, unless `RUST_LOG` is set.
fn filter(options: &LogOptions) -> EnvFilter {
    if let Ok(env) = std::env::var(EnvFilter::DEFAULT_ENV)
        && !env.is_empty()
    {
        return EnvFilter::new(env);
    }
    EnvFilter::new(directives(options))
}

/// `warn,proxy::upstream=debug,...`
pub(crate) fn directives(options: &LogOptions) -> String {
    let mut directives = vec![tracing_level(options.level).to_string()];
    for (component, level) in &options.components {
        let targets = COMPONENT_TARGETS
            .iter()
            .find(|(name, _)| name == component)
            .map_or(&[][..], |(_, targets)| *targets);
        for target in targets {
            directives.push(format!("{target}={}", tracing_level(*level)));
        }
    }
    directives.join(",")
}

fn tracing_level(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Trace => "trace",
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warning => "warn",
        LogLevel::Error | LogLevel::Critical => "error",
        LogLevel::Off => "off",
    }
}

/// The Envoy component name for a tracing target: the longest mapped prefix, else `main`.
fn component(target: &str) -> &'static str {
    COMPONENT_TARGETS
        .iter()
        .flat_map(|(name, targets)| targets.iter().map(move |t| (*name, *t)))
        .filter(|(_, t)| target == *t || target.starts_with(&format!("{t}::")))
        .max_by_key(|(_, t)| t.len())
        .map_or("main", |(name, _)| name)
}

// === impl EnvoyFormatter ===

impl<S, N> FormatEvent<S, N> for EnvoyFormatter
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut message = MessageVisitor::default();
        event.record(&mut message);
        let level = match *meta.level() {
            Level::TRACE => "trace",
            Level::DEBUG => "debug",
            Level::INFO => "info",
            Level::WARN => "warning",
            Level::ERROR => "error",
        };
        let record = Record {
            time: SystemTime::now(),
            level,
            component: component(meta.target()),
            thread: i64::from(nix::unistd::gettid().as_raw()),
            pid: std::process::id(),
            message: &message.text,
            file: meta.file().unwrap_or(""),
            line: meta.line().unwrap_or(0),
        };
        let format = self.format.read().unwrap_or_else(PoisonError::into_inner);
        writeln!(writer, "{}", format.render(&record, self.escape))
    }
}

/// The `message` field, then the other fields as ` key=value`.
#[derive(Default)]
struct MessageVisitor {
    text: String,
}

// === impl MessageVisitor ===

impl Visit for MessageVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.text.insert_str(0, value);
        } else {
            self.text.push_str(&format!(" {}={value}", field.name()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.text.insert_str(0, &format!("{value:?}"));
        } else {
            self.text.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_map_to_our_targets() {
        let options = LogOptions {
            level: LogLevel::Warning,
            components: vec![
                ("misc".into(), LogLevel::Error),
                ("upstream".into(), LogLevel::Debug),
            ],
            ..LogOptions::default()
        };
        // misc has no module of ours: nothing to set.
        assert_eq!(directives(&options), "warn,proxy::upstream=debug");
        assert_eq!(component("proxy::upstream::pool"), "upstream");
        assert_eq!(component("proxy::bootstrap"), "config");
        assert_eq!(component("hyper::proto"), "main");
    }

    #[test]
    fn bootstrap_json_log_format_is_read() {
        let bootstrap: Bootstrap = crate::proto::decode(
            r#"{"application_log_config": {"log_format": {"json_format": {"level": "%l", "msg": "%j"}}}}"#,
            crate::proto::Format::Json,
            crate::proto::UnknownFields::Reject,
        )
        .unwrap()
        .message;
        let Some(LogFormat::Json(fields)) = bootstrap_log_format(&bootstrap) else {
            panic!("no JSON format")
        };
        let keys: Vec<_> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["level", "msg"]);
    }
}
