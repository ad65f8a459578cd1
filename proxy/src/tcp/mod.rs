//! `envoy.filters.network.tcp_proxy`: connect to a cluster and copy bytes both ways.

pub mod access_log;
pub mod copy;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::tcp_proxy::{TcpProxyConfig, TcpRoute};
use crate::conn::Downstream;
use crate::stats::{Counter, Gauge, Store};
use crate::tls::PeerMetadataSlot;
use crate::upstream::cluster::{Close, ClusterStats, OriginalSrc};
use crate::upstream::connect::connect_host_with;
use crate::upstream::host::Host;
use crate::upstream::{
    Cluster, ClusterManager, ConnectError, ConnectOptions, LbContext, Upstream, UpstreamIo, lb,
};
use copy::{CopyError, From, copy_bidirectional};

/// Envoy's tcp_proxy stats (`tcp.<stat_prefix>.*`).
#[derive(Debug, Clone)]
pub struct TcpProxyStats {
    pub downstream_cx_total: Counter,
    pub downstream_cx_no_route: Counter,
    pub downstream_cx_rx_bytes_total: Counter,
    pub downstream_cx_tx_bytes_total: Counter,
    pub downstream_cx_rx_bytes_buffered: Gauge,
    pub downstream_cx_tx_bytes_buffered: Gauge,
    pub downstream_flow_control_paused_reading_total: Counter,
    pub downstream_flow_control_resumed_reading_total: Counter,
    pub idle_timeout: Counter,
    pub max_downstream_connection_duration: Counter,
    pub upstream_flush_total: Counter,
    pub upstream_flush_active: Gauge,
}

// === impl TcpProxyStats ===

impl TcpProxyStats {
    pub fn new(store: &Store, stat_prefix: &str) -> Self {
        let s = store.scope(format!("tcp.{stat_prefix}."));
        // Envoy's counters for events this proxy does not have (overload manager, early
        // data, on-demand routes, drain-close of TCP), declared so the set matches.
        for name in [
            "downstream_cx_drain_close",
            "downstream_cx_overload_close",
            "early_data_received_count_total",
            "route_delayed_total",
        ] {
            s.counter(name);
        }
        Self {
            downstream_cx_total: s.counter("downstream_cx_total"),
            downstream_cx_no_route: s.counter("downstream_cx_no_route"),
            downstream_cx_rx_bytes_total: s.counter("downstream_cx_rx_bytes_total"),
            downstream_cx_tx_bytes_total: s.counter("downstream_cx_tx_bytes_total"),
            downstream_cx_rx_bytes_buffered: s.gauge("downstream_cx_rx_bytes_buffered"),
            downstream_cx_tx_bytes_buffered: s.gauge("downstream_cx_tx_bytes_buffered"),
            downstream_flow_control_paused_reading_total: s
                .counter("downstream_flow_control_paused_reading_total"),
            downstream_flow_control_resumed_reading_total: s
                .counter("downstream_flow_control_resumed_reading_total"),
            idle_timeout: s.counter("idle_timeout"),
            max_downstream_connection_duration: s.counter("max_downstream_connection_duration"),
            upstream_flush_total: s.counter("upstream_flush_total"),
            upstream_flush_active: s.gauge("upstream_flush_active"),
        }
    }
}

/// A tcp_proxy filter instance (one per filter chain).
#[derive(Debug)]
pub struct TcpProxy {
    pub config: TcpProxyConfig,
    pub stats: TcpProxyStats,
    access_logs: Vec<crate::http::access_log::AccessLog>,
}

/// How a proxied connection ended, for access logs and tests.
#[derive(Debug)]
pub enum Outcome {
    /// Both sides closed; bytes moved downstream->upstream and back.
    Done { sent: u64, received: u64 },
    /// No cluster of that name (`NR`).
    NoRoute,
    /// Connecting failed (`UF`, `UO`, `UH`).
    ConnectFailed(ConnectError),
    /// The idle timeout closed it.
    Idle,
    /// A side reset or failed.
    Error(CopyError),
    /// The max connection duration closed it.
    MaxDuration,
}

// === impl TcpProxy ===

impl TcpProxy {
    /// Builds the filter without its access logs (see [`with_access_logs`](Self::with_access_logs)).
    pub fn new(config: TcpProxyConfig, store: &Store) -> Self {
        let stats = TcpProxyStats::new(store, &config.stat_prefix);
        Self {
            config,
            stats,
            access_logs: Vec::new(),
        }
    }

    /// Builds the filter with its access logs, opening their files.
    pub fn with_access_logs(
        config: TcpProxyConfig,
        store: &Store,
        mgr: &crate::http::access_log::AccessLogManager,
    ) -> Result<Self, crate::config::ConfigError> {
        let logs = access_log::build(&config, mgr)?;
        let mut proxy = Self::new(config, store);
        proxy.access_logs = logs;
        Ok(proxy)
    }

    /// The cluster this connection goes to.
    fn cluster_name(&self) -> &Arc<str> {
        match &self.config.route {
            TcpRoute::Cluster(c) => c,
            TcpRoute::Weighted { clusters, total } => {
                let mut r = lb::random() % total;
                for (name, w) in clusters {
                    if r < u64::from(*w) {
                        return name;
                    }
                    r -= u64::from(*w);
                }
                &clusters[clusters.len() - 1].0
            }
        }
    }

    /// Proxies one downstream connection to completion.
    pub async fn run<D>(
        &self,
        downstream: D,
        conn: &Downstream,
        clusters: &ClusterManager,
    ) -> Outcome
    where
        D: AsyncRead + AsyncWrite + Unpin,
    {
        self.run_reporting(downstream, conn, clusters, &mut Report::default())
            .await
    }

    /// [`run`](Self::run), telling `report` what telemetry needs about the connection.
    pub async fn run_reporting<D>(
        &self,
        downstream: D,
        conn: &Downstream,
        clusters: &ClusterManager,
        report: &mut Report,
    ) -> Outcome
    where
        D: AsyncRead + AsyncWrite + Unpin,
    {
        self.stats.downstream_cx_total.inc();
        report.started = Some(access_log::Started::now());
        let name = self.cluster_name();
        let Some(cluster) = clusters.get(name) else {
            tracing::debug!(cluster = &**name, "tcp_proxy: no such cluster");
            self.stats.downstream_cx_no_route.inc();
            return Outcome::NoRoute;
        };
        report.cluster = Some(name.clone());
        if let Err(e) = admit(&cluster) {
            return Outcome::ConnectFailed(e);
        }
        let ctx = LbContext {
            original_dst: Some(conn.local),
            original_src: conn.original_src_mark.map(|mark| OriginalSrc {
                ip: conn.peer.ip(),
                mark,
            }),
        };
        let mut attempt = 0;
        let upstream = loop {
            attempt += 1;
            report.attempts = attempt;
            match connect_pending(&cluster, &ctx, report).await {
                Ok(up) => break up,
                Err(e) if matches!(e, ConnectError::Overflow | ConnectError::NoHealthyUpstream) => {
                    tracing::debug!(cluster = cluster.name(), "tcp_proxy: {e}");
                    return Outcome::ConnectFailed(e);
                }
                Err(e) if attempt >= self.config.max_connect_attempts => {
                    tracing::debug!(cluster = cluster.name(), "tcp_proxy: {e}");
                    cluster.stats.upstream_cx_connect_attempts_exceeded.inc();
                    report.attempts_exhausted = true;
                    return Outcome::ConnectFailed(e);
                }
                Err(e) => tracing::debug!(
                    cluster = cluster.name(),
                    "tcp_proxy: attempt {attempt}: {e}"
                ),
            }
        };
        let (mut up_io, host, handle) = upstream.into_parts();
        report.connected = true;
        report.upstream_local = up_io.local_addr();
        if let UpstreamIo::Tls(tls) = &up_io {
            report.upstream_principal = tls
                .info()
                .peer_certificate
                .as_ref()
                .and_then(|c| c.uri_sans.first().cloned());
            report.upstream_local_principal = tls.info().local_uri_sans.first().cloned();
            report.upstream_peer = Some(tls.peer_metadata());
        }
        let cstats = &handle.cluster().stats;
        // Envoy's TCP pool counts the proxied connection as the upstream "request".
        cstats.upstream_rq_total.inc();
        cstats.upstream_rq_active.inc();
        host.stats.rq_total.fetch_add(1, Ordering::Relaxed);
        host.stats.rq_active.fetch_add(1, Ordering::Relaxed);
        let report: &Report = report;
        let copy = self.proxy(downstream, &mut up_io, cstats, &report.bytes);
        let outcome = match &report.periodic {
            Some(periodic) => {
                tokio::pin!(copy);
                let first = tokio::time::Instant::now() + periodic.every;
                let mut tick = tokio::time::interval_at(first, periodic.every);
                loop {
                    tokio::select! {
                        outcome = &mut copy => break outcome,
                        _ = tick.tick() => (periodic.report)(report),
                    }
                }
            }
            None => copy.await,
        };
        host.stats.rq_active.fetch_sub(1, Ordering::Relaxed);
        cstats.upstream_rq_active.dec();
        outcome
    }

    /// Copies both ways until either side is done, accounting for how it ended.
    async fn proxy<D>(
        &self,
        mut downstream: D,
        up_io: &mut UpstreamIo,
        cstats: &ClusterStats,
        bytes: &Bytes,
    ) -> Outcome
    where
        D: AsyncRead + AsyncWrite + Unpin,
    {
        let observer = |from: From, n: usize| {
            let n = n as u64;
            match from {
                From::A => {
                    bytes.received.fetch_add(n, Ordering::Relaxed);
                    self.stats.downstream_cx_rx_bytes_total.add(n);
                    cstats.upstream_cx_tx_bytes_total.add(n);
                }
                From::B => {
                    bytes.sent.fetch_add(n, Ordering::Relaxed);
                    self.stats.downstream_cx_tx_bytes_total.add(n);
                    cstats.upstream_cx_rx_bytes_total.add(n);
                }
            }
        };
        let copy = copy_bidirectional(&mut downstream, up_io, self.config.idle_timeout, &observer);
        let result = match self.config.max_downstream_connection_duration {
            Some(max) => match tokio::time::timeout(max, copy).await {
                Ok(r) => r,
                Err(_) => {
                    self.stats.max_downstream_connection_duration.inc();
                    cstats.closed_with_active_rq(Close::Local);
                    return Outcome::MaxDuration;
                }
            },
            None => copy.await,
        };
        match result {
            Ok(t) => {
                cstats.closed_with_active_rq(Close::Remote);
                Outcome::Done {
                    sent: t.a_to_b,
                    received: t.b_to_a,
                }
            }
            Err(CopyError::Idle) => {
                self.stats.idle_timeout.inc();
                cstats.closed_with_active_rq(Close::Local);
                Outcome::Idle
            }
            Err(e) => {
                match e {
                    CopyError::B(_) => cstats.closed_with_active_rq(Close::Remote),
                    _ => cstats.closed_with_active_rq(Close::Local),
                }
                Outcome::Error(e)
            }
        }
    }
}

/// What telemetry learns about one proxied connection.
#[derive(Debug, Default)]
pub struct Report {
    pub started: Option<access_log::Started>,
    /// Connection attempts made.
    pub attempts: u32,
    /// Connecting failed as many times as `max_connect_attempts` allows (`URX`).
    pub attempts_exhausted: bool,
    /// An upstream connection was established.
    pub connected: bool,
    /// Our end of the upstream connection.
    pub upstream_local: Option<std::net::SocketAddr>,
    /// The cluster chosen.
    pub cluster: Option<Arc<str>>,
    /// The upstream host tried last (connected when `connected`).
    pub host: Option<Arc<Host>>,
    /// The upstream's verified certificate URI SAN (mTLS).
    pub upstream_principal: Option<String>,
    /// The URI SAN of the certificate we presented upstream.
    pub upstream_local_principal: Option<String>,
    /// The upstream's metadata, when Istio's exchange ran.
    pub upstream_peer: Option<PeerMetadataSlot>,
    pub bytes: Bytes,
    /// What telemetry has reported so far (for periodic reports' deltas).
    pub reported: Reported,
    /// Called every so often while the connection proxies (Istio's TCP metrics).
    pub periodic: Option<Periodic>,
}

/// What periodic telemetry has already counted of a connection.
#[derive(Debug, Default)]
pub struct Reported {
    pub opened: AtomicBool,
    pub received: AtomicU64,
    pub sent: AtomicU64,
}

// === impl Reported ===

impl Reported {
    /// Whether the open is still to be reported (true once), and the bytes received and
    /// sent since the last call.
    pub fn take(&self, connected: bool, bytes: &Bytes) -> (bool, u64, u64) {
        let opened = connected && !self.opened.swap(true, Ordering::AcqRel);
        let received = bytes.received.load(Ordering::Relaxed);
        let sent = bytes.sent.load(Ordering::Relaxed);
        let prev_received = self.received.swap(received, Ordering::AcqRel);
        let prev_sent = self.sent.swap(sent, Ordering::AcqRel);
        (
            opened,
            received.saturating_sub(prev_received),
            sent.saturating_sub(prev_sent),
        )
    }
}

/// A report made every `every` while a connection proxies.
#[derive(Clone)]
pub struct Periodic {
    pub every: Duration,
    pub report: Arc<dyn Fn(&Report) + Send + Sync>,
}

impl std::fmt::Debug for Periodic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Periodic")
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

/// Bytes moved, counted as they move.
#[derive(Debug, Default)]
pub struct Bytes {
    /// From the client.
    pub received: AtomicU64,
    /// To the client.
    pub sent: AtomicU64,
}

/// Envoy's TCP pool admission: each proxied connection is one pending upstream request
/// while it connects, so `max_pending_requests` (default 1024) caps how many connect at
/// once; over it, the connection fails at once as an overflow (`UO`). Once connected it
/// is an active request, but Envoy's TCP pool does not hold it to `max_requests`.
fn admit(cluster: &Cluster) -> Result<(), ConnectError> {
    let stats = &cluster.stats;
    if stats.upstream_rq_pending_active.value() >= cluster.config.thresholds.max_pending_requests {
        stats.rq_pending_open.set(1);
        stats.upstream_rq_pending_overflow.inc();
        return Err(ConnectError::Overflow);
    }
    Ok(())
}

/// One connection attempt, counted as Envoy's TCP pool counts a pending request: failures
/// other than overflow and "no host" eject it.
async fn connect_pending(
    cluster: &Arc<Cluster>,
    ctx: &LbContext,
    report: &mut Report,
) -> Result<Upstream, ConnectError> {
    let stats = &cluster.stats;
    let host = cluster.choose(ctx).ok_or(ConnectError::NoHealthyUpstream)?;
    // The host tried is logged even when connecting fails (`%UPSTREAM_HOST%`).
    report.host = Some(host.clone());
    stats.upstream_rq_pending_total.inc();
    stats.upstream_rq_pending_active.inc();
    let options = ConnectOptions {
        original_src: ctx.original_src,
        ..ConnectOptions::default()
    };
    let result = connect_host_with(cluster, host, &options).await;
    stats.upstream_rq_pending_active.dec();
    if let Err(ConnectError::Failed(_) | ConnectError::Timeout | ConnectError::Bind { .. }) =
        &result
    {
        stats.upstream_rq_pending_failure_eject.inc();
    }
    result
}
