//! Which extensions we run, which we may skip, and which we must refuse.
//!
//! An extension we do not implement is safe to skip only if it cannot change what happens to
//! traffic: Istio's telemetry filters (stats, metadata exchange) are such. Anything that could
//! allow, deny, route or rewrite (an authorization filter, a Lua script, a fault injector) is
//! rejected: silently skipping an authorization filter would be a security hole.

/// Istio and Envoy extension types that only observe traffic. Configs of these types are
/// accepted and not run; `/config_dump` still shows them.
const TELEMETRY_ONLY: &[&str] = &[
    "type.googleapis.com/stats.PluginConfig",
    "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange",
    "type.googleapis.com/io.istio.http.peer_metadata.Config",
    "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
    "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
    "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
    "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
    "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
    "type.googleapis.com/envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig",
];

/// Whether an extension of this (effective) type only observes traffic.
pub fn is_telemetry_only(type_url: &str) -> bool {
    TELEMETRY_ONLY.contains(&type_url)
}

/// The error for an extension that decides traffic and that we do not implement.
pub fn unsupported(kind: &str, name: &str, type_url: &str) -> super::ConfigError {
    super::ConfigError::new(format!(
        "{kind} {name:?} ({type_url}) is not supported; refusing the config rather than \
         ignoring a {kind} that could change how traffic is handled"
    ))
}
