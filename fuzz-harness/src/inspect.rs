//! The first bytes of a connection: the TLS and HTTP inspectors, and the Istio metadata
//! exchange frame.

use proxy::listener::http_inspector::{self, HttpInspection};
use proxy::listener::{TlsInspection, TlsInspector};
use proxy::tls::peer_exchange::codec::{self, Decode};

/// The TLS inspector's ClientHello parser (SNI/ALPN sniffing) on arbitrary first bytes of a
/// connection, as peeked: the whole input, and a prefix of it (a partial read) whose length
/// the first byte picks.
///
/// Panics if a prefix is decided but the whole input still needs more data (the inspector
/// must be pure on the bytes peeked so far).
pub fn tls_client_hello(data: &[u8]) {
    let inspector = TlsInspector::default();
    let decided = tls_check(&inspector, data);
    if let Some((&cut, _)) = data.split_first() {
        let cut = usize::from(cut) * data.len() / 256;
        if tls_check(&inspector, &data[..cut]) {
            assert!(
                decided,
                "a prefix was decided but the whole input needs more data"
            );
        }
    }
}

/// Inspects `buf`; true when the inspector decided (anything but "need more data").
fn tls_check(inspector: &TlsInspector, buf: &[u8]) -> bool {
    match inspector.inspect(buf) {
        TlsInspection::Tls(hello) => {
            let sni = hello.server_name().map(<[u8]>::len);
            let alpn: usize = hello.alpn().map_or(0, |l| l.iter().map(<[u8]>::len).sum());
            let protos = hello.app_protocols().iter().count();
            std::hint::black_box((sni, alpn, protos, hello.legacy_version()));
            std::hint::black_box((hello.is_sslv2_compatible(), hello.is_reassembled()));
            true
        }
        TlsInspection::NeedMoreData => false,
        TlsInspection::NotTls | TlsInspection::Close(_) => true,
    }
}

/// The HTTP inspector on arbitrary first bytes of a plaintext connection, and on a prefix
/// of them as [`tls_client_hello`] does.
///
/// Panics if a prefix is decided but the whole input needs more data.
pub fn http_inspector(data: &[u8]) {
    let verdict = http_inspector::inspect(data);
    if let HttpInspection::Http(p) = verdict {
        std::hint::black_box((p.as_str(), p.app_protocols().iter().count()));
    }
    if let Some((&cut, _)) = data.split_first() {
        let cut = usize::from(cut) * data.len() / 256;
        let prefix = http_inspector::inspect(&data[..cut]);
        if prefix != HttpInspection::NeedMoreData {
            assert_ne!(
                verdict,
                HttpInspection::NeedMoreData,
                "prefix decided: {prefix:?}"
            );
        }
    }
}

/// The Istio metadata exchange (`istio-peer-exchange` ALPN) frame decoder on arbitrary
/// bytes from the peer.
///
/// Panics if a decoded frame does not re-encode to one that decodes to the same metadata,
/// or if the decoder claims to consume more than it was given.
pub fn peer_exchange(data: &[u8]) {
    match codec::decode(data) {
        Decode::Done { consumed, peer } => {
            assert!(consumed <= data.len());
            let frame = codec::encode(peer.id.as_deref().unwrap_or(""), &peer.metadata);
            match codec::decode(&frame) {
                Decode::Done {
                    consumed,
                    peer: again,
                } => {
                    assert_eq!(consumed, frame.len());
                    assert_eq!(again.metadata, peer.metadata);
                }
                other => panic!("re-encoded frame does not decode: {other:?}"),
            }
        }
        Decode::Invalid { consumed, .. } => assert!(consumed <= data.len()),
        Decode::NeedMore | Decode::TooLarge(_) => {}
    }
}
