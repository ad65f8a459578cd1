//! Per-connection classification cost: filter chain selection on an Istio virtualInbound
//! with 50 service ports (PERMISSIVE: mTLS and plaintext chains per port, plus the
//! catch-alls), ClientHello sniffing, and the whole peek + select path.
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::listener::v3::FilterChainMatch;
use envoy_types::pb::google::protobuf::UInt32Value;
use proxy::listener::{
    AppProtocols, ChainSpec, ConnectionInfo, FilterChainMatcher, Inspectors, Peek, TlsInspector,
    TransportProtocol, http_inspector,
};

const MESH_ALL: &[&str] = &[
    "istio",
    "istio-peer-exchange",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];

fn chain(port: Option<u32>, transport: &str, alpn: &[&str]) -> FilterChainMatch {
    FilterChainMatch {
        destination_port: port.map(|value| UInt32Value { value }),
        prefix_ranges: if port.is_none() {
            vec![CidrRange {
                address_prefix: "0.0.0.0".into(),
                prefix_len: Some(UInt32Value { value: 0 }),
            }]
        } else {
            Vec::new()
        },
        transport_protocol: transport.into(),
        application_protocols: alpn.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// virtualInbound with 50 service ports, 2 chains each, as istiod builds it in PERMISSIVE.
fn virtual_inbound() -> FilterChainMatcher<String> {
    let mut chains = vec![
        (
            "virtualInbound-blackhole".to_string(),
            FilterChainMatch {
                destination_port: Some(UInt32Value { value: 15006 }),
                ..Default::default()
            },
        ),
        (
            "virtualInbound-catchall-http".into(),
            chain(
                None,
                "tls",
                &["istio-http/1.0", "istio-http/1.1", "istio-h2"],
            ),
        ),
        (
            "virtualInbound-catchall-http".into(),
            chain(None, "raw_buffer", &["http/1.1", "h2c"]),
        ),
        (
            "virtualInbound".into(),
            chain(None, "tls", &["istio-peer-exchange", "istio"]),
        ),
        ("virtualInbound".into(), chain(None, "raw_buffer", &[])),
        ("virtualInbound".into(), chain(None, "tls", &[])),
    ];
    for i in 0..50 {
        let port = 8000 + i * 10;
        chains.push((
            format!("0.0.0.0_{port}"),
            chain(Some(port), "tls", MESH_ALL),
        ));
        chains.push((
            format!("0.0.0.0_{port}"),
            chain(Some(port), "raw_buffer", &[]),
        ));
    }
    FilterChainMatcher::new(
        chains.iter().map(|(name, m)| ChainSpec {
            name,
            filter_chain_match: Some(m),
            chain: name.clone(),
        }),
        None,
    )
    .unwrap_or_else(|e| panic!("bench config: {e}"))
}

fn rustls_hello(sni: &str, alpn: &[&str]) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("{e}"))
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let name =
        rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap_or_else(|e| panic!("{e}"));
    out
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

fn bench(c: &mut Criterion) {
    let m = virtual_inbound();
    let remote = addr("10.244.1.9:51234");
    let conn = |local: &str, tls: bool, alpn: &'static [&'static str]| ConnectionInfo {
        local: addr(local),
        remote,
        direct_remote: remote,
        server_name: None,
        transport_protocol: if tls {
            TransportProtocol::Tls
        } else {
            TransportProtocol::RawBuffer
        },
        application_protocols: AppProtocols::Names(alpn),
    };
    let mesh_tcp = conn("10.244.0.7:8250", true, &["istio-peer-exchange", "istio"]);
    let plain_http = conn("10.244.0.7:3000", false, &["http/1.1"]);
    let passthrough = conn("10.244.0.7:3000", true, &["h2"]);
    let closed = conn("10.244.0.7:8250", true, &["h2"]);
    c.bench_function(
        "select/virtualInbound 50 ports: mTLS to a service port",
        |b| b.iter(|| m.select(black_box(&mesh_tcp))),
    );
    c.bench_function(
        "select/virtualInbound 50 ports: plaintext HTTP, catch-all",
        |b| b.iter(|| m.select(black_box(&plain_http))),
    );
    c.bench_function("select/virtualInbound 50 ports: app TLS passthrough", |b| {
        b.iter(|| m.select(black_box(&passthrough)))
    });
    c.bench_function("select/virtualInbound 50 ports: no chain (closed)", |b| {
        b.iter(|| m.select(black_box(&closed)))
    });

    let tls = TlsInspector::default();
    let hello = rustls_hello(
        "outbound_.8250_._.reviews.default.svc.cluster.local",
        &["istio-peer-exchange", "istio"],
    );
    let mut split = Vec::new();
    for part in [&hello[5..100], &hello[100..]] {
        split.extend_from_slice(&[22, 3, 1]);
        split.extend_from_slice(&(part.len() as u16).to_be_bytes());
        split.extend_from_slice(part);
    }
    c.bench_function("sniff/ClientHello (rustls, SNI + ALPN, one record)", |b| {
        b.iter(|| tls.inspect(black_box(&hello)))
    });
    c.bench_function("sniff/ClientHello split over two records", |b| {
        b.iter(|| tls.inspect(black_box(&split)))
    });
    let request = b"GET /productpage HTTP/1.1\r\nHost: productpage:9080\r\n\r\n";
    c.bench_function("sniff/HTTP/1.1 request line", |b| {
        b.iter(|| http_inspector::inspect(black_box(request)))
    });

    let inspectors = Inspectors {
        tls: Some(tls),
        http: true,
    };
    let local = addr("10.244.0.7:8250");
    c.bench_function("peek+select/mTLS ClientHello to a service port", |b| {
        b.iter(|| match inspectors.peek(black_box(&hello)) {
            Peek::Ready(found) => m
                .select(&found.connection_info(local, remote, remote))
                .is_some(),
            _ => false,
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
