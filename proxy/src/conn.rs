//! What is known about a downstream connection once its listener has classified it. Every
//! network filter (RBAC, tcp_proxy, the HTTP connection manager) and every HTTP filter sees
//! the same [`Downstream`]; the peer's identity in it comes only from a verified certificate.

use std::net::SocketAddr;
use std::sync::Arc;

/// Envoy's `traffic_direction` of the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    Unspecified,
    Inbound,
    Outbound,
}

/// A downstream connection.
#[derive(Debug, Clone)]
pub struct Downstream {
    /// The destination the client dialled: the original destination when the listener
    /// recovered it (iptables REDIRECT, TPROXY), else the listener's local address.
    pub local: SocketAddr,
    /// The directly connected peer.
    pub peer: SocketAddr,
    pub listener: Arc<str>,
    pub direction: Direction,
    /// The selected filter chain's name.
    pub filter_chain: Arc<str>,
    /// The SNI of the client's ClientHello, if it sent one.
    pub requested_server_name: Option<Arc<str>>,
    /// Set when this proxy terminated TLS on the connection.
    pub tls: Option<Arc<PeerTls>>,
    /// The listener's `envoy.filters.listener.original_src` mark: upstream connections
    /// leave from the peer's address with this socket mark (TPROXY inbound).
    pub original_src_mark: Option<u32>,
}

/// The TLS session this proxy terminated.
#[derive(Debug, Clone, Default)]
pub struct PeerTls {
    /// The negotiated ALPN protocol.
    pub alpn: Option<Vec<u8>>,
    /// e.g. "TLSv1.3".
    pub version: String,
    /// e.g. "TLS_AES_128_GCM_SHA256".
    pub cipher: String,
    /// The client's certificate, present only when it was requested and verified.
    pub peer_certificate: Option<PeerCertificate>,
    /// Our own certificate's URI SANs (XFCC `By=`).
    pub local_uri_sans: Vec<String>,
}

/// A verified peer certificate, as Envoy exposes it to RBAC and XFCC.
#[derive(Debug, Clone, Default)]
pub struct PeerCertificate {
    pub uri_sans: Vec<String>,
    pub dns_sans: Vec<String>,
    /// RFC 2253 subject, e.g. "CN=foo,O=bar".
    pub subject: String,
    /// Hex SHA-256 of the DER certificate (XFCC `Hash=`).
    pub sha256_hex: String,
    /// The certificate, PEM encoded (XFCC `Cert=`).
    pub pem: String,
}

// === impl PeerTls ===

impl PeerTls {
    /// The authenticated principal, as Envoy's RBAC `authenticated.principal_name` sees it:
    /// the first URI SAN, else the first DNS SAN, else the subject. `None` without a
    /// verified peer certificate.
    pub fn principal(&self) -> Option<&str> {
        let cert = self.peer_certificate.as_ref()?;
        cert.uri_sans
            .first()
            .or(cert.dns_sans.first())
            .map(String::as_str)
            .or(Some(cert.subject.as_str()).filter(|s| !s.is_empty()))
    }
}

// === impl Downstream ===

impl Downstream {
    /// The verified peer principal (SPIFFE ID in a mesh), if any.
    pub fn principal(&self) -> Option<&str> {
        self.tls.as_deref().and_then(PeerTls::principal)
    }
}
