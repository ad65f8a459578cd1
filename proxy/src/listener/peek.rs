//! Runs the listener's inspectors in Envoy's order on the peeked bytes: the TLS inspector
//! first; the HTTP inspector only when the connection is not TLS. The result describes the
//! connection for filter chain matching.

use std::net::SocketAddr;

use super::app_protocols::AppProtocols;
use super::filter_chain_match::{ConnectionInfo, TransportProtocol};
use super::http_inspector::{self, HttpInspection, HttpProtocol};
use super::tls_inspector::{ClientHello, TlsCloseReason, TlsInspection, TlsInspector};

/// The inspectors enabled for a connection (Istio enables them per destination port).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inspectors {
    /// `envoy.filters.listener.tls_inspector`, if configured.
    pub tls: Option<TlsInspector>,
    /// Whether `envoy.filters.listener.http_inspector` is configured.
    pub http: bool,
}

/// The combined verdict on the bytes seen so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peek<'a> {
    /// Some inspector needs more bytes.
    NeedMoreData,
    /// An inspector closes the connection.
    Close(PeekClose),
    /// Done: match filter chains.
    Ready(PeekedProtocols<'a>),
}

/// Why the inspectors close a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeekClose {
    /// The TLS inspector gave up.
    Tls(TlsCloseReason),
    /// No HTTP request line within 64 KiB.
    HttpTooLarge,
}

/// What the inspectors found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeekedProtocols<'a> {
    /// The ClientHello, when the connection is TLS.
    pub client_hello: Option<ClientHello<'a>>,
    /// The plaintext HTTP version, when the HTTP inspector recognised one.
    pub http: Option<HttpProtocol>,
}

// === impl Inspectors ===

impl Inspectors {
    /// Classifies the bytes peeked so far.
    pub fn peek<'a>(&self, buf: &'a [u8]) -> Peek<'a> {
        let mut found = PeekedProtocols::default();
        if let Some(tls) = &self.tls {
            match tls.inspect(buf) {
                TlsInspection::NeedMoreData => return Peek::NeedMoreData,
                TlsInspection::Close(reason) => return Peek::Close(PeekClose::Tls(reason)),
                TlsInspection::Tls(hello) => {
                    // The HTTP inspector skips TLS connections.
                    found.client_hello = Some(hello);
                    return Peek::Ready(found);
                }
                TlsInspection::NotTls => {}
            }
        }
        if self.http {
            match http_inspector::inspect(buf) {
                HttpInspection::NeedMoreData => return Peek::NeedMoreData,
                HttpInspection::TooLarge => return Peek::Close(PeekClose::HttpTooLarge),
                HttpInspection::Http(protocol) => found.http = Some(protocol),
                HttpInspection::NotHttp => {}
            }
        }
        Peek::Ready(found)
    }

    /// The most bytes the enabled inspectors read.
    pub fn max_read_size(&self) -> usize {
        let tls = self.tls.map_or(0, |t| t.max_read_size());
        let http = if self.http {
            http_inspector::MAX_INSPECT_SIZE
        } else {
            0
        };
        tls.max(http)
    }
}

// === impl PeekedProtocols ===

impl PeekedProtocols<'_> {
    /// `tls` for a ClientHello, else `raw_buffer`.
    pub fn transport_protocol(&self) -> TransportProtocol {
        if self.client_hello.is_some() {
            TransportProtocol::Tls
        } else {
            TransportProtocol::RawBuffer
        }
    }

    /// The SNI of the ClientHello.
    pub fn server_name(&self) -> Option<&[u8]> {
        self.client_hello
            .as_ref()
            .and_then(ClientHello::server_name)
    }

    /// The ALPN list of the ClientHello, or the HTTP inspector's protocol.
    pub fn app_protocols(&self) -> AppProtocols<'_> {
        match (&self.client_hello, self.http) {
            (Some(hello), _) => hello.app_protocols(),
            (None, Some(http)) => http.app_protocols(),
            (None, None) => AppProtocols::None,
        }
    }

    /// The connection as the filter chain matcher sees it; `direct_remote` is the TCP peer,
    /// `remote` the client (they differ only behind a PROXY protocol header).
    pub fn connection_info(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
        direct_remote: SocketAddr,
    ) -> ConnectionInfo<'_> {
        ConnectionInfo {
            local,
            remote,
            direct_remote,
            server_name: self.server_name(),
            transport_protocol: self.transport_protocol(),
            application_protocols: self.app_protocols(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both() -> Inspectors {
        Inspectors {
            tls: Some(TlsInspector::default()),
            http: true,
        }
    }

    #[test]
    fn the_tls_inspector_decides_first() {
        // Fewer than five bytes: the TLS inspector waits for a record header even though
        // the HTTP inspector alone could already say "not HTTP".
        assert_eq!(both().peek(b"\x00\x01"), Peek::NeedMoreData);
        let http_only = Inspectors {
            tls: None,
            http: true,
        };
        assert_eq!(
            http_only.peek(b"\x00\x01"),
            Peek::Ready(PeekedProtocols::default())
        );
    }

    #[test]
    fn plaintext_http_gets_an_application_protocol() {
        let Peek::Ready(found) = both().peek(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") else {
            panic!("undecided");
        };
        assert_eq!(found.transport_protocol(), TransportProtocol::RawBuffer);
        assert_eq!(found.app_protocols(), AppProtocols::Names(&["http/1.1"]));
        assert_eq!(found.server_name(), None);
        let addr: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let conn = found.connection_info(addr, addr, addr);
        assert_eq!(conn.transport_protocol.as_str(), "raw_buffer");
    }

    #[test]
    fn without_inspectors_everything_is_raw_buffer() {
        let Peek::Ready(found) = Inspectors::default().peek(b"") else {
            panic!("undecided");
        };
        assert_eq!(found.transport_protocol(), TransportProtocol::RawBuffer);
        assert!(found.app_protocols().is_empty());
        assert_eq!(Inspectors::default().max_read_size(), 0);
        assert_eq!(both().max_read_size(), http_inspector::MAX_INSPECT_SIZE);
    }

    #[test]
    fn an_unfinished_request_line_past_64_kib_closes() {
        let long = vec![b'a'; http_inspector::MAX_INSPECT_SIZE];
        assert_eq!(both().peek(&long), Peek::Close(PeekClose::HttpTooLarge));
    }
}
