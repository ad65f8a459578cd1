//! `HttpConnectionManager` protos to a validated config. Settings we do not implement are
//! refused when they could change how traffic is handled, and named by field.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager as HcmProto,
    http_connection_manager::{
        CodecType, ForwardClientCertDetails, PathWithEscapedSlashesAction, RouteSpecifier,
        ServerHeaderTransformation, StripPortMode,
    },
};
use http::HeaderValue;
use ipnet::IpNet;

use super::super::access_log::AccessLog;
use super::super::filter::HttpFilter;
use super::super::headers::{ClientCertDetails, ForwardClientCert, RequestHeaderConfig};
use super::super::path::{EscapedSlashes, PathOptions};
use super::super::rds::RouteSlot;
use super::super::route::RouteTable;
use super::super::route::config::Validation;
use super::HttpContext;
use crate::config::{ConfigError, Context, duration};

const UUID_REQUEST_ID: &str =
    "type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig";

/// Which codec serves downstream connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// HTTP/2 when ALPN says `h2` or the client sends the HTTP/2 preface, else HTTP/1.1.
    Auto,
    Http1,
    Http2,
}

/// What `server` a response gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerHeader {
    Overwrite,
    AppendIfAbsent,
    PassThrough,
}

/// Where routes come from.
#[derive(Debug, Clone)]
pub enum RouteSource {
    Static(Arc<RouteTable>),
    Rds(Arc<RouteSlot>),
}

// === impl RouteSource ===

impl RouteSource {
    /// The table for a new stream.
    pub fn current(&self) -> Option<Arc<RouteTable>> {
        match self {
            Self::Static(t) => Some(t.clone()),
            Self::Rds(s) => s.current(),
        }
    }
}

/// Envoy's default `initial_fetch_timeout` for a config source.
const DEFAULT_INITIAL_FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// A validated HTTP connection manager.
#[derive(Debug)]
pub struct HcmConfig {
    pub stat_prefix: String,
    pub codec: Codec,
    pub routes: RouteSource,
    /// How long a listener waits for this HCM's RDS routes before serving without them:
    /// the config source's `initial_fetch_timeout` (15 s by default; `None` for 0, wait
    /// until they come).
    pub rds_warming: Option<Duration>,
    pub filters: Vec<HttpFilter>,
    pub access_logs: Vec<AccessLog>,
    pub headers: RequestHeaderConfig,
    pub path: PathOptions,
    pub server_name: HeaderValue,
    pub server_header: ServerHeader,
    pub max_request_headers_bytes: usize,
    pub max_headers_count: usize,
    pub stream_idle_timeout: Option<Duration>,
    pub request_timeout: Option<Duration>,
    pub request_headers_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub max_connection_duration: Option<Duration>,
    pub drain_timeout: Duration,
    /// `upgrade_configs`: lower-cased type and whether enabled.
    pub upgrades: Vec<(Box<str>, bool)>,
    pub always_set_request_id_in_response: bool,
    pub strip_any_host_port: bool,
    pub strip_matching_host_port: bool,
    pub strip_trailing_host_dot: bool,
    pub append_x_forwarded_port: bool,
    pub h2_max_concurrent_streams: Option<u32>,
    pub h2_initial_stream_window: Option<u32>,
    pub h2_initial_connection_window: Option<u32>,
}

fn opt_duration(
    d: Option<&envoy_types::pb::google::protobuf::Duration>,
    default: Option<Duration>,
    field: &str,
) -> Result<Option<Duration>, ConfigError> {
    match d {
        None => Ok(default),
        Some(d) => Ok(Some(duration(d).at(field.to_string())?).filter(|d| !d.is_zero())),
    }
}

// === impl HcmConfig ===

impl HcmConfig {
    /// Converts and validates an HCM, building its routes, filters and access logs.
    pub fn new(p: &HcmProto, ctx: &HttpContext) -> Result<Self, ConfigError> {
        reject_unsupported(p)?;
        if p.stat_prefix.is_empty() {
            return Err(ConfigError::new("stat_prefix is required").at("stat_prefix"));
        }
        let codec = match CodecType::try_from(p.codec_type) {
            Ok(CodecType::Auto) => Codec::Auto,
            Ok(CodecType::Http1) => Codec::Http1,
            Ok(CodecType::Http2) => Codec::Http2,
            _ => {
                return Err(
                    ConfigError::new("only AUTO, HTTP1 and HTTP2 codecs are supported")
                        .at("codec_type"),
                );
            }
        };
        ctx.rds.mark_used();
        let mut rds_warming = None;
        let routes = match &p.route_specifier {
            Some(RouteSpecifier::RouteConfig(rc)) => {
                RouteSource::Static(Arc::new(RouteTable::new(
                    rc,
                    Validation {
                        clusters: Some(&ctx.clusters),
                        default: true,
                    },
                )?))
            }
            Some(RouteSpecifier::Rds(rds)) => {
                if rds.route_config_name.is_empty() {
                    return Err(ConfigError::new("route_config_name is required").at("rds"));
                }
                let timeout = rds
                    .config_source
                    .as_ref()
                    .and_then(|c| c.initial_fetch_timeout.as_ref());
                rds_warming = match timeout {
                    None => Some(DEFAULT_INITIAL_FETCH_TIMEOUT),
                    Some(t) => Some(
                        duration(t).map_err(|e| e.at("rds.config_source.initial_fetch_timeout"))?,
                    )
                    .filter(|d| !d.is_zero()),
                };
                RouteSource::Rds(ctx.rds.subscribe(&rds.route_config_name))
            }
            Some(RouteSpecifier::ScopedRoutes(_)) => {
                return Err(ConfigError::new("scoped routes are not supported").at("scoped_routes"));
            }
            None => return Err(ConfigError::new("route_config or rds is required")),
        };
        let filters = HttpFilter::chain(
            &p.http_filters,
            ctx.rbac.as_deref(),
            ctx.clusters.tls().node.as_deref(),
            &format!("http.{}.", p.stat_prefix),
        )?;
        let mut access_logs = Vec::new();
        for (i, log) in p.access_log.iter().enumerate() {
            if let Some(l) = AccessLog::new(log, &ctx.access_logs).at(format!("access_log[{i}]"))? {
                access_logs.push(l);
            }
        }
        let common = p.common_http_protocol_options.as_ref();
        let h2 = p.http2_protocol_options.as_ref();
        Ok(Self {
            stat_prefix: p.stat_prefix.clone(),
            codec,
            routes,
            rds_warming,
            filters,
            access_logs,
            headers: request_headers(p, ctx)?,
            path: path_options(p)?,
            server_name: HeaderValue::from_str(if p.server_name.is_empty() {
                "envoy"
            } else {
                &p.server_name
            })
            .map_err(|_| ConfigError::new("invalid server_name").at("server_name"))?,
            server_header: match ServerHeaderTransformation::try_from(
                p.server_header_transformation,
            ) {
                Ok(ServerHeaderTransformation::AppendIfAbsent) => ServerHeader::AppendIfAbsent,
                Ok(ServerHeaderTransformation::PassThrough) => ServerHeader::PassThrough,
                _ => ServerHeader::Overwrite,
            },
            max_request_headers_bytes: p.max_request_headers_kb.map_or(60, |v| v.value) as usize
                * 1024,
            max_headers_count: common
                .and_then(|c| c.max_headers_count)
                .map_or(100, |v| v.value as usize),
            stream_idle_timeout: opt_duration(
                p.stream_idle_timeout.as_ref(),
                Some(Duration::from_secs(300)),
                "stream_idle_timeout",
            )?,
            request_timeout: opt_duration(p.request_timeout.as_ref(), None, "request_timeout")?,
            request_headers_timeout: opt_duration(
                p.request_headers_timeout.as_ref(),
                None,
                "request_headers_timeout",
            )?,
            idle_timeout: opt_duration(
                common.and_then(|c| c.idle_timeout.as_ref()),
                Some(Duration::from_secs(3600)),
                "common_http_protocol_options.idle_timeout",
            )?,
            max_connection_duration: opt_duration(
                common.and_then(|c| c.max_connection_duration.as_ref()),
                None,
                "common_http_protocol_options.max_connection_duration",
            )?,
            drain_timeout: opt_duration(
                p.drain_timeout.as_ref(),
                Some(Duration::from_secs(5)),
                "drain_timeout",
            )?
            .unwrap_or(Duration::ZERO),
            upgrades: upgrades(p)?,
            always_set_request_id_in_response: p.always_set_request_id_in_response,
            strip_any_host_port: matches!(
                p.strip_port_mode,
                Some(StripPortMode::StripAnyHostPort(true))
            ),
            strip_matching_host_port: p.strip_matching_host_port,
            strip_trailing_host_dot: p.strip_trailing_host_dot,
            append_x_forwarded_port: p.append_x_forwarded_port,
            h2_max_concurrent_streams: h2.and_then(|h| h.max_concurrent_streams).map(|v| v.value),
            h2_initial_stream_window: h2
                .and_then(|h| h.initial_stream_window_size)
                .map(|v| v.value),
            h2_initial_connection_window: h2
                .and_then(|h| h.initial_connection_window_size)
                .map(|v| v.value),
        })
    }
}

fn reject_unsupported(p: &HcmProto) -> Result<(), ConfigError> {
    let bad = |field: &str, what: &str| {
        Err(ConfigError::new(format!("{what} is not supported")).at(field))
    };
    if !p.original_ip_detection_extensions.is_empty() {
        return bad(
            "original_ip_detection_extensions",
            "original IP detection extensions",
        );
    }
    if !p.early_header_mutation_extensions.is_empty() {
        return bad(
            "early_header_mutation_extensions",
            "early header mutation extensions",
        );
    }
    if p.local_reply_config
        .as_ref()
        .is_some_and(|l| !l.mappers.is_empty() || l.body_format.is_some())
    {
        return bad("local_reply_config", "custom local replies");
    }
    if p.proxy_status_config.is_some() {
        return bad("proxy_status_config", "the Proxy-Status header");
    }
    if p.typed_header_validation_config.is_some() {
        return bad("typed_header_validation_config", "header validators");
    }
    if p.forward_client_cert_matcher.is_some() {
        return bad(
            "forward_client_cert_matcher",
            "per-request XFCC configuration",
        );
    }
    if p.scheme_header_transformation.is_some() {
        return bad(
            "scheme_header_transformation",
            "scheme header transformation",
        );
    }
    if p.forward_proto_config.is_some() {
        return bad("forward_proto_config", "forward_proto_config");
    }
    if p.represent_ipv4_remote_address_as_ipv4_mapped_ipv6 {
        return bad(
            "represent_ipv4_remote_address_as_ipv4_mapped_ipv6",
            "IPv4-mapped remote addresses",
        );
    }
    if p.path_normalization_options.is_some() {
        return bad("path_normalization_options", "path normalization options");
    }
    if let Some(c) = &p.common_http_protocol_options {
        if c.max_stream_duration
            .as_ref()
            .is_some_and(|d| d.seconds != 0 || d.nanos != 0)
        {
            return bad(
                "common_http_protocol_options.max_stream_duration",
                "a stream duration limit",
            );
        }
        if c.headers_with_underscores_action != 0 {
            return bad(
                "common_http_protocol_options.headers_with_underscores_action",
                "rejecting or dropping headers with underscores",
            );
        }
        if c.max_requests_per_connection.is_some_and(|m| m.value != 0) {
            return bad(
                "common_http_protocol_options.max_requests_per_connection",
                "a downstream request limit per connection",
            );
        }
    }
    if p.add_user_agent.is_some_and(|b| b.value) {
        tracing::warn!(
            "add_user_agent is not implemented; x-envoy-downstream-service-cluster is not set"
        );
    }
    if let Some(r) = &p.request_id_extension
        && let Some(cfg) = &r.typed_config
        && cfg.type_url != UUID_REQUEST_ID
    {
        return Err(ConfigError::new(format!(
            "request ID extension {} is not supported",
            cfg.type_url
        ))
        .at("request_id_extension"));
    }
    Ok(())
}

fn request_headers(p: &HcmProto, ctx: &HttpContext) -> Result<RequestHeaderConfig, ConfigError> {
    let forward_client_cert =
        match ForwardClientCertDetails::try_from(p.forward_client_cert_details) {
            Ok(ForwardClientCertDetails::Sanitize) => ForwardClientCert::Sanitize,
            Ok(ForwardClientCertDetails::ForwardOnly) => ForwardClientCert::ForwardOnly,
            Ok(ForwardClientCertDetails::AppendForward) => ForwardClientCert::AppendForward,
            Ok(ForwardClientCertDetails::SanitizeSet) => ForwardClientCert::SanitizeSet,
            Ok(ForwardClientCertDetails::AlwaysForwardOnly) => ForwardClientCert::AlwaysForwardOnly,
            Err(_) => {
                return Err(ConfigError::new("unknown value").at("forward_client_cert_details"));
            }
        };
    let details = match &p.set_current_client_cert_details {
        None => ClientCertDetails::default(),
        Some(d) => {
            if d.chain {
                return Err(ConfigError::new(
                    "Chain is not supported (the peer's chain is not kept)",
                )
                .at("set_current_client_cert_details.chain"));
            }
            ClientCertDetails {
                subject: d.subject.is_some_and(|b| b.value),
                uri: d.uri,
                cert: d.cert,
                dns: d.dns,
            }
        }
    };
    let internal_addresses = match &p.internal_address_config {
        None => Vec::new(),
        Some(c) => c
            .cidr_ranges
            .iter()
            .map(|r| {
                let len = r.prefix_len.map_or(0, |l| l.value);
                format!("{}/{len}", r.address_prefix)
                    .parse::<IpNet>()
                    .map(|n| n.trunc())
                    .map_err(|e| {
                        ConfigError::new(format!("invalid CIDR {:?}: {e}", r.address_prefix))
                    })
            })
            .collect::<Result<_, _>>()
            .at("internal_address_config.cidr_ranges")?,
    };
    Ok(RequestHeaderConfig {
        use_remote_address: p.use_remote_address.is_some_and(|b| b.value),
        xff_num_trusted_hops: p.xff_num_trusted_hops,
        skip_xff_append: p.skip_xff_append,
        via: (!p.via.is_empty())
            .then(|| HeaderValue::from_str(&p.via))
            .transpose()
            .map_err(|_| ConfigError::new("invalid via").at("via"))?,
        generate_request_id: p.generate_request_id.is_none_or(|b| b.value),
        preserve_external_request_id: p.preserve_external_request_id,
        forward_client_cert,
        client_cert_details: details,
        internal_addresses,
        local_address: ctx.local_address,
    })
}

fn path_options(p: &HcmProto) -> Result<PathOptions, ConfigError> {
    let escaped_slashes =
        match PathWithEscapedSlashesAction::try_from(p.path_with_escaped_slashes_action) {
            Ok(PathWithEscapedSlashesAction::RejectRequest) => EscapedSlashes::Reject,
            Ok(PathWithEscapedSlashesAction::UnescapeAndRedirect) => {
                EscapedSlashes::UnescapeAndRedirect
            }
            Ok(PathWithEscapedSlashesAction::UnescapeAndForward) => {
                EscapedSlashes::UnescapeAndForward
            }
            Ok(_) => EscapedSlashes::Keep,
            Err(_) => {
                return Err(
                    ConfigError::new("unknown value").at("path_with_escaped_slashes_action")
                );
            }
        };
    Ok(PathOptions {
        normalize: p.normalize_path.is_some_and(|b| b.value),
        merge_slashes: p.merge_slashes,
        escaped_slashes,
    })
}

fn upgrades(p: &HcmProto) -> Result<Vec<(Box<str>, bool)>, ConfigError> {
    let mut out: Vec<(Box<str>, bool)> = Vec::new();
    for (i, u) in p.upgrade_configs.iter().enumerate() {
        let at = format!("upgrade_configs[{i}]");
        if !u.filters.is_empty() {
            return Err(ConfigError::new("upgrade filter chains are not supported").at(at));
        }
        let t = u.upgrade_type.to_ascii_lowercase();
        if t == "connect" {
            return Err(ConfigError::new("CONNECT is not supported").at(at));
        }
        if out.iter().any(|(x, _)| **x == *t) {
            return Err(ConfigError::new(format!(
                "Error: multiple upgrade configs with the same name: '{t}'"
            ))
            .at(at));
        }
        out.push((t.into(), u.enabled.is_none_or(|e| e.value)));
    }
    Ok(out)
}
