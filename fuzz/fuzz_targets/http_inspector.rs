//! The HTTP inspector on arbitrary first bytes of a plaintext connection.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy::listener::http_inspector::{self, HttpInspection};

fuzz_target!(|data: &[u8]| {
    let verdict = http_inspector::inspect(data);
    if let HttpInspection::Http(p) = verdict {
        std::hint::black_box((p.as_str(), p.app_protocols().iter().count()));
    }
    // Pure on the bytes peeked so far: a longer read of the same stream never goes back
    // to "need more data" once a prefix was decided.
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
});
