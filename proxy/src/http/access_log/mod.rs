//! HTTP access logs: Envoy's file and stdout/stderr loggers with the default format, text
//! formats and JSON formats. Lines are formatted on the data path and handed to a writer
//! thread without ever blocking (a full queue drops the line and counts it).

mod writer;

use std::sync::Arc;

use envoy_types::pb::envoy::config::accesslog::v3::{
    AccessLog as AccessLogProto, AccessLogFilter, ComparisonFilter, access_log, access_log_filter,
    comparison_filter::Op,
};
use envoy_types::pb::envoy::config::core::v3::{
    SubstitutionFormatString, substitution_format_string,
};
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::{
    FileAccessLog, file_access_log,
};
use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::{
    StderrAccessLog, StdoutAccessLog, stderr_access_log, stdout_access_log,
};
use envoy_types::pb::google::protobuf::{Struct, Value as ProtoValue, value::Kind};

pub use writer::{AccessLogManager, Sink};

use super::format::{Context, Formatter, Value};
use super::route::action::data_source;
use super::stream_info::{HeaderKey, ResponseFlag};
use crate::config::{ConfigError, Context as _, any};

/// Envoy's default access log format.
pub const DEFAULT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

/// Istio's sidecar text format (`meshConfig.accessLogFile` with the default encoding).
pub const ISTIO_TEXT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

const FILE: &str = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog";
const STDOUT: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
const STDERR: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog";

/// How a line is laid out.
#[derive(Debug, Clone)]
pub enum LogFormat {
    Text(Formatter),
    Json {
        fields: Vec<(String, JsonField)>,
        omit_empty: bool,
    },
}

/// One field of a JSON format.
#[derive(Debug, Clone)]
pub enum JsonField {
    Format(Formatter),
    Literal(serde_json::Value),
    Nested(Vec<(String, JsonField)>),
}

/// Which streams are logged.
#[derive(Debug, Clone)]
pub enum LogFilter {
    Status(Op, u32),
    /// Any of these flags (any flag at all when empty).
    Flags(Vec<ResponseFlag>),
    And(Vec<LogFilter>),
    Or(Vec<LogFilter>),
    Always,
}

/// One configured access log.
#[derive(Debug, Clone)]
pub struct AccessLog {
    format: LogFormat,
    filter: LogFilter,
    sink: Arc<Sink>,
}

// === impl AccessLog ===

impl AccessLog {
    #[allow(deprecated)]
    /// Converts an `access_log` entry. Other telemetry loggers (gRPC, OpenTelemetry) are
    /// accepted and not run (`None`); anything else is refused.
    pub fn new(log: &AccessLogProto, mgr: &AccessLogManager) -> Result<Option<Self>, ConfigError> {
        let Some(access_log::ConfigType::TypedConfig(cfg)) = &log.config_type else {
            return Err(ConfigError::new("typed_config is required"));
        };
        let (path, format) = match any::effective_type_url(cfg)?.as_str() {
            FILE => {
                let f: FileAccessLog = any::decode(cfg)?;
                let format = match &f.access_log_format {
                    None => None,
                    Some(file_access_log::AccessLogFormat::Format(s)) => Some(text(s)?),
                    Some(file_access_log::AccessLogFormat::JsonFormat(j)) => Some(json(j, false)?),
                    Some(file_access_log::AccessLogFormat::LogFormat(s)) => Some(substitution(s)?),
                    Some(file_access_log::AccessLogFormat::TypedJsonFormat(j)) => {
                        Some(json(j, false)?)
                    }
                };
                (f.path, format)
            }
            STDOUT => {
                let f: StdoutAccessLog = any::decode(cfg)?;
                let format = match &f.access_log_format {
                    Some(stdout_access_log::AccessLogFormat::LogFormat(s)) => {
                        Some(substitution(s)?)
                    }
                    None => None,
                };
                ("/dev/stdout".to_string(), format)
            }
            STDERR => {
                let f: StderrAccessLog = any::decode(cfg)?;
                let format = match &f.access_log_format {
                    Some(stderr_access_log::AccessLogFormat::LogFormat(s)) => {
                        Some(substitution(s)?)
                    }
                    None => None,
                };
                ("/dev/stderr".to_string(), format)
            }
            other if crate::config::extension::is_telemetry_only(other) => {
                tracing::warn!(logger = %log.name, type_url = other, "access logger not implemented; skipped");
                return Ok(None);
            }
            other => {
                return Err(ConfigError::new(format!(
                    "access logger {:?} ({other}) is not supported",
                    log.name
                )));
            }
        };
        let format = match format {
            Some(f) => f,
            None => LogFormat::Text(
                Formatter::parse(DEFAULT_FORMAT).map_err(|e| ConfigError::new(e.to_string()))?,
            ),
        };
        let filter = log
            .filter
            .as_ref()
            .map_or(Ok(LogFilter::Always), filter)
            .at("filter")?;
        Ok(Some(Self {
            format,
            filter,
            sink: mgr
                .sink(&path)
                .map_err(|e| ConfigError::new(format!("cannot open {path:?}: {e}")))?,
        }))
    }

    /// Request and response headers the format reads.
    pub fn keys(&self, request: &mut Vec<HeaderKey>, response: &mut Vec<HeaderKey>) {
        fn walk(
            fields: &[(String, JsonField)],
            request: &mut Vec<HeaderKey>,
            response: &mut Vec<HeaderKey>,
        ) {
            for (_, f) in fields {
                match f {
                    JsonField::Format(f) => {
                        f.request_keys(request);
                        f.response_keys(response);
                    }
                    JsonField::Nested(n) => walk(n, request, response),
                    JsonField::Literal(_) => {}
                }
            }
        }
        match &self.format {
            LogFormat::Text(f) => {
                f.request_keys(request);
                f.response_keys(response);
            }
            LogFormat::Json { fields, .. } => walk(fields, request, response),
        }
    }

    /// Formats and queues one line (when the filter passes).
    pub fn log(&self, ctx: &Context<'_>) {
        if !self.filter.passes(ctx) {
            return;
        }
        self.sink.write(self.render(ctx));
    }

    /// The line for a stream.
    pub fn render(&self, ctx: &Context<'_>) -> String {
        match &self.format {
            LogFormat::Text(f) => {
                let mut out = String::with_capacity(256);
                f.render(ctx, &mut out);
                out
            }
            LogFormat::Json { fields, omit_empty } => {
                let mut out =
                    serde_json::Value::Object(json_object(fields, ctx, *omit_empty)).to_string();
                out.push('\n');
                out
            }
        }
    }
}

fn json_object(
    fields: &[(String, JsonField)],
    ctx: &Context<'_>,
    omit_empty: bool,
) -> serde_json::Map<String, serde_json::Value> {
    let mut map = serde_json::Map::new();
    for (k, f) in fields {
        let v = match f {
            JsonField::Literal(v) => v.clone(),
            JsonField::Nested(n) => serde_json::Value::Object(json_object(n, ctx, omit_empty)),
            JsonField::Format(f) => match f.typed(ctx) {
                Value::Num(n) => serde_json::Value::from(n),
                Value::Str(s) => serde_json::Value::String(s.into_owned()),
                Value::None if omit_empty => continue,
                Value::None => serde_json::Value::Null,
            },
        };
        map.insert(k.clone(), v);
    }
    map
}

fn text(s: &str) -> Result<LogFormat, ConfigError> {
    let s = if s.is_empty() { DEFAULT_FORMAT } else { s };
    Formatter::parse(s)
        .map(LogFormat::Text)
        .map_err(|e| ConfigError::new(e.to_string()).at("format"))
}

#[allow(deprecated)]
fn substitution(s: &SubstitutionFormatString) -> Result<LogFormat, ConfigError> {
    if !s.formatters.is_empty() {
        return Err(
            ConfigError::new("formatter extensions are not supported").at("log_format.formatters")
        );
    }
    match &s.format {
        Some(substitution_format_string::Format::TextFormat(t)) => text(t),
        Some(substitution_format_string::Format::TextFormatSource(d)) => {
            let data = data_source(d, usize::MAX).at("log_format.text_format_source")?;
            text(&String::from_utf8_lossy(&data))
        }
        Some(substitution_format_string::Format::JsonFormat(j)) => json(j, s.omit_empty_values),
        None => text(DEFAULT_FORMAT),
    }
}

fn json(j: &Struct, omit_empty: bool) -> Result<LogFormat, ConfigError> {
    Ok(LogFormat::Json {
        fields: json_fields(j).at("json_format")?,
        omit_empty,
    })
}

fn json_fields(j: &Struct) -> Result<Vec<(String, JsonField)>, ConfigError> {
    let mut keys: Vec<&String> = j.fields.keys().collect();
    keys.sort();
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let v = &j.fields[k];
        out.push((k.clone(), json_field(v).map_err(|e| e.at(k))?));
    }
    Ok(out)
}

fn json_field(v: &ProtoValue) -> Result<JsonField, ConfigError> {
    Ok(match &v.kind {
        Some(Kind::StringValue(s)) => {
            JsonField::Format(Formatter::parse(s).map_err(|e| ConfigError::new(e.to_string()))?)
        }
        Some(Kind::StructValue(s)) => JsonField::Nested(json_fields(s)?),
        Some(Kind::NumberValue(n)) => JsonField::Literal(serde_json::json!(n)),
        Some(Kind::BoolValue(b)) => JsonField::Literal(serde_json::Value::Bool(*b)),
        Some(Kind::NullValue(_)) | None => JsonField::Literal(serde_json::Value::Null),
        Some(Kind::ListValue(_)) => {
            return Err(ConfigError::new("lists are not supported in json_format"));
        }
    })
}

fn filter(f: &AccessLogFilter) -> Result<LogFilter, ConfigError> {
    use access_log_filter::FilterSpecifier as F;
    Ok(match &f.filter_specifier {
        Some(F::StatusCodeFilter(s)) => comparison(s.comparison.as_ref())?,
        Some(F::ResponseFlagFilter(r)) => LogFilter::Flags(
            r.flags
                .iter()
                .map(|s| {
                    flag_by_name(s)
                        .ok_or_else(|| ConfigError::new(format!("unknown response flag {s:?}")))
                })
                .collect::<Result<_, _>>()?,
        ),
        Some(F::AndFilter(a)) => {
            LogFilter::And(a.filters.iter().map(filter).collect::<Result<_, _>>()?)
        }
        Some(F::OrFilter(o)) => {
            LogFilter::Or(o.filters.iter().map(filter).collect::<Result<_, _>>()?)
        }
        Some(F::NotHealthCheckFilter(_)) => LogFilter::Always,
        Some(other) => {
            tracing::warn!(filter = ?other, "access log filter not supported; logging every stream");
            LogFilter::Always
        }
        None => LogFilter::Always,
    })
}

fn comparison(c: Option<&ComparisonFilter>) -> Result<LogFilter, ConfigError> {
    let c = c.ok_or_else(|| ConfigError::new("comparison is required"))?;
    let op = Op::try_from(c.op).map_err(|_| ConfigError::new(format!("unknown op {}", c.op)))?;
    Ok(LogFilter::Status(
        op,
        c.value.as_ref().map_or(0, |v| v.default_value),
    ))
}

fn flag_by_name(s: &str) -> Option<ResponseFlag> {
    use ResponseFlag::*;
    [
        NoHealthyUpstream,
        UpstreamRequestTimeout,
        LocalReset,
        UpstreamRemoteReset,
        UpstreamConnectionFailure,
        UpstreamConnectionTermination,
        UpstreamOverflow,
        NoRouteFound,
        DownstreamConnectionTermination,
        UpstreamRetryLimitExceeded,
        StreamIdleTimeout,
        DownstreamProtocolError,
        UpstreamMaxStreamDurationReached,
        DurationTimeout,
        UpstreamProtocolError,
        NoClusterFound,
        DownstreamRemoteReset,
    ]
    .into_iter()
    .find(|f| f.short() == s)
}

// === impl LogFilter ===

impl LogFilter {
    fn passes(&self, ctx: &Context<'_>) -> bool {
        match self {
            Self::Always => true,
            Self::Status(op, v) => {
                let code = u32::from(ctx.info.response_code.unwrap_or(0));
                match op {
                    Op::Eq => code == *v,
                    Op::Ge => code >= *v,
                    Op::Le => code <= *v,
                    Op::Ne => code != *v,
                }
            }
            Self::Flags(flags) if flags.is_empty() => !ctx.info.flags.is_empty(),
            Self::Flags(flags) => flags.iter().any(|f| ctx.info.flags.has(*f)),
            Self::And(list) => list.iter().all(|f| f.passes(ctx)),
            Self::Or(list) => list.iter().any(|f| f.passes(ctx)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::Downstream;
    use crate::http::format::Headers;
    use crate::http::stream_info::{Captured, HeaderView, Protocol, StreamInfo};
    use crate::proto_test_util::from_yaml;
    use std::time::{Duration, UNIX_EPOCH};

    fn ds() -> Downstream {
        Downstream {
            local: "127.0.0.1:28080".parse().unwrap(),
            peer: "127.0.0.1:41150".parse().unwrap(),
            listener: Arc::from("l"),
            direction: Default::default(),
            filter_chain: Arc::from("c"),
            requested_server_name: None,
            tls: None,
            original_src_mark: None,
        }
    }

    fn log(yaml: &str) -> AccessLog {
        let mgr = AccessLogManager::default();
        AccessLog::new(&from_yaml(yaml), &mgr).unwrap().unwrap()
    }

    fn info() -> StreamInfo {
        let mut info = StreamInfo::new(Protocol::Http11, "127.0.0.1:41150".parse().unwrap());
        info.start = UNIX_EPOCH + Duration::from_millis(1_795_442_627_800);
        info.response_code = Some(200);
        info.details = "via_upstream".into();
        info.bytes_sent = 279;
        info.finished = Some(Duration::from_millis(1));
        info.upstream.host = Some(crate::upstream::host::HostAddr::Ip(
            "127.0.0.1:28081".parse().unwrap(),
        ));
        info.upstream.cluster = Some("echo".into());
        info
    }

    /// The line Envoy 1.40 wrote for the same request (default format).
    #[test]
    fn default_format_matches_envoy() {
        let l = log(
            "{ name: envoy.access_loggers.file, typed_config: { '@type': type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: /dev/null } }",
        );
        let mut req = http::HeaderMap::new();
        req.insert("user-agent", "curl/7.88.1".parse().unwrap());
        req.insert("x-request-id", "abc".parse().unwrap());
        let mut resp = http::HeaderMap::new();
        resp.insert("x-envoy-upstream-service-time", "0".parse().unwrap());
        let (mut rk, mut pk) = (Vec::new(), Vec::new());
        l.keys(&mut rk, &mut pk);
        let view = HeaderView {
            method: Some(&http::Method::GET),
            path: Some("/echo/x"),
            authority: Some("localhost:28080"),
            scheme: Some("http"),
            status: None,
            headers: &req,
        };
        let mut info = info();
        info.request_headers = Captured::capture(&rk, &view);
        info.response_headers = Captured::capture(&pk, &HeaderView::headers(&resp));
        let ds = ds();
        let ctx = Context {
            info: &info,
            downstream: &ds,
            request: Headers::Captured(&info.request_headers),
            response: Headers::Captured(&info.response_headers),
        };
        assert_eq!(
            l.render(&ctx),
            "[2026-11-23T14:03:47.800Z] \"GET /echo/x HTTP/1.1\" 200 - 0 279 1 0 \"-\" \"curl/7.88.1\" \"abc\" \"localhost:28080\" \"127.0.0.1:28081\"\n"
        );
    }

    #[test]
    fn json_format_keeps_types() {
        let l = log(r#"
name: envoy.access_loggers.file
typed_config:
  "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
  path: /dev/null
  log_format:
    json_format: { code: "%RESPONSE_CODE%", path: "%REQ(:PATH)%", cluster: "c=%UPSTREAM_CLUSTER%", nested: { flags: "%RESPONSE_FLAGS%" } }
"#);
        let info = info();
        let ds = ds();
        let ctx = Context {
            info: &info,
            downstream: &ds,
            request: Headers::None,
            response: Headers::None,
        };
        assert_eq!(
            l.render(&ctx),
            "{\"cluster\":\"c=echo\",\"code\":200,\"nested\":{\"flags\":\"-\"},\"path\":null}\n"
        );
    }

    #[test]
    fn filters_and_unsupported_loggers() {
        let l = log(r#"
name: envoy.access_loggers.stdout
filter: { status_code_filter: { comparison: { op: GE, value: { default_value: 500, runtime_key: k } } } }
typed_config: { "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog }
"#);
        let ds = ds();
        let passes = |code: u16| {
            let mut info = info();
            info.response_code = Some(code);
            l.filter.passes(&Context {
                info: &info,
                downstream: &ds,
                request: Headers::None,
                response: Headers::None,
            })
        };
        assert!(!passes(200));
        assert!(passes(503));
        let grpc = AccessLog::new(
            &from_yaml("{ name: x, typed_config: { '@type': type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig } }"),
            &AccessLogManager::default(),
        )
        .unwrap();
        assert!(
            grpc.is_none(),
            "telemetry-only loggers are accepted and not run"
        );
        let e = AccessLog::new(
            &from_yaml("{ name: x, typed_config: { '@type': type.googleapis.com/envoy.extensions.access_loggers.wasm.v3.WasmAccessLog } }"),
            &AccessLogManager::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not supported"), "{e}");
    }
}
