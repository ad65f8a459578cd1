//! The ClientHello body: what BoringSSL checks before Envoy's inspector sees the hello
//! (strict framing, no duplicate extensions, a well-formed ECH outer extension, a valid SNI),
//! then Envoy's own check of the client version, and where the SNI and ALPN are.
//!
//! Anything BoringSSL would only check later (version negotiation, compression methods,
//! most extensions) does not change Envoy's verdict: it has already said `tls`.

use std::ops::Range;

use super::TlsCloseReason;
use crate::listener::app_protocols::AlpnList;
use crate::listener::reader::Reader;

const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const EXT_ECH: u16 = 0xfe0d;
const ECH_OUTER: u8 = 0;
/// `TLSEXT_MAXLEN_host_name`.
const MAX_HOST_NAME: usize = 255;
/// The client versions Envoy's inspector accepts: TLS 1.0 to TLS 1.3.
const MIN_VERSION: u16 = 0x0301;
const MAX_VERSION: u16 = 0x0304;

/// The verdict on a complete ClientHello body.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    NotTls,
    Close(TlsCloseReason),
    Tls(Fields),
}

/// Where the interesting parts are, as ranges of the body.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Fields {
    pub(super) legacy_version: u16,
    pub(super) server_name: Option<Range<usize>>,
    /// The body of a well-formed ALPN extension.
    pub(super) alpn: Option<Range<usize>>,
}

/// Judges a ClientHello body (without its handshake header).
pub(super) fn parse(body: &[u8]) -> Verdict {
    let Some((legacy_version, extensions)) = framing(body) else {
        return Verdict::NotTls;
    };
    let ech = find(extensions, EXT_ECH);
    if ech.is_some_and(|ext| !is_valid_ech(ext)) {
        return Verdict::NotTls;
    }
    let server_name = match find(extensions, EXT_SERVER_NAME).map(host_name) {
        None => None,
        Some(None) => return Verdict::NotTls,
        Some(Some(name)) => range_in(body, name),
    };
    if !(MIN_VERSION..=MAX_VERSION).contains(&legacy_version) {
        return Verdict::Close(TlsCloseReason::UnsupportedVersion(legacy_version));
    }
    let alpn = find(extensions, EXT_ALPN)
        .filter(|ext| AlpnList::parse(ext).is_some())
        .and_then(|ext| range_in(body, ext));
    Verdict::Tls(Fields {
        legacy_version,
        server_name,
        alpn,
    })
}

/// `SSL_parse_client_hello`: every field present and in bounds, nothing after the
/// extensions, extensions well formed and not repeated. Returns the client version and the
/// extensions block.
fn framing(body: &[u8]) -> Option<(u16, &[u8])> {
    let mut r = Reader::new(body);
    let version = r.u16()?;
    r.bytes(32)?;
    if r.u8_prefixed()?.rest().len() > 32 {
        return None;
    }
    let ciphers = r.u16_prefixed()?.rest();
    if ciphers.len() < 2 || ciphers.len() % 2 != 0 {
        return None;
    }
    if r.u8_prefixed()?.is_empty() {
        return None;
    }
    if r.is_empty() {
        return Some((version, &[]));
    }
    let extensions = r.u16_prefixed()?.rest();
    (r.is_empty() && no_duplicates(extensions)?).then_some((version, extensions))
}

/// Whether no extension type repeats; `None` if the block is malformed. Hellos carry a few
/// dozen extensions at most, compared pairwise on the stack; more fall back to a bitmap.
fn no_duplicates(extensions: &[u8]) -> Option<bool> {
    let mut seen = [0u16; 32];
    let mut count = 0;
    let mut r = Reader::new(extensions);
    while !r.is_empty() {
        let ty = r.u16()?;
        r.u16_prefixed()?;
        let Some(slot) = seen.get_mut(count) else {
            return no_duplicates_bitmap(extensions);
        };
        *slot = ty;
        count += 1;
    }
    let seen = seen.get(..count)?;
    Some(
        seen.iter()
            .enumerate()
            .all(|(i, ty)| !seen.get(i + 1..).unwrap_or_default().contains(ty)),
    )
}

fn no_duplicates_bitmap(extensions: &[u8]) -> Option<bool> {
    let mut seen = [0u64; 1024];
    let mut r = Reader::new(extensions);
    while !r.is_empty() {
        let ty = r.u16()?;
        r.u16_prefixed()?;
        let (word, bit) = (usize::from(ty >> 6), ty & 63);
        let slot = seen.get_mut(word)?;
        if *slot & (1 << bit) != 0 {
            return Some(false);
        }
        *slot |= 1 << bit;
    }
    Some(true)
}

/// The body of the first extension of type `ty` (the block is known to be well formed).
fn find(extensions: &[u8], ty: u16) -> Option<&[u8]> {
    let mut r = Reader::new(extensions);
    while !r.is_empty() {
        let t = r.u16()?;
        let body = r.u16_prefixed()?;
        if t == ty {
            return Some(body.rest());
        }
    }
    None
}

/// BoringSSL parses an outer ECH extension before anything else (and ignores an inner one
/// here): `type(1) kdf(2) aead(2) config_id(1) enc<2> payload<2>`, nothing after.
fn is_valid_ech(ext: &[u8]) -> bool {
    let mut r = Reader::new(ext);
    match r.u8() {
        None => false,
        Some(ECH_OUTER) => is_complete_ech_outer(r).unwrap_or(false),
        Some(_) => true,
    }
}

fn is_complete_ech_outer(mut r: Reader<'_>) -> Option<bool> {
    r.u16()?;
    r.u16()?;
    r.u8()?;
    r.u16_prefixed()?;
    r.u16_prefixed()?;
    Some(r.is_empty())
}

/// BoringSSL's `extract_sni`: exactly one name, of type host_name, 1-255 bytes, no NUL.
fn host_name(ext: &[u8]) -> Option<&[u8]> {
    let mut r = Reader::new(ext);
    let mut list = r.u16_prefixed()?;
    let name_type = list.u8()?;
    let name = list.u16_prefixed()?.rest();
    let valid = r.is_empty()
        && list.is_empty()
        && name_type == 0
        && !name.is_empty()
        && name.len() <= MAX_HOST_NAME
        && !name.contains(&0);
    valid.then_some(name)
}

/// The position of `inner`, a sub-slice of `outer`.
fn range_in(outer: &[u8], inner: &[u8]) -> Option<Range<usize>> {
    let start = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    let end = start.checked_add(inner.len())?;
    (end <= outer.len()).then_some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(types: &[u16]) -> Vec<u8> {
        types
            .iter()
            .flat_map(|t| [t.to_be_bytes(), [0, 0]].concat())
            .collect()
    }

    #[test]
    fn repeated_extensions_are_found_in_small_and_large_blocks() {
        let distinct: Vec<u16> = (0..40).collect();
        assert_eq!(no_duplicates(&block(&distinct[..5])), Some(true));
        assert_eq!(no_duplicates(&block(&[1, 2, 3, 2])), Some(false));
        assert_eq!(no_duplicates(&block(&distinct)), Some(true), "more than 32");
        let mut repeated = distinct.clone();
        repeated.push(0);
        assert_eq!(
            no_duplicates(&block(&repeated)),
            Some(false),
            "more than 32"
        );
        assert_eq!(no_duplicates(&[0, 1, 0]), None, "truncated");
    }
}
