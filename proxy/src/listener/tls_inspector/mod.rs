//! `envoy.filters.listener.tls_inspector`: decides `tls` or `raw_buffer` from the first
//! bytes of a connection and pulls the SNI and ALPN out of a TLS ClientHello.
//!
//! Envoy hands the peeked bytes to BoringSSL and stops the handshake in its first callback,
//! once the ClientHello has been parsed. So the verdict is BoringSSL's up to that point,
//! which this module reproduces without a TLS stack:
//!
//! - the first record header (5 bytes) must arrive before anything is decided;
//! - records must be handshake records of major version 3 and at most 16 KiB (up to four
//!   warning alerts and 32 empty records may come first); the ClientHello may span records;
//! - the ClientHello must parse strictly (no trailing bytes, no repeated extension, no
//!   further handshake bytes in its last record), a present SNI must be one host name of
//!   1-255 bytes without NUL, an outer ECH extension must be well formed;
//! - an SSLv2-compatible ClientHello with at least one TLS cipher suite is TLS too;
//! - any failure of the above means "not TLS": the connection goes on as `raw_buffer`.
//!
//! Envoy 1.40 closes the connection instead when the ClientHello's version is outside TLS
//! 1.0-1.3, when the first record is a close_notify alert, when the ClientHello is not
//! complete within `max_client_hello_size` bytes (16 KiB by default and at most), or, with
//! `close_connection_on_client_hello_parsing_errors`, whenever it is not TLS.
//! Everything BoringSSL checks later (version negotiation, ciphers, compression, other
//! extensions) cannot change the verdict.

mod client_hello;
mod record;

use std::borrow::Cow;
use std::ops::Range;

use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector as TlsInspectorProto;

use super::app_protocols::{AlpnList, AppProtocols};

/// Envoy's `TLS_MAX_CLIENT_HELLO`: the default and the largest `max_client_hello_size`.
pub const MAX_CLIENT_HELLO_SIZE: usize = 16 * 1024;

/// A configured TLS inspector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsInspector {
    max_client_hello_size: usize,
    initial_read_buffer_size: usize,
    /// `close_connection_on_client_hello_parsing_errors`: close instead of `raw_buffer`.
    close_if_not_tls: bool,
}

/// The inspector's verdict on the bytes seen so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsInspection<'a> {
    /// Undecided; peek again when more bytes arrive.
    NeedMoreData,
    /// A TLS ClientHello.
    Tls(ClientHello<'a>),
    /// Not TLS: the connection is `raw_buffer`.
    NotTls,
    /// Envoy closes the connection.
    Close(TlsCloseReason),
}

/// Why Envoy's TLS inspector closes a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsCloseReason {
    /// No complete ClientHello within `max_client_hello_size` bytes.
    ClientHelloTooLarge,
    /// The ClientHello's version is outside TLS 1.0-1.3.
    UnsupportedVersion(u16),
    /// The peer opened with a close_notify alert.
    CloseNotify,
    /// Not a ClientHello, with `close_connection_on_client_hello_parsing_errors` set.
    NotClientHello,
}

/// A TLS ClientHello, borrowed from the peeked bytes when it came in one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientHello<'a> {
    body: Cow<'a, [u8]>,
    legacy_version: u16,
    server_name: Option<Range<usize>>,
    alpn: Option<Range<usize>>,
    sslv2: bool,
}

/// A `TlsInspector` proto that Envoy would reject.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlsInspectorConfigError {
    /// `max_client_hello_size` above Envoy's limit.
    #[error("max_client_hello_size of {0} is greater than maximum of {MAX_CLIENT_HELLO_SIZE}")]
    MaxClientHelloSizeTooLarge(u32),
}

// === impl TlsInspector ===

impl Default for TlsInspector {
    fn default() -> Self {
        Self {
            max_client_hello_size: MAX_CLIENT_HELLO_SIZE,
            initial_read_buffer_size: MAX_CLIENT_HELLO_SIZE,
            close_if_not_tls: false,
        }
    }
}

impl TlsInspector {
    /// The inspector a `TlsInspector` proto configures (JA3/JA4 fingerprints are not
    /// computed; their switches are ignored).
    pub fn from_proto(proto: &TlsInspectorProto) -> Result<Self, TlsInspectorConfigError> {
        let max = proto
            .max_client_hello_size
            .map_or(MAX_CLIENT_HELLO_SIZE as u32, |v| v.value);
        if max as usize > MAX_CLIENT_HELLO_SIZE {
            return Err(TlsInspectorConfigError::MaxClientHelloSizeTooLarge(max));
        }
        let initial = proto
            .initial_read_buffer_size
            .map_or(max, |v| v.value)
            .min(max);
        Ok(Self {
            max_client_hello_size: max as usize,
            initial_read_buffer_size: initial as usize,
            close_if_not_tls: proto.close_connection_on_client_hello_parsing_errors,
        })
    }

    /// How many bytes to peek at first; Envoy doubles it up to [`Self::max_read_size`].
    pub fn initial_read_size(&self) -> usize {
        self.initial_read_buffer_size
    }

    /// The most bytes the inspector reads.
    pub fn max_read_size(&self) -> usize {
        self.max_client_hello_size
    }

    /// Classifies the bytes peeked so far (bytes past the maximum are ignored). Pure: call
    /// again with a longer buffer when the verdict is [`TlsInspection::NeedMoreData`].
    pub fn inspect<'a>(&self, buf: &'a [u8]) -> TlsInspection<'a> {
        let buf = buf.get(..self.max_client_hello_size).unwrap_or(buf);
        let verdict = match record::first_message(buf) {
            record::FirstMessage::NeedMoreData => TlsInspection::NeedMoreData,
            record::FirstMessage::NotTls => TlsInspection::NotTls,
            record::FirstMessage::Close(reason) => TlsInspection::Close(reason),
            record::FirstMessage::V2 { version } => ClientHello::from_v2(version),
            record::FirstMessage::ClientHello(body) => ClientHello::from_body(body),
        };
        match verdict {
            TlsInspection::NeedMoreData if buf.len() >= self.max_client_hello_size => {
                TlsInspection::Close(TlsCloseReason::ClientHelloTooLarge)
            }
            TlsInspection::NotTls if self.close_if_not_tls => {
                TlsInspection::Close(TlsCloseReason::NotClientHello)
            }
            verdict => verdict,
        }
    }
}

// === impl ClientHello ===

impl<'a> ClientHello<'a> {
    fn from_body(body: Cow<'a, [u8]>) -> TlsInspection<'a> {
        match client_hello::parse(&body) {
            client_hello::Verdict::NotTls => TlsInspection::NotTls,
            client_hello::Verdict::Close(reason) => TlsInspection::Close(reason),
            client_hello::Verdict::Tls(fields) => TlsInspection::Tls(Self {
                legacy_version: fields.legacy_version,
                server_name: fields.server_name,
                alpn: fields.alpn,
                sslv2: false,
                body,
            }),
        }
    }

    fn from_v2(version: u16) -> TlsInspection<'a> {
        if !(0x0301..=0x0304).contains(&version) {
            return TlsInspection::Close(TlsCloseReason::UnsupportedVersion(version));
        }
        TlsInspection::Tls(Self {
            body: Cow::Borrowed(&[]),
            legacy_version: version,
            server_name: None,
            alpn: None,
            sslv2: true,
        })
    }

    /// The SNI host name, as sent (filter chain matching ignores its case).
    pub fn server_name(&self) -> Option<&[u8]> {
        self.server_name.clone().and_then(|r| self.body.get(r))
    }

    /// The ALPN list, when present and well formed.
    pub fn alpn(&self) -> Option<AlpnList<'_>> {
        self.alpn
            .clone()
            .and_then(|r| self.body.get(r))
            .and_then(AlpnList::parse)
    }

    /// The ALPN list as the connection's application protocols.
    pub fn app_protocols(&self) -> AppProtocols<'_> {
        self.alpn().map_or(AppProtocols::None, AppProtocols::Alpn)
    }

    /// The `legacy_version` field (0x0303 for TLS 1.2 and 1.3 clients).
    pub fn legacy_version(&self) -> u16 {
        self.legacy_version
    }

    /// Whether this was an SSLv2-compatible ClientHello (no extensions, so no SNI or ALPN).
    pub fn is_sslv2_compatible(&self) -> bool {
        self.sslv2
    }

    /// Whether the hello was copied out of several records rather than borrowed.
    pub fn is_reassembled(&self) -> bool {
        matches!(self.body, Cow::Owned(_))
    }
}

#[cfg(test)]
mod tests;
