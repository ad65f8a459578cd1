#![allow(clippy::unwrap_used, clippy::expect_used)]
//! mTLS interop with the real Envoy, configured as istiod configures it (Istio's inbound
//! `DownstreamTlsContext` and ISTIO_MUTUAL `UpstreamTlsContext`, with the `default` and
//! `ROOTCA` secrets as bootstrap secrets read from files instead of SDS):
//!
//! - Envoy as the server, our `tls::upstream` + `connect_host` as the client: Envoy's RBAC
//!   filter admits only our SPIFFE principal, and an HTTP route echoes the principal Envoy
//!   saw; wrong expected SAN and foreign CA are refused; ALPN as istiod sets it.
//! - Envoy as the client, our `tls::downstream` acceptor as the server: we see Envoy's
//!   SPIFFE principal over TCP and HTTP; a foreign CA, a client without a certificate and
//!   plaintext are refused.
//!
//! Skipped, with the reason printed, when Envoy is not installed.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster as ClusterProto;
use proxy::config::cluster::ClusterConfig;
use proxy::conn::PeerTls;
use proxy::io::Prefixed;
use proxy::proto::{Format, UnknownFields, decode};
use proxy::tls::{DownstreamTls, LocalNode, SecretStore, TlsResources};
use proxy::upstream::connect::{ConnectOptions, connect_host_with};
use proxy::upstream::{ClusterManager, UpstreamIo};
use support::pki::{Ca, STATIC, indent, istio_inbound, istio_mutual};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const OUR_ID: &str = "spiffe://cluster.local/ns/default/sa/ours";
const ENVOY_ID: &str = "spiffe://cluster.local/ns/default/sa/envoy";
const ADS: &str = "{ads: {}, resource_api_version: V3}";

/// Bootstrap secrets `<prefix>default` and `ROOTCA`, read from files.
fn secrets_yaml(dir: &Path, ca: &Ca, leaf_ca: &Ca, id: &str, prefix: &str) -> String {
    let (cert, key) = leaf_ca.leaf(id).write(dir, &format!("{prefix}cert"));
    let root = ca.write(dir, "root-cert.pem");
    format!(
        "  - name: {prefix}default\n    tls_certificate: {{certificate_chain: {{filename: {}}}, private_key: {{filename: {}}}}}\n  - name: {prefix}ROOTCA\n    validation_context: {{trusted_ca: {{filename: {}}}}}\n",
        cert.display(),
        key.display(),
        root.display()
    )
}

fn tls_transport(kind: &str, ctx: &str, indent_by: usize) -> String {
    indent(
        &format!(
            "transport_socket:\n  name: envoy.transport_sockets.tls\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.{kind}\n{}",
            indent(ctx, 4)
        ),
        indent_by,
    )
}

fn admin() -> &'static str {
    "admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: 0}}\n"
}

/// The address Envoy bound for a listener configured with port 0.
fn listener_addr(envoy: &e2e::EnvoyProcess, name: &str) -> SocketAddr {
    let (_, body) = e2e::http::get(envoy.admin, "/listeners?format=json").unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let status = v["listener_statuses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no listener {name} in {body}"));
    let sa = &status["local_address"]["socket_address"];
    format!("{}:{}", sa["address"].as_str().unwrap(), sa["port_value"])
        .parse()
        .unwrap()
}

fn counter(envoy: &e2e::EnvoyProcess, name: &str) -> u64 {
    let (_, body) = e2e::http::get(envoy.admin, &format!("/stats?filter=^{name}$")).unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

// --- Envoy as the server ------------------------------------------------------------------

/// A plaintext app behind Envoy's inbound TCP chain: answers `echo:<first read>`.
async fn echo_app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let n = tcp.read(&mut buf).await.unwrap_or(0);
                let mut reply = b"echo:".to_vec();
                reply.extend_from_slice(&buf[..n]);
                let _ = tcp.write_all(&reply).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    addr
}

fn envoy_server_bootstrap(dir: &Path, ca: &Ca, app: SocketAddr) -> String {
    let inbound_tcp = istio_inbound(&["istio-peer-exchange", "h2", "http/1.1"], STATIC);
    let inbound_http = istio_inbound(&["h2", "http/1.1"], STATIC);
    format!(
        r#"{admin}static_resources:
  secrets:
{secrets}  clusters:
  - name: app
    type: STATIC
    connect_timeout: 5s
    load_assignment: {{cluster_name: app, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {app_port}}}}}}}}}]}}]}}
  listeners:
  - name: tcp
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.rbac
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC
          stat_prefix: tcp.
          rules:
            policies:
              only-ours:
                permissions: [{{any: true}}]
                principals: [{{authenticated: {{principal_name: {{exact: "{OUR_ID}"}}}}}}]
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: inbound_tcp
          cluster: app
{tcp_tls}  - name: http
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: inbound_http
          http_filters: [{{name: envoy.filters.http.router, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}]
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: /}}
                direct_response: {{status: 200, body: {{inline_string: ok}}}}
                response_headers_to_add:
                - header: {{key: x-peer, value: "%DOWNSTREAM_PEER_URI_SAN%"}}
                - header: {{key: x-proto, value: "%PROTOCOL%"}}
{http_tls}"#,
        admin = admin(),
        secrets = secrets_yaml(dir, ca, ca, ENVOY_ID, ""),
        app_port = app.port(),
        tcp_tls = tls_transport("DownstreamTlsContext", &inbound_tcp, 6),
        http_tls = tls_transport("DownstreamTlsContext", &inbound_http, 6),
    )
}

/// Our client side: a cluster to `addr` with the ISTIO_MUTUAL context (secrets over ADS,
/// fed to our store as SDS would), expecting `expected_san`.
fn our_cluster(
    store: &SecretStore,
    node: Option<LocalNode>,
    addr: SocketAddr,
    expected_san: &str,
    exchange: bool,
) -> Arc<proxy::upstream::Cluster> {
    let ctx = istio_mutual(&[expected_san], &["istio-peer-exchange", "istio"], ADS);
    let filters = if exchange {
        "filters:\n- name: istio.metadata_exchange\n  typed_config:\n    \"@type\": type.googleapis.com/udpa.type.v1.TypedStruct\n    type_url: type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange\n    value: {protocol: istio-peer-exchange}\n"
    } else {
        ""
    };
    let yaml = format!(
        "name: envoy-server\ntype: STATIC\nconnect_timeout: 5s\n{filters}load_assignment:\n  cluster_name: envoy-server\n  endpoints:\n  - lb_endpoints:\n    - endpoint: {{address: {{socket_address: {{address: {}, port_value: {}}}}}}}\n{}",
        addr.ip(),
        addr.port(),
        tls_transport("UpstreamTlsContext", &ctx, 0)
    );
    let proto: ClusterProto = decode(&yaml, Format::Yaml, UnknownFields::Reject)
        .unwrap()
        .message;
    let cm = ClusterManager::with_tls(
        proxy::stats::Store::new(None).unwrap(),
        TlsResources {
            secrets: store.clone(),
            node: node.map(Arc::new),
        },
    );
    cm.add_static(vec![ClusterConfig::from_proto(&proto).unwrap()])
        .unwrap();
    cm.get("envoy-server").unwrap()
}

fn sds_store(ca: &Ca, leaf_ca: &Ca, id: &str) -> SecretStore {
    let store = SecretStore::new();
    store
        .apply(&[leaf_ca.leaf(id).secret("default"), ca.root_secret("ROOTCA")])
        .unwrap();
    store
}

async fn connect(
    cluster: &Arc<proxy::upstream::Cluster>,
    alpn: Option<&[&str]>,
) -> Result<UpstreamIo, proxy::upstream::ConnectError> {
    let options = ConnectOptions {
        alpn: alpn.map(|a| a.iter().map(|p| p.as_bytes().to_vec()).collect()),
        ..ConnectOptions::default()
    };
    let host = cluster.hosts().all[0].clone();
    connect_host_with(cluster, host, &options)
        .await
        .map(|u| u.into_parts().0)
}

fn negotiated(io: &UpstreamIo) -> Option<String> {
    match io {
        UpstreamIo::Tls(s) => s.alpn().map(|a| String::from_utf8_lossy(a).into_owned()),
        _ => panic!("not TLS"),
    }
}

/// Writes `ping`, then reads until EOF or an error; what arrived.
async fn ping(io: &mut UpstreamIo) -> Vec<u8> {
    let _ = io.write_all(b"ping").await;
    let _ = io.flush().await;
    read_all(io).await
}

/// Reads until EOF or an error; what arrived.
async fn read_all(io: &mut UpstreamIo) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), io.read_to_end(&mut out)).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_server_ours_client() {
    let Some(bin) = e2e::require_envoy("envoy_server_ours_client") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster.local");
    let app = echo_app().await;
    let envoy =
        e2e::EnvoyProcess::start(&bin, &envoy_server_bootstrap(dir.path(), &ca, app), &[]).unwrap();
    let tcp = listener_addr(&envoy, "tcp");
    let http = listener_addr(&envoy, "http");

    // The right identities: Envoy's RBAC admits our principal.
    let ours = sds_store(&ca, &ca, OUR_ID);
    let cluster = our_cluster(&ours, None, tcp, ENVOY_ID, false);
    let mut io = connect(&cluster, None)
        .await
        .unwrap_or_else(|e| panic!("{e}; envoy log: {}", envoy.log()));
    // We offered [istio] (no exchange without the filter), Envoy [istio-peer-exchange, h2,
    // http/1.1]: nothing in common.
    assert_eq!(negotiated(&io), None);
    assert_eq!(ping(&mut io).await, b"echo:ping");
    assert_eq!(counter(&envoy, "tcp.rbac.allowed"), 1);

    // Another principal of the same mesh: the handshake works, Envoy's RBAC refuses it, so
    // Envoy does see the principal we present.
    let intruder = sds_store(&ca, &ca, "spiffe://cluster.local/ns/default/sa/intruder");
    let mut io = connect(&our_cluster(&intruder, None, tcp, ENVOY_ID, false), None)
        .await
        .unwrap();
    assert_eq!(ping(&mut io).await, b"");
    assert_eq!(counter(&envoy, "tcp.rbac.denied"), 1);

    // A wrong expected server identity: we refuse Envoy's certificate.
    let e = connect(
        &our_cluster(
            &ours,
            None,
            tcp,
            "spiffe://cluster.local/ns/default/sa/other",
            false,
        ),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("match none of the configured subject_alt_names"),
        "{e}"
    );

    // A client certificate from another CA: Envoy refuses it (in TLS 1.3 the refusal
    // arrives after our side finished, as an alert on the first read).
    let foreign = sds_store(&ca, &Ca::new("cluster.local"), OUR_ID);
    match connect(&our_cluster(&foreign, None, tcp, ENVOY_ID, false), None).await {
        Err(e) => assert!(e.to_string().contains("TLS"), "{e}"),
        Ok(mut io) => assert_eq!(ping(&mut io).await, b""),
    }
    // Envoy names listener stats by the configured address (port 0); only the TCP listener
    // has had connections so far.
    let ssl = "listener.127.0.0.1_0.ssl";
    assert_eq!(counter(&envoy, &format!("{ssl}.fail_verify_error")), 1);
    assert_eq!(
        counter(&envoy, &format!("{ssl}.handshake")),
        2,
        "ours and the intruder"
    );

    // HTTP with istiod's ALPN overrides: Envoy picks http/1.1 or h2, and its
    // %DOWNSTREAM_PEER_URI_SAN% is our SPIFFE ID.
    let cluster = our_cluster(&ours, None, http, ENVOY_ID, false);
    let mut io = connect(&cluster, Some(&["istio-http/1.1", "istio", "http/1.1"]))
        .await
        .unwrap();
    assert_eq!(negotiated(&io).as_deref(), Some("http/1.1"));
    io.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let response = String::from_utf8(read_all(&mut io).await).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains(&format!("x-peer: {OUR_ID}")),
        "{response}"
    );
    assert!(response.contains("x-proto: HTTP/1.1"), "{response}");
    let io = connect(&cluster, Some(&["istio-h2", "istio", "h2"]))
        .await
        .unwrap();
    assert_eq!(negotiated(&io).as_deref(), Some("h2"));

    // With the metadata exchange on, Envoy (without Istio's filter) negotiates
    // istio-peer-exchange and sends no frame: its bytes pass through untouched. (Envoy
    // forwards our frame to the app as data: that is why we offer the ALPN only where the
    // cluster runs Istio's exchange filter, which a real Istio peer always has.)
    let node = LocalNode::from_parts(
        "sidecar~127.0.0.1~ours.default~default.svc.cluster.local".into(),
        Default::default(),
    );
    let mut io = connect(&our_cluster(&ours, Some(node), tcp, ENVOY_ID, true), None)
        .await
        .unwrap();
    assert_eq!(negotiated(&io).as_deref(), Some("istio-peer-exchange"));
    let reply = ping(&mut io).await;
    assert!(reply.starts_with(b"echo:"), "{reply:?}");
    assert_eq!(
        reply[5..9],
        0x3D23_0467u32.to_be_bytes(),
        "the app got our frame as data"
    );
}

// --- Envoy as the client ------------------------------------------------------------------

/// Our sidecar's inbound side: Istio's inbound context; each connection is answered with an
/// HTTP response whose body names the peer principal and ALPN. Handshake outcomes go to the
/// channel.
async fn our_server(
    ca: &Ca,
) -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Result<PeerTls, String>>,
) {
    let store = sds_store(ca, ca, OUR_ID);
    let ctx = decode(
        &istio_inbound(&["istio-peer-exchange", "h2", "http/1.1"], ADS),
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
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (tls, tx) = (tls.clone(), tx.clone());
            tokio::spawn(async move {
                match tls.accept(Prefixed::new(Default::default(), tcp)).await {
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                    Ok((mut io, peer)) => {
                        let mut buf = [0u8; 4096];
                        let _ = io.read(&mut buf).await;
                        let alpn = peer
                            .alpn
                            .as_deref()
                            .map(String::from_utf8_lossy)
                            .unwrap_or_default()
                            .to_string();
                        let body = format!(
                            "principal={} alpn={alpn}\n",
                            peer.principal().unwrap_or("-")
                        );
                        let response = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = io.write_all(response.as_bytes()).await;
                        let _ = io.shutdown().await;
                        let _ = tx.send(Ok(peer));
                    }
                }
            });
        }
    });
    (addr, rx)
}

fn envoy_client_bootstrap(dir: &Path, ca: &Ca, foreign: &Ca, server: SocketAddr) -> String {
    let mutual = |prefix: &str, alpn: &[&str]| {
        istio_mutual(&[OUR_ID], alpn, STATIC)
            .replace("{name: default}", &format!("{{name: {prefix}default}}"))
            .replace("{name: ROOTCA}", &format!("{{name: {prefix}ROOTCA}}"))
    };
    let no_cert = istio_mutual(&[OUR_ID], &["istio"], STATIC).replace(
        "  tls_certificate_sds_secret_configs: [{name: default}]\n",
        "",
    );
    let cluster = |name: &str, ctx: &str| {
        format!(
            "  - name: {name}\n    type: STATIC\n    connect_timeout: 5s\n    load_assignment:\n      cluster_name: {name}\n      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {}, port_value: {}}}}}}}}}]}}]\n{}",
            server.ip(),
            server.port(),
            tls_transport("UpstreamTlsContext", ctx, 4)
        )
    };
    let tcp_listener = |name: &str, cluster: &str| {
        format!(
            "  - name: {name}\n    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}\n    filter_chains: [{{filters: [{{name: envoy.filters.network.tcp_proxy, typed_config: {{\"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: {name}, cluster: {cluster}}}}}]}}]\n"
        )
    };
    format!(
        r#"{admin}static_resources:
  secrets:
{good}{bad}  clusters:
{c_good}{c_http}{c_foreign}{c_nocert}  listeners:
{l_good}{l_foreign}{l_nocert}  - name: http
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: outbound_http
          http_filters: [{{name: envoy.filters.http.router, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}]
          route_config:
            virtual_hosts: [{{name: all, domains: ["*"], routes: [{{match: {{prefix: /}}, route: {{cluster: ours-http}}}}]}}]
"#,
        admin = admin(),
        good = secrets_yaml(dir, ca, ca, ENVOY_ID, ""),
        bad = secrets_yaml(dir, ca, foreign, ENVOY_ID, "foreign-"),
        c_good = cluster("ours", &mutual("", &["istio-peer-exchange", "istio"])),
        c_http = cluster(
            "ours-http",
            &mutual("", &["istio-http/1.1", "istio", "http/1.1"])
        ),
        c_foreign = cluster("ours-foreign", &mutual("foreign-", &["istio"])),
        c_nocert = cluster("ours-nocert", &no_cert),
        l_good = tcp_listener("tcp", "ours"),
        l_foreign = tcp_listener("tcp-foreign", "ours-foreign"),
        l_nocert = tcp_listener("tcp-nocert", "ours-nocert"),
    )
}

/// Sends a line through Envoy's plaintext listener and returns what came back.
async fn through(addr: SocketAddr) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_client_ours_server() {
    let Some(bin) = e2e::require_envoy("envoy_client_ours_server") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster.local");
    let (server, mut outcomes) = our_server(&ca).await;
    let bootstrap = envoy_client_bootstrap(dir.path(), &ca, &Ca::new("cluster.local"), server);
    let envoy = e2e::EnvoyProcess::start(&bin, &bootstrap, &[]).unwrap();

    // TCP through Envoy's ISTIO_MUTUAL cluster: we see Envoy's SPIFFE principal. Our
    // listener advertises no istio-peer-exchange (no exchange configured on it), so no ALPN
    // is negotiated with Envoy's [istio-peer-exchange, istio].
    let reply = through(listener_addr(&envoy, "tcp")).await;
    assert!(
        reply.ends_with(&format!("principal={ENVOY_ID} alpn=\n")),
        "{reply}"
    );
    let peer = outcomes.recv().await.unwrap().unwrap();
    assert_eq!(peer.principal(), Some(ENVOY_ID));
    assert_eq!(peer.version, "TLSv1.3");

    // HTTP with istiod's HTTP/1.1 ALPN list: http/1.1 is negotiated.
    let (status, body) = tokio::task::spawn_blocking({
        let addr = listener_addr(&envoy, "http");
        move || e2e::http::get(addr, "/")
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, format!("principal={ENVOY_ID} alpn=http/1.1\n"));
    assert_eq!(
        outcomes.recv().await.unwrap().unwrap().alpn.as_deref(),
        Some(&b"http/1.1"[..])
    );

    // Envoy with a certificate from another CA: refused.
    let reply = through(listener_addr(&envoy, "tcp-foreign")).await;
    assert!(!reply.contains("principal="), "{reply}");
    let e = outcomes.recv().await.unwrap().unwrap_err();
    assert!(e.contains("invalid peer certificate"), "{e}");

    // Envoy without a client certificate: refused.
    let reply = through(listener_addr(&envoy, "tcp-nocert")).await;
    assert!(!reply.contains("principal="), "{reply}");
    let e = outcomes.recv().await.unwrap().unwrap_err();
    assert!(
        e.contains("NoCertificatesPresented") || e.contains("no certificates"),
        "{e}"
    );

    // Plaintext straight to our server: refused.
    let mut tcp = tokio::net::TcpStream::connect(server).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
    assert!(!String::from_utf8_lossy(&out).contains("principal="));
    assert!(outcomes.recv().await.unwrap().is_err());
}
