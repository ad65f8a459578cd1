//! The TLS inspector's ClientHello parser (SNI/ALPN sniffing) on arbitrary first bytes of a
//! connection, as peeked: the whole input, and a prefix of it (a partial read).
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy::listener::{TlsInspection, TlsInspector};

fn check(inspector: &TlsInspector, buf: &[u8]) -> bool {
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

fuzz_target!(|data: &[u8]| {
    let inspector = TlsInspector::default();
    let decided = check(&inspector, data);
    // A shorter peek of the same bytes must not panic either; once a prefix is decided,
    // more bytes must not make the inspector ask for more (it is pure).
    if let Some((&cut, _)) = data.split_first() {
        let cut = usize::from(cut) * data.len() / 256;
        if check(&inspector, &data[..cut]) {
            assert!(
                decided,
                "a prefix was decided but the whole input needs more data"
            );
        }
    }
});
