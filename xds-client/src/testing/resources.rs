//! Small builders for resources and responses, so tests read as the protocol does.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryResponse, DiscoveryResponse, Resource as WireResource,
};

use crate::resource::{Resource, ResourceType};

/// A `Cluster` with only a name.
pub fn cluster(name: &str) -> Resource {
    Cluster {
        name: name.into(),
        ..Default::default()
    }
    .into()
}

/// A `ClusterLoadAssignment` for `cluster_name`, without endpoints.
pub fn cluster_load_assignment(cluster_name: &str) -> Resource {
    ClusterLoadAssignment {
        cluster_name: cluster_name.into(),
        ..Default::default()
    }
    .into()
}

/// A `Listener` with only a name.
pub fn listener(name: &str) -> Resource {
    Listener {
        name: name.into(),
        ..Default::default()
    }
    .into()
}

/// A `RouteConfiguration` with only a name.
pub fn route_configuration(name: &str) -> Resource {
    RouteConfiguration {
        name: name.into(),
        ..Default::default()
    }
    .into()
}

/// A `Secret` with only a name.
pub fn secret(name: &str) -> Resource {
    Secret {
        name: name.into(),
        ..Default::default()
    }
    .into()
}

/// A state-of-the-world response.
pub fn sotw_response(
    resource_type: ResourceType,
    version_info: &str,
    nonce: &str,
    resources: &[Resource],
) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version_info.into(),
        resources: resources.iter().map(Resource::to_any).collect(),
        type_url: resource_type.type_url().into(),
        nonce: nonce.into(),
        ..Default::default()
    }
}

/// A delta response: `(resource, version)` pairs and removed names.
pub fn delta_response(
    resource_type: ResourceType,
    nonce: &str,
    resources: &[(Resource, &str)],
    removed: &[&str],
) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        system_version_info: format!("system-{nonce}"),
        resources: resources
            .iter()
            .map(|(r, version)| WireResource {
                name: r.name().into(),
                version: (*version).into(),
                resource: Some(r.to_any()),
                ..Default::default()
            })
            .collect(),
        type_url: resource_type.type_url().into(),
        removed_resources: removed.iter().map(|s| (*s).into()).collect(),
        nonce: nonce.into(),
        ..Default::default()
    }
}
