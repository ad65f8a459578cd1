//! A mesh client of the test's own: an mTLS handshake with a sidecar's inbound listener,
//! as another sidecar would make it (client certificate from the mesh CA, ALPN `istio`,
//! Istio's SNI), to see which certificate the server presents on the wire.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection};

use crate::cp::WorkloadCert;
use crate::netns::Netns;

/// Handshakes from `ns` with the sidecar behind `addr`, presenting `client`, and returns
/// the DER of the leaf certificate the server presented.
pub fn server_certificate(
    ns: &Netns,
    addr: SocketAddr,
    sni: &str,
    client: &WorkloadCert,
) -> std::io::Result<Vec<u8>> {
    let provider = Arc::new(ring::default_provider());
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(client.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(std::io::Error::other)?;
    let key =
        PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes()).map_err(std::io::Error::other)?;
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(crate::tls::AnyServerCert::new(provider))
        .with_client_auth_cert(chain, key)
        .map_err(std::io::Error::other)?;
    config.alpn_protocols = vec![b"istio".to_vec()];
    let name = ServerName::try_from(sni.to_string()).map_err(std::io::Error::other)?;
    let mut conn = ClientConnection::new(Arc::new(config), name).map_err(std::io::Error::other)?;
    let mut sock = ns.enter(move || TcpStream::connect_timeout(&addr, Duration::from_secs(5)))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or_else(|| std::io::Error::other("the server presented no certificate"))
}
