//! RDS: one RouteConfiguration per outbound HTTP port (named by the port number), with a
//! virtual host per service and the `allow_any` fallback to PassthroughCluster.

use serde_json::{Value, json};

use super::clusters::outbound_name;
use crate::cp::model::{MeshSpec, Protocol, Service, Workload};

/// Route configurations for every HTTP port, as seen from `w` (short names resolve in its
/// own namespace).
pub fn routes(spec: &MeshSpec, w: &Workload) -> Vec<Value> {
    let mut ports: Vec<u16> = spec
        .services
        .iter()
        .flat_map(|s| s.ports.iter())
        .filter(|p| p.protocol == Protocol::Http)
        .map(|p| p.port)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
        .into_iter()
        .map(|port| route_config(spec, w, port))
        .collect()
}

fn route_config(spec: &MeshSpec, w: &Workload, port: u16) -> Value {
    let mut hosts: Vec<Value> = spec
        .services
        .iter()
        .filter(|s| {
            s.ports
                .iter()
                .any(|p| p.port == port && p.protocol == Protocol::Http)
        })
        .map(|s| virtual_host(s, w, port))
        .collect();
    hosts.push(json!({
        "name": "allow_any",
        "domains": ["*"],
        "routes": [{
            "match": {"prefix": "/"},
            "route": {"cluster": "PassthroughCluster", "timeout": "0s"},
            "name": "allow_any"
        }],
        "include_request_attempt_count": true
    }));
    json!({"name": port.to_string(), "virtual_hosts": hosts, "validate_clusters": false})
}

/// The names a client may use for `svc`, with and without the port.
fn domains(svc: &Service, w: &Workload, port: u16) -> Vec<String> {
    let fqdn = svc.hostname();
    let mut names = vec![
        fqdn,
        format!("{}.{}.svc", svc.name, svc.namespace),
        format!("{}.{}", svc.name, svc.namespace),
    ];
    if svc.namespace == w.namespace {
        names.push(svc.name.clone());
    }
    names.push(svc.vip.to_string());
    let with_port: Vec<String> = names.iter().map(|n| format!("{n}:{port}")).collect();
    names.into_iter().chain(with_port).collect()
}

fn virtual_host(svc: &Service, w: &Workload, port: u16) -> Value {
    let cluster = outbound_name(svc, port);
    json!({
        "name": format!("{}:{port}", svc.hostname()),
        "domains": domains(svc, w, port),
        "routes": [{
            "match": {"prefix": "/"},
            "route": {
                "cluster": cluster,
                "timeout": "0s",
                "retry_policy": {
                    "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
                    "num_retries": 2,
                    "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts",
                        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}],
                    "host_selection_retry_max_attempts": "5",
                    "retriable_status_codes": [503]
                }
            },
            "decorator": {"operation": format!("{}:{port}/*", svc.hostname())},
            "name": "default"
        }],
        "include_request_attempt_count": true
    })
}
