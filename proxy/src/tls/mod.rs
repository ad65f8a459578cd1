//! TLS for the data plane: Envoy's `envoy.transport_sockets.tls` on both sides of the proxy.
//!
//! - [`secrets`]: the [`SecretStore`], fed by bootstrap `static_resources.secrets`, SDS and
//!   files; every change reaches new handshakes at once and never touches live sessions;
//! - [`downstream`]: terminating TLS (`DownstreamTlsContext`), with the verified peer identity
//!   as a [`PeerTls`](crate::conn::PeerTls);
//! - [`upstream`]: originating TLS (`UpstreamTlsContext`), including Istio's ALPN lists and
//!   the per-connection ALPN override of the `istio.alpn` HTTP filter;
//! - [`peer_exchange`]: Istio's TCP metadata exchange on ALPN `istio-peer-exchange`;
//! - [`cert`], [`san`], [`verify`], [`params`]: certificate details, SAN matchers, rustls
//!   verifiers and `tls_params`, shared by both sides.
//!
//! Where TLS is configured and cannot be done (a secret has not arrived, a certificate does
//! not verify), the connection fails; nothing here ever falls back to plaintext.

pub mod cert;
pub mod cluster;
mod common;
pub mod downstream;
pub mod params;
pub mod peer_exchange;
pub mod san;
pub mod secrets;
mod stats;
pub mod upstream;
pub mod verify;

use std::sync::Arc;

pub use common::{ContextCerts, HandshakeError, NotReady, SecretRef, SourcedCert};
pub use downstream::{DownstreamTls, DownstreamTlsConfig};
pub use peer_exchange::{LocalNode, PeerMetadata, PeerMetadataSlot};
pub use secrets::{SecretError, SecretStore};
pub use stats::SslStats;
pub use upstream::{ClientStream, UpstreamTls, UpstreamTlsConfig};

/// What every TLS context of one proxy is built from: its secrets and, for Istio's metadata
/// exchange, its node identity. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct TlsResources {
    pub secrets: SecretStore,
    /// This proxy's node, as the metadata exchange sends it. Without it `istio-peer-exchange`
    /// is never offered nor accepted, so no peer expects an exchange we would not do.
    pub node: Option<Arc<LocalNode>>,
}

/// The rustls crypto provider every context uses: *ring*, chosen by measurement (see the
/// README and `benches/benches/tls.rs`). Building configs with an explicit provider means
/// nothing depends on a process-wide default.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<rustls::crypto::CryptoProvider>> =
        std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}
