//! CDS and EDS for a sidecar: one `outbound|<port>||<host>` cluster per service port (with
//! auto-mTLS), the passthrough and blackhole clusters, and `inbound|<port>||` for the
//! workload's own service ports.

use serde_json::{Value, json};

use super::authn::{ClusterTls, cluster_tls, endpoint_is_mtls};
use super::tls;
use crate::cp::model::{MeshSpec, Service, ServicePort, TRUST_DOMAIN, Workload};

/// Istio's cluster name for a service port (no subset).
pub fn outbound_name(svc: &Service, port: u16) -> String {
    format!("outbound|{port}||{}", svc.hostname())
}

/// Istio's inbound cluster name for a target port.
pub fn inbound_name(target_port: u16) -> String {
    format!("inbound|{target_port}||")
}

fn circuit_breakers() -> Value {
    json!({"thresholds": [{
        "max_connections": 4294967295u64,
        "max_pending_requests": 4294967295u64,
        "max_requests": 4294967295u64,
        "max_retries": 4294967295u64,
        "track_remaining": true
    }]})
}

fn ads() -> Value {
    json!({"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"})
}

/// Every cluster `w`'s sidecar gets.
pub fn clusters(spec: &MeshSpec, w: &Workload) -> Vec<Value> {
    let mut out = Vec::new();
    for svc in &spec.services {
        for port in &svc.ports {
            out.push(outbound_cluster(spec, svc, port));
        }
    }
    out.push(json!({
        "name": "BlackHoleCluster",
        "type": "STATIC",
        "connect_timeout": "10s"
    }));
    out.push(passthrough("PassthroughCluster", false));
    out.push(passthrough("InboundPassthroughCluster", true));
    let mut targets: Vec<u16> = spec
        .services_of(w)
        .flat_map(|s| s.ports.iter().map(|p| p.target_port))
        .collect();
    targets.sort_unstable();
    targets.dedup();
    for target in targets {
        let mut c = passthrough(&inbound_name(target), true);
        c["metadata"] = json!({"filter_metadata": {"istio": {"services": spec
            .services_of(w)
            .filter(|s| s.ports.iter().any(|p| p.target_port == target))
            .map(|s| json!({"host": s.hostname(), "name": s.name, "namespace": s.namespace}))
            .collect::<Vec<_>>()}}});
        out.push(c);
    }
    out
}

fn outbound_cluster(spec: &MeshSpec, svc: &Service, port: &ServicePort) -> Value {
    let name = outbound_name(svc, port.port);
    let mut c = json!({
        "name": name,
        "type": "EDS",
        "eds_cluster_config": {"eds_config": ads(), "service_name": name},
        "connect_timeout": "10s",
        "lb_policy": "LEAST_REQUEST",
        "circuit_breakers": circuit_breakers(),
        "common_lb_config": {},
        "metadata": {"filter_metadata": {"istio": {
            "default_original_port": port.port,
            "services": [{"host": svc.hostname(), "name": svc.name, "namespace": svc.namespace}]
        }}}
    });
    let mut sans: Vec<String> = spec
        .endpoints(svc)
        .map(Workload::spiffe_id)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if sans.is_empty() {
        sans.push(format!(
            "spiffe://{TRUST_DOMAIN}/ns/{}/sa/default",
            svc.namespace
        ));
    }
    let socket = tls::upstream_socket(port.port, &svc.hostname(), &sans);
    match cluster_tls(spec, svc) {
        ClusterTls::Auto => {
            c["transport_socket_matches"] = json!([
                {"name": "tlsMode-istio", "match": {"tlsMode": "istio"}, "transport_socket": socket},
                {"name": "tlsMode-disabled", "match": {}, "transport_socket": tls::raw_buffer()}
            ]);
        }
        ClusterTls::IstioMutual => c["transport_socket"] = socket,
        ClusterTls::Plaintext => {}
    }
    c
}

/// An ORIGINAL_DST cluster; inbound ones bind to 127.0.0.6 so iptables lets them through.
fn passthrough(name: &str, inbound: bool) -> Value {
    let mut c = json!({
        "name": name,
        "type": "ORIGINAL_DST",
        "connect_timeout": "10s",
        "lb_policy": "CLUSTER_PROVIDED",
        "circuit_breakers": circuit_breakers(),
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "use_downstream_protocol_config": {
                    "http_protocol_options": {},
                    "http2_protocol_options": {}
                }
            }
        }
    });
    if inbound {
        c["upstream_bind_config"] =
            json!({"source_address": {"address": "127.0.0.6", "port_value": 0}});
    }
    c
}

/// EDS: one ClusterLoadAssignment per outbound cluster; sidecar endpoints carry
/// `tlsMode: istio` unless mTLS is disabled for them.
pub fn endpoints(spec: &MeshSpec) -> Vec<Value> {
    let mut out = Vec::new();
    for svc in &spec.services {
        for port in &svc.ports {
            let lb_endpoints: Vec<Value> = spec
                .endpoints(svc)
                .map(|w| {
                    let mut meta = json!({"istio": {"workload": format!(
                        "{};{};{};latest;Kubernetes", w.name, w.namespace, w.app
                    )}});
                    if endpoint_is_mtls(spec, svc, w, port.target_port) {
                        meta["envoy.transport_socket_match"] = json!({"tlsMode": "istio"});
                    }
                    json!({
                        "endpoint": {"address": {"socket_address": {
                            "address": w.ip.to_string(),
                            "port_value": port.target_port
                        }}},
                        "health_status": "HEALTHY",
                        "metadata": {"filter_metadata": meta},
                        "load_balancing_weight": 1
                    })
                })
                .collect();
            let mut cla = json!({"cluster_name": outbound_name(svc, port.port), "endpoints": []});
            if !lb_endpoints.is_empty() {
                cla["endpoints"] = json!([{
                    "locality": {},
                    "lb_endpoints": lb_endpoints,
                    "load_balancing_weight": lb_endpoints.len()
                }]);
            }
            out.push(cla);
        }
    }
    out
}
