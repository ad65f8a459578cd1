//! Terminating TLS: `DownstreamTlsContext` as a server-side acceptor.
//!
//! One [`DownstreamTls`] per filter chain. Each accepted connection takes the rustls config
//! built from the current secrets (rebuilt only after a secret changed), so a rotated
//! certificate serves the next handshake while established sessions keep theirs.

use std::sync::Arc;

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    DownstreamTlsContext, downstream_tls_context::OcspStaplePolicy,
    downstream_tls_context::SessionTicketKeysType,
};
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::common::{
    Bound, CommonConfig, ContextCerts, HandshakeError, Inputs, NotReady, SecretRef,
};
use super::params::{self, Side};
use super::peer_exchange;
use super::stats::SslStats;
use super::verify::{ClientVerifier, Validation};
use super::{TlsResources, cert};
use crate::config::{ConfigError, Context};
use crate::conn::PeerTls;
use crate::io::{DownstreamIo, Prefixed};

/// A validated `DownstreamTlsContext`.
#[derive(Debug, Clone)]
pub struct DownstreamTlsConfig {
    pub common: CommonConfig,
    pub require_client_certificate: bool,
    pub require_sni: bool,
    pub disable_stateful_session_resumption: bool,
    pub prefer_client_ciphers: bool,
    /// Whether the filter chain runs Istio's metadata exchange (`istio.metadata_exchange`
    /// network filter). Only then is `istio-peer-exchange` advertised; set it when the
    /// listener wraps connections that negotiated it with [`peer_exchange::wrap`].
    pub peer_exchange: bool,
}

/// The acceptor of one filter chain. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DownstreamTls {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: DownstreamTlsConfig,
    /// The ALPN list we advertise.
    alpn: Vec<Vec<u8>>,
    bound: Bound<ServerConfigs>,
    stats: Option<SslStats>,
}

/// The rustls configs for the current secrets.
#[derive(Debug)]
struct ServerConfigs {
    with_alpn: Arc<ServerConfig>,
    /// For clients whose ALPN list shares nothing with ours: BoringSSL then negotiates no
    /// protocol, where rustls would abort the handshake.
    without_alpn: Arc<ServerConfig>,
    local_uri_sans: Vec<String>,
}

/// Picks the first certificate whose key can sign with a scheme the client offers (e.g. an
/// ECDSA and an RSA certificate side by side).
#[derive(Debug)]
struct CertResolver(Vec<Arc<CertifiedKey>>);

// === impl CertResolver ===

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0
            .iter()
            .find(|c| c.key.choose_scheme(hello.signature_schemes()).is_some())
            .cloned()
    }
}

// === impl DownstreamTlsConfig ===

impl DownstreamTlsConfig {
    /// Validates a `DownstreamTlsContext`; errors name the field.
    pub fn from_proto(proto: &DownstreamTlsContext) -> Result<Self, ConfigError> {
        let common = CommonConfig::from_proto(
            &proto.common_tls_context.clone().unwrap_or_default(),
            Side::Server,
        )
        .at("common_tls_context")?;
        if common.certs.is_empty() {
            return Err(ConfigError::new(
                "a server context needs a certificate: set tls_certificates or \
                 tls_certificate_sds_secret_configs",
            )
            .at("common_tls_context"));
        }
        let require_client_certificate = proto
            .require_client_certificate
            .as_ref()
            .is_some_and(|v| v.value);
        if require_client_certificate && common.validation.is_none() {
            return Err(ConfigError::new(
                "require_client_certificate needs a validation context with trusted_ca; \
                 without one any client certificate would be accepted",
            )
            .at("require_client_certificate"));
        }
        match &proto.session_ticket_keys_type {
            None => {}
            Some(SessionTicketKeysType::DisableStatelessSessionResumption(_)) => {}
            Some(_) => {
                return Err(ConfigError::new(
                    "session ticket keys are not supported; tickets are never issued",
                )
                .at("session_ticket_keys"));
            }
        }
        if proto.session_timeout.is_some() {
            return Err(ConfigError::new("is not supported").at("session_timeout"));
        }
        match OcspStaplePolicy::try_from(proto.ocsp_staple_policy) {
            Ok(OcspStaplePolicy::LenientStapling) => {}
            _ => {
                return Err(ConfigError::new(
                    "only LENIENT_STAPLING is supported (certificates carry no OCSP staple)",
                )
                .at("ocsp_staple_policy"));
            }
        }
        Ok(Self {
            common,
            require_client_certificate,
            require_sni: proto.require_sni.as_ref().is_some_and(|v| v.value),
            disable_stateful_session_resumption: proto.disable_stateful_session_resumption,
            prefer_client_ciphers: proto.prefer_client_ciphers,
            peer_exchange: false,
        })
    }
}

/// Checks a `DownstreamTlsContext` without binding it to secrets (for config conversion).
pub fn validate(proto: &DownstreamTlsContext) -> Result<(), ConfigError> {
    DownstreamTlsConfig::from_proto(proto).map(|_| ())
}

// === impl DownstreamTls ===

impl DownstreamTls {
    /// Binds a context to the proxy's secrets. `stats` is the listener's scope for `ssl.*`.
    pub fn new(
        config: DownstreamTlsConfig,
        resources: &TlsResources,
        stats: Option<SslStats>,
    ) -> Result<Self, ConfigError> {
        let bound = Bound::new(&config.common, &resources.secrets).at("common_tls_context")?;
        let exchange = config.peer_exchange && resources.node.is_some();
        let alpn = config
            .common
            .alpn
            .iter()
            .filter(|p| exchange || p.as_slice() != peer_exchange::ALPN)
            .cloned()
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                alpn,
                bound,
                stats,
            }),
        })
    }

    /// Validates and binds a `DownstreamTlsContext` in one step.
    pub fn from_proto(
        proto: &DownstreamTlsContext,
        resources: &TlsResources,
        stats: Option<SslStats>,
    ) -> Result<Self, ConfigError> {
        Self::new(DownstreamTlsConfig::from_proto(proto)?, resources, stats)
    }

    pub fn config(&self) -> &DownstreamTlsConfig {
        &self.inner.config
    }

    /// The secrets this context needs (for SDS subscriptions and warming).
    pub fn secret_refs(&self) -> Vec<SecretRef> {
        self.inner.config.common.secret_refs()
    }

    /// Whether every secret has arrived and makes a usable config; else what is missing.
    pub fn readiness(&self) -> Result<(), NotReady> {
        self.configs().map(|_| ())
    }

    pub fn is_ready(&self) -> bool {
        self.readiness().is_ok()
    }

    /// The certificates in use, for `/certs`; `None` until the secrets arrived.
    pub fn certs(&self) -> Option<ContextCerts> {
        self.inner.bound.certs()
    }

    /// The ALPN protocols advertised.
    pub fn alpn_protocols(&self) -> &[Vec<u8>] {
        &self.inner.alpn
    }

    /// Terminates TLS on an accepted connection (whose ClientHello the TLS inspector may
    /// have read already). The handshake failure says why, for the log.
    pub async fn accept(
        &self,
        io: Prefixed<TcpStream>,
    ) -> Result<(DownstreamIo, PeerTls), HandshakeError> {
        let (tls, peer) = self.accept_stream(io).await?;
        Ok((DownstreamIo::Tls(Box::new(tls)), peer))
    }

    /// [`accept`](Self::accept) for any stream.
    pub async fn accept_stream<S>(&self, io: S) -> Result<(TlsStream<S>, PeerTls), HandshakeError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let result = self.handshake(io).await;
        if let (Err(e), Some(stats)) = (&result, &self.inner.stats) {
            stats.connection_error.inc();
            if matches!(
                e,
                HandshakeError::Tls(rustls::Error::NoCertificatesPresented)
            ) {
                stats.fail_verify_no_cert.inc();
            }
        }
        result
    }

    async fn handshake<S>(&self, io: S) -> Result<(TlsStream<S>, PeerTls), HandshakeError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let configs = self.configs()?;
        let acceptor =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
        let start = acceptor.await.map_err(HandshakeError::from_io)?;
        let hello = start.client_hello();
        if self.inner.config.require_sni && hello.server_name().is_none() {
            return Err(HandshakeError::NoSni);
        }
        let overlap = match hello.alpn() {
            None => true,
            Some(mut offered) => offered.any(|p| self.inner.alpn.iter().any(|o| o == p)),
        };
        let config = if overlap || self.inner.alpn.is_empty() {
            configs.with_alpn.clone()
        } else {
            configs.without_alpn.clone()
        };
        let stream = start
            .into_stream(config)
            .await
            .map_err(HandshakeError::from_io)?;
        let peer = peer_tls(stream.get_ref().1, &configs.local_uri_sans)?;
        if let Some(stats) = &self.inner.stats {
            stats.handshake_done(&peer.version, &peer.cipher, peer.peer_certificate.is_some());
        }
        Ok((stream, peer))
    }

    fn configs(&self) -> Result<Arc<ServerConfigs>, NotReady> {
        let inner = &self.inner;
        inner.bound.get(|inputs| build(inner, inputs))
    }
}

fn build(inner: &Inner, inputs: &Inputs) -> Result<ServerConfigs, NotReady> {
    let config = &inner.config;
    let invalid = |reason: String| NotReady::Invalid {
        name: inner.bound.validation_name().to_string(),
        reason,
    };
    let params = &config.common.params;
    let builder = ServerConfig::builder_with_provider(params.provider.clone())
        .with_protocol_versions(&params.versions)
        .map_err(|e| invalid(e.to_string()))?;
    let builder = match &inputs.validation {
        Some((ctx, roots)) => {
            let mut validation = Validation::new(ctx, roots).map_err(|e| invalid(e.to_string()))?;
            validation.stats = inner.stats.clone();
            let verifier =
                ClientVerifier::new(Arc::new(validation), config.require_client_certificate)
                    .map_err(|e| invalid(e.to_string()))?;
            builder.with_client_cert_verifier(Arc::new(verifier))
        }
        None => builder.with_no_client_auth(),
    };
    let keys: Vec<Arc<CertifiedKey>> = inputs.certs.iter().map(|c| c.key.clone()).collect();
    let mut with_alpn = builder.with_cert_resolver(Arc::new(CertResolver(keys)));
    with_alpn.ignore_client_order = !config.prefer_client_ciphers;
    if config.disable_stateful_session_resumption {
        with_alpn.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        with_alpn.send_tls13_tickets = 0;
    }
    let mut without_alpn = with_alpn.clone();
    with_alpn.alpn_protocols = inner.alpn.clone();
    without_alpn.alpn_protocols = Vec::new();
    Ok(ServerConfigs {
        with_alpn: Arc::new(with_alpn),
        without_alpn: Arc::new(without_alpn),
        local_uri_sans: inputs
            .certs
            .first()
            .map(|c| c.uri_sans.clone())
            .unwrap_or_default(),
    })
}

/// The negotiated session as filters see it. The peer certificate is present only when we
/// asked for one and it verified (rustls fails the handshake otherwise).
fn peer_tls(
    conn: &rustls::ServerConnection,
    local_uri_sans: &[String],
) -> Result<PeerTls, HandshakeError> {
    let peer_certificate = match conn.peer_certificates().and_then(|c| c.first()) {
        Some(der) => Some(cert::peer_certificate(der).map_err(|e| {
            HandshakeError::Tls(rustls::Error::General(format!("peer certificate: {e}")))
        })?),
        None => None,
    };
    Ok(PeerTls {
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        version: conn
            .protocol_version()
            .map_or("unknown", params::version_name)
            .to_string(),
        cipher: conn
            .negotiated_cipher_suite()
            .map(|s| params::suite_name(s.suite()))
            .unwrap_or_default(),
        peer_certificate,
        local_uri_sans: local_uri_sans.to_vec(),
    })
}

#[cfg(test)]
mod tests;
