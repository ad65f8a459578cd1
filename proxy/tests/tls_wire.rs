#![allow(clippy::unwrap_used, clippy::expect_used)]
//! TLS in the running proxy: our `proxy` binary terminating Istio's inbound mTLS.
//!
//! - Envoy as the client (ISTIO_MUTUAL cluster expecting our SPIFFE ID) through our listener
//!   with bootstrap secrets read from files: bytes flow, `ssl.*` stats count, plaintext is
//!   refused.
//! - Secrets over SDS from a test SDS server on the `sds-grpc` unix socket, as Istio's agent
//!   serves them: connections fail before the secret arrives and work after; a rotated
//!   certificate serves new handshakes while an open connection keeps working; a bad
//!   secret is NACKed by name and the previous one keeps serving.
//!
//! Skipped, with the reason printed, when Envoy is not installed (the SDS test runs
//! without it).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use e2e::ProxyProcess;
use proxy::proto::{Format, UnknownFields, decode};
use proxy::tls::{SecretStore, TlsResources, UpstreamTls};
use support::pki::{Ca, Leaf, STATIC, indent, istio_inbound, istio_mutual};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use xds_client::ResourceType;
use xds_client::testing::{XdsServer, sotw_response};

const PROXY: &str = env!("CARGO_BIN_EXE_proxy");
const OUR_ID: &str = "spiffe://cluster.local/ns/default/sa/ours";
const ENVOY_ID: &str = "spiffe://cluster.local/ns/default/sa/envoy";

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An app that echoes every byte back until the client closes.
async fn echo_app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Bootstrap secrets `default` and `ROOTCA`, read from files.
fn file_secrets(dir: &Path, ca: &Ca, id: &str) -> String {
    let (cert, key) = ca.leaf(id).write(dir, "cert");
    let root = ca.write(dir, "root-cert.pem");
    format!(
        "  - name: default\n    tls_certificate: {{certificate_chain: {{filename: {}}}, private_key: {{filename: {}}}}}\n  - name: ROOTCA\n    validation_context: {{trusted_ca: {{filename: {}}}}}\n",
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

fn static_cluster(name: &str, addr: SocketAddr) -> String {
    format!(
        "  - name: {name}\n    type: STATIC\n    connect_timeout: 5s\n    load_assignment: {{cluster_name: {name}, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {}, port_value: {}}}}}}}}}]}}]}}\n",
        addr.ip(),
        addr.port()
    )
}

/// A listener on `port` proxying TCP to cluster `cluster`, with `transport` (already
/// indented YAML) on its chain.
fn tcp_listener(name: &str, port: u16, cluster: &str, transport: &str) -> String {
    format!(
        "  - name: {name}\n    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}\n    filter_chains:\n    - filters:\n      - name: envoy.filters.network.tcp_proxy\n        typed_config: {{\"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: {name}, cluster: {cluster}}}\n{transport}"
    )
}

const ADMIN: &str = "admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: 0}}\n";

/// Our sidecar: Istio's inbound context (bootstrap secrets `default`/`ROOTCA` from
/// `sds_source`) in front of the app.
fn our_bootstrap(
    secrets: &str,
    extra_clusters: &str,
    app: SocketAddr,
    port: u16,
    sds: &str,
) -> String {
    let ctx = istio_inbound(&["istio-peer-exchange", "h2", "http/1.1"], sds);
    format!(
        "{ADMIN}static_resources:\n  secrets:\n{secrets}  clusters:\n{}{extra_clusters}  listeners:\n{}",
        static_cluster("app", app),
        tcp_listener(
            "inbound",
            port,
            "app",
            &tls_transport("DownstreamTlsContext", &ctx, 6)
        ),
    )
}

fn stat(p: &ProxyProcess, name: &str) -> u64 {
    p.stats().unwrap().get(name).copied().unwrap_or(0)
}

/// Waits up to 2s for a stat to reach `want` (the proxy counts a failure just after the
/// client sees the close); its last value.
async fn stat_reaches(p: &ProxyProcess, name: &str, want: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let v = stat(p, name);
        if v >= want || tokio::time::Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes `msg` and reads the same number of bytes back.
async fn roundtrip<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    io: &mut S,
    msg: &[u8],
) -> std::io::Result<Vec<u8>> {
    io.write_all(msg).await?;
    io.flush().await?;
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(10), io.read_exact(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("timed out"))??;
    Ok(buf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_client_through_our_mtls_listener() {
    let Some(envoy_bin) = e2e::require_envoy("envoy_client_through_our_mtls_listener") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ours_dir = dir.path().join("ours");
    let envoy_dir = dir.path().join("envoy");
    std::fs::create_dir_all(&ours_dir).unwrap();
    std::fs::create_dir_all(&envoy_dir).unwrap();
    let ca = Ca::new("cluster.local");
    let app = echo_app().await;
    let port = free_port();
    let ours = our_bootstrap(&file_secrets(&ours_dir, &ca, OUR_ID), "", app, port, STATIC);
    let proxy = tokio::task::spawn_blocking(move || {
        ProxyProcess::start(Path::new(PROXY), &ours, &[]).unwrap()
    })
    .await
    .unwrap();

    // Envoy's outbound side: plaintext in, ISTIO_MUTUAL to our listener expecting our ID.
    let out_port = free_port();
    let upstream = istio_mutual(&[OUR_ID], &["istio"], STATIC);
    let ours_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let cluster = format!(
        "{}{}",
        static_cluster("ours", ours_addr),
        tls_transport("UpstreamTlsContext", &upstream, 4)
    );
    let envoy_yaml = format!(
        "{ADMIN}static_resources:\n  secrets:\n{}  clusters:\n{cluster}  listeners:\n{}",
        file_secrets(&envoy_dir, &ca, ENVOY_ID),
        tcp_listener("outbound", out_port, "ours", ""),
    );
    let envoy = tokio::task::spawn_blocking(move || {
        ProxyProcess::start(&envoy_bin, &envoy_yaml, &[]).unwrap()
    })
    .await
    .unwrap();

    let mut tcp = TcpStream::connect(("127.0.0.1", out_port)).await.unwrap();
    let echoed = roundtrip(&mut tcp, b"hello through mTLS").await;
    assert_eq!(
        echoed.as_deref().ok(),
        Some(&b"hello through mTLS"[..]),
        "{echoed:?}; our log: {}\nenvoy log: {}",
        proxy.log(),
        envoy.log()
    );
    drop(tcp);

    let ssl = format!("listener.127.0.0.1_{port}.ssl");
    assert_eq!(stat(&proxy, &format!("{ssl}.handshake")), 1);
    assert_eq!(stat(&proxy, &format!("{ssl}.connection_error")), 0);
    assert_eq!(stat(&envoy, "cluster.ours.ssl.handshake"), 1);

    // Plaintext to a TLS chain: closed, counted, never proxied.
    let mut plain = TcpStream::connect(ours_addr).await.unwrap();
    let _ = plain.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut out)).await;
    assert!(!out.starts_with(b"GET"), "plaintext was proxied: {out:?}");
    assert_eq!(
        stat_reaches(&proxy, &format!("{ssl}.connection_error"), 1).await,
        1
    );
    assert_eq!(stat(&proxy, &format!("{ssl}.handshake")), 1);
}

// --- SDS ------------------------------------------------------------------------------------

/// Istio's `sds-grpc` cluster on the agent's unix socket.
fn sds_cluster(socket: &Path) -> String {
    format!(
        "  - name: sds-grpc\n    type: STATIC\n    connect_timeout: 1s\n    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: {{http2_protocol_options: {{}}}}\n    load_assignment: {{cluster_name: sds-grpc, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{pipe: {{path: {}}}}}}}}}]}}]}}\n",
        socket.display()
    )
}

/// Istio's `sds_config`, with a short initial fetch timeout so the proxy goes LIVE without
/// its secrets.
const SDS_GRPC: &str = "{api_config_source: {api_type: GRPC, transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: sds-grpc}}]}, initial_fetch_timeout: 1s, resource_api_version: V3}";

/// A mesh client: its own certificate, expecting our SPIFFE ID.
fn mesh_client(ca: &Ca) -> UpstreamTls {
    let store = SecretStore::new();
    store
        .apply(&[
            ca.leaf(ENVOY_ID).secret("default"),
            ca.root_secret("ROOTCA"),
        ])
        .unwrap();
    let ctx = decode(
        &istio_mutual(&[OUR_ID], &["istio"], "{ads: {}}"),
        Format::Yaml,
        UnknownFields::Reject,
    )
    .unwrap()
    .message;
    let resources = TlsResources {
        secrets: store,
        node: None,
    };
    UpstreamTls::from_proto(&ctx, &resources, false, None).unwrap()
}

/// Connects through TLS; the server certificate's SHA-256 (hex) and the stream.
async fn tls_connect(
    client: &UpstreamTls,
    addr: SocketAddr,
) -> Result<(String, proxy::tls::ClientStream<TcpStream>), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let stream = tokio::time::timeout(Duration::from_secs(10), client.connect(tcp, None))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let hash = stream
        .info()
        .peer_certificate
        .as_ref()
        .map(|c| c.sha256_hex.clone())
        .unwrap_or_default();
    Ok((hash, stream))
}

fn cert_hash(leaf: &Leaf) -> String {
    let der = proxy::tls::secrets::material::certificates(leaf.cert_pem.as_bytes(), "cert")
        .unwrap()
        .remove(0);
    proxy::tls::cert::sha256_hex(&der)
}

/// Waits for the proxy's next SDS request; returns it.
async fn next_sds(
    server: &XdsServer,
) -> envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest {
    server.next_sds().await.unwrap().request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_over_sds_gate_rotate_and_nack() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sds.sock");
    let server = XdsServer::bind_uds(&socket).await.unwrap();
    let ca = Ca::new("cluster.local");
    let app = echo_app().await;
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let yaml = our_bootstrap("    []\n", &sds_cluster(&socket), app, port, SDS_GRPC);
    let proxy = tokio::task::spawn_blocking(move || {
        ProxyProcess::start(Path::new(PROXY), &yaml, &[]).unwrap()
    })
    .await
    .unwrap();

    // The proxy asks for exactly the secrets its listener needs.
    let first = next_sds(&server).await;
    let mut names = first.resource_names.clone();
    names.sort();
    assert_eq!(names, ["ROOTCA", "default"], "{first:?}");

    // LIVE after the initial fetch timeout, but the chain has no certificate: closed.
    let client = mesh_client(&ca);
    let e = tls_connect(&client, addr).await.err();
    assert!(e.is_some(), "handshake without a certificate succeeded");
    let ssl = format!("listener.127.0.0.1_{port}.ssl");
    assert!(stat_reaches(&proxy, &format!("{ssl}.connection_error"), 1).await >= 1);

    // The secrets arrive: handshakes work and present them.
    let leaf1 = ca.leaf(OUR_ID);
    server
        .push_sds(sotw_response(
            ResourceType::Secret,
            "1",
            "n1",
            &[
                leaf1.secret("default").into(),
                ca.root_secret("ROOTCA").into(),
            ],
        ))
        .unwrap();
    let ack = next_sds(&server).await;
    assert_eq!(ack.version_info, "1");
    assert!(ack.error_detail.is_none(), "{ack:?}");
    let (hash, mut open) = tls_connect(&client, addr)
        .await
        .unwrap_or_else(|e| panic!("{e}; log: {}", proxy.log()));
    assert_eq!(hash, cert_hash(&leaf1));
    assert_eq!(roundtrip(&mut open, b"one").await.unwrap(), b"one");

    // Rotation: new handshakes get the new certificate; the open connection keeps working.
    let leaf2 = ca.leaf(OUR_ID);
    server
        .push_sds(sotw_response(
            ResourceType::Secret,
            "2",
            "n2",
            &[
                leaf2.secret("default").into(),
                ca.root_secret("ROOTCA").into(),
            ],
        ))
        .unwrap();
    let ack = next_sds(&server).await;
    assert_eq!(ack.version_info, "2");
    let (hash, mut second) = tls_connect(&client, addr).await.unwrap();
    assert_eq!(hash, cert_hash(&leaf2));
    assert_eq!(roundtrip(&mut second, b"two").await.unwrap(), b"two");
    assert_eq!(roundtrip(&mut open, b"still").await.unwrap(), b"still");

    // The admin shows the SDS secrets (key redacted) and the certificate in use.
    let dump = admin_json(&proxy, "/config_dump");
    let secrets = dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["@type"] == "type.googleapis.com/envoy.admin.v3.SecretsConfigDump")
        .unwrap();
    let active = secrets["dynamic_active_secrets"].as_array().unwrap();
    let names: Vec<&str> = active.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ROOTCA", "default"], "{secrets:#}");
    assert!(
        active.iter().all(|s| s["version_info"] == "2"),
        "{secrets:#}"
    );
    let key = &active[1]["secret"]["tls_certificate"]["private_key"];
    assert_eq!(key["inline_string"], "[redacted]", "{secrets:#}");
    let certs = admin_json(&proxy, "/certs");
    let chain = &certs["certificates"][0]["cert_chain"][0];
    assert_eq!(chain["path"], "<inline>", "{certs:#}");
    assert_eq!(chain["subject_alt_names"][0]["uri"], OUR_ID, "{certs:#}");

    // A bad certificate: NACKed naming the secret; the previous one keeps serving.
    let mut bad = leaf2.secret("default");
    if let Some(envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::secret::Type::TlsCertificate(c)) = &mut bad.r#type {
        c.certificate_chain = Some(support::pki::inline("not a certificate"));
    }
    server
        .push_sds(sotw_response(
            ResourceType::Secret,
            "3",
            "n3",
            &[bad.into(), ca.root_secret("ROOTCA").into()],
        ))
        .unwrap();
    let nack = next_sds(&server).await;
    assert_eq!(nack.version_info, "2", "{nack:?}");
    let detail = nack.error_detail.expect("a NACK").message;
    assert!(detail.contains("\"default\""), "{detail}");
    let (hash, mut third) = tls_connect(&client, addr).await.unwrap();
    assert_eq!(hash, cert_hash(&leaf2));
    assert_eq!(roundtrip(&mut third, b"three").await.unwrap(), b"three");
    assert_eq!(roundtrip(&mut open, b"first").await.unwrap(), b"first");
}

// --- admin ----------------------------------------------------------------------------------

/// A bootstrap with a file secret, an inline secret and a file CA, used by two TLS
/// listeners (one on `port`), as Envoy and we both load it.
fn admin_bootstrap(dir: &Path, ca: &Ca, port: u16, app: SocketAddr) -> String {
    let (cert, key) = ca.leaf(OUR_ID).write(dir, "file");
    let root = ca.write(dir, "root.pem");
    let inline = ca.leaf("spiffe://cluster.local/ns/default/sa/inline");
    let block = |pem: &str| indent(pem, 10);
    let secrets = format!(
        "  - name: file\n    tls_certificate: {{certificate_chain: {{filename: {}}}, private_key: {{filename: {}}}}}\n  - name: inline\n    tls_certificate:\n      certificate_chain:\n        inline_string: |\n{}      private_key:\n        inline_string: |\n{}  - name: root\n    validation_context: {{trusted_ca: {{filename: {}}}}}\n",
        cert.display(),
        key.display(),
        block(&inline.cert_pem),
        block(&inline.key_pem),
        root.display()
    );
    let ctx = |cert: &str| {
        tls_transport(
            "DownstreamTlsContext",
            &format!(
                "common_tls_context:\n  tls_certificate_sds_secret_configs: [{{name: {cert}}}]\n  validation_context_sds_secret_config: {{name: root}}\nrequire_client_certificate: true\n"
            ),
            6,
        )
    };
    format!(
        "{ADMIN}static_resources:\n  secrets:\n{secrets}  clusters:\n{}  listeners:\n{}{}",
        static_cluster("app", app),
        tcp_listener("a", port, "app", &ctx("file")),
        tcp_listener("b", port + 1, "app", &ctx("inline")),
    )
}

/// Two free consecutive ports.
fn free_port_pair() -> u16 {
    loop {
        let p = free_port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

fn admin_json(p: &ProxyProcess, path: &str) -> serde_json::Value {
    let (status, body) = e2e::http::get(p.admin, path).unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// `/certs` with contexts in a stable order (Envoy's order is its context map's).
fn sorted_certs(p: &ProxyProcess) -> Vec<String> {
    let v = admin_json(p, "/certs");
    let mut out: Vec<String> = v["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| serde_json::to_string_pretty(c).unwrap())
        .collect();
    out.sort();
    out
}

/// The static secrets of `/config_dump`, by name.
fn static_secrets(p: &ProxyProcess) -> Vec<(String, serde_json::Value)> {
    let v = admin_json(p, "/config_dump");
    let dump = v["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["@type"] == "type.googleapis.com/envoy.admin.v3.SecretsConfigDump")
        .expect("a SecretsConfigDump")
        .clone();
    let mut out: Vec<(String, serde_json::Value)> = dump["static_secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s.clone()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certs_and_secrets_dump_match_envoy() {
    let Some(envoy_bin) = e2e::require_envoy("certs_and_secrets_dump_match_envoy") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster.local");
    let app = echo_app().await;
    let (ours_port, envoy_port) = (free_port_pair(), free_port_pair());
    let ours_yaml = admin_bootstrap(dir.path(), &ca, ours_port, app);
    // The same secrets (files and bytes), on other ports.
    let envoy_yaml = ours_yaml
        .replace(
            &format!("port_value: {ours_port}}}"),
            &format!("port_value: {envoy_port}}}"),
        )
        .replace(
            &format!("port_value: {}}}", ours_port + 1),
            &format!("port_value: {}}}", envoy_port + 1),
        );
    let (ours, envoy) = tokio::task::spawn_blocking(move || {
        (
            ProxyProcess::start(Path::new(PROXY), &ours_yaml, &[]).unwrap(),
            ProxyProcess::start(&envoy_bin, &envoy_yaml, &[]).unwrap(),
        )
    })
    .await
    .unwrap();

    let (our_certs, envoy_certs) = (sorted_certs(&ours), sorted_certs(&envoy));
    assert_eq!(envoy_certs.len(), 2, "{envoy_certs:#?}");
    assert_eq!(our_certs, envoy_certs);

    let (our_secrets, envoy_secrets) = (static_secrets(&ours), static_secrets(&envoy));
    assert_eq!(envoy_secrets.len(), 3);
    assert_eq!(our_secrets, envoy_secrets);
    let expiry = "server.days_until_first_cert_expiring";
    assert_eq!(stat_reaches(&ours, expiry, 1).await, stat(&envoy, expiry));
    let file_key = &our_secrets[0].1["secret"]["tls_certificate"]["private_key"];
    assert_eq!(file_key["filename"], "[redacted]");
}

// --- secrets over ADS -----------------------------------------------------------------------

/// A bootstrap whose listeners and clusters come over ADS from `xds`.
fn ads_bootstrap(xds: SocketAddr) -> String {
    format!(
        "node: {{id: sidecar, cluster: test}}\n{ADMIN}dynamic_resources:\n  ads_config:\n    api_type: GRPC\n    transport_api_version: V3\n    grpc_services: [{{envoy_grpc: {{cluster_name: xds}}}}]\n  cds_config: {{ads: {{}}, resource_api_version: V3}}\n  lds_config: {{ads: {{}}, resource_api_version: V3}}\nstatic_resources:\n  clusters:\n{}    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: {{http2_protocol_options: {{}}}}\n",
        static_cluster("xds", xds)
    )
}

/// Answers every first request of a type (and every change of the secret names) with
/// `resources` of that type; records the secret names asked for and every NACK.
fn serve_ads(
    server: Arc<XdsServer>,
    resources: Vec<(ResourceType, Vec<xds_client::Resource>)>,
) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let request = match server.next_ads_sotw().await {
                Ok(r) => r.request,
                Err(xds_client::testing::ServerError::Timeout(_)) => continue,
                Err(_) => return,
            };
            if let Some(status) = &request.error_detail {
                let _ = tx.send(format!("NACK {}", status.message));
            }
            let is_secret = request.type_url == ResourceType::Secret.type_url();
            if is_secret {
                let _ = tx.send(format!("secrets {:?}", request.resource_names));
            }
            // First requests of a type, and the secret names changing before any secret
            // arrived, get the resources.
            let first = request.response_nonce.is_empty();
            if !(first || is_secret && request.version_info.is_empty()) {
                continue;
            }
            let Some((t, list)) = resources
                .iter()
                .find(|(t, _)| t.type_url() == request.type_url)
            else {
                continue;
            };
            n += 1;
            let _ = server.push_ads_sotw(sotw_response(*t, "1", &format!("n{n}"), list));
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_over_ads_warm_a_dynamic_listener() {
    let server = Arc::new(
        XdsServer::bind_tcp("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap(),
    );
    let xds = match server.address() {
        xds_client::testing::ServerAddress::Tcp(a) => *a,
        xds_client::testing::ServerAddress::Uds(_) => unreachable!(),
    };
    let ca = Ca::new("cluster.local");
    let app = echo_app().await;
    let port = free_port();
    let ctx = istio_inbound(&["h2", "http/1.1"], "{ads: {}, resource_api_version: V3}");
    let listener_yaml = tcp_listener(
        "inbound",
        port,
        "app",
        &tls_transport("DownstreamTlsContext", &ctx, 6),
    );
    let listener: envoy_types::pb::envoy::config::listener::v3::Listener = decode(
        listener_yaml
            .replace("\n    ", "\n")
            .trim_start_matches("  - "),
        Format::Yaml,
        UnknownFields::Reject,
    )
    .unwrap()
    .message;
    let cluster: envoy_types::pb::envoy::config::cluster::v3::Cluster = decode(
        static_cluster("app", app)
            .replace("\n    ", "\n")
            .trim_start_matches("  - "),
        Format::Yaml,
        UnknownFields::Reject,
    )
    .unwrap()
    .message;
    let leaf = ca.leaf(OUR_ID);
    let mut events = serve_ads(
        server.clone(),
        vec![
            (ResourceType::Cluster, vec![cluster.into()]),
            (ResourceType::Listener, vec![listener.into()]),
            (
                ResourceType::Secret,
                vec![
                    leaf.secret("default").into(),
                    ca.root_secret("ROOTCA").into(),
                ],
            ),
        ],
    );
    let yaml = ads_bootstrap(xds);
    let proxy = tokio::task::spawn_blocking(move || {
        ProxyProcess::start(Path::new(PROXY), &yaml, &[]).unwrap()
    })
    .await
    .unwrap();

    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (hash, mut io) = tls_connect(&mesh_client(&ca), addr)
        .await
        .unwrap_or_else(|e| panic!("{e}; log: {}", proxy.log()));
    assert_eq!(hash, cert_hash(&leaf));
    assert_eq!(roundtrip(&mut io, b"ads").await.unwrap(), b"ads");
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(e);
    }
    assert!(
        seen.iter()
            .any(|e| e == "secrets [\"ROOTCA\", \"default\"]"),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|e| e.starts_with("NACK")), "{seen:?}");
}

// --- Istio metadata exchange ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_exchange_on_istio_peer_exchange_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster.local");
    let app = echo_app().await;
    let port = free_port();
    let ctx = istio_inbound(&["istio-peer-exchange", "h2", "http/1.1"], STATIC);
    let yaml = format!(
        "node:\n  id: sidecar~127.0.0.1~ours.default~default.svc.cluster.local\n  metadata: {{NAME: ours-pod, NAMESPACE: default}}\n{ADMIN}static_resources:\n  secrets:\n{}  clusters:\n{}  listeners:\n  - name: inbound\n    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}\n    filter_chains:\n    - filters:\n      - name: istio.metadata_exchange\n        typed_config:\n          \"@type\": type.googleapis.com/udpa.type.v1.TypedStruct\n          type_url: type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange\n          value: {{protocol: istio-peer-exchange}}\n      - name: envoy.filters.network.tcp_proxy\n        typed_config: {{\"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: inbound, cluster: app}}\n{}",
        file_secrets(dir.path(), &ca, OUR_ID),
        static_cluster("app", app),
        tls_transport("DownstreamTlsContext", &ctx, 6),
    );
    let proxy = tokio::task::spawn_blocking(move || {
        ProxyProcess::start(Path::new(PROXY), &yaml, &[]).unwrap()
    })
    .await
    .unwrap();

    // A mesh client that runs the exchange too.
    let store = SecretStore::new();
    store
        .apply(&[
            ca.leaf(ENVOY_ID).secret("default"),
            ca.root_secret("ROOTCA"),
        ])
        .unwrap();
    let ctx = decode(
        &istio_mutual(&[OUR_ID], &["istio-peer-exchange", "istio"], "{ads: {}}"),
        Format::Yaml,
        UnknownFields::Reject,
    )
    .unwrap()
    .message;
    let node = proxy::tls::LocalNode::new(&envoy_types::pb::envoy::config::core::v3::Node {
        id: "sidecar~127.0.0.2~client.default~default.svc.cluster.local".into(),
        ..Default::default()
    });
    let resources = TlsResources {
        secrets: store,
        node: Some(Arc::new(node)),
    };
    let client = UpstreamTls::from_proto(&ctx, &resources, true, None).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (_, mut io) = tls_connect(&client, addr)
        .await
        .unwrap_or_else(|e| panic!("{e}; log: {}", proxy.log()));
    assert_eq!(io.alpn(), Some(&b"istio-peer-exchange"[..]));
    // Our frame is stripped before the app, theirs before us: the echo is exact.
    assert_eq!(
        roundtrip(&mut io, b"exchanged").await.unwrap(),
        b"exchanged"
    );
    let peer = io.peer_metadata();
    let metadata = peer.metadata().expect("the proxy sent its metadata");
    assert_eq!(metadata.get("NAME"), Some("ours-pod"));
    assert_eq!(metadata.get("NAMESPACE"), Some("default"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_hits_transport_socket_connect_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster.local");
    let app = echo_app().await;
    let port = free_port();
    let yaml = our_bootstrap(
        &file_secrets(dir.path(), &ca, OUR_ID),
        "",
        app,
        port,
        STATIC,
    )
    .replace(
        "      transport_socket:\n",
        "      transport_socket_connect_timeout: 0.3s\n      transport_socket:\n",
    );
    let proxy = tokio::task::spawn_blocking(move || {
        ProxyProcess::start(Path::new(PROXY), &yaml, &[]).unwrap()
    })
    .await
    .unwrap();
    let mut idle = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut buf = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    let name = format!("listener.127.0.0.1_{port}.downstream_cx_transport_socket_connect_timeout");
    assert_eq!(stat_reaches(&proxy, &name, 1).await, 1);
}
