#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Differential test: our inspectors and filter chain matcher against the real Envoy.
//!
//! Envoy runs listeners whose filter chains each answer with their own name
//! (`direct_response`) and then close; a connection that matches no chain is closed without
//! an answer. For a matrix of destination ports, destination and source addresses and first
//! bytes (real ClientHellos from rustls, plaintext HTTP, the h2c preface, junk), we send the
//! bytes, read Envoy's answer and check that `Inspectors::peek` + `FilterChainMatcher::select`
//! pick the same chain. Layouts: Istio's virtualInbound in PERMISSIVE and STRICT mode, and
//! one exercising server names, destination ranges and source criteria.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::listener::v3::FilterChainMatch;
use envoy_types::pb::envoy::config::listener::v3::filter_chain_match::ConnectionSourceType;
use envoy_types::pb::google::protobuf::UInt32Value;
use proxy::listener::{ChainSpec, FilterChainMatcher, Inspectors, Peek, TlsInspector};

// --- layouts ------------------------------------------------------------------------------

/// One set of filter chains, installed on several listener ports.
struct Layout {
    name: &'static str,
    ports: Vec<u16>,
    chains: Vec<(String, FilterChainMatch)>,
    default_chain: Option<&'static str>,
}

#[derive(Default)]
struct M(FilterChainMatch);

fn fcm() -> M {
    M::default()
}

// === impl M ===

impl M {
    fn port(mut self, p: u16) -> Self {
        self.0.destination_port = Some(UInt32Value { value: p.into() });
        self
    }
    fn dst(mut self, addr: &str, len: u32) -> Self {
        self.0.prefix_ranges.push(range(addr, len));
        self
    }
    fn sni(mut self, names: &[&str]) -> Self {
        self.0.server_names = names.iter().map(|s| s.to_string()).collect();
        self
    }
    fn transport(mut self, t: &str) -> Self {
        self.0.transport_protocol = t.into();
        self
    }
    fn alpn(mut self, protos: &[&str]) -> Self {
        self.0.application_protocols = protos.iter().map(|s| s.to_string()).collect();
        self
    }
    fn source_type(mut self, t: ConnectionSourceType) -> Self {
        self.0.source_type = t as i32;
        self
    }
    fn src(mut self, addr: &str, len: u32) -> Self {
        self.0.source_prefix_ranges.push(range(addr, len));
        self
    }
}

fn range(addr: &str, len: u32) -> CidrRange {
    CidrRange {
        address_prefix: addr.into(),
        prefix_len: Some(UInt32Value { value: len }),
    }
}

fn chains(list: Vec<(&str, M)>) -> Vec<(String, FilterChainMatch)> {
    list.into_iter()
        .map(|(n, m)| (n.to_string(), m.0))
        .collect()
}

const MESH_HTTP: &[&str] = &["istio-http/1.0", "istio-http/1.1", "istio-h2"];
const MESH_ALL: &[&str] = &[
    "istio",
    "istio-peer-exchange",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];

/// virtualInbound as istiod builds it in PERMISSIVE mode (filterchain_options.go): ports are
/// [inbound (blackholed), an HTTP service port, a TCP service port, any other port].
fn permissive(ports: [u16; 4]) -> Layout {
    let [inbound, http, tcp, _] = ports;
    Layout {
        name: "permissive",
        ports: ports.to_vec(),
        chains: chains(vec![
            ("blackhole", fcm().port(inbound)),
            (
                "catchall-http-mtls",
                fcm().dst("0.0.0.0", 0).transport("tls").alpn(MESH_HTTP),
            ),
            (
                "catchall-http-plain",
                fcm()
                    .dst("0.0.0.0", 0)
                    .transport("raw_buffer")
                    .alpn(&["http/1.1", "h2c"]),
            ),
            (
                "passthrough-mtls",
                fcm()
                    .dst("0.0.0.0", 0)
                    .transport("tls")
                    .alpn(&["istio-peer-exchange", "istio"]),
            ),
            (
                "passthrough-plain",
                fcm().dst("0.0.0.0", 0).transport("raw_buffer"),
            ),
            ("passthrough-tls", fcm().dst("0.0.0.0", 0).transport("tls")),
            (
                "http-svc-mtls",
                fcm().port(http).transport("tls").alpn(MESH_ALL),
            ),
            ("http-svc-plain", fcm().port(http).transport("raw_buffer")),
            (
                "tcp-svc-mtls",
                fcm().port(tcp).transport("tls").alpn(MESH_ALL),
            ),
            ("tcp-svc-tls", fcm().port(tcp).transport("tls")),
            ("tcp-svc-plain", fcm().port(tcp).transport("raw_buffer")),
        ]),
        default_chain: None,
    }
}

/// virtualInbound in STRICT mode: ports are [inbound, a service port, any other port].
fn strict(ports: [u16; 3]) -> Layout {
    let [inbound, svc, _] = ports;
    Layout {
        name: "strict",
        ports: ports.to_vec(),
        chains: chains(vec![
            ("blackhole", fcm().port(inbound)),
            (
                "catchall-http-mtls",
                fcm().dst("0.0.0.0", 0).transport("tls").alpn(MESH_HTTP),
            ),
            (
                "catchall-tcp-mtls",
                fcm().dst("0.0.0.0", 0).transport("tls"),
            ),
            ("svc-mtls", fcm().port(svc).transport("tls")),
        ]),
        default_chain: None,
    }
}

/// Server names, destination ranges, source type and ranges, ALPN, and a default chain.
fn general(ports: [u16; 2]) -> Layout {
    use ConnectionSourceType::{External, SameIpOrLoopback};
    Layout {
        name: "general",
        ports: ports.to_vec(),
        chains: chains(vec![
            ("sni-exact", fcm().sni(&["www.example.com"])),
            ("sni-wild-h2", fcm().sni(&["*.example.com"]).alpn(&["h2"])),
            ("sni-wild", fcm().sni(&["*.example.com"])),
            ("sni-wild-deep", fcm().sni(&["*.b.example.com"])),
            ("sni-com", fcm().sni(&["*.com"]).transport("tls")),
            ("dst2-tls", fcm().dst("127.0.0.2", 32).transport("tls")),
            (
                "dst2-local",
                fcm().dst("127.0.0.2", 32).source_type(SameIpOrLoopback),
            ),
            (
                "dst2-external",
                fcm().dst("127.0.0.2", 32).source_type(External),
            ),
            (
                "plain-http11",
                fcm().transport("raw_buffer").alpn(&["http/1.1"]),
            ),
            (
                "plain-from-5",
                fcm().transport("raw_buffer").src("127.0.0.5", 32),
            ),
            ("h2", fcm().alpn(&["h2"])),
            (
                "mesh-tcp",
                fcm()
                    .transport("tls")
                    .alpn(&["istio-peer-exchange", "istio"]),
            ),
        ]),
        default_chain: Some("default"),
    }
}

// --- Envoy config ---------------------------------------------------------------------------

fn bootstrap(layouts: &[Layout]) -> String {
    let mut y = String::from(
        "admin:\n  address:\n    socket_address: { address: 127.0.0.1, port_value: 0 }\n\
         static_resources:\n  listeners:\n",
    );
    for layout in layouts {
        for port in &layout.ports {
            y += &format!(
                "  - name: {name}-{port}\n    address: {{socket_address: {{address: 0.0.0.0, port_value: {port}}}}}\n\
                 \x20   listener_filters_timeout: 10s\n    listener_filters:\n\
                 \x20   - {{name: envoy.filters.listener.tls_inspector, typed_config: {{\"@type\": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}}}\n\
                 \x20   - {{name: envoy.filters.listener.http_inspector, typed_config: {{\"@type\": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector}}}}\n\
                 \x20   filter_chains:\n",
                name = layout.name,
            );
            for (name, m) in &layout.chains {
                y += &format!(
                    "    - name: {name}\n      filter_chain_match: {}\n      filters: [{}]\n",
                    match_json(m),
                    answer(name)
                );
            }
            if let Some(name) = layout.default_chain {
                y += &format!(
                    "    default_filter_chain:\n      name: {name}\n      filters: [{}]\n",
                    answer(name)
                );
            }
        }
    }
    y
}

fn answer(name: &str) -> String {
    format!(
        "{{name: envoy.filters.network.direct_response, typed_config: {{\"@type\": type.googleapis.com/envoy.extensions.filters.network.direct_response.v3.Config, response: {{inline_string: \"{name}\"}}}}}}"
    )
}

/// A `FilterChainMatch` as a JSON object (the fields these tests use).
fn match_json(m: &FilterChainMatch) -> String {
    let strings = |v: &[String]| {
        format!(
            "[{}]",
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    let ranges = |v: &[CidrRange]| {
        let items: Vec<String> = v
            .iter()
            .map(|r| {
                format!(
                    "{{\"address_prefix\":{:?},\"prefix_len\":{}}}",
                    r.address_prefix,
                    r.prefix_len.map_or(0, |l| l.value)
                )
            })
            .collect();
        format!("[{}]", items.join(","))
    };
    let mut fields = Vec::new();
    if let Some(p) = m.destination_port {
        fields.push(format!("\"destination_port\":{}", p.value));
    }
    if !m.prefix_ranges.is_empty() {
        fields.push(format!("\"prefix_ranges\":{}", ranges(&m.prefix_ranges)));
    }
    if !m.server_names.is_empty() {
        fields.push(format!("\"server_names\":{}", strings(&m.server_names)));
    }
    if !m.transport_protocol.is_empty() {
        fields.push(format!("\"transport_protocol\":{:?}", m.transport_protocol));
    }
    if !m.application_protocols.is_empty() {
        fields.push(format!(
            "\"application_protocols\":{}",
            strings(&m.application_protocols)
        ));
    }
    if m.source_type != 0 {
        let ty = ConnectionSourceType::try_from(m.source_type).unwrap();
        fields.push(format!("\"source_type\":{:?}", ty.as_str_name()));
    }
    if !m.source_prefix_ranges.is_empty() {
        fields.push(format!(
            "\"source_prefix_ranges\":{}",
            ranges(&m.source_prefix_ranges)
        ));
    }
    if !m.address_suffix.is_empty() {
        fields.push(format!("\"address_suffix\":{:?}", m.address_suffix));
    }
    format!("{{{}}}", fields.join(","))
}

fn matcher(layout: &Layout) -> FilterChainMatcher<String> {
    FilterChainMatcher::new(
        layout.chains.iter().map(|(name, m)| ChainSpec {
            name,
            filter_chain_match: Some(m),
            chain: name.clone(),
        }),
        layout.default_chain.map(String::from),
    )
    .unwrap()
}

// --- first bytes ----------------------------------------------------------------------------

fn rustls_hello(sni: Option<&str>, alpn: &[&str], tls12_only: bool) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider);
    let builder = if tls12_only {
        builder.with_protocol_versions(&[&rustls::version::TLS12])
    } else {
        builder.with_safe_default_protocol_versions()
    };
    let mut config = builder
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    config.enable_sni = sni.is_some();
    let name = rustls::pki_types::ServerName::try_from(sni.unwrap_or("unused.example").to_string())
        .unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

/// A minimal ClientHello record with a chosen client version and SNI bytes.
fn crafted_hello(version: u16, sni: &[u8]) -> Vec<u8> {
    let v16 = |b: &[u8]| [&(b.len() as u16).to_be_bytes()[..], b].concat();
    let sni_ext = [&[0u8, 0][..], &v16(&v16(&[&[0u8][..], &v16(sni)].concat()))].concat();
    let body = [
        &version.to_be_bytes()[..],
        &[7; 32],
        &[0],
        &v16(&[0x13, 0x01, 0xc0, 0x2f]),
        &[1, 0],
        &v16(&sni_ext),
    ]
    .concat();
    let len = (body.len() as u32).to_be_bytes();
    let msg = [&[1u8][..], &len[1..], &body].concat();
    [&[22u8, 3, 1][..], &v16(&msg)].concat()
}

fn payloads() -> Vec<(&'static str, Vec<u8>)> {
    let mut h2c = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2c.extend([0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let sslv2 = [
        &[
            0x80u8, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10,
        ][..],
        &[
            0, 0, 0x2f, 0, 0, 0x35, 0, 0, 0x0a, 0x01, 0, 0x80, 0x07, 0, 0xc0, 0x03, 0, 0x80, 0, 0,
            0x04,
        ],
        &[0; 16],
    ]
    .concat();
    vec![
        (
            "mesh-tcp",
            rustls_hello(
                Some("outbound_.80_._.svc.ns.svc.cluster.local"),
                &["istio-peer-exchange", "istio"],
                false,
            ),
        ),
        (
            "mesh-http11",
            rustls_hello(None, &["istio-http/1.1", "istio", "http/1.1"], false),
        ),
        (
            "mesh-h2-tls12",
            rustls_hello(Some("foo.com"), &["istio-h2", "istio", "h2"], true),
        ),
        (
            "tls-www-h2",
            rustls_hello(Some("www.example.com"), &["h2"], false),
        ),
        (
            "tls-api-h2",
            rustls_hello(Some("api.example.com"), &["h2", "http/1.1"], false),
        ),
        ("tls-api", rustls_hello(Some("api.example.com"), &[], false)),
        ("tls-bare", rustls_hello(None, &[], false)),
        (
            "tls-deep-name",
            rustls_hello(Some("a.b.example.com"), &[], false),
        ),
        (
            "tls-apex-name",
            rustls_hello(Some("example.com"), &["h2"], false),
        ),
        (
            "tls-upper-case-sni",
            crafted_hello(0x0303, b"WWW.Example.COM"),
        ),
        (
            "tls-sslv3-version",
            crafted_hello(0x0300, b"www.example.com"),
        ),
        (
            "tls-nul-in-sni",
            crafted_hello(0x0303, b"www.exa\0mple.com"),
        ),
        ("sslv2-hello", sslv2),
        ("http11", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
        ("http10", b"GET /index.html HTTP/1.0\r\n\r\n".to_vec()),
        ("h2c-preface", h2c),
        (
            "pri-not-preface",
            b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n".to_vec(),
        ),
        ("junk", b"\x00\x01\x02\x03 hello\n".to_vec()),
    ]
}

// --- the comparison ---------------------------------------------------------------------------

/// What Envoy answered: the chain's name, or `None` when it closed without answering.
fn ask_envoy(src: IpAddr, dst: SocketAddr, payload: &[u8]) -> (Option<String>, SocketAddr) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(src, 0).into()).unwrap();
    socket
        .connect_timeout(&dst.into(), Duration::from_secs(5))
        .unwrap();
    let mut stream: TcpStream = socket.into();
    let local = stream.local_addr().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // A closed connection may refuse the write; the read below tells what happened.
    let _ = stream.write_all(payload);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8(answer).unwrap();
    ((!answer.is_empty()).then_some(answer), local)
}

/// What we pick for the same connection.
fn ask_us(
    m: &FilterChainMatcher<String>,
    local: SocketAddr,
    remote: SocketAddr,
    payload: &[u8],
) -> Option<String> {
    let inspectors = Inspectors {
        tls: Some(TlsInspector::default()),
        http: true,
    };
    match inspectors.peek(payload) {
        Peek::Ready(found) => m
            .select(&found.connection_info(local, remote, remote))
            .cloned(),
        Peek::Close(_) => None,
        Peek::NeedMoreData => panic!("payload is not decisive"),
    }
}

fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("0.0.0.0:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

#[test]
fn chain_selection_matches_envoy() {
    let Some(bin) = e2e::require_envoy("chain_selection_matches_envoy") else {
        return;
    };
    let p = free_ports(9);
    let layouts = [
        permissive([p[0], p[1], p[2], p[3]]),
        strict([p[4], p[5], p[6]]),
        general([p[7], p[8]]),
    ];
    let envoy = e2e::EnvoyProcess::start(&bin, &bootstrap(&layouts), &[]).unwrap();
    let payloads = payloads();
    let dsts = [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)];
    let srcs = [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 5)];
    let (mut total, mut mismatches, mut answered) = (0, Vec::new(), 0);
    let mut hit = std::collections::BTreeSet::new();
    for layout in &layouts {
        let m = matcher(layout);
        for &port in &layout.ports {
            for dst in dsts {
                for src in srcs {
                    for (what, payload) in &payloads {
                        let dst = SocketAddr::new(dst.into(), port);
                        let (envoy_says, local) = ask_envoy(src.into(), dst, payload);
                        let we_say = ask_us(&m, dst, local, payload);
                        total += 1;
                        answered += usize::from(envoy_says.is_some());
                        if let Some(name) = &envoy_says {
                            hit.insert(format!("{}/{name}", layout.name));
                        }
                        if envoy_says != we_say {
                            mismatches.push(format!(
                                "{} port {port} {src} -> {dst} {what}: envoy {envoy_says:?}, us {we_say:?}",
                                layout.name
                            ));
                        }
                    }
                }
            }
        }
    }
    eprintln!("compared {total} connections with Envoy ({answered} matched a chain)");
    assert!(
        mismatches.is_empty(),
        "{} of {total} differ:\n{}\nEnvoy log:\n{}",
        mismatches.len(),
        mismatches.join("\n"),
        envoy.log()
    );
    assert!(
        answered > total / 2,
        "most connections should reach a chain"
    );
}

/// Listener configs with a known verdict: rejected ones first, then ones Envoy accepts.
fn validation_cases() -> Vec<(&'static str, Vec<(String, FilterChainMatch)>)> {
    let mut suffix = fcm();
    suffix.0.address_suffix = "10.0.0.1".into();
    let pair = |a: M, b: M| chains(vec![("a", a), ("b", b)]);
    let one = |a: M| chains(vec![("a", a)]);
    vec![
        (
            "identical",
            pair(fcm().sni(&["a.com"]), fcm().sni(&["a.com"])),
        ),
        (
            "overlapping",
            pair(fcm().sni(&["a.com", "b.com"]), fcm().sni(&["b.com"])),
        ),
        (
            "case-folded overlap",
            pair(fcm().sni(&["A.com"]), fcm().sni(&["a.com"])),
        ),
        (
            "wildcard vs dot",
            pair(fcm().sni(&["*.a.com"]), fcm().sni(&[".a.com"])),
        ),
        ("repeated alpn", one(fcm().alpn(&["h2", "h2"]))),
        ("empty alpn vs none", pair(fcm().alpn(&[""]), fcm())),
        ("partial wildcard", one(fcm().sni(&["*w.example.com"]))),
        ("bare star", one(fcm().sni(&["*"]))),
        ("address_suffix", one(suffix)),
        ("malformed address", one(fcm().dst("10.0.0.300", 8))),
        ("prefix too long", one(fcm().dst("::1", 129))),
        ("port zero", one(fcm().port(0))),
        (
            "same range spelled twice",
            pair(fcm().dst("10.0.0.1", 8), fcm().dst("10.0.0.0", 8)),
        ),
        ("ok: star dot", one(fcm().sni(&["*.", "*.*.com"]))),
        ("ok: v4 /33", one(fcm().dst("10.0.0.1", 33))),
        (
            "ok: implicit and explicit catch-all",
            pair(fcm(), fcm().dst("0.0.0.0", 0)),
        ),
        (
            "ok: empty and named alpn",
            pair(fcm().alpn(&[""]), fcm().alpn(&["h2"])),
        ),
        (
            "ok: istio permissive",
            permissive([15006, 80, 9000, 1]).chains,
        ),
    ]
}

/// Whether `envoy --mode validate` accepts a listener with these chains; its log otherwise.
fn envoy_accepts(
    bin: &std::path::Path,
    dir: &std::path::Path,
    layout: &Layout,
) -> Result<(), String> {
    let path = dir.join("validate.yaml");
    std::fs::write(&path, bootstrap(std::slice::from_ref(layout))).unwrap();
    let out = std::process::Command::new(bin)
        .args(["--mode", "validate", "-l", "critical", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Listener configs that both Envoy (`--mode validate`) and we accept or both reject.
#[test]
fn config_errors_match_envoy() {
    let Some(bin) = e2e::require_envoy("config_errors_match_envoy") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (what, chains) in validation_cases() {
        let layout = Layout {
            name: "validate",
            ports: vec![19_999],
            chains,
            default_chain: None,
        };
        let ours = FilterChainMatcher::new(
            layout.chains.iter().map(|(name, m)| ChainSpec {
                name,
                filter_chain_match: Some(m),
                chain: (),
            }),
            None,
        )
        .map(|_| ())
        .map_err(|e| e.to_string());
        let envoy = envoy_accepts(&bin, dir.path(), &layout);
        assert_eq!(
            envoy.is_ok(),
            ours.is_ok(),
            "{what}: envoy {envoy:?}, us {ours:?}"
        );
        assert_eq!(ours.is_ok(), what.starts_with("ok:"), "{what}: {ours:?}");
    }
}

/// The same matrix end to end: the `proxy` binary and Envoy each serve the layouts (on their
/// own ports), and every connection must get the same answer, or be closed by both.
#[test]
fn proxy_binary_answers_like_envoy() {
    let Some(bin) = e2e::require_envoy("proxy_binary_answers_like_envoy") else {
        return;
    };
    let layouts_for = |p: Vec<u16>| {
        [
            permissive([p[0], p[1], p[2], p[3]]),
            strict([p[4], p[5], p[6]]),
            general([p[7], p[8]]),
        ]
    };
    let envoy_layouts = layouts_for(free_ports(9));
    let our_layouts = layouts_for(free_ports(9));
    let envoy = e2e::EnvoyProcess::start(&bin, &bootstrap(&envoy_layouts), &[]).unwrap();
    let ours = e2e::ProxyProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_proxy")),
        &bootstrap(&our_layouts),
        &[],
    )
    .unwrap();
    let payloads = payloads();
    let dsts = [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)];
    let srcs = [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 5)];
    let (mut total, mut mismatches) = (0, Vec::new());
    for (theirs, mine) in envoy_layouts.iter().zip(&our_layouts) {
        for (&envoy_port, &our_port) in theirs.ports.iter().zip(&mine.ports) {
            for dst in dsts {
                for src in srcs {
                    for (what, payload) in &payloads {
                        let (envoy_says, _) =
                            ask_envoy(src.into(), SocketAddr::new(dst.into(), envoy_port), payload);
                        let (we_say, _) =
                            ask_envoy(src.into(), SocketAddr::new(dst.into(), our_port), payload);
                        total += 1;
                        if envoy_says != we_say {
                            mismatches.push(format!(
                                "{} {src} -> {dst} {what}: envoy {envoy_says:?}, us {we_say:?}",
                                theirs.name
                            ));
                        }
                    }
                }
            }
        }
    }
    eprintln!("compared {total} connections between the proxy binary and Envoy");
    assert!(
        mismatches.is_empty(),
        "{} of {total} differ:\n{}\nour log:\n{}",
        mismatches.len(),
        mismatches.join("\n"),
        ours.log()
    );
    drop(envoy);
}
