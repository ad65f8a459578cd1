//! The checks that run before anything is measured: the path carries correct answers, and
//! for the sidecar pairs the server side really is mTLS + RBAC (plaintext is refused, a
//! certificate with another SPIFFE identity is denied, the client identity is let through),
//! so neither proxy is benchmarked on a shortcut.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::bootstrap::{Identity, Pki};
use super::client::{self, Load, Work};

/// Requests through `target` succeed: retried for a few seconds while listeners come up, then
/// a short burst must have no failure.
pub fn carries(work: Work, target: SocketAddr) -> Result<(), String> {
    let probe = |ms| Load {
        work,
        target,
        connections: 1,
        duration: Duration::from_millis(ms),
        rate: None,
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = client::run(probe(100)).map_err(|e| e.to_string())?;
        if out.errors == 0 && out.requests > 0 {
            break;
        }
        if Instant::now() > deadline {
            return Err(out.first_error.unwrap_or_else(|| "no answer".into()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = client::run(probe(300)).map_err(|e| e.to_string())?;
    match out.first_error {
        Some(e) => Err(format!(
            "{} of {} requests failed: {e}",
            out.errors, out.requests
        )),
        None => Ok(()),
    }
}

/// The server sidecar at `server` refuses plaintext, denies another identity and serves the
/// client identity.
pub fn enforces_mtls(server: SocketAddr, work: Work, pki: &Pki) -> Result<(), String> {
    let http = matches!(work, Work::Http1 { .. } | Work::Http2 { .. });
    let bulk = matches!(work, Work::Bulk { .. });
    let served = |stream: &mut dyn ReadWrite| -> bool { exchange(stream, http, bulk) };
    let mut plain = connect(server)?;
    if served(&mut plain) {
        return Err("the server sidecar answered plaintext".into());
    }
    let alpn: &[&[u8]] = if http {
        &[b"istio-http/1.1", b"istio", b"http/1.1"]
    } else {
        &[b"istio-peer-exchange", b"istio"]
    };
    let mut ok = tls(server, &pki.client, alpn)?;
    if !served(&mut ok) {
        return Err("the server sidecar did not serve the allowed identity".into());
    }
    if let Ok(mut denied) = tls(server, &pki.other, alpn)
        && served(&mut denied)
    {
        return Err("the server sidecar served a principal RBAC denies".into());
    }
    Ok(())
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

/// One request; whether it got a proper answer (an HTTP 200, 16 bulk bytes, or an echo).
fn exchange(stream: &mut dyn ReadWrite, http: bool, bulk: bool) -> bool {
    let request: &[u8] = if http {
        b"GET / HTTP/1.1\r\nhost: bench.local\r\n\r\n"
    } else if bulk {
        &[0, 0, 0, 0, 0, 0, 0, 16]
    } else {
        b"ping-through-the-sidecar-pair"
    };
    if stream
        .write_all(request)
        .and_then(|()| stream.flush())
        .is_err()
    {
        return false;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        if http && got.starts_with(b"HTTP/1.1 ") && got.len() >= 12 {
            return &got[9..12] == b"200";
        }
        if bulk && got.len() >= 16 {
            return got.len() == 16;
        }
        if !http && !bulk && got.len() >= request.len() {
            return got == request;
        }
    }
    false
}

fn tls(
    addr: SocketAddr,
    id: &Identity,
    alpn: &[&[u8]],
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let certs = CertificateDer::pem_file_iter(id.certs.join("cert-chain.pem"))
        .map_err(|e| err(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(&e))?;
    let key =
        PrivateKeyDer::from_pem_file(Path::new(&id.certs.join("key.pem"))).map_err(|e| err(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(&e))?
        .dangerous()
        .with_custom_certificate_verifier(e2e::tls::AnyServerCert::new(provider))
        .with_client_auth_cert(certs, key)
        .map_err(|e| err(&e))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = ServerName::try_from("outbound_.8080_._.server.default.svc.cluster.local")
        .map_err(|e| err(&e))?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| err(&e))?;
    let mut stream = rustls::StreamOwned::new(conn, connect(addr)?);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    Ok(stream)
}
