//! Istio's TLS contexts: workload certificates from SDS (`default`, `ROOTCA` on the
//! `sds-grpc` cluster), SPIFFE SAN checks, Istio's ALPN markers.

use serde_json::{Value, json};

use crate::cp::model::TRUST_DOMAIN;

/// ALPN a client sidecar offers on auto-mTLS and ISTIO_MUTUAL clusters.
pub const CLIENT_ALPN: [&str; 2] = ["istio-peer-exchange", "istio"];
/// ALPN the server advertises on HTTP chains.
pub const SERVER_HTTP_ALPN: [&str; 2] = ["h2", "http/1.1"];
/// ALPN the server advertises on TCP chains.
pub const SERVER_TCP_ALPN: [&str; 3] = ["istio-peer-exchange", "h2", "http/1.1"];

/// `sds_config` for the agent's SDS socket (`pkg/model/authentication.go`).
fn sds_config() -> Value {
    json!({
        "api_config_source": {
            "api_type": "GRPC",
            "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}],
            "set_node_on_first_message_only": true,
            "transport_api_version": "V3"
        },
        "initial_fetch_timeout": "0s",
        "resource_api_version": "V3"
    })
}

fn common(alpn: &[&str], san_matchers: Value, server: bool) -> Value {
    let mut tls_params = json!({
        "tls_minimum_protocol_version": "TLSv1_2",
        "tls_maximum_protocol_version": "TLSv1_3"
    });
    if server {
        tls_params["cipher_suites"] = json!([
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "ECDHE-RSA-AES256-GCM-SHA384",
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "ECDHE-RSA-AES128-GCM-SHA256",
            "AES256-GCM-SHA384",
            "AES128-GCM-SHA256"
        ]);
    }
    json!({
        "tls_params": tls_params,
        "alpn_protocols": alpn,
        "tls_certificate_sds_secret_configs": [{"name": "default", "sds_config": sds_config()}],
        "combined_validation_context": {
            "default_validation_context": {"match_subject_alt_names": san_matchers},
            "validation_context_sds_secret_config": {"name": "ROOTCA", "sds_config": sds_config()}
        }
    })
}

/// The `envoy.transport_sockets.tls` socket of a client sidecar: SNI
/// `outbound_.<port>_._.<host>`, SANs of the service's accounts.
pub fn upstream_socket(port: u16, host: &str, sans: &[String]) -> Value {
    let matchers: Vec<Value> = sans.iter().map(|s| json!({"exact": s})).collect();
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": common(&CLIENT_ALPN, json!(matchers), false),
            "sni": format!("outbound_.{port}_._.{host}")
        }
    })
}

/// The server side (`BuildInboundTLS`): client certificate required, any SPIFFE id of the
/// trust domain.
pub fn downstream_socket(alpn: &[&str]) -> Value {
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": common(
                alpn,
                json!([{"prefix": format!("spiffe://{TRUST_DOMAIN}/")}]),
                true,
            ),
            "require_client_certificate": true
        }
    })
}

/// The plaintext socket of `tlsMode-disabled`.
pub fn raw_buffer() -> Value {
    json!({
        "name": "envoy.transport_sockets.raw_buffer",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
        }
    })
}
