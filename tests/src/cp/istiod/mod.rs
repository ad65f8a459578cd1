//! What istiod would send one sidecar, generated from a [`MeshSpec`]: CDS, EDS, LDS and RDS
//! as proto3 JSON (encoded by [`crate::cp::proto`]), plus the bootstrap pilot-agent writes.

pub mod authn;
pub mod bootstrap;
pub mod clusters;
pub mod listeners;
pub mod rbac;
pub mod routes;
pub mod tls;

use serde_json::Value;

use crate::cp::model::{MeshSpec, Workload};
use crate::cp::proto;

const HCM: &str = "envoy.filters.network.http_connection_manager";

/// How much of istiod's output to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Everything istiod sends.
    Istio,
    /// istiod's output without anything HTTP: no HTTP connection manager chains or
    /// listeners, no routes, and no HTTP listeners in the bootstrap. For bringing up a
    /// proxy that handles only TCP so far; meshes meant for it have only TCP services.
    TcpOnly,
}

/// The xDS resources of one sidecar, by type URL, in istiod's push order.
pub fn sidecar_resources(
    spec: &MeshSpec,
    w: &Workload,
    profile: Profile,
) -> Vec<(&'static str, Vec<Value>)> {
    let mut listeners = listeners::listeners(spec, w);
    let mut routes = routes::routes(spec, w);
    if profile == Profile::TcpOnly {
        listeners.retain_mut(|l| {
            if let Some(chains) = l["filter_chains"].as_array_mut() {
                chains.retain(|c| !uses_hcm(c));
            }
            if let Some(obj) = l.as_object_mut()
                && obj.get("default_filter_chain").is_some_and(uses_hcm)
            {
                obj.remove("default_filter_chain");
            }
            l["filter_chains"].as_array().is_some_and(|c| !c.is_empty())
        });
        routes.clear();
    }
    vec![
        (proto::CLUSTER, clusters::clusters(spec, w)),
        (proto::ENDPOINTS, clusters::endpoints(spec)),
        (proto::LISTENER, listeners),
        (proto::ROUTE, routes),
    ]
}

fn uses_hcm(chain: &Value) -> bool {
    chain["filters"]
        .as_array()
        .is_some_and(|f| f.iter().any(|f| f["name"] == HCM))
}
