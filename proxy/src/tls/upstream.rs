//! Originating TLS: `UpstreamTlsContext` as a client-side connector.
//!
//! One [`UpstreamTls`] per cluster transport (built when the cluster is, not per
//! connection). Istio's ISTIO_MUTUAL contexts verify the server against `ROOTCA` and the
//! destination's SPIFFE IDs (`match_subject_alt_names` exact), present the `default`
//! certificate, send SNI `outbound_.<port>_.<subset>_.<host>` and offer ALPN
//! `istio-peer-exchange, istio` (TCP) or, with the `istio.alpn` HTTP filter's per-connection
//! override, `istio-http/1.1, istio, http/1.1` and friends.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;
use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_rustls::client::TlsStream;

use super::common::{Bound, CommonConfig, HandshakeError, Inputs, NotReady, SecretRef};
use super::params::{self, Side};
use super::peer_exchange::{self, LocalNode, PeerExchange, PeerMetadataSlot};
use super::stats::SslStats;
use super::verify::{ServerVerifier, Validation};
use super::{TlsResources, cert};
use crate::config::{ConfigError, Context as _};
use crate::conn::PeerCertificate;

/// A validated `UpstreamTlsContext`.
#[derive(Debug, Clone)]
pub struct UpstreamTlsConfig {
    pub common: CommonConfig,
    /// The SNI to send; none when empty, as in Envoy.
    pub sni: Option<ServerName<'static>>,
    /// TLS sessions kept for resumption (`max_session_keys`, default 1; 0 disables).
    pub max_session_keys: usize,
    /// Whether the cluster runs Istio's upstream metadata exchange; only then is
    /// `istio-peer-exchange` offered.
    pub peer_exchange: bool,
}

/// The connector of one cluster transport. Cheap to clone.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: UpstreamTlsConfig,
    node: Option<Arc<LocalNode>>,
    alpn: Vec<Vec<u8>>,
    bound: Bound<ClientConfigs>,
    stats: Option<SslStats>,
    /// The name handed to rustls when no SNI is sent (only for its session cache).
    no_sni_name: ServerName<'static>,
}

/// The rustls configs for the current secrets: the context's ALPN list, and variants for
/// per-connection ALPN overrides, made on first use.
#[derive(Debug)]
struct ClientConfigs {
    base: Arc<ClientConfig>,
    overrides: Mutex<Vec<AlpnConfig>>,
    /// The URI SANs of the certificate we present.
    local_uri_sans: Vec<String>,
}

/// A config variant for one ALPN list.
type AlpnConfig = (Vec<Vec<u8>>, Arc<ClientConfig>);

/// Presents our certificate when the server asks.
#[derive(Debug)]
struct ClientCert(Option<Arc<CertifiedKey>>);

// === impl ClientCert ===

impl ResolvesClientCert for ClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0
            .as_ref()
            .filter(|c| c.key.choose_scheme(sigschemes).is_some())
            .cloned()
    }

    fn has_certs(&self) -> bool {
        self.0.is_some()
    }
}

/// Envoy without a validation context does not verify the server (only the handshake
/// signature).
#[derive(Debug)]
struct NoVerification(rustls::crypto::WebPkiSupportedAlgorithms);

// === impl NoVerification ===

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

// === impl UpstreamTlsConfig ===

impl UpstreamTlsConfig {
    /// Validates an `UpstreamTlsContext`; errors name the field.
    pub fn from_proto(proto: &UpstreamTlsContext) -> Result<Self, ConfigError> {
        let common = CommonConfig::from_proto(
            &proto.common_tls_context.clone().unwrap_or_default(),
            Side::Client,
        )
        .at("common_tls_context")?;
        let sni = if proto.sni.is_empty() {
            None
        } else {
            Some(ServerName::try_from(proto.sni.clone()).map_err(|e| {
                ConfigError::new(format!("{:?} is not a valid server name: {e}", proto.sni))
                    .at("sni")
            })?)
        };
        if proto.allow_renegotiation {
            return Err(
                ConfigError::new("renegotiation is not supported").at("allow_renegotiation")
            );
        }
        if proto.auto_host_sni || proto.auto_sni_san_validation {
            return Err(
                ConfigError::new("SNI from the request's host is not supported yet").at(
                    if proto.auto_host_sni {
                        "auto_host_sni"
                    } else {
                        "auto_sni_san_validation"
                    },
                ),
            );
        }
        Ok(Self {
            common,
            sni,
            max_session_keys: proto
                .max_session_keys
                .as_ref()
                .map_or(1, |v| v.value as usize),
            peer_exchange: false,
        })
    }
}

/// Checks an `UpstreamTlsContext` without binding it to secrets (for config conversion).
pub fn validate(proto: &UpstreamTlsContext) -> Result<(), ConfigError> {
    UpstreamTlsConfig::from_proto(proto).map(|_| ())
}

// === impl UpstreamTls ===

impl UpstreamTls {
    /// Binds a context to the proxy's secrets. `stats` is the cluster's scope for `ssl.*`.
    pub fn new(
        config: UpstreamTlsConfig,
        resources: &TlsResources,
        stats: Option<SslStats>,
    ) -> Result<Self, ConfigError> {
        let bound = Bound::new(&config.common, &resources.secrets).at("common_tls_context")?;
        let node = resources.node.clone().filter(|_| config.peer_exchange);
        let alpn = strip_exchange(&config.common.alpn, node.is_some());
        if config.common.validation.is_none() {
            tracing::warn!(
                "upstream TLS context without a validation context: server certificates are \
                 not verified (as in Envoy)"
            );
        }
        let no_sni_name = ServerName::try_from("upstream.invalid")
            .map_err(|e| ConfigError::new(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                node,
                alpn,
                bound,
                stats,
                no_sni_name,
            }),
        })
    }

    /// Validates and binds an `UpstreamTlsContext` in one step.
    pub fn from_proto(
        proto: &UpstreamTlsContext,
        resources: &TlsResources,
        peer_exchange: bool,
        stats: Option<SslStats>,
    ) -> Result<Self, ConfigError> {
        let mut config = UpstreamTlsConfig::from_proto(proto)?;
        config.peer_exchange = peer_exchange;
        Self::new(config, resources, stats)
    }

    pub fn config(&self) -> &UpstreamTlsConfig {
        &self.inner.config
    }

    /// The secrets this context needs (for SDS subscriptions and cluster warming).
    pub fn secret_refs(&self) -> Vec<SecretRef> {
        self.inner.config.common.secret_refs()
    }

    /// Whether every secret has arrived and makes a usable config; else what is missing.
    pub fn readiness(&self) -> Result<(), NotReady> {
        self.configs().map(|_| ())
    }

    /// The certificates in use, for `/certs`; `None` until the secrets arrived.
    pub fn certs(&self) -> Option<super::common::ContextCerts> {
        self.inner.bound.certs()
    }

    pub fn is_ready(&self) -> bool {
        self.readiness().is_ok()
    }

    /// The ALPN protocols offered without an override.
    pub fn alpn_protocols(&self) -> &[Vec<u8>] {
        &self.inner.alpn
    }

    /// Handshakes on a connected stream. `alpn` overrides the context's ALPN list for this
    /// connection (Istio's `istio.alpn` filter). If `istio-peer-exchange` was negotiated,
    /// our metadata frame is sent before this returns.
    pub async fn connect<S>(
        &self,
        io: S,
        alpn: Option<&[Vec<u8>]>,
    ) -> Result<ClientStream<S>, HandshakeError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let result = self.handshake(io, alpn).await;
        if let (Err(_), Some(stats)) = (&result, &self.inner.stats) {
            stats.connection_error.inc();
        }
        result
    }

    async fn handshake<S>(
        &self,
        io: S,
        alpn: Option<&[Vec<u8>]>,
    ) -> Result<ClientStream<S>, HandshakeError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let inner = &self.inner;
        let configs = self.configs()?;
        let config = match alpn {
            None => configs.base.clone(),
            Some(list) => configs.with_alpn(&strip_exchange(list, inner.node.is_some())),
        };
        let name = inner
            .config
            .sni
            .clone()
            .unwrap_or_else(|| inner.no_sni_name.clone());
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, io)
            .await
            .map_err(HandshakeError::from_io)?;
        let conn = tls.get_ref().1;
        let info = SessionInfo {
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            version: conn
                .protocol_version()
                .map_or("unknown", params::version_name)
                .to_string(),
            cipher: conn
                .negotiated_cipher_suite()
                .map(|s| params::suite_name(s.suite()))
                .unwrap_or_default(),
            peer_certificate: conn
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|der| cert::peer_certificate(der).ok()),
            local_uri_sans: configs.local_uri_sans.clone(),
        };
        if let Some(stats) = &inner.stats {
            stats.handshake_done(&info.version, &info.cipher, true);
        }
        let mut io = peer_exchange::wrap(tls, info.alpn.as_deref(), inner.node.as_deref());
        // Our frame goes out now, so a peer waiting for it never waits on us.
        io.flush().await.map_err(HandshakeError::Io)?;
        Ok(ClientStream { io, info })
    }

    fn configs(&self) -> Result<Arc<ClientConfigs>, NotReady> {
        let inner = &self.inner;
        inner.bound.get(|inputs| build(inner, inputs))
    }
}

fn strip_exchange(alpn: &[Vec<u8>], exchange: bool) -> Vec<Vec<u8>> {
    alpn.iter()
        .filter(|p| exchange || p.as_slice() != peer_exchange::ALPN)
        .cloned()
        .collect()
}

fn build(inner: &Inner, inputs: &Inputs) -> Result<ClientConfigs, NotReady> {
    let config = &inner.config;
    let invalid = |reason: String| NotReady::Invalid {
        name: inner.bound.validation_name().to_string(),
        reason,
    };
    let params = &config.common.params;
    let builder = ClientConfig::builder_with_provider(params.provider.clone())
        .with_protocol_versions(&params.versions)
        .map_err(|e| invalid(e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = match &inputs.validation {
        Some((ctx, roots)) => {
            let mut validation = Validation::new(ctx, roots).map_err(|e| invalid(e.to_string()))?;
            validation.stats = inner.stats.clone();
            Arc::new(ServerVerifier(Arc::new(validation)))
        }
        None => Arc::new(NoVerification(
            params.provider.signature_verification_algorithms,
        )),
    };
    let cert = inputs.certs.first().map(|c| c.key.clone());
    let mut base = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(ClientCert(cert)));
    base.alpn_protocols = inner.alpn.clone();
    base.enable_sni = config.sni.is_some();
    base.resumption = if config.max_session_keys == 0 {
        Resumption::disabled()
    } else {
        Resumption::in_memory_sessions(config.max_session_keys)
    };
    Ok(ClientConfigs {
        base: Arc::new(base),
        overrides: Mutex::default(),
        local_uri_sans: inputs
            .certs
            .first()
            .map(|c| c.uri_sans.clone())
            .unwrap_or_default(),
    })
}

// === impl ClientConfigs ===

impl ClientConfigs {
    fn with_alpn(&self, alpn: &[Vec<u8>]) -> Arc<ClientConfig> {
        let mut overrides = self
            .overrides
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, c)) = overrides.iter().find(|(a, _)| a == alpn) {
            return c.clone();
        }
        let mut config = (*self.base).clone();
        config.alpn_protocols = alpn.to_vec();
        let config = Arc::new(config);
        overrides.push((alpn.to_vec(), config.clone()));
        config
    }
}

/// What an upstream handshake negotiated.
#[derive(Debug, Clone, Default)]
pub struct SessionInfo {
    pub alpn: Option<Vec<u8>>,
    pub version: String,
    pub cipher: String,
    /// The server's (verified) certificate.
    pub peer_certificate: Option<PeerCertificate>,
    /// The URI SANs of the certificate we present (Istio's outbound `source_principal`).
    pub local_uri_sans: Vec<String>,
}

/// An upstream TLS connection, with Istio's metadata exchange when it was negotiated.
#[derive(Debug)]
pub struct ClientStream<S> {
    io: PeerExchange<TlsStream<S>>,
    info: SessionInfo,
}

// === impl ClientStream ===

impl<S> ClientStream<S> {
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// The negotiated ALPN protocol (e.g. `h2` decides the HTTP codec).
    pub fn alpn(&self) -> Option<&[u8]> {
        self.info.alpn.as_deref()
    }

    /// The server's metadata from the exchange, once read.
    pub fn peer_metadata(&self) -> PeerMetadataSlot {
        self.io.peer_metadata()
    }

    pub fn get_ref(&self) -> &TlsStream<S> {
        self.io.get_ref()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ClientStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ClientStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
