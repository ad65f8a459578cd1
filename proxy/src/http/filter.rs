//! The HTTP filter chain, in the configured order. We run: RBAC (through a slot the RBAC
//! engine fills), Istio's `istio.alpn`, `istio.metadata_exchange` and `istio.stats`,
//! telemetry-only filters (accepted, not run), and the router, which must be last. Any other filter is a config error: skipping a filter that
//! could allow, deny, route or rewrite would silently change behaviour.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router as RouterProto;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter as HttpFilterProto, http_filter::ConfigType,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use super::peer_metadata::PeerMetadataFilter;
use super::pool::{Alpn, UpstreamProtocol};
use super::route::RequestView;
use super::stream_info::Protocol;
use crate::config::{ConfigError, any, extension};
use crate::conn::Downstream;
use crate::tls::LocalNode;

const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const RBAC: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
const ALPN: &str = "type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig";
const COMPRESSOR: &str =
    "type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor";
const FAULT: &str = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";
const CORS: &str = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors";
const WASM: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

/// What an authorization engine sees of a request.
#[derive(Debug, Clone, Copy)]
pub struct AuthzRequest<'a> {
    pub request: &'a RequestView<'a>,
    /// The request head as filters see it (headers after the HCM's own mutations; the URI
    /// as received: use `request.path` and `request.authority` for the normalized values).
    pub parts: &'a http::request::Parts,
    pub downstream: &'a Downstream,
    /// The trusted client address after `x-forwarded-for` processing (`remote_ip`).
    pub remote: SocketAddr,
}

/// An authorization decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthzDecision {
    Allow,
    /// Deny with a 403 (`RBAC: access denied`); the matched policy, if any, goes into the
    /// response code details.
    Deny {
        policy: Option<String>,
    },
}

/// A configured `envoy.filters.http.rbac` filter (the RBAC engine implements this).
pub trait HttpAuthorizer: Send + Sync + fmt::Debug {
    fn authorize(&self, req: &AuthzRequest<'_>) -> AuthzDecision;
}

/// Builds RBAC filters from their configs; the HCM fails to build without one.
pub trait RbacFactory: Send + Sync + fmt::Debug {
    /// Compiles an `envoy.extensions.filters.http.rbac.v3.RBAC` (possibly in a
    /// TypedStruct). `stat_prefix` is the HCM's `http.<stat_prefix>.`.
    fn http_filter(
        &self,
        config: &Any,
        stat_prefix: &str,
    ) -> Result<Arc<dyn HttpAuthorizer>, ConfigError>;
}

/// `istio.alpn`'s config: the upstream ALPN per upstream protocol.
#[derive(Debug, Clone, Default)]
pub struct AlpnOverrides {
    http10: Option<Alpn>,
    http11: Option<Alpn>,
    http2: Option<Alpn>,
}

// === impl AlpnOverrides ===

impl AlpnOverrides {
    /// The ALPN to offer for an upstream protocol (HTTP/1.0 when the downstream spoke it).
    pub fn for_protocol(&self, upstream: UpstreamProtocol, downstream: Protocol) -> Option<&Alpn> {
        match (upstream, downstream) {
            (UpstreamProtocol::Http2, _) => self.http2.as_ref(),
            (UpstreamProtocol::Http1, Protocol::Http10) => self.http10.as_ref(),
            (UpstreamProtocol::Http1, _) => self.http11.as_ref(),
        }
    }
}

/// `istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig`.
#[derive(Clone, PartialEq, Message)]
struct AlpnFilterConfig {
    #[prost(message, repeated, tag = "1")]
    alpn_override: Vec<AlpnOverride>,
}

#[derive(Clone, PartialEq, Message)]
struct AlpnOverride {
    #[prost(int32, tag = "1")]
    upstream_protocol: i32,
    #[prost(string, repeated, tag = "2")]
    alpn_override: Vec<String>,
}

impl prost::Name for AlpnFilterConfig {
    const NAME: &'static str = "FilterConfig";
    const PACKAGE: &'static str = "istio.envoy.config.filter.http.alpn.v2alpha1";
    fn full_name() -> String {
        "istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig".into()
    }
    fn type_url() -> String {
        ALPN.into()
    }
}

/// One filter of the chain.
#[derive(Debug, Clone)]
pub enum HttpFilter {
    Rbac(Arc<dyn HttpAuthorizer>),
    Alpn(AlpnOverrides),
    /// Istio's `istio.metadata_exchange` ([`super::peer_metadata`]).
    PeerMetadata(Arc<PeerMetadataFilter>),
    /// Accepted and not run (telemetry only, or inert as configured).
    Skipped(Arc<str>),
    /// Istio's `istio.stats`: completed requests are reported in Istio's HTTP metrics
    /// ([`crate::istio_stats`]).
    IstioStats,
    Router {
        suppress_envoy_headers: bool,
    },
}

// === impl HttpFilter ===

impl HttpFilter {
    /// Converts the HCM's `http_filters`. The router must be present and last.
    /// `stat_prefix` is the HCM's `http.<stat_prefix>.`, for the filters' stats.
    pub fn chain(
        filters: &[HttpFilterProto],
        rbac: Option<&dyn RbacFactory>,
        node: Option<&LocalNode>,
        stat_prefix: &str,
    ) -> Result<Vec<Self>, ConfigError> {
        let mut out = Vec::with_capacity(filters.len());
        for (i, f) in filters.iter().enumerate() {
            let filter = Self::new(f, rbac, node, stat_prefix)
                .map_err(|e| e.at(format!("http_filters[{i}] ({:?})", f.name)))?;
            if let Some(filter) = filter {
                out.push(filter);
            }
        }
        match out.last() {
            Some(Self::Router { .. }) => {}
            _ => {
                return Err(ConfigError::new(
                    "the last HTTP filter must be the router (envoy.filters.http.router)",
                )
                .at("http_filters"));
            }
        }
        if out[..out.len() - 1]
            .iter()
            .any(|f| matches!(f, Self::Router { .. }))
        {
            return Err(
                ConfigError::new("the router must be the last HTTP filter").at("http_filters")
            );
        }
        Ok(out)
    }

    fn new(
        f: &HttpFilterProto,
        rbac: Option<&dyn RbacFactory>,
        node: Option<&LocalNode>,
        stat_prefix: &str,
    ) -> Result<Option<Self>, ConfigError> {
        if f.disabled {
            return Err(ConfigError::new(
                "disabled filters (enabled per route) are not supported",
            ));
        }
        let Some(ConfigType::TypedConfig(cfg)) = &f.config_type else {
            return match f.name.as_str() {
                "envoy.filters.http.router" | "envoy.router" => Ok(Some(Self::Router {
                    suppress_envoy_headers: false,
                })),
                _ => Err(ConfigError::new(
                    "typed_config is required (config discovery is not supported)",
                )),
            };
        };
        let type_url = any::effective_type_url(cfg)?;
        match type_url.as_str() {
            ROUTER => {
                let r: RouterProto = any::decode(cfg)?;
                reject_router_options(&r)?;
                Ok(Some(Self::Router {
                    suppress_envoy_headers: r.suppress_envoy_headers,
                }))
            }
            RBAC => {
                let Some(factory) = rbac else {
                    return Err(ConfigError::new(
                        "envoy.filters.http.rbac cannot be enforced: no RBAC engine is available to this HTTP \
                         connection manager; refusing the config rather than skipping an authorization filter",
                    ));
                };
                Ok(Some(Self::Rbac(factory.http_filter(cfg, stat_prefix)?)))
            }
            ALPN => Ok(Some(Self::Alpn(alpn(cfg)?))),
            COMPRESSOR => {
                tracing::warn!(
                    filter = %f.name,
                    "envoy.filters.http.compressor is not implemented; responses are sent uncompressed"
                );
                Ok(Some(Self::Skipped(f.name.as_str().into())))
            }
            FAULT | CORS if is_empty_config(cfg) => Ok(Some(Self::Skipped(f.name.as_str().into()))),
            WASM if is_builtin_telemetry_wasm(cfg) => {
                Ok(Some(Self::Skipped(f.name.as_str().into())))
            }
            crate::istio_stats::TYPE_URL => Ok(Some(Self::IstioStats)),
            super::peer_metadata::TYPE_URL => Ok(Some(Self::PeerMetadata(Arc::new(
                PeerMetadataFilter::from_any(cfg, node)?,
            )))),
            t if extension::is_telemetry_only(t) => Ok(Some(Self::Skipped(f.name.as_str().into()))),
            t if f.is_optional => {
                tracing::warn!(filter = %f.name, type_url = t, "optional HTTP filter not supported; skipped");
                Ok(None)
            }
            t => Err(extension::unsupported("HTTP filter", &f.name, t)),
        }
    }
}

fn reject_router_options(r: &RouterProto) -> Result<(), ConfigError> {
    if !r.upstream_http_filters.is_empty() {
        return Err(
            ConfigError::new("upstream HTTP filters are not supported").at("upstream_http_filters")
        );
    }
    Ok(())
}

fn alpn(cfg: &envoy_types::pb::google::protobuf::Any) -> Result<AlpnOverrides, ConfigError> {
    let c: AlpnFilterConfig = any::decode(cfg)?;
    let mut out = AlpnOverrides::default();
    for (i, o) in c.alpn_override.iter().enumerate() {
        let list = Some(Alpn::new(
            o.alpn_override
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect(),
        ));
        match o.upstream_protocol {
            0 => out.http10 = list,
            1 => out.http11 = list,
            2 => out.http2 = list,
            p => {
                return Err(ConfigError::new(format!("unknown upstream_protocol {p}"))
                    .at(format!("alpn_override[{i}]")));
            }
        }
    }
    Ok(out)
}

/// A fault or CORS filter with no settings does nothing unless routes configure it (which
/// the route table rejects).
fn is_empty_config(cfg: &envoy_types::pb::google::protobuf::Any) -> bool {
    cfg.value.is_empty()
}

/// Older Istio ships its telemetry filters as Wasm on the null VM
/// (`envoy.wasm.metadata_exchange`, `envoy.wasm.stats`): telemetry only.
fn is_builtin_telemetry_wasm(cfg: &envoy_types::pb::google::protobuf::Any) -> bool {
    use envoy_types::pb::envoy::config::core::v3::{async_data_source, data_source};
    use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
    use envoy_types::pb::envoy::extensions::wasm::v3::plugin_config::Vm;
    let Ok(w) = any::decode::<Wasm>(cfg) else {
        return false;
    };
    let Some(vm) = w.config.as_ref().and_then(|c| match &c.vm {
        Some(Vm::VmConfig(v)) => Some(v),
        _ => None,
    }) else {
        return false;
    };
    let inline = vm.code.as_ref().and_then(|c| match &c.specifier {
        Some(async_data_source::Specifier::Local(d)) => match &d.specifier {
            Some(data_source::Specifier::InlineString(s)) => Some(s.as_str()),
            _ => None,
        },
        _ => None,
    });
    vm.runtime == "envoy.wasm.runtime.null"
        && matches!(
            inline,
            Some("envoy.wasm.metadata_exchange" | "envoy.wasm.stats")
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto_test_util::from_yaml;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;

    fn chain(yaml: &str, rbac: Option<&dyn RbacFactory>) -> Result<Vec<HttpFilter>, ConfigError> {
        let hcm: HttpConnectionManager = from_yaml(yaml);
        HttpFilter::chain(&hcm.http_filters, rbac, None, "http.s.")
    }

    const ISTIO_OUTBOUND: &str = r#"
stat_prefix: s
http_filters:
- name: istio.metadata_exchange
  typed_config:
    "@type": type.googleapis.com/udpa.type.v1.TypedStruct
    type_url: type.googleapis.com/io.istio.http.peer_metadata.Config
    value: { upstream_discovery: [{ istio_headers: {} }] }
- name: envoy.filters.http.grpc_stats
  typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig, emit_filter_state: true }
- name: istio.alpn
  typed_config:
    "@type": type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig
    alpn_override:
    - alpn_override: [istio-http/1.0, istio, http/1.0]
    - { upstream_protocol: HTTP11, alpn_override: [istio-http/1.1, istio, http/1.1] }
    - { upstream_protocol: HTTP2, alpn_override: [istio-h2, istio, h2] }
- name: envoy.filters.http.fault
  typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault }
- name: envoy.filters.http.cors
  typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors }
- name: istio.stats
  typed_config: { "@type": type.googleapis.com/stats.PluginConfig }
- name: envoy.filters.http.router
  typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
"#;

    #[test]
    fn istio_outbound_chain() {
        let c = chain(ISTIO_OUTBOUND, None).unwrap();
        assert_eq!(c.len(), 7);
        assert!(matches!(c[0], HttpFilter::PeerMetadata(_)), "{:?}", c[0]);
        let HttpFilter::Alpn(a) = &c[2] else {
            panic!("{:?}", c[2])
        };
        let h2 = a
            .for_protocol(UpstreamProtocol::Http2, Protocol::Http11)
            .unwrap();
        assert_eq!(
            h2.protocols(),
            [b"istio-h2".to_vec(), b"istio".to_vec(), b"h2".to_vec()]
        );
        let h10 = a
            .for_protocol(UpstreamProtocol::Http1, Protocol::Http10)
            .unwrap();
        assert_eq!(h10.protocols()[0], b"istio-http/1.0");
        assert_eq!(
            a.for_protocol(UpstreamProtocol::Http1, Protocol::Http2)
                .unwrap()
                .protocols()[0],
            b"istio-http/1.1"
        );
        assert!(matches!(
            c[6],
            HttpFilter::Router {
                suppress_envoy_headers: false
            }
        ));
    }

    #[test]
    fn rbac_without_an_engine_fails_the_build() {
        let e = chain(
            r#"
stat_prefix: s
http_filters:
- name: envoy.filters.http.rbac
  typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC, rules: { policies: {} } }
- name: envoy.filters.http.router
  typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
"#,
            None,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("refusing the config rather than skipping an authorization filter"),
            "{e}"
        );
    }

    #[derive(Debug)]
    struct DenyAll;
    impl HttpAuthorizer for DenyAll {
        fn authorize(&self, _: &AuthzRequest<'_>) -> AuthzDecision {
            AuthzDecision::Deny { policy: None }
        }
    }
    #[derive(Debug)]
    struct Factory;
    impl RbacFactory for Factory {
        fn http_filter(&self, _: &Any, _: &str) -> Result<Arc<dyn HttpAuthorizer>, ConfigError> {
            Ok(Arc::new(DenyAll))
        }
    }

    #[test]
    fn rbac_with_an_engine_is_kept_in_order() {
        let c = chain(
            r#"
stat_prefix: s
http_filters:
- name: envoy.filters.http.rbac
  typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC }
- name: envoy.filters.http.router
  typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
"#,
            Some(&Factory),
        )
        .unwrap();
        assert!(matches!(c[0], HttpFilter::Rbac(_)));
    }

    #[test]
    fn unknown_or_misplaced_filters_are_errors() {
        let lua = r#"
stat_prefix: s
http_filters:
- name: envoy.filters.http.lua
  typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua }
- name: envoy.filters.http.router
  typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
"#;
        let e = chain(lua, None).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("http_filters[0] (\"envoy.filters.http.lua\")"),
            "{e}"
        );
        let no_router = "{ stat_prefix: s, http_filters: [{ name: istio.stats, typed_config: { '@type': type.googleapis.com/stats.PluginConfig } }] }";
        assert!(chain(no_router, None).is_err());
        let active_fault = r#"
stat_prefix: s
http_filters:
- name: envoy.filters.http.fault
  typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault, abort: { http_status: 503, percentage: { numerator: 1 } } }
- name: envoy.filters.http.router
  typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
"#;
        assert!(
            chain(active_fault, None).is_err(),
            "a fault filter that injects faults must not be skipped"
        );
    }
}
