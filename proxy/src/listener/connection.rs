//! One accepted connection, from accept to close: original destination (and the hand-off to
//! the listener that owns it), listener filters, filter chain selection, the transport
//! socket, and the network filters.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::active::{ActiveChain, ActiveListener, ListenerStats, Terminal};
use super::manager::ListenerManager;
use super::rbac_gate::RbacGate;
use super::{Inspectors, Peek, socket};
use crate::conn::{Direction, Downstream, PeerTls};
use crate::io::{DownstreamIo, Prefixed};
use crate::istio_stats::{IstioStats, Peer, TcpRecord};
use crate::tcp;
use crate::tls::{DownstreamTls, LocalNode, PeerMetadataSlot, peer_exchange};

/// Settles a connection's listener stats when it ends.
struct Accounting {
    stats: ListenerStats,
    started: Instant,
    worker: usize,
}

impl Accounting {
    fn open(stats: ListenerStats) -> Self {
        let worker = crate::worker::current().min(stats.per_worker.len().saturating_sub(1));
        stats.downstream_cx_total.inc();
        stats.downstream_cx_active.inc();
        if let Some((total, active)) = stats.per_worker.get(worker) {
            total.inc();
            active.inc();
        }
        Self {
            stats,
            started: Instant::now(),
            worker,
        }
    }
}

impl Drop for Accounting {
    fn drop(&mut self) {
        if let Some((_, active)) = self.stats.per_worker.get(self.worker) {
            active.dec();
        }
        self.stats.downstream_cx_active.dec();
        self.stats.downstream_cx_destroy.inc();
        self.stats
            .downstream_cx_length_ms
            .record(self.started.elapsed().as_millis() as u64);
    }
}

/// Handles a connection accepted by `accepted`'s socket until it closes.
pub async fn handle(
    mut stream: TcpStream,
    peer: SocketAddr,
    accepted: Arc<ActiveListener>,
    manager: Arc<ListenerManager>,
) {
    let _ = stream.set_nodelay(true);
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let mut listener = accepted;
    let destination = if listener.config.original_dst {
        socket::original_dst(&stream).unwrap_or(local)
    } else {
        local
    };
    // virtualOutbound: the connection belongs to the listener of its original destination.
    if listener.config.use_original_dst
        && destination != local
        && let Some(owner) = manager.find_by_address(destination)
    {
        listener = owner;
    }
    let _accounting = Accounting::open(listener.stats.clone());

    let Some((buffered, chain, sni)) = classify(&mut stream, &listener, destination, peer).await
    else {
        return;
    };
    let mut downstream = Downstream {
        local: destination,
        peer,
        listener: listener.config.name.clone(),
        direction: listener.config.direction,
        filter_chain: chain.config.name.clone(),
        requested_server_name: sni,
        tls: None,
        original_src_mark: listener.config.original_src_mark,
    };
    let io = Prefixed::new(buffered, stream);
    let io = match &chain.tls {
        None => DownstreamIo::Raw(io),
        Some(tls) => {
            let node = manager.clusters().tls().node.clone();
            let accept = accept_tls(tls, io, node.as_deref(), &downstream);
            let accepted = match connect_timeout(&chain) {
                None => accept.await,
                Some(t) => tokio::time::timeout(t, accept).await.unwrap_or_else(|_| {
                    let stats = &listener.stats;
                    stats.downstream_cx_transport_socket_connect_timeout.inc();
                    None
                }),
            };
            match accepted {
                Some((io, peer_tls)) => {
                    downstream.tls = Some(Arc::new(peer_tls));
                    io
                }
                None => return,
            }
        }
    };
    // The client's workload, once Istio's metadata exchange has read it (telemetry).
    let downstream_peer = match &io {
        DownstreamIo::PeerExchange(s) => Some(s.peer_metadata()),
        _ => None,
    };
    let work = run_terminal(&chain, io, &downstream, downstream_peer, &manager);
    tokio::select! {
        () = work => {}
        () = chain.drain.closed() => {
            tracing::debug!(chain = &*chain.config.name, "closing a connection of a drained filter chain");
        }
    }
}

/// The chain's `transport_socket_connect_timeout`: how long the TLS handshake may take.
fn connect_timeout(chain: &ActiveChain) -> Option<Duration> {
    let d = chain
        .config
        .proto
        .transport_socket_connect_timeout
        .as_ref()?;
    let d = Duration::new(u64::try_from(d.seconds).ok()?, u32::try_from(d.nanos).ok()?);
    (!d.is_zero()).then_some(d)
}

/// Terminates TLS; `None` closes the connection (the handshake failed, or the chain's
/// secrets have not arrived: never plaintext). With ALPN `istio-peer-exchange` negotiated,
/// the session is wrapped for Istio's metadata exchange and our frame is sent at once.
async fn accept_tls(
    tls: &DownstreamTls,
    io: Prefixed<TcpStream>,
    node: Option<&LocalNode>,
    downstream: &Downstream,
) -> Option<(DownstreamIo, PeerTls)> {
    let (stream, peer_tls) = match tls.accept_stream(io).await {
        Ok(accepted) => accepted,
        Err(e) => {
            tracing::debug!(
                listener = &*downstream.listener,
                chain = &*downstream.filter_chain,
                peer = %downstream.peer,
                "closing the connection: {e}"
            );
            return None;
        }
    };
    if node.is_none() || peer_tls.alpn.as_deref() != Some(peer_exchange::ALPN) {
        return Some((DownstreamIo::Tls(Box::new(stream)), peer_tls));
    }
    let mut wrapped = peer_exchange::wrap(stream, peer_tls.alpn.as_deref(), node);
    if let Err(e) = wrapped.flush().await {
        tracing::debug!(peer = %downstream.peer, "metadata exchange: cannot send our frame: {e}");
        return None;
    }
    Some((DownstreamIo::PeerExchange(Box::new(wrapped)), peer_tls))
}

/// Runs the chain's terminal filter. Draining the chain drains it gracefully (HTTP:
/// `connection: close` / GOAWAY); the caller closes what is left when the drain time ends.
async fn run_terminal(
    chain: &ActiveChain,
    mut io: DownstreamIo,
    downstream: &Downstream,
    downstream_peer: Option<PeerMetadataSlot>,
    manager: &ListenerManager,
) {
    match &chain.terminal {
        Terminal::Http(hcm) => {
            hcm.serve(io, downstream.clone(), chain.drain.draining_token())
                .await;
        }
        Terminal::TcpProxy(proxy) => {
            let mut report = tcp::Report::default();
            if chain.istio_stats
                && let Some(telemetry) = IstioStats::get()
            {
                // Istio reports a live connection every tcp_reporting_duration.
                let (downstream, peer) = (downstream.clone(), downstream_peer.clone());
                report.periodic = Some(tcp::Periodic {
                    every: crate::istio_stats::TCP_REPORTING_DURATION,
                    report: Arc::new(move |report: &tcp::Report| {
                        report_tcp(telemetry, &downstream, peer.as_ref(), "-", report, false);
                    }),
                });
            }
            let clusters = manager.clusters();
            let outcome = if chain.rbac.is_empty() {
                proxy
                    .run_reporting(io, downstream, clusters, &mut report)
                    .await
            } else {
                let gated = RbacGate::new(io, &chain.rbac, downstream);
                proxy
                    .run_reporting(gated, downstream, clusters, &mut report)
                    .await
            };
            tracing::debug!(?outcome, peer = %downstream.peer, "tcp_proxy done");
            proxy.log(downstream, &outcome, &report);
            if chain.istio_stats
                && let Some(telemetry) = IstioStats::get()
            {
                let flags = match &outcome {
                    tcp::Outcome::NoRoute => "NR",
                    tcp::Outcome::ConnectFailed(e) => e.response_flag(),
                    _ => "-",
                };
                report_tcp(
                    telemetry,
                    downstream,
                    downstream_peer.as_ref(),
                    flags,
                    &report,
                    true,
                );
            }
        }
        Terminal::DirectResponse(body) => {
            if io.write_all(body).await.is_ok() {
                let _ = io.shutdown().await;
            }
        }
    }
}

/// Reports a tcp_proxy connection in Istio's TCP metrics: what changed since the last
/// report, and whether it has closed.
fn report_tcp(
    telemetry: &IstioStats,
    downstream: &Downstream,
    downstream_peer: Option<&PeerMetadataSlot>,
    flags: &str,
    report: &tcp::Report,
    closed: bool,
) {
    let inbound = downstream.direction == Direction::Inbound;
    let peer_slot = if inbound {
        downstream_peer
    } else {
        report.upstream_peer.as_ref()
    };
    let exchanged = peer_slot.and_then(|s| s.metadata().cloned());
    let tls = downstream.tls.as_deref();
    let downstream_principal = tls
        .and_then(|t| t.peer_certificate.as_ref())
        .and_then(|c| c.uri_sans.first())
        .map(String::as_str);
    let (peer_principal, local_principal) = if inbound {
        (
            downstream_principal,
            tls.and_then(|t| t.local_uri_sans.first())
                .map(String::as_str),
        )
    } else {
        (
            report.upstream_principal.as_deref(),
            report.upstream_local_principal.as_deref(),
        )
    };
    let (opened, received, sent) = report.reported.take(report.connected, &report.bytes);
    let cluster = report.cluster.as_deref().unwrap_or("");
    telemetry.tcp_report(&TcpRecord {
        direction: downstream.direction,
        peer: Peer {
            exchanged: exchanged.as_ref(),
            endpoint: report
                .host
                .as_ref()
                .filter(|_| !inbound)
                .and_then(|h| h.metadata.as_deref()),
            principal: peer_principal,
        },
        local_principal,
        cluster,
        mutual_tls: inbound && downstream_principal.is_some(),
        response_flags: flags,
        received,
        sent,
        opened,
        closed,
    });
}

/// Runs the listener filters that apply to this destination port and selects the filter
/// chain. Returns the bytes read on the way, the chain, and the SNI; `None` closes.
async fn classify(
    stream: &mut TcpStream,
    listener: &ActiveListener,
    destination: SocketAddr,
    peer: SocketAddr,
) -> Option<(Bytes, Arc<ActiveChain>, Option<Arc<str>>)> {
    let cfg = &listener.config;
    let port = destination.port();
    let inspectors = Inspectors {
        tls: cfg
            .tls_inspector
            .as_ref()
            .and_then(|g| g.enabled_for(port).copied()),
        http: cfg
            .http_inspector
            .as_ref()
            .is_some_and(|g| g.enabled_for(port).is_some()),
    };
    let mut buf = BytesMut::new();
    if inspectors.tls.is_some() || inspectors.http {
        let stats = &listener.stats;
        stats.downstream_pre_cx_active.inc();
        let read = read_until_classified(stream, &mut buf, &inspectors, cfg.filters_timeout).await;
        stats.downstream_pre_cx_active.dec();
        match read {
            Ok(()) => {}
            Err(PeekEnd::Timeout) if cfg.continue_on_filters_timeout => {}
            Err(PeekEnd::Timeout) => {
                stats.downstream_pre_cx_timeout.inc();
                return None;
            }
            Err(PeekEnd::RemoteClose) => {
                stats.downstream_listener_filter_remote_close.inc();
                return None;
            }
            Err(PeekEnd::Rejected) => {
                stats.downstream_listener_filter_error.inc();
                return None;
            }
        }
    }
    let chain_and_sni = {
        let peeked = match inspectors.peek(&buf) {
            Peek::Ready(p) => p,
            // Only after a timeout with continue_on_listener_filters_timeout: nothing known.
            _ => Default::default(),
        };
        let info = peeked.connection_info(destination, peer, peer);
        let sni = info
            .server_name
            .and_then(|s| std::str::from_utf8(s).ok())
            .map(Arc::<str>::from);
        listener.matcher.select(&info).map(|c| (c.clone(), sni))
    };
    let Some((chain, sni)) = chain_and_sni else {
        listener.stats.no_filter_chain_match.inc();
        tracing::debug!(listener = listener.name(), %destination, "no filter chain matched");
        return None;
    };
    Some((buf.freeze(), chain, sni))
}

#[derive(Debug)]
enum PeekEnd {
    Timeout,
    RemoteClose,
    Rejected,
}

/// Reads until the inspectors have decided (or give up), within the listener filter timeout.
async fn read_until_classified(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    inspectors: &Inspectors,
    timeout: Option<Duration>,
) -> Result<(), PeekEnd> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let max = inspectors.max_read_size().max(1);
    loop {
        match inspectors.peek(buf) {
            Peek::Ready(_) => return Ok(()),
            Peek::Close(reason) => {
                tracing::debug!(?reason, "listener filter closed the connection");
                return Err(PeekEnd::Rejected);
            }
            Peek::NeedMoreData => {}
        }
        if buf.len() >= max {
            return Err(PeekEnd::Rejected);
        }
        let mut chunk = [0u8; 4096];
        let want = chunk.len().min(max - buf.len());
        let read = stream.read(&mut chunk[..want]);
        let n = match deadline {
            Some(d) => match tokio::time::timeout_at(d, read).await {
                Ok(r) => r,
                Err(_) => return Err(PeekEnd::Timeout),
            },
            None => read.await,
        };
        match n {
            Ok(0) | Err(_) => return Err(PeekEnd::RemoteClose),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
