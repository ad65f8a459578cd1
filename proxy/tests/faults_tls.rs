#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A workload certificate that expires and is not renewed: new mTLS handshakes fail (the
//! peer refuses the expired certificate, and we refuse a peer's expired one), nothing falls
//! back to plaintext, and a renewed certificate restores service without a restart.
//! (Envoy behaves the same way here: it keeps serving its expired certificate, and the
//! client's verification refuses it.)

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use e2e::ProxyProcess;
use proxy::proto::{Format, UnknownFields, decode};
use proxy::tls::{SecretStore, TlsResources, UpstreamTls};
use support::pki::{Ca, Leaf, indent, istio_inbound, istio_mutual};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PROXY: &str = env!("CARGO_BIN_EXE_proxy");
const OUR_ID: &str = "spiffe://cluster.local/ns/default/sa/ours";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";

async fn echo_app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = s.read(&mut buf).await {
                    if s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes the file SDS resource (our `default` certificate and the `ROOTCA`), as a
/// secret manager renewing a certificate would.
fn write_secrets(dir: &Path, ca: &Ca, leaf: &Leaf) {
    let pem = |s: &str| indent(s, 8);
    let root = ca.write(dir, "root.pem");
    let yaml = format!(
        "resources:\n\
         - \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  \
           name: default\n  tls_certificate:\n    certificate_chain:\n      inline_string: |\n{}    private_key:\n      inline_string: |\n{}\
         - \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  \
           name: ROOTCA\n  validation_context:\n    trusted_ca: {{filename: {}}}\n",
        pem(&leaf.cert_pem),
        pem(&leaf.key_pem),
        root.display()
    );
    // Replace atomically: the proxy polls the file.
    let tmp = dir.join("sds.yaml.tmp");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(tmp, dir.join("sds.yaml")).unwrap();
}

/// Our sidecar's inbound listener: Istio's mTLS context with secrets from the SDS file,
/// tcp_proxy to the app.
fn bootstrap(dir: &Path, port: u16, app: SocketAddr) -> String {
    let sds = format!(
        "{{path_config_source: {{path: {}}}, resource_api_version: V3}}",
        dir.join("sds.yaml").display()
    );
    let ctx = istio_inbound(&["istio-peer-exchange", "h2", "http/1.1"], &sds);
    format!(
        "admin:\n  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}\n\
         static_resources:\n  clusters:\n  - name: app\n    type: STATIC\n    connect_timeout: 5s\n    \
         load_assignment: {{cluster_name: app, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {}, port_value: {}}}}}}}}}]}}]}}\n  \
         listeners:\n  - name: inbound\n    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}\n    \
         filter_chains:\n    - filters:\n      - name: envoy.filters.network.tcp_proxy\n        \
         typed_config: {{\"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: inbound, cluster: app}}\n      \
         transport_socket:\n        name: envoy.transport_sockets.tls\n        typed_config:\n          \
         \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n{}",
        app.ip(),
        app.port(),
        indent(&ctx, 10)
    )
}

/// A mesh client presenting `leaf`, expecting our SPIFFE ID.
fn client(ca: &Ca, leaf: &Leaf) -> UpstreamTls {
    let store = SecretStore::new();
    store
        .apply(&[leaf.secret("default"), ca.root_secret("ROOTCA")])
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

/// One echo round trip over mTLS, or why it failed.
async fn round_trip(client: &UpstreamTls, port: u16) -> Result<(), String> {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let mut s = tokio::time::timeout(Duration::from_secs(10), client.connect(tcp, None))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    s.write_all(b"ping").await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .map_err(|_| "no echo".to_string())?
        .map_err(|e| e.to_string())?;
    (&buf == b"ping")
        .then_some(())
        .ok_or_else(|| "wrong echo".into())
}

/// A client presenting an expired certificate (our secret store refuses to load one, so
/// this is plain rustls, trusting any server certificate).
async fn stale_client_round_trip(leaf: &Leaf, port: u16) -> Result<(), String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let provider = proxy::tls::provider();
    let cert = CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(e2e::tls::AnyServerCert::new(provider))
        .with_client_auth_cert(vec![cert], key)
        .unwrap();
    config.alpn_protocols = vec![b"istio".to_vec()];
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("outbound.mesh").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    // TLS 1.3: the server judges the client certificate after the client's handshake is
    // done, so the refusal shows on the first read.
    s.write_all(b"ping").await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4];
    match tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer".into()),
    }
}

/// What a plaintext client gets: the echo would mean the listener fell back to plaintext.
async fn plaintext(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let _ = s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    if buf.starts_with(b"GET") {
        "echoed in plaintext".into()
    } else {
        // At most a TLS alert.
        format!("refused ({} bytes back, not the echo)", buf.len())
    }
}

async fn until_ok(client: &UpstreamTls, port: u16) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = round_trip(client, port).await;
        if r.is_ok() || tokio::time::Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn stat(p: &ProxyProcess, name: &str) -> u64 {
    p.stats().unwrap().get(name).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_fails_closed_and_renewal_restores_service() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster.local");
    let now = time::OffsetDateTime::now_utc();
    let short = ca.leaf_until(OUR_ID, now + time::Duration::seconds(4));
    write_secrets(dir.path(), &ca, &short);
    let app = echo_app().await;
    let port = free_port();
    let yaml = bootstrap(dir.path(), port, app);
    let proxy = tokio::task::spawn_blocking(move || {
        ProxyProcess::start(Path::new(PROXY), &yaml, &[]).unwrap()
    })
    .await
    .unwrap();
    let good = client(&ca, &ca.leaf(CLIENT_ID));
    let pid = proxy.pid();

    until_ok(&good, port)
        .await
        .expect("serves while the certificate is valid");

    // Past its not_after, with no renewal.
    let left = (now + time::Duration::seconds(5)) - time::OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::try_from(left).unwrap_or_default()).await;
    // A fresh client: a resumed TLS session skips certificate checks, in Envoy as in rustls.
    let fresh = client(&ca, &ca.leaf(CLIENT_ID));
    let refused = round_trip(&fresh, port).await.unwrap_err();
    assert!(
        refused.to_lowercase().contains("expired"),
        "the client names the reason: {refused}"
    );
    let plain = plaintext(port).await;
    assert!(plain.starts_with("refused"), "{plain}");

    // A client whose own certificate has expired is refused by us, and counted.
    let verify_errors = format!("listener.127.0.0.1_{port}.ssl.fail_verify_error");
    let before = stat(&proxy, &verify_errors);
    let stale = ca.leaf_until(CLIENT_ID, now - time::Duration::seconds(60));
    let renewed = ca.leaf(OUR_ID);
    write_secrets(dir.path(), &ca, &renewed);
    until_ok(&good, port)
        .await
        .expect("a renewed certificate restores service without a restart");
    assert_eq!(proxy.pid(), pid, "the same process serves");
    let refused = stale_client_round_trip(&stale, port).await.unwrap_err();
    assert!(!refused.is_empty());
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut after = stat(&proxy, &verify_errors);
    while after == before && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = stat(&proxy, &verify_errors);
    }
    assert!(after > before, "{verify_errors}: {before} -> {after}");
}
