//! Opening upstream connections: pick a host, respect the circuit breaker, bind the source
//! address, connect (and, for TLS hosts, handshake) within the cluster's timeout, and account
//! for it all in Envoy's stats. A host whose transport is TLS gets TLS or no connection:
//! never plaintext.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream, UnixStream};

use super::cluster::{Cluster, ConnectionSlot, LbContext, OriginalSrc};
use super::host::{Host, HostAddr};
use crate::config::cluster::{Keepalive, UpstreamTransport};
use crate::tls::cluster::ClusterTlsError;
use crate::tls::{ClientStream, HandshakeError};

/// Why no upstream connection could be made. Each maps to one of Envoy's response flags.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no healthy upstream")]
    NoHealthyUpstream,
    #[error("upstream connection overflow (circuit breaker max_connections)")]
    Overflow,
    #[error("connection timeout")]
    Timeout,
    #[error("connection failure: {0}")]
    Failed(io::Error),
    #[error("failed to bind source address {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    /// The host needs TLS and its context cannot be used yet (a secret has not arrived).
    #[error("upstream TLS unavailable, not connecting in plaintext: {0}")]
    TlsUnavailable(ClusterTlsError),
    #[error("upstream {0}")]
    Tls(HandshakeError),
}

// === impl ConnectError ===

impl ConnectError {
    /// Envoy's response flag for this failure (access logs, `response_flags` label).
    pub fn response_flag(&self) -> &'static str {
        match self {
            Self::NoHealthyUpstream => "UH",
            Self::Overflow => "UO",
            Self::Timeout
            | Self::Failed(_)
            | Self::Bind { .. }
            | Self::TlsUnavailable(_)
            | Self::Tls(_) => "UF",
        }
    }
}

/// An upstream byte stream.
#[derive(Debug)]
pub enum UpstreamIo {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// TLS over TCP or a pipe, with Istio's metadata exchange when negotiated.
    Tls(Box<ClientStream<UpstreamIo>>),
}

/// Per-connection choices of the caller.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Replaces the TLS context's ALPN list (Istio's `istio.alpn` filter, e.g.
    /// `istio-http/1.1, istio, http/1.1`). Ignored for plaintext hosts.
    pub alpn: Option<Vec<Vec<u8>>>,
    /// Connect from the downstream peer's address (Envoy's `original_src` filter).
    pub original_src: Option<OriginalSrc>,
}

/// An open upstream connection. Dropping it closes the connection and settles the stats.
#[derive(Debug)]
pub struct Upstream {
    pub io: UpstreamIo,
    pub host: Arc<Host>,
    guard: Guard,
}

#[derive(Debug)]
struct Guard {
    slot: ConnectionSlot,
    host: Arc<Host>,
    opened: Instant,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let stats = &self.slot.cluster().stats;
        stats.upstream_cx_active.dec();
        stats.upstream_cx_destroy.inc();
        stats
            .upstream_cx_length_ms
            .record(self.opened.elapsed().as_millis() as u64);
        self.host.active.fetch_sub(1, Ordering::Relaxed);
    }
}

// === impl Upstream ===

impl Upstream {
    pub fn cluster(&self) -> &Arc<Cluster> {
        self.guard.slot.cluster()
    }

    /// Splits into the stream and a handle that keeps the accounting alive.
    pub fn into_parts(self) -> (UpstreamIo, Arc<Host>, UpstreamHandle) {
        (self.io, self.host, UpstreamHandle(self.guard))
    }
}

/// Keeps an upstream connection counted until dropped.
#[derive(Debug)]
pub struct UpstreamHandle(Guard);

impl UpstreamHandle {
    pub fn cluster(&self) -> &Arc<Cluster> {
        self.0.slot.cluster()
    }
}

/// Connects to a host of `cluster`.
pub async fn connect(cluster: &Arc<Cluster>, ctx: &LbContext) -> Result<Upstream, ConnectError> {
    let host = cluster.choose(ctx).ok_or(ConnectError::NoHealthyUpstream)?;
    connect_host_with(
        cluster,
        host,
        &ConnectOptions {
            original_src: ctx.original_src,
            ..ConnectOptions::default()
        },
    )
    .await
}

/// Connects to a given host of `cluster`.
pub async fn connect_host(
    cluster: &Arc<Cluster>,
    host: Arc<Host>,
) -> Result<Upstream, ConnectError> {
    connect_host_with(cluster, host, &ConnectOptions::default()).await
}

/// Connects to a given host of `cluster`, with per-connection options.
pub async fn connect_host_with(
    cluster: &Arc<Cluster>,
    host: Arc<Host>,
    options: &ConnectOptions,
) -> Result<Upstream, ConnectError> {
    let slot = cluster.acquire_connection().ok_or(ConnectError::Overflow)?;
    let tls = match host.transport {
        UpstreamTransport::Tls(_) => match cluster
            .tls
            .for_host(&host)
            .and_then(|tls| tls.readiness().map(|()| tls).map_err(Into::into))
        {
            Ok(tls) => Some(tls),
            Err(e) => {
                cluster.stats.upstream_cx_connect_fail.inc();
                return Err(ConnectError::TlsUnavailable(e));
            }
        },
        UpstreamTransport::Raw => None,
    };
    let cfg = &cluster.config;
    let stats = &cluster.stats;
    stats.upstream_cx_total.inc();
    host.stats.cx_total.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    // As in Envoy, the connect timeout covers the TLS handshake.
    let result = tokio::time::timeout(cfg.connect_timeout, async {
        let io = open(
            &host.addr,
            source(cfg.source_address, options.original_src),
            cfg.keepalive,
        )
        .await?;
        match tls {
            None => Ok(io),
            Some(tls) => tls
                .connect(io, options.alpn.as_deref())
                .await
                .map(|s| UpstreamIo::Tls(Box::new(s)))
                .map_err(ConnectError::Tls),
        }
    })
    .await;
    // A failed connection is destroyed too: by the peer when refused, by us otherwise.
    if !matches!(result, Ok(Ok(_))) {
        host.stats.cx_connect_fail.fetch_add(1, Ordering::Relaxed);
    }
    let io = match result {
        Err(_) => {
            stats.upstream_cx_connect_timeout.inc();
            stats.upstream_cx_connect_fail.inc();
            stats.upstream_cx_destroy.inc();
            stats.upstream_cx_destroy_local.inc();
            return Err(ConnectError::Timeout);
        }
        Ok(Err(e)) => {
            stats.upstream_cx_connect_fail.inc();
            stats.upstream_cx_destroy.inc();
            if matches!(e, ConnectError::Bind { .. }) {
                stats.bind_errors.inc();
                stats.upstream_cx_destroy_local.inc();
            } else {
                stats.upstream_cx_destroy_remote.inc();
            }
            if let ConnectError::Tls(tls) = &e {
                tracing::debug!(cluster = cluster.name(), host = %host.addr, "{tls}");
            }
            return Err(e);
        }
        Ok(Ok(io)) => io,
    };
    stats
        .upstream_cx_connect_ms
        .record(started.elapsed().as_millis() as u64);
    stats.upstream_cx_active.inc();
    host.active.fetch_add(1, Ordering::Relaxed);
    Ok(Upstream {
        io,
        host: host.clone(),
        guard: Guard {
            slot,
            host,
            opened: Instant::now(),
        },
    })
}

/// Where an upstream socket binds before connecting.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// `upstream_bind_config` (e.g. 127.0.0.6 for Istio's inbound passthrough).
    Bind(std::net::IpAddr),
    /// `original_src`: transparent, the peer's address, marked.
    Transparent(OriginalSrc),
}

/// `original_src` wins over the cluster's bind address, as in Envoy.
fn source(bind: Option<std::net::IpAddr>, original_src: Option<OriginalSrc>) -> Option<Source> {
    original_src
        .map(Source::Transparent)
        .or(bind.map(Source::Bind))
}

async fn open(
    addr: &HostAddr,
    source: Option<Source>,
    keepalive: Option<Keepalive>,
) -> Result<UpstreamIo, ConnectError> {
    let dst = match addr {
        HostAddr::Pipe(path) => {
            return UnixStream::connect(path)
                .await
                .map(UpstreamIo::Unix)
                .map_err(ConnectError::Failed);
        }
        HostAddr::Ip(dst) => *dst,
    };
    let socket = if dst.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(ConnectError::Failed)?;
    match source {
        Some(Source::Bind(ip)) if ip.is_ipv4() == dst.is_ipv4() => {
            let addr = SocketAddr::new(ip, 0);
            socket
                .bind(addr)
                .map_err(|source| ConnectError::Bind { addr, source })?;
        }
        Some(Source::Transparent(src)) if src.ip.is_ipv4() == dst.is_ipv4() => {
            let addr = SocketAddr::new(src.ip, 0);
            let bind_error = |source| ConnectError::Bind { addr, source };
            let sock = socket2::SockRef::from(&socket);
            if dst.is_ipv4() {
                sock.set_ip_transparent_v4(true).map_err(bind_error)?;
            } else {
                sock.set_ip_transparent_v6(true).map_err(bind_error)?;
            }
            if src.mark != 0 {
                sock.set_mark(src.mark).map_err(bind_error)?;
            }
            socket.bind(addr).map_err(bind_error)?;
        }
        _ => {}
    }
    if let Some(ka) = keepalive {
        let sock = socket2::SockRef::from(&socket);
        let mut params = socket2::TcpKeepalive::new();
        if let Some(t) = ka.time {
            params = params.with_time(t);
        }
        if let Some(i) = ka.interval {
            params = params.with_interval(i);
        }
        if let Some(p) = ka.probes {
            params = params.with_retries(p);
        }
        sock.set_tcp_keepalive(&params)
            .map_err(ConnectError::Failed)?;
    }
    let stream = socket.connect(dst).await.map_err(ConnectError::Failed)?;
    stream.set_nodelay(true).map_err(ConnectError::Failed)?;
    Ok(UpstreamIo::Tcp(stream))
}

/// The default connect timeout when a cluster does not set one.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

// === impl UpstreamIo ===

impl UpstreamIo {
    /// Our end's address, for TCP (under TLS too).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            UpstreamIo::Tcp(s) => s.local_addr().ok(),
            UpstreamIo::Unix(_) => None,
            UpstreamIo::Tls(s) => s.get_ref().get_ref().0.local_addr(),
        }
    }

    /// The protocol TLS negotiated, if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            UpstreamIo::Tls(s) => s.alpn(),
            _ => None,
        }
    }
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(s) => s.is_write_vectored(),
            Self::Unix(s) => s.is_write_vectored(),
            Self::Tls(_) => false,
        }
    }
}
