//! Writes seed inputs for the fuzz targets into `<out>/<target>/` (default `../corpus`),
//! named by content hash, from real inputs: the test control plane's istiod-shaped xDS for
//! every scenario mesh, Istio's bootstrap goldens, Istio's RBAC goldens, iptables-init's
//! golden flag sets, and ClientHellos that rustls sends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use e2e::cp::istiod::{self, Profile, bootstrap::AdsFlavor};
use e2e::cp::{Ca, MeshSpec, proto as cp_proto};
use e2e::scenarios::{authz, auto_mtls, bypass, capture, resilience, tcp};
use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::config::listener::v3::{Filter, Listener, filter::ConfigType};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier, http_filter,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use envoy_types::pb::google::protobuf::{Any, Struct, Value, value::Kind};
use prost::Message;
use proxy::proto::{Format, UnknownFields};

const NETWORK_RBAC: &str = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC";
const HTTP_RBAC: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const DOWNSTREAM_TLS: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
const UPSTREAM_TLS: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";

struct Out {
    root: PathBuf,
    count: usize,
}

impl Out {
    fn put(&mut self, target: &str, bytes: &[u8]) {
        let mut h = DefaultHasher::new();
        bytes.hash(&mut h);
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("seed-{:016x}", h.finish()));
        if !path.exists() {
            std::fs::write(path, bytes).unwrap();
            self.count += 1;
        }
    }

    fn put_with(&mut self, target: &str, selector: u8, bytes: &[u8]) {
        let mut v = vec![selector];
        v.extend_from_slice(bytes);
        self.put(target, &v);
    }
}

fn main() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = std::env::args_os().nth(1).map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus"),
        PathBuf::from,
    );
    let mut out = Out { root, count: 0 };
    xds(&mut out);
    bootstraps(&mut out, &repo);
    rbac_goldens(&mut out, &repo);
    secrets(&mut out);
    client_hellos(&mut out);
    http(&mut out);
    peer_exchange(&mut out);
    iptables(&mut out);
    eprintln!("{} new seed files in {}", out.count, out.root.display());
}

fn specs() -> Vec<(MeshSpec, Profile)> {
    vec![
        (auto_mtls::spec(), Profile::Istio),
        (authz::analyzer_spec(), Profile::Istio),
        (authz::namespace_spec(), Profile::Istio),
        (bypass::spec(), Profile::Istio),
        (tcp::spec(), Profile::Istio),
        (resilience::spec("rot"), Profile::Istio),
        (capture::spec(), Profile::TcpOnly),
    ]
}

/// Every scenario mesh's istiod output for every sidecar, one resource per seed.
fn xds(out: &mut Out) {
    for (spec, profile) in specs() {
        for w in spec.workloads.iter().filter(|w| w.sidecar) {
            for (type_url, resources) in istiod::sidecar_resources(&spec, w, profile) {
                let selector = match type_url {
                    cp_proto::LISTENER => 0,
                    cp_proto::CLUSTER => 1,
                    cp_proto::ENDPOINTS => 2,
                    cp_proto::ROUTE => 3,
                    _ => continue,
                };
                for r in resources {
                    let any = cp_proto::to_any(type_url, r).unwrap();
                    out.put_with("xds_resource", selector, &any.value);
                    match selector {
                        0 => listener_parts(out, &Listener::decode(any.value.as_slice()).unwrap()),
                        1 => cluster_parts(out, &Cluster::decode(any.value.as_slice()).unwrap()),
                        2 => out.put_with("xds_resource", 7, &any.value),
                        _ => {}
                    }
                }
            }
            let b = istiod::bootstrap::bootstrap(w, AdsFlavor::Delta, profile).unwrap();
            let text = serde_json::to_string_pretty(&b).unwrap();
            out.put_with("bootstrap", 1, text.as_bytes());
        }
    }
}

/// The TLS contexts and RBAC filters inside a listener.
fn listener_parts(out: &mut Out, l: &Listener) {
    for fc in l
        .filter_chains
        .iter()
        .chain(l.default_filter_chain.as_ref())
    {
        if let Some(ts) = &fc.transport_socket
            && let Some(
                envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
                    any,
                ),
            ) = &ts.config_type
            && any.type_url == DOWNSTREAM_TLS
        {
            out.put_with("xds_resource", 5, &any.value);
        }
        for f in &fc.filters {
            network_filter(out, f);
        }
    }
}

fn network_filter(out: &mut Out, f: &Filter) {
    let Some(ConfigType::TypedConfig(any)) = &f.config_type else {
        return;
    };
    if any.type_url == NETWORK_RBAC {
        out.put_with("rbac_config", 0, &any.value);
    } else if any.type_url == HCM {
        let hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
        for hf in &hcm.http_filters {
            if let Some(http_filter::ConfigType::TypedConfig(any)) = &hf.config_type
                && any.type_url == HTTP_RBAC
            {
                out.put_with("rbac_config", 1, &any.value);
            }
        }
        if let Some(RouteSpecifier::RouteConfig(rc)) = &hcm.route_specifier {
            out.put_with("xds_resource", 3, &rc.encode_to_vec());
        }
    }
}

fn cluster_parts(out: &mut Out, c: &Cluster) {
    let sockets = c.transport_socket.iter().chain(
        c.transport_socket_matches
            .iter()
            .filter_map(|m| m.transport_socket.as_ref()),
    );
    for ts in sockets {
        if let Some(
            envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
                any,
            ),
        ) = &ts.config_type
            && any.type_url == UPSTREAM_TLS
        {
            out.put_with("xds_resource", 6, &any.value);
        }
    }
}

/// Istio's bootstrap goldens, as JSON and as YAML input; their static resources as xDS seeds.
fn bootstraps(out: &mut Out, repo: &Path) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo.join("proxy/tests/data/istio-bootstrap"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.push(repo.join("tests/data/istio-bootstrap-default.json"));
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        out.put_with("bootstrap", 1, text.as_bytes());
        out.put_with("bootstrap", 0, text.as_bytes());
        let Ok(b) = proxy::proto::decode::<Bootstrap>(&text, Format::Json, UnknownFields::Ignore)
        else {
            eprintln!("{}: does not decode, only a text seed", path.display());
            continue;
        };
        if let Some(s) = &b.message.static_resources {
            for l in &s.listeners {
                out.put_with("xds_resource", 0, &l.encode_to_vec());
                listener_parts(out, l);
            }
            for c in &s.clusters {
                out.put_with("xds_resource", 1, &c.encode_to_vec());
                cluster_parts(out, c);
                if let Some(cla) = &c.load_assignment {
                    out.put_with("xds_resource", 7, &cla.encode_to_vec());
                }
            }
        }
    }
    // A small YAML one, as `--config-yaml` is usually given.
    out.put_with(
        "bootstrap",
        0,
        b"node:\n  id: sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local\n  cluster: app.ns\n\
admin:\n  address:\n    socket_address: {address: 127.0.0.1, port_value: 15000}\n\
static_resources:\n  listeners:\n  - name: l\n    address:\n      socket_address: {address: 0.0.0.0, port_value: 15001}\n\
    filter_chains:\n    - filters:\n      - name: envoy.filters.network.tcp_proxy\n        typed_config:\n\
          '@type': type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n\
          stat_prefix: t\n          cluster: c\n  clusters:\n  - name: c\n    type: STATIC\n\
    load_assignment:\n      cluster_name: c\n      endpoints:\n      - lb_endpoints:\n\
        - endpoint:\n            address:\n              socket_address: {address: 127.0.0.1, port_value: 8080}\n",
    );
}

/// Istio's RBAC goldens (proxy/tests/data/rbac/istio): each is one filter.
fn rbac_goldens(out: &mut Out, repo: &Path) {
    let mut stack = vec![repo.join("proxy/tests/data/rbac/istio")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            match proxy::proto::decode::<Filter>(&text, Format::Yaml, UnknownFields::Ignore) {
                Ok(f) => {
                    let Some(ConfigType::TypedConfig(any)) = &f.message.config_type else {
                        continue;
                    };
                    let selector = if any.type_url == NETWORK_RBAC { 0 } else { 1 };
                    out.put_with("rbac_config", selector, &any.value);
                }
                Err(e) => eprintln!("{}: {e}", path.display()),
            }
        }
    }
}

fn inline(s: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(Specifier::InlineString(s.to_string())),
        ..Default::default()
    })
}

/// SDS secrets as the test control plane's CA issues them.
fn secrets(out: &mut Out) {
    let ca = Ca::new().unwrap();
    let cert = ca
        .issue(
            "spiffe://cluster.local/ns/ns/sa/sa",
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
    let tls = Secret {
        name: "default".into(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(&cert.chain_pem),
            private_key: inline(&cert.key_pem),
            ..Default::default()
        })),
    };
    let root = Secret {
        name: "ROOTCA".into(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: inline(ca.root_pem()),
                ..Default::default()
            },
        )),
    };
    out.put_with("xds_resource", 4, &tls.encode_to_vec());
    out.put_with("xds_resource", 4, &root.encode_to_vec());
}

/// ClientHellos rustls sends: TLS 1.3 and 1.2, with and without SNI and ALPN, Istio's ALPNs,
/// and one split over two records.
fn client_hellos(out: &mut Out) {
    use rustls::pki_types::ServerName;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let alpns: [&[&[u8]]; 4] = [
        &[],
        &[b"h2", b"http/1.1"],
        &[
            b"istio-peer-exchange",
            b"istio-http/1.1",
            b"istio",
            b"http/1.1",
        ],
        &[b"istio", b"h2"],
    ];
    let versions: [&[&rustls::SupportedProtocolVersion]; 3] = [
        &[&rustls::version::TLS13],
        &[&rustls::version::TLS12],
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    ];
    let names = [
        "outbound_.8000_._.httpbin.full.svc.cluster.local",
        "example.com",
        "10.0.0.1",
    ];
    for v in versions {
        for alpn in alpns {
            for name in names {
                let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
                    .with_protocol_versions(v)
                    .unwrap()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
                let mut conn = rustls::ClientConnection::new(
                    Arc::new(cfg),
                    ServerName::try_from(name.to_string()).unwrap(),
                )
                .unwrap();
                let mut hello = Vec::new();
                while conn.wants_write() {
                    conn.write_tls(&mut hello).unwrap();
                }
                out.put("tls_client_hello", &hello);
            }
        }
    }
    // The last one again, its handshake message split over two records.
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let mut conn = rustls::ClientConnection::new(
        Arc::new(cfg),
        ServerName::try_from("split.example").unwrap(),
    )
    .unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    let body = &hello[5..];
    let (a, b) = body.split_at(body.len() / 3);
    let mut split = Vec::new();
    for part in [a, b] {
        split.extend_from_slice(&[0x16, 0x03, 0x01]);
        split.extend_from_slice(&(part.len() as u16).to_be_bytes());
        split.extend_from_slice(part);
    }
    out.put("tls_client_hello", &split);
    // An SSLv2-compatible ClientHello (TLS 1.0) and plaintext.
    out.put(
        "tls_client_hello",
        &[
            0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x2f,
            0x00, 0x00, 0x35, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x05, 0x00, 0x00, 0x04, 0x01, 0x00,
            0x80, 0x00, 0x00, 0xff, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a,
            0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10,
        ],
    );
    out.put("tls_client_hello", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
}

fn http(out: &mut Out) {
    for req in [
        &b"GET / HTTP/1.1\r\nHost: httpbin.full:8000\r\nUser-Agent: curl/8\r\n\r\n"[..],
        b"POST /post HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00",
        b"GET /\r\n",
        b"CONNECT httpbin:443 HTTP/1.1\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\n",
        b"get / http/1.1\r\n",
        b"GET / HTTP/1.1\n\n",
        b"SSH-2.0-OpenSSH_9.2\r\n",
    ] {
        out.put("http_inspector", req);
    }
}

fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

fn peer_exchange(out: &mut Out) {
    use proxy::tls::peer_exchange::codec;
    let mut labels = Struct::default();
    labels.fields.insert("app".into(), string("httpbin"));
    labels.fields.insert("version".into(), string("v1"));
    labels
        .fields
        .insert("service.istio.io/canonical-name".into(), string("httpbin"));
    let mut md = Struct::default();
    md.fields
        .insert("NAME".into(), string("httpbin-5c5f8d9d4-abcde"));
    md.fields.insert("NAMESPACE".into(), string("full"));
    md.fields.insert("WORKLOAD_NAME".into(), string("httpbin"));
    md.fields.insert("CLUSTER_ID".into(), string("Kubernetes"));
    md.fields.insert("MESH_ID".into(), string("cluster.local"));
    md.fields.insert("ISTIO_VERSION".into(), string("1.24.0"));
    md.fields.insert(
        "LABELS".into(),
        Value {
            kind: Some(Kind::StructValue(labels)),
        },
    );
    md.fields.insert(
        "PLATFORM_METADATA".into(),
        Value {
            kind: Some(Kind::ListValue(
                envoy_types::pb::google::protobuf::ListValue {
                    values: vec![
                        string("a"),
                        Value {
                            kind: Some(Kind::NumberValue(1.5)),
                        },
                    ],
                },
            )),
        },
    );
    let id = "sidecar~10.0.0.1~httpbin-5c5f8d9d4-abcde.full~full.svc.cluster.local";
    let frame = codec::encode(id, &md);
    out.put("peer_exchange", &frame);
    out.put("peer_exchange", &codec::encode("", &Struct::default()));
    let mut with_data = frame.clone();
    with_data.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    out.put("peer_exchange", &with_data);
    // Magic, then an Any that is not a Struct.
    let any = Any {
        type_url: "type.googleapis.com/google.protobuf.Empty".into(),
        value: Vec::new(),
    };
    let payload = any.encode_to_vec();
    let mut other = codec::MAGIC.to_be_bytes().to_vec();
    other.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    other.extend_from_slice(&payload);
    out.put("peer_exchange", &other);
}

/// iptables-init's golden flag sets (iptables-init/tests/golden.rs) and env-driven runs.
fn iptables(out: &mut Out) {
    let base = [
        "-p",
        "15001",
        "-z",
        "15006",
        "-u",
        "1337",
        "-m",
        "REDIRECT",
        "-i",
        "*",
        "-x",
        "",
        "-b",
        "*",
        "-d",
        "15090,15021,15020",
    ];
    let sets: Vec<Vec<&str>> = vec![
        base.to_vec(),
        ["istio-iptables"]
            .iter()
            .chain(base.iter())
            .copied()
            .collect(),
        [&base[..], &["-n"]].concat(),
        [&base[..], &["-k", "eth1,eth2"]].concat(),
        [&base[..], &["-m", "TPROXY"]].concat(),
        [&base[..], &["--redirect-dns", "-g", "1,2", "-u", "3,4"]].concat(),
        [&base[..], &["--drop-invalid"]].concat(),
        [
            &base[..],
            &[
                "-x",
                "10.0.0.0/8,fd00::/8",
                "-i",
                "10.96.0.0/12,2001:db8::/32",
            ],
        ]
        .concat(),
        [
            &base[..],
            &[
                "-o",
                "15020,1000:2000",
                "-q",
                "10.0.0.1/32",
                "-c",
                "--capture-all-dns",
            ],
        ]
        .concat(),
        vec![
            "-p",
            "15001",
            "-z",
            "15006",
            "-u",
            "1337",
            "-g",
            "1337",
            "-m",
            "REDIRECT",
            "-i",
            "*",
            "-x",
            "",
            "-b",
            "*",
            "-d",
            "15020,15021,15090",
            "-o",
            "15020",
        ],
        vec!["--cleanup-only"],
        vec!["-n", "--reconcile", "--run-validation"],
        vec![
            "ENV:ISTIO_INBOUND_PORTS=80,8080",
            "ENV:ISTIO_SERVICE_CIDR=10.0.0.0/8",
            "ENV:ISTIO_META_DNS_CAPTURE=true",
            "ENV:INVALID_DROP=1",
            "ENV:ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE=888,ftp",
            "ENV:ISTIO_INBOUND_INTERCEPTION_MODE=TPROXY",
            "ENV:ENVOY_USER=istio-proxy",
            "-n",
        ],
    ];
    for (i, set) in sets.iter().enumerate() {
        let mut text = set.join("\n");
        // The first byte also picks IPv6 (odd) or IPv4: run every set both ways.
        out.put("iptables_args", text.as_bytes());
        text.insert_str(0, if i % 2 == 0 { "-n\n" } else { "\n" });
        out.put("iptables_args", text.as_bytes());
    }
}
