//! The expected verdicts for hand-built inputs are what Envoy 1.40 did with the same bytes
//! (a listener whose chains answer their names), so these tests pin its behaviour down;
//! `tests/listener_envoy_diff.rs` re-checks the important ones live.

use std::sync::Arc;

use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector as Proto;
use envoy_types::pb::google::protobuf::UInt32Value;

use super::*;

// --- building ClientHellos -------------------------------------------------------------

fn u16be(v: usize) -> [u8; 2] {
    (v as u16).to_be_bytes()
}

fn v8(body: &[u8]) -> Vec<u8> {
    [&[body.len() as u8][..], body].concat()
}

fn v16(body: &[u8]) -> Vec<u8> {
    [&u16be(body.len())[..], body].concat()
}

fn ext(ty: u16, body: &[u8]) -> Vec<u8> {
    [&ty.to_be_bytes()[..], &v16(body)].concat()
}

fn sni_ext(name: &[u8]) -> Vec<u8> {
    ext(0, &v16(&[&[0u8][..], &v16(name)].concat()))
}

fn alpn_ext(protos: &[&[u8]]) -> Vec<u8> {
    let list: Vec<u8> = protos.iter().flat_map(|p| v8(p)).collect();
    ext(16, &v16(&list))
}

/// A ClientHello body, with the knobs the edge cases need.
#[derive(Clone)]
struct Hello {
    version: u16,
    session_id: Vec<u8>,
    ciphers: Vec<u16>,
    compression: Vec<u8>,
    extensions: Option<Vec<Vec<u8>>>,
}

fn hello(extensions: Vec<Vec<u8>>) -> Hello {
    Hello {
        version: 0x0303,
        session_id: Vec::new(),
        ciphers: vec![0x1301, 0x1302, 0xc02f],
        compression: vec![0],
        extensions: Some(extensions),
    }
}

fn standard() -> Hello {
    hello(vec![
        sni_ext(b"www.example.com"),
        alpn_ext(&[b"h2", b"http/1.1"]),
    ])
}

// === impl Hello ===

impl Hello {
    fn body(&self) -> Vec<u8> {
        let ciphers: Vec<u8> = self.ciphers.iter().flat_map(|c| c.to_be_bytes()).collect();
        let mut b = [
            &self.version.to_be_bytes()[..],
            &[7u8; 32],
            &v8(&self.session_id),
            &v16(&ciphers),
            &v8(&self.compression),
        ]
        .concat();
        if let Some(exts) = &self.extensions {
            b.extend(v16(&exts.concat()));
        }
        b
    }

    /// The handshake message: type 1, 24-bit length, body.
    fn message(&self) -> Vec<u8> {
        handshake(1, &self.body())
    }

    fn wire(&self) -> Vec<u8> {
        records(&self.message(), 16_384)
    }
}

fn handshake(ty: u8, body: &[u8]) -> Vec<u8> {
    let len = (body.len() as u32).to_be_bytes();
    [&[ty][..], &len[1..], body].concat()
}

fn record(ty: u8, version: u16, body: &[u8]) -> Vec<u8> {
    [&[ty][..], &version.to_be_bytes(), &v16(body)].concat()
}

/// Handshake bytes split into records of at most `max` bytes.
fn records(msg: &[u8], max: usize) -> Vec<u8> {
    msg.chunks(max)
        .flat_map(|c| record(22, 0x0301, c))
        .collect()
}

/// A real ClientHello from rustls (TLS 1.3 and 1.2 offered, or TLS 1.2 only).
fn rustls_hello(sni: Option<&str>, alpn: &[&[u8]], tls12_only: bool) -> Vec<u8> {
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
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.enable_sni = sni.is_some();
    let name = rustls::pki_types::ServerName::try_from(sni.unwrap_or("unused.example").to_string())
        .unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

fn inspect(buf: &[u8]) -> TlsInspection<'_> {
    TlsInspector::default().inspect(buf)
}

fn hello_of(buf: &[u8]) -> ClientHello<'_> {
    match inspect(buf) {
        TlsInspection::Tls(hello) => hello,
        other => panic!("expected TLS, got {other:?}"),
    }
}

fn alpn_of(hello: &ClientHello<'_>) -> Option<Vec<String>> {
    hello.alpn().map(|a| {
        a.iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    })
}

// --- real ClientHellos -----------------------------------------------------------------

#[test]
fn reads_sni_and_alpn_from_rustls_hellos() {
    type Case<'a> = (Option<&'a str>, &'a [&'a [u8]], bool);
    let cases: [Case<'_>; 6] = [
        (
            Some("outbound_.9080_._.reviews.default.svc.cluster.local"),
            &[b"istio-peer-exchange", b"istio"],
            false,
        ),
        (Some("api.example.com"), &[b"h2", b"http/1.1"], false),
        (Some("api.example.com"), &[], false),
        (None, &[b"istio-http/1.1", b"istio", b"http/1.1"], false),
        (None, &[], false),
        (Some("legacy.example.com"), &[b"h2"], true),
    ];
    for (sni, alpn, tls12_only) in cases {
        let wire = rustls_hello(sni, alpn, tls12_only);
        let hello = hello_of(&wire);
        assert_eq!(hello.server_name(), sni.map(str::as_bytes));
        let expected: Vec<String> = alpn
            .iter()
            .map(|p| String::from_utf8_lossy(p).into())
            .collect();
        assert_eq!(alpn_of(&hello), (!alpn.is_empty()).then_some(expected));
        assert_eq!(hello.legacy_version(), 0x0303);
        assert!(!hello.is_reassembled(), "one record: borrowed, not copied");
        assert!(!hello.is_sslv2_compatible());
    }
}

#[test]
fn every_truncation_of_a_hello_needs_more_data() {
    for wire in [
        rustls_hello(Some("www.example.com"), &[b"h2"], false),
        rustls_hello(None, &[], true),
        records(&standard().message(), 40),
    ] {
        for cut in 0..wire.len() {
            assert_eq!(
                inspect(&wire[..cut]),
                TlsInspection::NeedMoreData,
                "cut at {cut} of {}",
                wire.len()
            );
        }
        assert!(matches!(inspect(&wire), TlsInspection::Tls(_)));
    }
}

#[test]
fn a_hello_split_across_records_is_reassembled() {
    let msg = rustls_hello(Some("split.example.com"), &[b"h2"], false)[5..].to_vec();
    for split in 1..msg.len() {
        let wire = [
            record(22, 0x0301, &msg[..split]),
            record(22, 0x0303, &msg[split..]),
        ]
        .concat();
        let hello = hello_of(&wire);
        assert_eq!(
            hello.server_name(),
            Some(&b"split.example.com"[..]),
            "split at {split}"
        );
        assert_eq!(alpn_of(&hello), Some(vec!["h2".to_string()]));
        assert!(hello.is_reassembled());
    }
}

#[test]
fn bytes_after_the_hello_are_ignored() {
    let mut wire = standard().wire();
    wire.extend(record(23, 0x0303, b"early data"));
    assert_eq!(hello_of(&wire).server_name(), Some(&b"www.example.com"[..]));
}

// --- what Envoy says about odd hellos ---------------------------------------------------------

#[test]
fn server_name_rules() {
    let with_sni = |e: Vec<u8>| hello(vec![e, alpn_ext(&[b"h2"])]).wire();
    assert_eq!(
        hello_of(&with_sni(sni_ext(&[b'x'; 255])))
            .server_name()
            .map(<[u8]>::len),
        Some(255)
    );
    assert_eq!(
        hello_of(&with_sni(sni_ext(b"WWW.Example.COM"))).server_name(),
        Some(&b"WWW.Example.COM"[..])
    );
    let not_tls = [
        sni_ext(&[b'x'; 256]),
        sni_ext(b"a\0b"),
        sni_ext(b""),
        ext(0, b""),
        ext(0, &v16(b"")),
        ext(0, &v16(&[&[1u8][..], &v16(b"www.example.com")].concat())),
        ext(
            0,
            &v16(&[&[0u8][..], &v16(b"a.com"), &[0], &v16(b"b.com")].concat()),
        ),
    ];
    for e in not_tls {
        assert_eq!(
            inspect(&with_sni(e.clone())),
            TlsInspection::NotTls,
            "{e:?}"
        );
    }
    let no_sni = hello(vec![alpn_ext(&[b"h2"])]).wire();
    assert_eq!(hello_of(&no_sni).server_name(), None);
}

#[test]
fn client_version_outside_tls_1_0_to_1_3_closes_the_connection() {
    for version in [0x0301, 0x0302, 0x0303, 0x0304] {
        let wire = Hello {
            version,
            ..standard()
        }
        .wire();
        assert_eq!(hello_of(&wire).legacy_version(), version);
    }
    for version in [0x0300, 0x0305, 0x0400, 0x02ff, 0xfefd] {
        let wire = Hello {
            version,
            ..standard()
        }
        .wire();
        assert_eq!(
            inspect(&wire),
            TlsInspection::Close(TlsCloseReason::UnsupportedVersion(version))
        );
    }
}

#[test]
fn the_version_is_only_judged_once_the_hello_parses() {
    let bad = [
        hello(vec![sni_ext(b"a\0b")]),
        hello(vec![sni_ext(b"a.com"), ext(0xfe0d, b"")]),
        hello(vec![ext(0x1234, b""), ext(0x1234, b"")]),
    ];
    for h in bad {
        let wire = Hello {
            version: 0x0300,
            ..h
        }
        .wire();
        assert_eq!(inspect(&wire), TlsInspection::NotTls);
    }
}

#[test]
fn what_boringssl_checks_after_envoy_stops_does_not_matter() {
    let odd = [
        Hello {
            compression: vec![1],
            ..standard()
        },
        Hello {
            ciphers: vec![0x1234],
            ..standard()
        },
        Hello {
            ciphers: vec![0x1301, 0x5600],
            ..standard()
        },
        hello(vec![sni_ext(b"www.example.com"), ext(43, &v8(&[3, 0]))]),
        hello(vec![sni_ext(b"www.example.com"), ext(57, b"")]),
        hello(vec![sni_ext(b"www.example.com"), ext(10, b"")]),
        hello(vec![sni_ext(b"www.example.com"), ext(11, &v8(&[1]))]),
    ];
    for h in odd {
        let wire = h.wire();
        assert_eq!(hello_of(&wire).server_name(), Some(&b"www.example.com"[..]));
    }
}

/// Inputs BoringSSL rejects before Envoy's callback runs: Envoy calls them `raw_buffer`.
fn not_tls_inputs() -> Vec<(&'static str, Vec<u8>)> {
    let dup = hello(vec![
        sni_ext(b"a.com"),
        ext(0x1234, b"zz"),
        ext(0x1234, b""),
    ]);
    vec![
        ("duplicate extension", dup.wire()),
        (
            "session id of 33",
            Hello {
                session_id: vec![1; 33],
                ..standard()
            }
            .wire(),
        ),
        (
            "no cipher suites",
            Hello {
                ciphers: vec![],
                ..standard()
            }
            .wire(),
        ),
        (
            "no compression methods",
            Hello {
                compression: vec![],
                ..standard()
            }
            .wire(),
        ),
        (
            "trailing byte",
            records(
                &handshake(1, &[standard().body(), vec![1]].concat()),
                16_384,
            ),
        ),
        (
            "another message after it",
            records(&[standard().message(), handshake(2, b"")].concat(), 16_384),
        ),
        (
            "not a ClientHello",
            records(&handshake(2, &standard().body()), 16_384),
        ),
        (
            "record version 2",
            record(22, 0x0200, &standard().message()),
        ),
        ("HTTP", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
        (
            "change_cipher_spec first",
            [record(20, 0x0301, &[1]), standard().wire()].concat(),
        ),
        (
            "application data first",
            [record(23, 0x0301, b""), standard().wire()].concat(),
        ),
        (
            "fatal alert first",
            [record(21, 0x0301, &[2, 40]), standard().wire()].concat(),
        ),
        (
            "alert of three bytes",
            [record(21, 0x0301, &[1, 1, 1]), standard().wire()].concat(),
        ),
        (
            "five warning alerts",
            [record(21, 0x0301, &[1, 1]).repeat(5), standard().wire()].concat(),
        ),
        (
            "33 empty records",
            [record(22, 0x0301, b"").repeat(33), standard().wire()].concat(),
        ),
        (
            "message over 16 KiB",
            record(22, 0x0301, &[1, 0, 0x4e, 0x20]),
        ),
        ("record over 16704 bytes", vec![22, 3, 1, 0x4e, 0x20]),
        ("empty ECH", hello(vec![ext(0xfe0d, b"")]).wire()),
        ("truncated outer ECH", hello(vec![ext(0xfe0d, &[0])]).wire()),
    ]
}

#[test]
fn framing_errors_are_not_tls() {
    for (what, wire) in not_tls_inputs() {
        assert_eq!(inspect(&wire), TlsInspection::NotTls, "{what}");
    }
}

#[test]
fn tolerated_records_before_the_hello() {
    let cases = [
        [record(21, 0x0301, &[1, 1]).repeat(4), standard().wire()].concat(),
        [record(22, 0x0301, b"").repeat(32), standard().wire()].concat(),
        records(&standard().message(), 50),
        record(22, 0x0305, &standard().message()),
    ];
    for wire in cases {
        assert_eq!(hello_of(&wire).server_name(), Some(&b"www.example.com"[..]));
    }
    // A warning alert between two fragments of the hello is fine too.
    let msg = standard().message();
    let wire = [
        record(22, 0x0301, &msg[..60]),
        record(21, 0x0301, &[1, 1]),
        record(22, 0x0301, &msg[60..]),
    ]
    .concat();
    assert!(matches!(inspect(&wire), TlsInspection::Tls(_)));
}

#[test]
fn a_close_notify_first_closes_the_connection() {
    let wire = [record(21, 0x0301, &[1, 0]), standard().wire()].concat();
    assert_eq!(
        inspect(&wire),
        TlsInspection::Close(TlsCloseReason::CloseNotify)
    );
}

#[test]
fn ech_extensions() {
    let outer = [
        &[0u8][..],
        &1u16.to_be_bytes(),
        &1u16.to_be_bytes(),
        &[5],
        &v16(b"k"),
        &v16(b"p"),
    ]
    .concat();
    for body in [outer, vec![1], vec![2]] {
        let wire = hello(vec![sni_ext(b"public.example"), ext(0xfe0d, &body)]).wire();
        assert_eq!(hello_of(&wire).server_name(), Some(&b"public.example"[..]));
    }
}

#[test]
fn malformed_alpn_is_ignored_not_fatal() {
    let lists = [
        alpn_ext(&[b""]),
        ext(16, &[&v16(&v8(b"h2"))[..], b"x"].concat()),
        ext(16, &v16(&[&v8(b"h2")[..], &[5, b'a', b'b']].concat())),
        ext(16, &v16(&[&v8(b"h2")[..], &[0]].concat())),
    ];
    for list in lists {
        let wire = hello(vec![sni_ext(b"a.com"), list]).wire();
        let hello = hello_of(&wire);
        assert_eq!(hello.alpn(), None);
        assert!(hello.app_protocols().is_empty());
    }
}

#[test]
fn grease_values_are_just_unknown_extensions_and_ciphers() {
    let wire = Hello {
        ciphers: vec![0x0a0a, 0x1301],
        ..hello(vec![
            ext(0x0a0a, b""),
            sni_ext(b"www.example.com"),
            alpn_ext(&[b"h2"]),
            ext(0x1a1a, &[0]),
        ])
    }
    .wire();
    let hello = hello_of(&wire);
    assert_eq!(hello.server_name(), Some(&b"www.example.com"[..]));
    assert_eq!(alpn_of(&hello), Some(vec!["h2".into()]));
}

#[test]
fn a_hello_without_extensions_is_tls_without_sni() {
    let wire = Hello {
        extensions: None,
        ..standard()
    }
    .wire();
    let hello = hello_of(&wire);
    assert_eq!((hello.server_name(), hello.alpn()), (None, None));
}

#[test]
fn sslv2_compatible_hellos() {
    let v2 = |version: [u8; 2], specs: &[u8]| -> Vec<u8> {
        let challenge = [0u8; 16];
        let body = [
            &[1u8][..],
            &version,
            &u16be(specs.len()),
            &[0, 0],
            &u16be(challenge.len()),
            specs,
            &challenge,
        ]
        .concat();
        [&u16be(body.len() | 0x8000)[..], &body].concat()
    };
    let tls_specs = [0, 0, 0x2f, 0, 0, 0x35, 0x01, 0x00, 0x80];
    let wire = v2([3, 1], &tls_specs);
    let hello = hello_of(&wire);
    assert!(hello.is_sslv2_compatible());
    assert_eq!((hello.server_name(), hello.alpn()), (None, None));
    assert!(matches!(
        inspect(&v2([3, 3], &tls_specs)),
        TlsInspection::Tls(_)
    ));
    let sslv2_only = [0x01, 0x00, 0x80, 0x07, 0x00, 0xc0];
    assert_eq!(inspect(&v2([3, 1], &sslv2_only)), TlsInspection::NotTls);
    assert_eq!(
        inspect(&v2([3, 1], &tls_specs[..4])),
        TlsInspection::NotTls,
        "specs not a multiple of 3"
    );
    assert_eq!(
        inspect(&v2([3, 0], &tls_specs)),
        TlsInspection::Close(TlsCloseReason::UnsupportedVersion(0x0300))
    );
    for cut in 0..wire.len() {
        assert_eq!(inspect(&wire[..cut]), TlsInspection::NeedMoreData);
    }
}

// --- size limits ------------------------------------------------------------------------------

fn padded(total_wire: usize) -> Vec<u8> {
    let base = hello(vec![sni_ext(b"www.example.com"), ext(21, b"")])
        .wire()
        .len();
    hello(vec![
        sni_ext(b"www.example.com"),
        ext(21, &vec![0; total_wire - base]),
    ])
    .wire()
}

#[test]
fn a_hello_must_fit_in_16_kib() {
    let fits = padded(MAX_CLIENT_HELLO_SIZE);
    assert_eq!(fits.len(), MAX_CLIENT_HELLO_SIZE);
    assert!(matches!(inspect(&fits), TlsInspection::Tls(_)));
    let too_big = padded(MAX_CLIENT_HELLO_SIZE + 1);
    assert_eq!(
        inspect(&too_big),
        TlsInspection::Close(TlsCloseReason::ClientHelloTooLarge)
    );
    // Undecided below the limit, closed when the limit is reached.
    assert_eq!(
        inspect(&too_big[..MAX_CLIENT_HELLO_SIZE - 1]),
        TlsInspection::NeedMoreData
    );
    // A record longer than 16 KiB but within the ciphertext limit: waited for, then too large.
    let long_record = [
        &[22u8, 3, 1, 0x41, 0x00][..],
        &vec![0; MAX_CLIENT_HELLO_SIZE],
    ]
    .concat();
    assert_eq!(
        inspect(&long_record),
        TlsInspection::Close(TlsCloseReason::ClientHelloTooLarge)
    );
}

#[test]
fn config_follows_envoys_limits() {
    let d = TlsInspector::from_proto(&Proto::default()).unwrap();
    assert_eq!((d.initial_read_size(), d.max_read_size()), (16_384, 16_384));
    assert_eq!(d, TlsInspector::default());
    let small = TlsInspector::from_proto(&Proto {
        initial_read_buffer_size: Some(UInt32Value { value: 512 }),
        max_client_hello_size: Some(UInt32Value { value: 4096 }),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        (small.initial_read_size(), small.max_read_size()),
        (512, 4096)
    );
    assert_eq!(
        small.inspect(&padded(4097)),
        TlsInspection::Close(TlsCloseReason::ClientHelloTooLarge)
    );
    let clamped = TlsInspector::from_proto(&Proto {
        initial_read_buffer_size: Some(UInt32Value { value: 1 << 20 }),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(clamped.initial_read_size(), 16_384);
    let err = TlsInspector::from_proto(&Proto {
        max_client_hello_size: Some(UInt32Value { value: 65_536 }),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "max_client_hello_size of 65536 is greater than maximum of 16384"
    );
    let strict = TlsInspector::from_proto(&Proto {
        close_connection_on_client_hello_parsing_errors: true,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        strict.inspect(b"GET / HTTP/1.1\r\n"),
        TlsInspection::Close(TlsCloseReason::NotClientHello)
    );
    assert!(matches!(
        strict.inspect(&standard().wire()),
        TlsInspection::Tls(_)
    ));
}

// --- robustness ------------------------------------------------------------------------------

/// xorshift64: deterministic pseudo-random bytes.
struct Rng(u64);

// === impl Rng ===

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn never_panics_on_random_or_mutated_input() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let seeds = [
        rustls_hello(Some("www.example.com"), &[b"h2", b"http/1.1"], false),
        standard().wire(),
        records(&standard().message(), 30),
    ];
    for round in 0..30_000 {
        let mut buf = if round % 2 == 0 {
            // Mutate a valid hello: TLS-shaped input reaches the deep parsers.
            let mut b = seeds[round % seeds.len()].clone();
            for _ in 0..(rng.next() % 4 + 1) {
                let at = rng.next() as usize % b.len();
                b[at] = rng.next() as u8;
            }
            b.truncate(rng.next() as usize % (b.len() + 1));
            b
        } else {
            let len = rng.next() as usize % 300;
            (0..len).map(|_| rng.next() as u8).collect()
        };
        if round % 7 == 0 && buf.len() > 5 {
            // Random bytes behind a plausible record header.
            buf[0] = 22;
            buf[1] = 3;
        }
        let _ = inspect(&buf);
    }
}
