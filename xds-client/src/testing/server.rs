//! The fake control plane: ADS (SotW and delta) and SDS (SotW and delta) on one HTTP/2
//! listener over TCP, TLS or a Unix domain socket.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::{JoinHandle, JoinSet};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::codegen::Service as _;
use tonic::{Request, Response, Status, Streaming};

use crate::config::{PemSource, TlsConfig, Transport};

/// How long `next_*` waits before giving up; only a guard against a hung test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Open response streams of one message type: (stream number, RPC, sender).
type Streams<T> = Mutex<Vec<(u64, Rpc, UnboundedSender<Result<T, Status>>)>>;

/// A running fake server. Dropping it kills it.
#[derive(Debug)]
pub struct XdsServer {
    address: ServerAddress,
    state: Arc<State>,
    requests: Requests,
    accept: JoinHandle<()>,
}

/// Where the server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerAddress {
    /// A TCP address (plaintext or TLS).
    Tcp(std::net::SocketAddr),
    /// A Unix domain socket path.
    Uds(PathBuf),
}

/// TLS for the server (PEM). With `client_ca`, clients must present a certificate it signed.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// Server certificate chain.
    pub cert_chain: Vec<u8>,
    /// Server private key.
    pub private_key: Vec<u8>,
    /// CA that client certificates must chain to (mTLS).
    pub client_ca: Option<Vec<u8>>,
}

/// One request the server received, and on which stream (streams are numbered from 1 in the
/// order they opened, across all RPCs of this server).
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded<T> {
    /// The stream it arrived on.
    pub stream: u64,
    /// The request.
    pub request: T,
}

/// Why a test step failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No request arrived within the guard timeout.
    #[error("no {0} request arrived within {REQUEST_TIMEOUT:?}")]
    Timeout(&'static str),
    /// The server's request log closed (the server is gone).
    #[error("the server stopped recording {0} requests")]
    Closed(&'static str),
    /// No client stream of that kind is open to push to.
    #[error("no open {0} stream to push to")]
    NoStream(&'static str),
    /// Binding or TLS setup failed.
    #[error("cannot start the test server: {0}")]
    Start(String),
}

/// Which RPC a stream is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rpc {
    AdsSotw,
    AdsDelta,
    SdsSotw,
    SdsDelta,
}

/// Shared by the gRPC services and the test's handle.
#[derive(Debug)]
struct State {
    next_stream: AtomicU64,
    sotw: Streams<DiscoveryResponse>,
    delta: Streams<DeltaDiscoveryResponse>,
    record_sotw: [UnboundedSender<Recorded<DiscoveryRequest>>; 2],
    record_delta: [UnboundedSender<Recorded<DeltaDiscoveryRequest>>; 2],
}

/// The test's side of the request logs: `[ads, sds]`.
#[derive(Debug)]
struct Requests {
    sotw: [tokio::sync::Mutex<UnboundedReceiver<Recorded<DiscoveryRequest>>>; 2],
    delta: [tokio::sync::Mutex<UnboundedReceiver<Recorded<DeltaDiscoveryRequest>>>; 2],
}

enum Listener {
    Tcp(TcpListener, Option<tokio_rustls::TlsAcceptor>),
    Unix(UnixListener),
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

// === impl XdsServer ===

impl XdsServer {
    /// Plaintext HTTP/2 on `addr` (`127.0.0.1:0` picks a port).
    pub async fn bind_tcp(addr: std::net::SocketAddr) -> Result<Self, ServerError> {
        let listener = TcpListener::bind(addr).await.map_err(start_error)?;
        let local = listener.local_addr().map_err(start_error)?;
        Ok(Self::start(
            Listener::Tcp(listener, None),
            ServerAddress::Tcp(local),
        ))
    }

    /// TLS (ALPN h2) on `addr`.
    pub async fn bind_tls(addr: std::net::SocketAddr, tls: ServerTls) -> Result<Self, ServerError> {
        let acceptor = tls_acceptor(&tls)?;
        let listener = TcpListener::bind(addr).await.map_err(start_error)?;
        let local = listener.local_addr().map_err(start_error)?;
        Ok(Self::start(
            Listener::Tcp(listener, Some(acceptor)),
            ServerAddress::Tcp(local),
        ))
    }

    /// A Unix domain socket at `path` (a stale socket file is replaced).
    pub async fn bind_uds(path: impl AsRef<Path>) -> Result<Self, ServerError> {
        let path = path.as_ref().to_path_buf();
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(start_error(e)),
        }
        let listener = UnixListener::bind(&path).map_err(start_error)?;
        Ok(Self::start(
            Listener::Unix(listener),
            ServerAddress::Uds(path),
        ))
    }

    fn start(listener: Listener, address: ServerAddress) -> Self {
        let (ads_sotw_tx, ads_sotw_rx) = unbounded_channel();
        let (sds_sotw_tx, sds_sotw_rx) = unbounded_channel();
        let (ads_delta_tx, ads_delta_rx) = unbounded_channel();
        let (sds_delta_tx, sds_delta_rx) = unbounded_channel();
        let state = Arc::new(State {
            next_stream: AtomicU64::new(1),
            sotw: Mutex::new(Vec::new()),
            delta: Mutex::new(Vec::new()),
            record_sotw: [ads_sotw_tx, sds_sotw_tx],
            record_delta: [ads_delta_tx, sds_delta_tx],
        });
        let requests = Requests {
            sotw: [ads_sotw_rx.into(), sds_sotw_rx.into()],
            delta: [ads_delta_rx.into(), sds_delta_rx.into()],
        };
        let accept = tokio::spawn(accept_loop(listener, state.clone()));
        Self {
            address,
            state,
            requests,
            accept,
        }
    }

    /// Where the server listens.
    pub fn address(&self) -> &ServerAddress {
        &self.address
    }

    /// A plaintext client transport for this server (set `tls` yourself for a TLS server).
    pub fn transport(&self) -> Transport {
        match &self.address {
            ServerAddress::Tcp(addr) => Transport::Tcp {
                authority: addr.to_string(),
                tls: None,
            },
            ServerAddress::Uds(path) => Transport::Uds(path.clone()),
        }
    }

    /// A TLS client transport for this server, trusting `ca` and verifying `server_name`.
    pub fn tls_transport(&self, ca: Vec<u8>, server_name: &str) -> Transport {
        Transport::Tcp {
            authority: match &self.address {
                ServerAddress::Tcp(addr) => addr.to_string(),
                ServerAddress::Uds(path) => path.display().to_string(),
            },
            tls: Some(TlsConfig {
                ca: Some(PemSource::Inline(ca)),
                identity: None,
                server_name: Some(server_name.into()),
            }),
        }
    }

    /// The next SotW request on ADS (`StreamAggregatedResources`).
    pub async fn next_ads_sotw(&self) -> Result<Recorded<DiscoveryRequest>, ServerError> {
        next(&self.requests.sotw[0], "ADS state-of-the-world").await
    }

    /// The next delta request on ADS (`DeltaAggregatedResources`).
    pub async fn next_ads_delta(&self) -> Result<Recorded<DeltaDiscoveryRequest>, ServerError> {
        next(&self.requests.delta[0], "ADS delta").await
    }

    /// The next SotW request on SDS (`StreamSecrets`).
    pub async fn next_sds(&self) -> Result<Recorded<DiscoveryRequest>, ServerError> {
        next(&self.requests.sotw[1], "SDS state-of-the-world").await
    }

    /// The next delta request on SDS (`DeltaSecrets`).
    pub async fn next_sds_delta(&self) -> Result<Recorded<DeltaDiscoveryRequest>, ServerError> {
        next(&self.requests.delta[1], "SDS delta").await
    }

    /// Sends a response on the newest open SotW ADS stream; returns the stream number.
    pub fn push_ads_sotw(&self, response: DiscoveryResponse) -> Result<u64, ServerError> {
        push(
            &self.state.sotw,
            Rpc::AdsSotw,
            Ok(response),
            "ADS state-of-the-world",
        )
    }

    /// Sends a response on the newest open delta ADS stream.
    pub fn push_ads_delta(&self, response: DeltaDiscoveryResponse) -> Result<u64, ServerError> {
        push(&self.state.delta, Rpc::AdsDelta, Ok(response), "ADS delta")
    }

    /// Sends a response on the newest open SotW SDS stream.
    pub fn push_sds(&self, response: DiscoveryResponse) -> Result<u64, ServerError> {
        push(
            &self.state.sotw,
            Rpc::SdsSotw,
            Ok(response),
            "SDS state-of-the-world",
        )
    }

    /// Sends a response on the newest open delta SDS stream.
    pub fn push_sds_delta(&self, response: DeltaDiscoveryResponse) -> Result<u64, ServerError> {
        push(&self.state.delta, Rpc::SdsDelta, Ok(response), "SDS delta")
    }

    /// Ends every open stream: with `OK` (a clean close, like istiod's max connection age)
    /// when `status` is `None`, else with that error status.
    pub fn end_streams(&self, status: Option<Status>) {
        let sotw = std::mem::take(&mut *lock(&self.state.sotw));
        let delta = std::mem::take(&mut *lock(&self.state.delta));
        if let Some(status) = status {
            for (_, _, tx) in &sotw {
                let _ = tx.send(Err(status.clone()));
            }
            for (_, _, tx) in &delta {
                let _ = tx.send(Err(status.clone()));
            }
        }
    }

    /// Kills the server: stops accepting and drops every connection at once, as a crashed
    /// process would. The address can be bound again afterwards.
    pub async fn kill(mut self) {
        self.accept.abort();
        let _ = (&mut self.accept).await;
        lock(&self.state.sotw).clear();
        lock(&self.state.delta).clear();
        if let ServerAddress::Uds(path) = &self.address {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for XdsServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

// === impl State: the gRPC services ===

impl State {
    fn open_sotw(
        &self,
        rpc: Rpc,
        mut requests: Streaming<DiscoveryRequest>,
    ) -> UnboundedReceiverStream<Result<DiscoveryResponse, Status>> {
        let stream = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = unbounded_channel();
        lock(&self.sotw).push((stream, rpc, tx));
        let record = self.record_sotw[usize::from(rpc == Rpc::SdsSotw)].clone();
        tokio::spawn(async move {
            while let Ok(Some(request)) = requests.message().await {
                if record.send(Recorded { stream, request }).is_err() {
                    break;
                }
            }
        });
        UnboundedReceiverStream::new(rx)
    }

    fn open_delta(
        &self,
        rpc: Rpc,
        mut requests: Streaming<DeltaDiscoveryRequest>,
    ) -> UnboundedReceiverStream<Result<DeltaDiscoveryResponse, Status>> {
        let stream = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = unbounded_channel();
        lock(&self.delta).push((stream, rpc, tx));
        let record = self.record_delta[usize::from(rpc == Rpc::SdsDelta)].clone();
        tokio::spawn(async move {
            while let Ok(Some(request)) = requests.message().await {
                if record.send(Recorded { stream, request }).is_err() {
                    break;
                }
            }
        });
        UnboundedReceiverStream::new(rx)
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for State {
    type StreamAggregatedResourcesStream =
        UnboundedReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream =
        UnboundedReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Ok(Response::new(
            self.open_sotw(Rpc::AdsSotw, request.into_inner()),
        ))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Ok(Response::new(
            self.open_delta(Rpc::AdsDelta, request.into_inner()),
        ))
    }
}

#[tonic::async_trait]
impl SecretDiscoveryService for State {
    type DeltaSecretsStream = UnboundedReceiverStream<Result<DeltaDiscoveryResponse, Status>>;
    type StreamSecretsStream = UnboundedReceiverStream<Result<DiscoveryResponse, Status>>;

    async fn delta_secrets(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Ok(Response::new(
            self.open_delta(Rpc::SdsDelta, request.into_inner()),
        ))
    }

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        Ok(Response::new(
            self.open_sotw(Rpc::SdsSotw, request.into_inner()),
        ))
    }

    async fn fetch_secrets(
        &self,
        _request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Err(Status::unimplemented(
            "the test server only streams secrets",
        ))
    }
}

// === serving ===

async fn accept_loop(listener: Listener, state: Arc<State>) {
    // Connections live in this set: aborting the accept task drops (kills) all of them.
    let mut connections = JoinSet::new();
    loop {
        let accepted: io::Result<Box<dyn Io>> = match &listener {
            Listener::Tcp(l, tls) => match l.accept().await {
                Ok((tcp, _)) => match tls {
                    None => Ok(Box::new(tcp)),
                    Some(acceptor) => match acceptor.accept(tcp).await {
                        Ok(tls) => Ok(Box::new(tls)),
                        Err(e) => {
                            tracing::debug!(error = %e, "test server: TLS handshake failed");
                            continue;
                        }
                    },
                },
                Err(e) => Err(e),
            },
            Listener::Unix(l) => l.accept().await.map(|(s, _)| Box::new(s) as Box<dyn Io>),
        };
        match accepted {
            Ok(io) => {
                connections.spawn(serve_connection(io, state.clone()));
            }
            Err(e) => tracing::debug!(error = %e, "test server: accept failed"),
        }
        while connections.try_join_next().is_some() {}
    }
}

async fn serve_connection(io: Box<dyn Io>, state: Arc<State>) {
    let ads = AggregatedDiscoveryServiceServer::from_arc(state.clone());
    let sds = SecretDiscoveryServiceServer::from_arc(state);
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let mut ads = ads.clone();
            let mut sds = sds.clone();
            async move {
                let path = request.uri().path();
                if path.starts_with("/envoy.service.discovery.v3.AggregatedDiscoveryService/") {
                    ads.call(request).await
                } else if path.starts_with("/envoy.service.secret.v3.SecretDiscoveryService/") {
                    sds.call(request).await
                } else {
                    Ok(Status::unimplemented(format!("no service at {path}")).into_http())
                }
            }
        });
    let result = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service)
        .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "test server: connection ended");
    }
}

fn tls_acceptor(tls: &ServerTls) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = CertificateDer::pem_slice_iter(&tls.cert_chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(start_error)?;
    let key = PrivateKeyDer::from_pem_slice(&tls.private_key).map_err(start_error)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(start_error)?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca) {
                roots.add(cert.map_err(start_error)?).map_err(start_error)?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(start_error)?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(start_error)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn next<T>(
    log: &tokio::sync::Mutex<UnboundedReceiver<Recorded<T>>>,
    what: &'static str,
) -> Result<Recorded<T>, ServerError> {
    let mut log = log.lock().await;
    match tokio::time::timeout(REQUEST_TIMEOUT, log.recv()).await {
        Ok(Some(recorded)) => Ok(recorded),
        Ok(None) => Err(ServerError::Closed(what)),
        Err(_) => Err(ServerError::Timeout(what)),
    }
}

fn push<T>(
    streams: &Streams<T>,
    rpc: Rpc,
    message: Result<T, Status>,
    what: &'static str,
) -> Result<u64, ServerError> {
    let streams = lock(streams);
    let (stream, _, tx) = streams
        .iter()
        .rev()
        .find(|(_, r, tx)| *r == rpc && !tx.is_closed())
        .ok_or(ServerError::NoStream(what))?;
    tx.send(message).map_err(|_| ServerError::NoStream(what))?;
    Ok(*stream)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn start_error(e: impl std::fmt::Display) -> ServerError {
    ServerError::Start(e.to_string())
}
