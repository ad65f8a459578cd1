//! xDS resources from arbitrary protobuf bytes, for every type the proxy subscribes to:
//! decoded as xds-client decodes an `Any` off the ADS stream, then converted the way the
//! proxy applies it (LDS: ListenerConfig and the listener's filter chains, RBAC and match
//! table; CDS: ClusterConfig with its upstream TLS; EDS: endpoints; RDS: RouteTable; SDS:
//! the secret material), plus the TLS contexts of transport sockets on their own.
//!
//! Input: one selector byte, then the resource's protobuf encoding.
#![no_main]

#[path = "common.rs"]
mod common;

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    DownstreamTlsContext, UpstreamTlsContext,
};
use envoy_types::pb::google::protobuf::Any;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use proxy::config::cluster::ClusterConfig;
use proxy::config::endpoint::endpoints_from_assignment;
use proxy::config::listener::ListenerConfig;
use proxy::http::route::RouteTable;
use proxy::http::route::config::Validation;
use proxy::listener::active::ActiveListener;
use proxy::tls::secrets::material;
use proxy::tls::{DownstreamTlsConfig, UpstreamTlsConfig};
use xds_client::{Resource, ResourceType};

const TYPES: [ResourceType; 5] = [
    ResourceType::Listener,
    ResourceType::Cluster,
    ResourceType::ClusterLoadAssignment,
    ResourceType::RouteConfiguration,
    ResourceType::Secret,
];

fuzz_target!(|data: &[u8]| {
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
});

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
                let _ = ActiveListener::build(cfg, None, &common::store(), "fuzz");
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
            let s = *s;
            if !refers_outside(&s) {
                let _ = material::parse(&s);
            }
        }
    }
}

fn refers_outside(
    s: &envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret,
) -> bool {
    use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::secret::Type;
    let outside = |ds: &Option<envoy_types::pb::envoy::config::core::v3::DataSource>| {
        matches!(
            ds.as_ref().and_then(|d| d.specifier.as_ref()),
            Some(Specifier::Filename(_) | Specifier::EnvironmentVariable(_))
        )
    };
    match &s.r#type {
        Some(Type::TlsCertificate(c)) => outside(&c.certificate_chain) || outside(&c.private_key),
        Some(Type::ValidationContext(v)) => outside(&v.trusted_ca),
        _ => false,
    }
}
