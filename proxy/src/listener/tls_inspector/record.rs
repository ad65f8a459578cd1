//! The TLS record layer up to the first handshake message, with BoringSSL's rules (the TLS
//! stack behind Envoy's inspector): which records it accepts before a ClientHello, when it
//! waits for more bytes and when it gives up. Also the SSLv2-compatible ClientHello.

use std::borrow::Cow;

use super::TlsCloseReason;
use crate::listener::reader::Reader;

const HEADER_LEN: usize = 5;
/// `SSL3_RT_MAX_PLAIN_LENGTH`.
const MAX_PLAINTEXT: usize = 16_384;
/// `SSL3_RT_MAX_ENCRYPTED_LENGTH`: a longer record is refused from its header alone.
const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256 + 64;
/// The largest handshake message a server accepts before verifying a peer.
const MAX_HANDSHAKE_MESSAGE: usize = 16_384;
/// BoringSSL's limits on records that carry nothing.
const MAX_EMPTY_RECORDS: u32 = 32;
const MAX_WARNING_ALERTS: u32 = 4;

const CONTENT_ALERT: u8 = 21;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;

/// The outcome of reading the first handshake message.
#[derive(Debug)]
pub(super) enum FirstMessage<'a> {
    NeedMoreData,
    NotTls,
    Close(TlsCloseReason),
    /// The body of a ClientHello (without its 4-byte handshake header). Borrowed when it
    /// arrived in one record; reassembled when it spans several.
    ClientHello(Cow<'a, [u8]>),
    /// An SSLv2-compatible ClientHello, converted as BoringSSL converts it.
    V2 {
        version: u16,
    },
}

/// Where the handshake data seen so far came from.
#[derive(Debug, Default)]
struct Assembly {
    /// The first four bytes of handshake data: message type and length.
    header: [u8; 4],
    len: usize,
    records: usize,
    /// Where the first handshake record's body starts in the buffer.
    first: usize,
}

/// Reads the first handshake message from the bytes peeked so far.
pub(super) fn first_message(buf: &[u8]) -> FirstMessage<'_> {
    if buf.len() < HEADER_LEN {
        return FirstMessage::NeedMoreData;
    }
    if looks_like_v2(buf) {
        return v2_client_hello(buf);
    }
    let mut pos = 0;
    let mut hs = Assembly::default();
    let mut empty_records = 0;
    let mut warning_alerts = 0;
    loop {
        // Before each record: refuse to buffer a message bigger than allowed.
        if hs
            .message_len()
            .is_some_and(|len| len > MAX_HANDSHAKE_MESSAGE)
        {
            return FirstMessage::NotTls;
        }
        let (content_type, body, next) = match record(buf, pos) {
            Record::Complete(r) => r,
            Record::Partial => return FirstMessage::NeedMoreData,
            Record::Invalid => return FirstMessage::NotTls,
        };
        let offset = pos + HEADER_LEN;
        pos = next;
        if body.is_empty() {
            empty_records += 1;
            if empty_records > MAX_EMPTY_RECORDS {
                return FirstMessage::NotTls;
            }
        } else {
            empty_records = 0;
        }
        match content_type {
            CONTENT_ALERT => match alert(body, &mut warning_alerts) {
                Some(end) => return end,
                None => continue,
            },
            CONTENT_HANDSHAKE => {}
            _ => return FirstMessage::NotTls,
        }
        warning_alerts = 0;
        hs.append(offset, body);
        let Some(msg_len) = hs.message_len() else {
            continue;
        };
        let total = 4 + msg_len;
        if hs.len < total {
            continue;
        }
        // The ClientHello must end its flight: no more handshake bytes in its last record.
        if hs.len > total || hs.header[0] != HANDSHAKE_CLIENT_HELLO {
            return FirstMessage::NotTls;
        }
        return FirstMessage::ClientHello(hs.body(buf, msg_len));
    }
}

enum Record<'a> {
    Complete((u8, &'a [u8], usize)),
    Partial,
    Invalid,
}

/// An alert before the ClientHello, as BoringSSL handles it: a warning-level close_notify
/// is a clean close (which Envoy's inspector answers by closing the connection), up to four
/// other warnings in a row are skipped, anything else fails the handshake.
fn alert(body: &[u8], warnings: &mut u32) -> Option<FirstMessage<'static>> {
    match body {
        [1, 0] => Some(FirstMessage::Close(TlsCloseReason::CloseNotify)),
        [1, _] => {
            *warnings += 1;
            (*warnings > MAX_WARNING_ALERTS).then_some(FirstMessage::NotTls)
        }
        _ => Some(FirstMessage::NotTls),
    }
}

/// The record at `pos`: its content type, body and the offset after it.
fn record(buf: &[u8], pos: usize) -> Record<'_> {
    let Some(header) = buf.get(pos..pos + HEADER_LEN) else {
        return Record::Partial;
    };
    let mut r = Reader::new(header);
    let (Some(content_type), Some(version), Some(len)) = (r.u8(), r.u16(), r.u16()) else {
        return Record::Invalid;
    };
    let len = usize::from(len);
    // Before a version is negotiated only the major version is checked.
    if version >> 8 != 3 || len > MAX_CIPHERTEXT {
        return Record::Invalid;
    }
    let start = pos + HEADER_LEN;
    let Some(body) = buf.get(start..start + len) else {
        return Record::Partial;
    };
    if len > MAX_PLAINTEXT {
        return Record::Invalid;
    }
    Record::Complete((content_type, body, start + len))
}

// === impl Assembly ===

impl Assembly {
    fn append(&mut self, offset: usize, body: &[u8]) {
        for (i, &b) in body
            .iter()
            .enumerate()
            .take(4usize.saturating_sub(self.len))
        {
            if let Some(slot) = self.header.get_mut(self.len + i) {
                *slot = b;
            }
        }
        if self.records == 0 {
            self.first = offset;
        }
        self.records += 1;
        self.len += body.len();
    }

    fn message_len(&self) -> Option<usize> {
        if self.len < 4 {
            return None;
        }
        let [_, a, b, c] = self.header;
        Some(usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c))
    }

    /// The message body: borrowed from the one record that holds it, else copied out of
    /// the records (a rare, large ClientHello).
    fn body<'a>(&self, buf: &'a [u8], msg_len: usize) -> Cow<'a, [u8]> {
        let offset = self.first;
        if self.records == 1 {
            return Cow::Borrowed(
                buf.get(offset + 4..offset + 4 + msg_len)
                    .unwrap_or_default(),
            );
        }
        let mut message = Vec::with_capacity(4 + msg_len);
        let mut pos = 0;
        while message.len() < 4 + msg_len {
            let Record::Complete((content_type, body, next)) = record(buf, pos) else {
                break;
            };
            if content_type == CONTENT_HANDSHAKE {
                message.extend_from_slice(body);
            }
            pos = next;
        }
        message.drain(..4.min(message.len()));
        Cow::Owned(message)
    }
}

/// BoringSSL's test for an SSLv2-compatible ClientHello: a two-byte length with the top bit
/// set, message type 1 and major version 3.
fn looks_like_v2(buf: &[u8]) -> bool {
    matches!(buf, [b0, _, 1, 3, ..] if b0 & 0x80 != 0)
}

fn v2_client_hello(buf: &[u8]) -> FirstMessage<'_> {
    let [b0, b1, ..] = *buf else {
        return FirstMessage::NeedMoreData;
    };
    let msg_len = usize::from(b0 & 0x7f) << 8 | usize::from(b1);
    if !(3..=4096).contains(&msg_len) {
        return FirstMessage::NotTls;
    }
    let Some(msg) = buf.get(2..2 + msg_len) else {
        return FirstMessage::NeedMoreData;
    };
    let Some((version, ciphers)) = parse_v2(msg) else {
        return FirstMessage::NotTls;
    };
    // SSLv2 cipher specs (non-zero first byte) are dropped; with no TLS suite left the
    // converted ClientHello has an empty cipher list, which BoringSSL rejects.
    if !ciphers.chunks(3).any(|spec| spec.first() == Some(&0)) {
        return FirstMessage::NotTls;
    }
    FirstMessage::V2 { version }
}

/// The client version and cipher specs of a V2ClientHello message; `None` if malformed.
fn parse_v2(msg: &[u8]) -> Option<(u16, &[u8])> {
    let mut r = Reader::new(msg);
    let _msg_type = r.u8()?;
    let version = r.u16()?;
    let (cipher_len, session_len, challenge_len) = (r.u16()?, r.u16()?, r.u16()?);
    let ciphers = r.bytes(usize::from(cipher_len))?;
    r.bytes(usize::from(session_len))?;
    r.bytes(usize::from(challenge_len))?;
    (r.is_empty() && ciphers.len() % 3 == 0).then_some((version, ciphers))
}
