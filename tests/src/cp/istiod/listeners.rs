//! LDS for a sidecar: `virtualOutbound` (15001) handing captured connections to
//! per-service listeners, and `virtualInbound` (15006) with the filter chains istiod builds
//! for PERMISSIVE, STRICT and DISABLE (`filterchain_options.go`).

use serde_json::{Value, json};

use super::authn::workload_mode;
use super::clusters::{inbound_name, outbound_name};
use super::rbac::{self, Layer};
use super::tls;
use crate::cp::model::{MeshSpec, MtlsMode, Protocol, Workload};

/// Every listener `w`'s sidecar gets.
pub fn listeners(spec: &MeshSpec, w: &Workload) -> Vec<Value> {
    let mut out = vec![virtual_outbound()];
    let mut http_ports: Vec<u16> = Vec::new();
    for svc in &spec.services {
        for port in &svc.ports {
            match port.protocol {
                Protocol::Http => http_ports.push(port.port),
                Protocol::Tcp => out.push(outbound_tcp(
                    &format!("{}_{}", svc.vip, port.port),
                    &svc.vip.to_string(),
                    port.port,
                    &outbound_name(svc, port.port),
                )),
            }
        }
    }
    http_ports.sort_unstable();
    http_ports.dedup();
    out.extend(http_ports.into_iter().map(outbound_http));
    out.push(virtual_inbound(spec, w));
    out
}

fn tcp_proxy(cluster: &str) -> Value {
    json!({
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": cluster,
            "cluster": cluster
        }
    })
}

fn virtual_outbound() -> Value {
    json!({
        "name": "virtualOutbound",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15001}},
        "filter_chains": [
            {
                "filter_chain_match": {"destination_port": 15001},
                "filters": [tcp_proxy("BlackHoleCluster")],
                "name": "virtualOutbound-blackhole"
            },
            {"filters": [tcp_proxy("PassthroughCluster")], "name": "virtualOutbound-catchall-tcp"}
        ],
        "use_original_dst": true,
        "traffic_direction": "OUTBOUND"
    })
}

fn outbound_tcp(name: &str, vip: &str, port: u16, cluster: &str) -> Value {
    json!({
        "name": name,
        "address": {"socket_address": {"address": vip, "port_value": port}},
        "filter_chains": [{"filters": [tcp_proxy(cluster)]}],
        "traffic_direction": "OUTBOUND",
        "bind_to_port": false
    })
}

/// HTTP filters istiod puts after its own (Istio-only) ones; `rbac` goes first on inbound.
fn http_filters(rbac: Vec<Value>) -> Vec<Value> {
    let mut filters = rbac;
    filters.extend([
        json!({"name": "envoy.filters.http.grpc_stats", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
            "emit_filter_state": true, "stats_for_all_methods": false}}),
        json!({"name": "envoy.filters.http.fault", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}}),
        json!({"name": "envoy.filters.http.cors", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}}),
        json!({"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}),
    ]);
    filters
}

/// The HCM settings istiod shares between inbound and outbound.
fn hcm(stat_prefix: &str, filters: Vec<Value>) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_prefix,
        "http_filters": filters,
        "use_remote_address": false,
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        "stream_idle_timeout": "0s",
        "normalize_path": true,
        "request_id_extension": {"typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig",
            "use_request_id_for_trace_sampling": true
        }},
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED"
    })
}

fn outbound_http(port: u16) -> Value {
    let name = format!("0.0.0.0_{port}");
    let mut config = hcm(&format!("outbound_{name}"), http_filters(Vec::new()));
    config["rds"] = json!({
        "config_source": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"},
        "route_config_name": port.to_string()
    });
    json!({
        "name": name,
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
        "filter_chains": [{"filters": [
            {"name": "envoy.filters.network.http_connection_manager", "typed_config": config}
        ]}],
        "default_filter_chain": {
            "filter_chain_match": {},
            "filters": [tcp_proxy("PassthroughCluster")],
            "name": "PassthroughFilterChain"
        },
        "traffic_direction": "OUTBOUND",
        "bind_to_port": false
    })
}

/// What an inbound chain leads to.
struct Target<'a> {
    /// `None` for the passthrough chains.
    port: Option<u16>,
    cluster: &'a str,
    /// The service port name for the route's virtual host (`inbound|http|<port>`).
    service_port: u16,
}

/// The inbound HCM: XFCC appended from the peer certificate, RBAC first.
fn inbound_hcm(spec: &MeshSpec, w: &Workload, t: &Target) -> Value {
    let prefix = match t.port {
        Some(p) => format!("inbound_0.0.0.0_{p}"),
        None => t.cluster.to_string(),
    };
    let mut config = hcm(&prefix, http_filters(rbac::filters(spec, w, Layer::Http)));
    config["route_config"] = json!({
        "name": t.port.map_or_else(|| t.cluster.to_string(), inbound_name),
        "virtual_hosts": [{
            "name": format!("inbound|http|{}", t.service_port),
            "domains": ["*"],
            "routes": [{
                "match": {"prefix": "/"},
                "route": {
                    "cluster": t.cluster,
                    "timeout": "0s",
                    "max_stream_duration": {"max_stream_duration": "0s", "grpc_timeout_header_max": "0s"}
                },
                "name": "default"
            }]
        }],
        "validate_clusters": false
    });
    config["server_name"] = json!("istio-envoy");
    config["forward_client_cert_details"] = json!("APPEND_FORWARD");
    config["set_current_client_cert_details"] = json!({"subject": true, "dns": true, "uri": true});
    json!([{"name": "envoy.filters.network.http_connection_manager", "typed_config": config}])
}

fn inbound_tcp(spec: &MeshSpec, w: &Workload, t: &Target) -> Value {
    let mut filters = rbac::filters(spec, w, Layer::Tcp);
    filters.push(tcp_proxy(t.cluster));
    json!(filters)
}

/// One filter chain: `transport` is `tls` or `raw_buffer`; `terminate` adds the
/// DownstreamTlsContext with the ALPN for `http` or TCP.
fn chain(
    name: &str,
    port: Option<u16>,
    transport: &str,
    alpn: &[&str],
    filters: Value,
    terminate: Option<bool>,
) -> Value {
    let mut m = json!({"transport_protocol": transport});
    match port {
        Some(p) => m["destination_port"] = json!(p),
        None => m["prefix_ranges"] = json!([{"address_prefix": "0.0.0.0", "prefix_len": 0}]),
    }
    if !alpn.is_empty() {
        m["application_protocols"] = json!(alpn);
    }
    let mut c = json!({"filter_chain_match": m, "filters": filters, "name": name});
    if let Some(http) = terminate {
        let alpn: &[&str] = if http {
            &tls::SERVER_HTTP_ALPN
        } else {
            &tls::SERVER_TCP_ALPN
        };
        c["transport_socket"] = tls::downstream_socket(alpn);
    }
    c
}

const MTLS_HTTP_ALPN: [&str; 3] = ["istio-http/1.0", "istio-http/1.1", "istio-h2"];
const ALL_ISTIO_ALPN: [&str; 5] = [
    "istio",
    "istio-peer-exchange",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];

/// The passthrough chains (no service port): protocol sniffed with the inspectors.
fn passthrough_chains(spec: &MeshSpec, w: &Workload, mode: MtlsMode) -> Vec<Value> {
    let t = Target {
        port: None,
        cluster: "InboundPassthroughCluster",
        service_port: 0,
    };
    let (http, tcp) = (inbound_hcm(spec, w, &t), inbound_tcp(spec, w, &t));
    let (h, n) = ("virtualInbound-catchall-http", "virtualInbound");
    let pe = ["istio-peer-exchange", "istio"];
    match mode {
        MtlsMode::Strict => vec![
            chain(h, None, "tls", &MTLS_HTTP_ALPN, http, Some(true)),
            chain(n, None, "tls", &[], tcp, Some(false)),
        ],
        MtlsMode::Disable => vec![
            chain(h, None, "raw_buffer", &["http/1.1", "h2c"], http, None),
            chain(n, None, "raw_buffer", &[], tcp, None),
        ],
        _ => vec![
            chain(h, None, "tls", &MTLS_HTTP_ALPN, http.clone(), Some(true)),
            chain(h, None, "raw_buffer", &["http/1.1", "h2c"], http, None),
            chain(n, None, "tls", &pe, tcp.clone(), Some(false)),
            chain(n, None, "raw_buffer", &[], tcp.clone(), None),
            chain(n, None, "tls", &[], tcp, None),
        ],
    }
}

/// The chains of one service target port, by the port's protocol and mode.
fn port_chains(spec: &MeshSpec, w: &Workload, t: &Target, protocol: Protocol) -> Vec<Value> {
    let port = t.port;
    let name = format!("0.0.0.0_{}", port.unwrap_or_default());
    let mode = workload_mode(spec, w, port);
    let http = protocol == Protocol::Http;
    let filters = if http {
        inbound_hcm(spec, w, t)
    } else {
        inbound_tcp(spec, w, t)
    };
    let mtls = chain(
        &name,
        port,
        "tls",
        &ALL_ISTIO_ALPN,
        filters.clone(),
        Some(http),
    );
    let plain = chain(&name, port, "raw_buffer", &[], filters.clone(), None);
    match (mode, http) {
        (MtlsMode::Strict, _) => vec![chain(&name, port, "tls", &[], filters, Some(http))],
        (MtlsMode::Disable, _) => vec![plain],
        (_, true) => vec![mtls, plain],
        (_, false) => vec![mtls, chain(&name, port, "tls", &[], filters, None), plain],
    }
}

fn virtual_inbound(spec: &MeshSpec, w: &Workload) -> Value {
    let mut chains = vec![json!({
        "filter_chain_match": {"destination_port": 15006},
        "filters": [tcp_proxy("BlackHoleCluster")],
        "name": "virtualInbound-blackhole"
    })];
    chains.extend(passthrough_chains(spec, w, workload_mode(spec, w, None)));
    let mut explicit_ports = vec![15006u16];
    for svc in spec.services_of(w) {
        for port in &svc.ports {
            if explicit_ports.contains(&port.target_port) {
                continue;
            }
            explicit_ports.push(port.target_port);
            let cluster = inbound_name(port.target_port);
            let t = Target {
                port: Some(port.target_port),
                cluster: &cluster,
                service_port: port.port,
            };
            chains.extend(port_chains(spec, w, &t, port.protocol));
        }
    }
    let mut disabled: Vec<Value> = explicit_ports
        .iter()
        .map(|p| json!({"destination_port_range": {"start": p, "end": p + 1}}))
        .collect();
    // A MatchSet needs at least two rules.
    let http_disabled = if disabled.len() == 1 {
        disabled.remove(0)
    } else {
        json!({"or_match": {"rules": disabled}})
    };
    json!({
        "name": "virtualInbound",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15006}},
        "filter_chains": chains,
        "listener_filters": [
            {"name": "envoy.filters.listener.original_dst", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"}},
            {"name": "envoy.filters.listener.tls_inspector", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"},
             "filter_disabled": {"destination_port_range": {"start": 15006, "end": 15007}}},
            {"name": "envoy.filters.listener.http_inspector", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"},
             "filter_disabled": http_disabled}
        ],
        "listener_filters_timeout": "0s",
        "traffic_direction": "INBOUND",
        "continue_on_listener_filters_timeout": true
    })
}
