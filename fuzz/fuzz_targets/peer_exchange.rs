//! The Istio metadata exchange (`istio-peer-exchange` ALPN) frame decoder on arbitrary
//! bytes from the peer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy::tls::peer_exchange::codec::{self, Decode};

fuzz_target!(|data: &[u8]| {
    match codec::decode(data) {
        Decode::Done { consumed, peer } => {
            assert!(consumed <= data.len());
            // What we decoded re-encodes and decodes to the same thing.
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
});
