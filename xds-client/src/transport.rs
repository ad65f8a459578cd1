//! Opening the HTTP/2 channel to the server: plaintext or TLS over TCP, or a Unix domain
//! socket. A fresh channel per connection attempt, so certificate files are re-read and a
//! restarted server is reached at its new incarnation.

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::config::{PemSource, TlsConfig, Transport};

/// Envoy's TCP keepalive for Istio's xDS cluster (`keepalive_time: 300`).
const TCP_KEEPALIVE: Duration = Duration::from_secs(300);

/// Why the channel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A certificate or key file could not be read.
    #[error("cannot read the TLS {what} from {path}: {source}")]
    ReadPem {
        /// Which file: CA bundle, certificate chain or private key.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TLS without a CA would not verify the server.
    #[error("TLS to the xDS server needs a CA bundle (tls.ca) to verify the server certificate")]
    MissingCa,
    /// The address is not a valid `host:port` or socket path.
    #[error("invalid xDS server address {address}: {reason}")]
    InvalidAddress {
        /// The configured address.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS settings were refused (bad PEM, bad server name).
    #[error("invalid TLS settings for {address}: {reason}")]
    Tls {
        /// The configured address.
        address: String,
        /// What the TLS stack reported.
        reason: String,
    },
    /// The connection failed (refused, TLS handshake, no such socket...).
    #[error("cannot connect to the xDS server at {address}: {reason}")]
    Connect {
        /// The configured address.
        address: String,
        /// The error chain.
        reason: String,
    },
    /// The connection did not complete within `connect_timeout`.
    #[error("timed out after {timeout:?} connecting to the xDS server at {address}")]
    Timeout {
        /// The configured address.
        address: String,
        /// The configured timeout.
        timeout: Duration,
    },
}

/// Connects to the server described by `transport`.
pub(crate) async fn connect(
    transport: &Transport,
    connect_timeout: Duration,
) -> Result<Channel, TransportError> {
    let (endpoint, address) = endpoint(transport).await?;
    let endpoint = endpoint.connect_timeout(connect_timeout);
    match tokio::time::timeout(connect_timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(TransportError::Connect {
            address,
            reason: error_chain(&e),
        }),
        Err(_) => Err(TransportError::Timeout {
            address,
            timeout: connect_timeout,
        }),
    }
}

async fn endpoint(transport: &Transport) -> Result<(Endpoint, String), TransportError> {
    match transport {
        Transport::Uds(path) => {
            let address = path.display().to_string();
            let Some(path) = path.to_str() else {
                return Err(TransportError::InvalidAddress {
                    address,
                    reason: "the socket path is not valid UTF-8".into(),
                });
            };
            let endpoint = Endpoint::from_shared(format!("unix:{path}")).map_err(|e| {
                TransportError::InvalidAddress {
                    address: address.clone(),
                    reason: error_chain(&e),
                }
            })?;
            Ok((endpoint, address))
        }
        Transport::Tcp { authority, tls } => {
            let scheme = if tls.is_some() { "https" } else { "http" };
            let address = authority.clone();
            let endpoint = Endpoint::from_shared(format!("{scheme}://{authority}"))
                .map_err(|e| TransportError::InvalidAddress {
                    address: address.clone(),
                    reason: error_chain(&e),
                })?
                .tcp_keepalive(Some(TCP_KEEPALIVE));
            let endpoint = match tls {
                None => endpoint,
                Some(tls) => endpoint.tls_config(client_tls(tls).await?).map_err(|e| {
                    TransportError::Tls {
                        address: address.clone(),
                        reason: error_chain(&e),
                    }
                })?,
            };
            Ok((endpoint, address))
        }
    }
}

async fn client_tls(tls: &TlsConfig) -> Result<ClientTlsConfig, TransportError> {
    let ca = tls.ca.as_ref().ok_or(TransportError::MissingCa)?;
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read_pem(ca, "CA bundle").await?))
        .assume_http2(true);
    if let Some(identity) = &tls.identity {
        let cert = read_pem(&identity.cert_chain, "certificate chain").await?;
        let key = read_pem(&identity.private_key, "private key").await?;
        config = config.identity(tonic::transport::Identity::from_pem(cert, key));
    }
    if let Some(name) = &tls.server_name {
        config = config.domain_name(name.clone());
    }
    Ok(config)
}

async fn read_pem(source: &PemSource, what: &'static str) -> Result<Vec<u8>, TransportError> {
    match source {
        PemSource::Inline(bytes) => Ok(bytes.clone()),
        PemSource::File(path) => read_file(path, what).await,
    }
}

async fn read_file(path: &Path, what: &'static str) -> Result<Vec<u8>, TransportError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| TransportError::ReadPem {
            what,
            path: path.to_path_buf(),
            source,
        })
}

/// `outer: inner: innermost`, because tonic's top-level messages ("transport error") alone
/// do not tell an operator what happened.
pub(crate) fn error_chain(error: &dyn StdError) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}
