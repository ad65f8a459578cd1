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

/// The xDS resources of one sidecar, by type URL, in istiod's push order.
pub fn sidecar_resources(spec: &MeshSpec, w: &Workload) -> Vec<(&'static str, Vec<Value>)> {
    vec![
        (proto::CLUSTER, clusters::clusters(spec, w)),
        (proto::ENDPOINTS, clusters::endpoints(spec)),
        (proto::LISTENER, listeners::listeners(spec, w)),
        (proto::ROUTE, routes::routes(spec, w)),
    ]
}
