//! The rustls crypto provider on the work a sidecar does: full mTLS handshakes (TLS 1.3,
//! ECDSA P-256 SPIFFE certificates on both sides, as Istio issues them) per key exchange
//! group, and bulk record encryption + decryption through a TLS pair, in memory (no
//! sockets, so only crypto and rustls are measured).
//!
//! `cargo bench -p benches --bench tls` measures *ring* (the provider we ship);
//! `cargo bench -p benches --bench tls --features aws-lc` adds aws-lc-rs, including the
//! post-quantum X25519MLKEM768 group.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
};
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

struct Pki {
    ca: CertificateDer<'static>,
    server: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    client: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "cluster.local");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let leaf = |uri: &str| {
        let mut p = CertificateParams::new(vec!["server.test".to_string()]).unwrap();
        p.subject_alt_names
            .push(SanType::URI(uri.try_into().unwrap()));
        // Workload certificates have an empty subject, as Istio's do (and unlike rcgen's
        // default, which would equal the CA's and look self-signed to BoringSSL).
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &issuer).unwrap();
        (
            vec![cert.der().clone()],
            PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
    };
    Pki {
        ca: ca.der().clone(),
        server: leaf("spiffe://cluster.local/ns/default/sa/server"),
        client: leaf("spiffe://cluster.local/ns/default/sa/client"),
    }
}

fn configs(
    base: &CryptoProvider,
    kx: &'static dyn SupportedKxGroup,
    pki: &Pki,
) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let provider = Arc::new(CryptoProvider {
        kx_groups: vec![kx],
        ..base.clone()
    });
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.clone()).unwrap();
    let roots = Arc::new(roots);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .unwrap();
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(pki.server.0.clone(), pki.server.1.clone_key())
        .unwrap();
    // Every connection is a full handshake, as between sidecars that do not resume.
    server.send_tls13_tickets = 0;
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(pki.client.0.clone(), pki.client.1.clone_key())
        .unwrap();
    client.resumption = rustls::client::Resumption::disabled();
    (Arc::new(server), Arc::new(client))
}

/// Moves TLS records from one side to the other until neither has anything to send.
fn pump(client: &mut ClientConnection, server: &mut ServerConnection) {
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        let mut moved = false;
        while client.wants_write() {
            buf.clear();
            client.write_tls(&mut buf).unwrap();
            feed(server, &buf);
            moved = true;
        }
        while server.wants_write() {
            buf.clear();
            server.write_tls(&mut buf).unwrap();
            feed(client, &buf);
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

/// Hands all of `bytes` to a connection (`read_tls` takes at most a buffer's worth).
fn feed<D>(conn: &mut rustls::ConnectionCommon<D>, mut bytes: &[u8])
where
    D: rustls::SideData,
{
    while !bytes.is_empty() {
        conn.read_tls(&mut bytes).unwrap();
        conn.process_new_packets().unwrap();
    }
}

fn handshake(
    server: &Arc<ServerConfig>,
    client: &Arc<ClientConfig>,
) -> (ClientConnection, ServerConnection) {
    let name = ServerName::try_from("server.test").unwrap();
    let mut c = ClientConnection::new(client.clone(), name).unwrap();
    let mut s = ServerConnection::new(server.clone()).unwrap();
    pump(&mut c, &mut s);
    assert!(!c.is_handshaking() && !s.is_handshaking());
    (c, s)
}

struct Provider {
    name: &'static str,
    provider: CryptoProvider,
    groups: Vec<(&'static str, &'static dyn SupportedKxGroup)>,
}

fn providers() -> Vec<Provider> {
    use rustls::crypto::ring;
    #[allow(unused_mut)]
    let mut out = vec![Provider {
        name: "ring",
        provider: ring::default_provider(),
        groups: vec![
            ("X25519", ring::kx_group::X25519),
            ("P-256", ring::kx_group::SECP256R1),
        ],
    }];
    #[cfg(feature = "aws-lc")]
    {
        use rustls::crypto::aws_lc_rs;
        out.push(Provider {
            name: "aws-lc-rs",
            provider: aws_lc_rs::default_provider(),
            groups: vec![
                ("X25519", aws_lc_rs::kx_group::X25519),
                ("P-256", aws_lc_rs::kx_group::SECP256R1),
                ("X25519MLKEM768", aws_lc_rs::kx_group::X25519MLKEM768),
            ],
        });
    }
    out
}

fn handshakes(c: &mut Criterion) {
    let pki = pki();
    let mut group = c.benchmark_group("mtls_handshake");
    group.throughput(Throughput::Elements(1));
    for p in providers() {
        for (kx_name, kx) in &p.groups {
            let (server, client) = configs(&p.provider, *kx, &pki);
            group.bench_function(format!("{}/{kx_name}", p.name), |b| {
                b.iter(|| black_box(handshake(&server, &client)))
            });
        }
    }
    group.finish();
}

fn bulk(c: &mut Criterion) {
    const TOTAL: usize = 4 << 20;
    let pki = pki();
    let chunk = vec![0x5au8; 16 * 1024];
    let mut group = c.benchmark_group("bulk_4MiB");
    group.throughput(Throughput::Bytes(TOTAL as u64));
    for p in providers() {
        for suite in [
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
        ] {
            let base = CryptoProvider {
                cipher_suites: p
                    .provider
                    .cipher_suites
                    .iter()
                    .filter(|s| s.suite() == suite)
                    .copied()
                    .collect(),
                ..p.provider.clone()
            };
            let (server, client) = configs(&base, p.groups[0].1, &pki);
            let (mut c, mut s) = handshake(&server, &client);
            let mut sink = vec![0u8; 64 * 1024];
            group.bench_function(format!("{}/{suite:?}", p.name), |b| {
                b.iter(|| {
                    let mut sent = 0;
                    while sent < TOTAL {
                        c.writer().write_all(&chunk).unwrap();
                        sent += chunk.len();
                        pump(&mut c, &mut s);
                        while let Ok(n) = s.reader().read(&mut sink) {
                            if n == 0 {
                                break;
                            }
                        }
                    }
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = handshakes, bulk
}
criterion_main!(benches);
