//! Config from the control plane and the bootstrap: xDS resources, bootstrap text, RBAC
//! filter configs.

use std::sync::Arc;

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::envoy::config::core::v3::DataSource;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::metrics::v3::StatsConfig;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::secret::Type as SecretType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    DownstreamTlsContext, Secret, UpstreamTlsContext,
};
use envoy_types::pb::google::protobuf::{Any, BoolValue};
use prost::Message;
use proxy::bootstrap::{self, Config};
use proxy::config::cluster::ClusterConfig;
use proxy::config::endpoint::endpoints_from_assignment;
use proxy::config::listener::{FilterChainConfig, ListenerConfig, NetworkFilterConfig};
use proxy::http::hcm::HttpContext;
use proxy::http::route::RouteTable;
use proxy::http::route::config::Validation;
use proxy::listener::active::ActiveListener;
use proxy::proto::{self, Format, UnknownFields};
use proxy::rbac::{HttpRbac, HttpRbacFactory, HttpRbacPerRoute, NetworkRbac};
use proxy::stats::Store;
use proxy::tls::secrets::material;
use proxy::tls::{DownstreamTlsConfig, TlsResources, UpstreamTlsConfig};
use proxy::upstream::ClusterManager;
use xds_client::{Resource, ResourceType};

const TYPES: [ResourceType; 5] = [
    ResourceType::Listener,
    ResourceType::Cluster,
    ResourceType::ClusterLoadAssignment,
    ResourceType::RouteConfiguration,
    ResourceType::Secret,
];

/// xDS resources from arbitrary protobuf bytes, for every type the proxy subscribes to:
/// decoded as xds-client decodes an `Any` off the ADS stream, then converted the way the
/// proxy applies it (LDS: `ListenerConfig` and `ActiveListener::build`, which builds the
/// filter chains with their TLS, network RBAC, TCP proxy and HTTP connection manager, and
/// the match table; CDS: `ClusterConfig` with its upstream TLS; EDS: endpoints; RDS:
/// `RouteTable`; SDS: the secret material), plus the TLS contexts of transport sockets on
/// their own.
///
/// Input: one selector byte (mod 8: 0 LDS, 1 CDS, 2 EDS, 3 RDS, 4 SDS, 5 downstream TLS
/// context, 6 upstream TLS context, 7 EDS of a DNS cluster), then the protobuf encoding.
pub fn xds_resource(data: &[u8]) {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    match selector % 8 {
        i @ 0..=4 => resource(TYPES[usize::from(i)], bytes),
        5 => {
            if let Ok(ctx) = DownstreamTlsContext::decode(bytes) {
                let _ = DownstreamTlsConfig::from_proto(&ctx);
            }
        }
        6 => {
            if let Ok(ctx) = UpstreamTlsContext::decode(bytes) {
                let _ = UpstreamTlsConfig::from_proto(&ctx);
            }
        }
        _ => {
            // EDS for a DNS cluster: host names allowed.
            if let Ok(Resource::ClusterLoadAssignment(cla)) =
                decode(ResourceType::ClusterLoadAssignment, bytes)
            {
                let _ = endpoints_from_assignment(&cla, true);
            }
        }
    }
}

fn decode(resource_type: ResourceType, bytes: &[u8]) -> Result<Resource, xds_client::DecodeError> {
    let any = Any {
        type_url: resource_type.type_url().to_string(),
        value: bytes.to_vec(),
    };
    Resource::decode(resource_type, &any)
}

fn resource(resource_type: ResourceType, bytes: &[u8]) {
    let Ok(resource) = decode(resource_type, bytes) else {
        return;
    };
    match resource {
        Resource::Listener(l) => {
            if let Ok(cfg) = ListenerConfig::from_proto(&l) {
                build_listener(cfg, "fuzz");
            }
        }
        Resource::Cluster(c) => {
            let _ = ClusterConfig::from_proto(&c);
        }
        Resource::ClusterLoadAssignment(cla) => {
            let _ = endpoints_from_assignment(&cla, false);
        }
        Resource::RouteConfiguration(rc) => {
            let validation = Validation {
                clusters: None,
                default: false,
            };
            let _ = RouteTable::new(&rc, validation);
        }
        Resource::Secret(s) => {
            // Secrets naming files or environment variables would read this machine's.
            if !refers_outside(&s) {
                let _ = material::parse(&s);
            }
        }
    }
}

fn refers_outside(s: &Secret) -> bool {
    let outside = |ds: &Option<DataSource>| {
        matches!(
            ds.as_ref().and_then(|d| d.specifier.as_ref()),
            Some(Specifier::Filename(_) | Specifier::EnvironmentVariable(_))
        )
    };
    match &s.r#type {
        Some(SecretType::TlsCertificate(c)) => {
            outside(&c.certificate_chain) || outside(&c.private_key)
        }
        Some(SecretType::ValidationContext(v)) => outside(&v.trusted_ca),
        _ => false,
    }
}

/// Bootstrap loading from arbitrary text: `--config-yaml` through `bootstrap::load` (parse,
/// proto3 JSON mapping, validation), or a JSON `-c` file's text through the same decoder and
/// checks; the static listeners and clusters of a bootstrap that loads are then converted as
/// [`xds_resource`] converts LDS and CDS.
///
/// Input: one selector byte (bit 0: JSON instead of YAML; bit 1: ignore unknown fields, as
/// `--allow-unknown-static-fields`), then the text.
pub fn bootstrap(data: &[u8]) {
    let Some((&selector, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let unknown = if selector & 2 == 0 {
        UnknownFields::Reject
    } else {
        UnknownFields::Ignore
    };
    let loaded = if selector & 1 == 0 {
        let config = Config {
            config_yaml: Some(text.to_string()),
            unknown_fields: unknown,
            ..Config::default()
        };
        bootstrap::load(&config).ok().map(|l| l.bootstrap)
    } else {
        proto::decode::<Bootstrap>(text, Format::Json, unknown)
            .ok()
            .and_then(|d| proto::validate(&d.message, unknown).ok().map(|_| d.message))
    };
    let Some(bootstrap) = loaded else {
        return;
    };
    if let Some(statics) = &bootstrap.static_resources {
        for l in &statics.listeners {
            if let Ok(cfg) = ListenerConfig::from_proto(l) {
                build_listener(cfg, "");
            }
        }
        for c in &statics.clusters {
            let _ = ClusterConfig::from_proto(c);
        }
    }
}

const NETWORK_RBAC: &str = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC";
const HTTP_RBAC: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
const HTTP_RBAC_PER_ROUTE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute";

/// RBAC config compilation from an arbitrary `typed_config`: `NetworkRbac::from_any`,
/// `HttpRbac::from_any`, `HttpRbacPerRoute::from_any`.
///
/// Input: one selector byte (mod 3: network, HTTP, HTTP per route), then the RBAC proto's
/// encoding (the `Any` value).
pub fn rbac_config(data: &[u8]) {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let any = |type_url: &str| Any {
        type_url: type_url.to_string(),
        value: bytes.to_vec(),
    };
    let Some(store) = store() else {
        return;
    };
    match selector % 3 {
        0 => {
            let _ = NetworkRbac::from_any(&any(NETWORK_RBAC), &store);
        }
        1 => {
            let _ = HttpRbac::from_any(&any(HTTP_RBAC), &store, "http.inbound_0.0.0.0_80.");
        }
        _ => {
            let _ = HttpRbacPerRoute::from_any(&any(HTTP_RBAC_PER_ROUTE));
        }
    }
}

/// A fresh stats store per input, without Envoy's default tag regexes (they are the same for
/// every input and would dominate the time per execution). `None` never happens: a stats
/// config without tags is valid.
fn store() -> Option<Store> {
    let config = StatsConfig {
        use_all_default_tags: Some(BoolValue { value: false }),
        ..Default::default()
    };
    Store::new(Some(&config)).ok()
}

/// Builds a listener as the listener manager does (a fresh HTTP context per input: empty
/// cluster manager, RDS store and pools, the RBAC engine), after dropping its access logs.
fn build_listener(mut cfg: ListenerConfig, version_info: &str) {
    let Some(store) = store() else {
        return;
    };
    for chain in cfg.chains.iter_mut().chain(cfg.default_chain.as_mut()) {
        drop_access_logs(chain);
    }
    let tls = TlsResources::default();
    let clusters = ClusterManager::with_tls(store.clone(), tls.clone());
    let mut http = HttpContext::new(clusters, store.clone());
    http.rbac = Some(HttpRbacFactory::new(store));
    let _ = ActiveListener::build(cfg, None, &http, &tls, version_info);
}

/// Access logs open (create) the file they name when the filter is built: a fuzzer must not
/// write files where inputs say. The access log configs are dropped from TCP proxies and
/// HTTP connection managers before they are built.
fn drop_access_logs(chain: &mut FilterChainConfig) {
    for filter in &mut chain.filters {
        match filter {
            NetworkFilterConfig::TcpProxy(c) => c.access_log.clear(),
            NetworkFilterConfig::HttpConnectionManager(hcm) if !hcm.access_log.is_empty() => {
                let mut proto = (**hcm).clone();
                proto.access_log.clear();
                *hcm = Arc::new(proto);
            }
            _ => {}
        }
    }
}
