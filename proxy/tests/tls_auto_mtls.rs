#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Auto-mTLS through the real connect path, ours to ours: a client cluster built as istiod
//! builds it (`transport_socket_matches` tlsMode-istio / tlsMode-disabled) reaches a sidecar
//! endpoint over mTLS and a legacy endpoint in plaintext; an explicit TLS transport
//! (DestinationRule ISTIO_MUTUAL) overrides the endpoint metadata; missing secrets and
//! failed handshakes are connect failures, never plaintext.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster as ClusterProto;
use proxy::config::cluster::ClusterConfig;
use proxy::io::Prefixed;
use proxy::proto::{Format, UnknownFields, decode};
use proxy::tls::{DownstreamTls, SecretStore, TlsResources};
use proxy::upstream::connect::{ConnectOptions, connect_host, connect_host_with};
use proxy::upstream::{ClusterManager, ConnectError, UpstreamIo};
use support::pki::{Ca, indent, istio_inbound, istio_mutual};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/server";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";
const ADS: &str = "{ads: {}, resource_api_version: V3}";

/// A sidecar's inbound side: terminates mTLS with Istio's inbound context and answers each
/// connection with `principal=<peer> alpn=<alpn>` and whatever it then reads.
async fn mesh_server(ca: &Ca) -> SocketAddr {
    let store = SecretStore::new();
    store
        .apply(&[
            ca.leaf(SERVER_ID).secret("default"),
            ca.root_secret("ROOTCA"),
        ])
        .unwrap();
    let ctx = decode(
        &istio_inbound(&["h2", "http/1.1"], ADS),
        Format::Yaml,
        UnknownFields::Reject,
    )
    .unwrap()
    .message;
    let resources = TlsResources {
        secrets: store,
        node: None,
    };
    let tls = DownstreamTls::from_proto(&ctx, &resources, None).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let tls = tls.clone();
            tokio::spawn(async move {
                let Ok((mut io, peer)) = tls.accept(Prefixed::new(Default::default(), tcp)).await
                else {
                    return;
                };
                let alpn = peer
                    .alpn
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default()
                    .to_string();
                let line = format!(
                    "principal={} alpn={alpn}\n",
                    peer.principal().unwrap_or("-")
                );
                let _ = io.write_all(line.as_bytes()).await;
                let _ = io.shutdown().await;
            });
        }
    });
    addr
}

/// A workload without a sidecar: plaintext; says what it received first.
async fn legacy_server() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tcp.write_all(b"plain\n").await;
                let mut buf = vec![0u8; 512];
                if let Ok(n) = tcp.read(&mut buf).await {
                    buf.truncate(n);
                    let _ = tx.send(buf);
                }
            });
        }
    });
    (addr, rx)
}

fn cluster_yaml(name: &str, endpoints: &[(SocketAddr, bool)], transport: &str) -> String {
    let mut eps = String::new();
    for (addr, istio) in endpoints {
        eps.push_str(&format!(
            "    - endpoint: {{address: {{socket_address: {{address: {}, port_value: {}}}}}}}\n",
            addr.ip(),
            addr.port()
        ));
        if *istio {
            eps.push_str("      metadata: {filter_metadata: {envoy.transport_socket_match: {tlsMode: istio}, istio: {workload: \"server;default;server;v1;Kubernetes\"}}}\n");
        }
    }
    format!(
        "name: \"{name}\"\ntype: STATIC\nconnect_timeout: 5s\nload_assignment:\n  cluster_name: \"{name}\"\n  endpoints:\n  - lb_endpoints:\n{eps}{transport}"
    )
}

fn tls_socket(ctx: &str, indent_by: usize) -> String {
    let body = format!(
        "name: envoy.transport_sockets.tls\ntyped_config:\n  \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n{}",
        indent(ctx, 2)
    );
    indent(&body, indent_by)
}

fn auto_mtls_matches() -> String {
    format!(
        "transport_socket_matches:\n- name: tlsMode-istio\n  match: {{tlsMode: istio}}\n  transport_socket:\n{}- name: tlsMode-disabled\n  match: {{}}\n  transport_socket: {{name: envoy.transport_sockets.raw_buffer, typed_config: {{\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}}}}\n",
        tls_socket(
            &istio_mutual(&[SERVER_ID], &["istio-peer-exchange", "istio"], ADS),
            4
        )
    )
}

fn manager(store: &SecretStore, yaml: &str) -> (Arc<ClusterManager>, proxy::stats::Store) {
    let stats = proxy::stats::Store::new(None).unwrap();
    let proto: ClusterProto = decode(yaml, Format::Yaml, UnknownFields::Reject)
        .unwrap()
        .message;
    let config = ClusterConfig::from_proto(&proto).unwrap();
    let cm = ClusterManager::with_tls(
        stats.clone(),
        TlsResources {
            secrets: store.clone(),
            node: None,
        },
    );
    cm.add_static(vec![config]).unwrap();
    (cm, stats)
}

fn client_store(ca: &Ca) -> SecretStore {
    let store = SecretStore::new();
    store
        .apply(&[
            ca.leaf(CLIENT_ID).secret("default"),
            ca.root_secret("ROOTCA"),
        ])
        .unwrap();
    store
}

async fn first_line(io: &mut UpstreamIo) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while io.read(&mut b).await.unwrap() == 1 && b[0] != b'\n' {
        out.push(b[0]);
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn auto_mtls_picks_tls_per_endpoint() {
    let ca = Ca::new("cluster.local");
    let sidecar = mesh_server(&ca).await;
    let (legacy, _rx) = legacy_server().await;
    let store = client_store(&ca);
    let name = "outbound|9080||productpage.default.svc.cluster.local";
    let (cm, _) = manager(
        &store,
        &cluster_yaml(
            name,
            &[(sidecar, true), (legacy, false)],
            &auto_mtls_matches(),
        ),
    );
    let cluster = cm.get(name).unwrap();
    assert!(cluster.is_warm());
    let hosts = cluster.hosts().all.clone();

    let mut up = connect_host(&cluster, hosts[0].clone()).await.unwrap();
    assert!(matches!(up.io, UpstreamIo::Tls(_)));
    // The server saw our SPIFFE identity; no ALPN in common without the metadata exchange.
    assert_eq!(
        first_line(&mut up.io).await,
        format!("principal={CLIENT_ID} alpn=")
    );

    let mut plain = connect_host(&cluster, hosts[1].clone()).await.unwrap();
    assert!(matches!(plain.io, UpstreamIo::Tcp(_)));
    assert_eq!(first_line(&mut plain.io).await, "plain");

    // Istio's istio.alpn override for HTTP/1.1 upstreams.
    let options = ConnectOptions {
        alpn: Some(vec![
            b"istio-http/1.1".to_vec(),
            b"istio".to_vec(),
            b"http/1.1".to_vec(),
        ]),
        ..ConnectOptions::default()
    };
    let mut http = connect_host_with(&cluster, hosts[0].clone(), &options)
        .await
        .unwrap();
    assert_eq!(
        first_line(&mut http.io).await,
        format!("principal={CLIENT_ID} alpn=http/1.1")
    );
    assert_eq!(cluster.stats.scope.counter("ssl.handshake").value(), 2);
}

#[tokio::test]
async fn explicit_tls_overrides_endpoint_metadata_and_never_falls_back() {
    let ca = Ca::new("cluster.local");
    let (legacy, mut rx) = legacy_server().await;
    let store = client_store(&ca);
    let transport = format!(
        "transport_socket:\n{}",
        tls_socket(&istio_mutual(&[SERVER_ID], &["istio"], ADS), 2)
    );
    let (cm, _) = manager(
        &store,
        &cluster_yaml("dr-istio-mutual", &[(legacy, false)], &transport),
    );
    let cluster = cm.get("dr-istio-mutual").unwrap();
    let host = cluster.hosts().all[0].clone();
    let err = connect_host(&cluster, host).await.unwrap_err();
    assert!(matches!(err, ConnectError::Tls(_)), "{err}");
    assert_eq!(err.response_flag(), "UF");
    assert_eq!(cluster.stats.upstream_cx_connect_fail.value(), 1);
    assert_eq!(
        cluster.stats.scope.counter("ssl.connection_error").value(),
        1
    );
    // What the legacy server received was a TLS ClientHello, not application data.
    let first = rx.recv().await.unwrap();
    assert_eq!(first[0], 0x16, "a TLS handshake record");
}

#[tokio::test]
async fn missing_secrets_keep_the_cluster_warming_and_fail_connections() {
    let ca = Ca::new("cluster.local");
    let sidecar = mesh_server(&ca).await;
    let store = SecretStore::new();
    let name = "outbound|9080||reviews.default.svc.cluster.local";
    let (cm, _) = manager(
        &store,
        &cluster_yaml(name, &[(sidecar, true)], &auto_mtls_matches()),
    );
    let cluster = cm.get(name).unwrap();
    assert!(!cluster.is_warm(), "waits for default and ROOTCA");
    let wanted: Vec<String> = store
        .sds_subscriptions()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(wanted, ["ROOTCA", "default"]);
    let host = cluster.hosts().all[0].clone();
    let err = connect_host(&cluster, host.clone()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "upstream TLS unavailable, not connecting in plaintext: secret \"default\" has not been received yet"
    );
    assert_eq!(cluster.stats.upstream_cx_connect_fail.value(), 1);
    // SDS delivers; the very next connection uses it.
    store
        .apply(&[
            ca.leaf(CLIENT_ID).secret("default"),
            ca.root_secret("ROOTCA"),
        ])
        .unwrap();
    assert!(cluster.is_warm());
    let mut up = connect_host(&cluster, host).await.unwrap();
    assert_eq!(
        first_line(&mut up.io).await,
        format!("principal={CLIENT_ID} alpn=")
    );
}

#[tokio::test]
async fn a_wrong_server_identity_is_a_connect_failure() {
    let ca = Ca::new("cluster.local");
    let sidecar = mesh_server(&ca).await;
    let store = client_store(&ca);
    let matches =
        auto_mtls_matches().replace(SERVER_ID, "spiffe://cluster.local/ns/default/sa/reviews");
    let (cm, _) = manager(&store, &cluster_yaml("c", &[(sidecar, true)], &matches));
    let cluster = cm.get("c").unwrap();
    let err = connect_host(&cluster, cluster.hosts().all[0].clone())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("match none of the configured subject_alt_names"),
        "{err}"
    );
    assert_eq!(
        cluster.stats.scope.counter("ssl.fail_verify_san").value(),
        1
    );
}

#[test]
fn a_bad_upstream_tls_context_is_a_cluster_config_error() {
    let yaml = cluster_yaml(
        "bad",
        &[],
        &format!(
            "transport_socket:\n{}",
            tls_socket(
                "common_tls_context: {tls_params: {cipher_suites: [NOPE]}}\n",
                2
            )
        ),
    )
    .replace("  - lb_endpoints:\n", "");
    let proto: ClusterProto = decode(&yaml, Format::Yaml, UnknownFields::Reject)
        .unwrap()
        .message;
    let err = ClusterConfig::from_proto(&proto).unwrap_err().to_string();
    assert!(
        err.starts_with("cluster \"bad\" transport_socket.typed_config.common_tls_context.tls_params.cipher_suites: unknown cipher suite \"NOPE\""),
        "{err}"
    );
}
