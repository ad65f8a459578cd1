//! The HTTP connection manager: serves one downstream connection with hyper (HTTP/1.1,
//! HTTP/2 by ALPN or prior knowledge), runs each stream through the filter chain and the
//! router, and drains gracefully on request (HTTP/1 `connection: close`, HTTP/2 GOAWAY).

pub mod config;
mod io;
mod stream;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;

use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager as HcmProto;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use config::{Codec, HcmConfig, RouteSource};
pub use stream::StreamEnd;

use super::access_log::AccessLogManager;
use super::filter::RbacFactory;
use super::peer_metadata::PeerMetadataFilter;
use super::pool::Pools;
use super::rds::RdsStore;
use super::router::Router;
use super::stats::HcmStats;
use super::stream_info::HeaderKey;
use crate::config::ConfigError;
use crate::conn::Downstream;
use crate::io::DownstreamIo;
use crate::stats::Store;
use crate::upstream::ClusterManager;

/// What every HTTP connection manager of the process shares. The server builds one.
#[derive(Debug, Clone)]
pub struct HttpContext {
    pub clusters: Arc<ClusterManager>,
    pub store: Store,
    pub rds: Arc<RdsStore>,
    pub pools: Arc<Pools>,
    pub access_logs: Arc<AccessLogManager>,
    /// The RBAC engine; without it an HCM with `envoy.filters.http.rbac` fails to build.
    pub rbac: Option<Arc<dyn RbacFactory>>,
    /// Envoy's "local address" (put in `x-forwarded-for` for loopback peers).
    pub local_address: IpAddr,
    /// The listener's `per_connection_buffer_limit_bytes`: how much of a request body is
    /// kept for retries.
    pub buffer_limit: usize,
}

// === impl HttpContext ===

impl HttpContext {
    /// A context with fresh pools, RDS store and access log manager.
    pub fn new(clusters: Arc<ClusterManager>, store: Store) -> Self {
        Self {
            pools: Pools::new(clusters.clone(), store.clone()),
            rds: RdsStore::new(Some(clusters.clone())),
            clusters,
            store,
            access_logs: Arc::new(AccessLogManager::default()),
            rbac: None,
            local_address: super::headers::local_address(),
            buffer_limit: 1024 * 1024,
        }
    }
}

/// `envoy.filters.network.http_connection_manager`, built once per filter chain.
#[derive(Debug, Clone)]
pub struct HttpConnectionManager {
    inner: Arc<Hcm>,
}

#[derive(Debug)]
struct Hcm {
    config: HcmConfig,
    stats: HcmStats,
    router: Router,
    /// Request and response headers the access logs read.
    request_keys: Vec<HeaderKey>,
    /// Whether `istio.stats` is among the filters: requests are reported in Istio's metrics.
    istio_stats: bool,
    /// Istio's `istio.metadata_exchange`, if among the filters.
    peer_metadata: Option<Arc<PeerMetadataFilter>>,
    response_keys: Vec<HeaderKey>,
}

/// One downstream connection's shared state.
#[derive(Debug)]
struct Conn {
    hcm: Arc<Hcm>,
    downstream: Downstream,
    draining: AtomicBool,
    /// The listener drains this connection's filter chain; HTTP/1 connections stop at
    /// their next response, as Envoy's drain decision is made when a response goes out.
    listener_draining: AtomicBool,
    /// 0 until the first request, then 1 (HTTP/1) or 2 (HTTP/2).
    protocol: AtomicU8,
    active: AtomicUsize,
    /// Milliseconds since `opened` when the last stream ended.
    idle_since: AtomicU64,
    opened: Instant,
    /// HTTP/1's header clock: whether it runs on this connection, and milliseconds since
    /// `opened` plus one when the first byte of a request arrived with no stream open (0:
    /// no request is arriving). Envoy's stream exists from that byte, so its request
    /// header, stream idle and request timers run from there.
    header_clock: AtomicBool,
    header_started: AtomicU64,
    /// Wakes the serve loop when `header_started` is set.
    header_notify: Notify,
    /// A header timeout's raw HTTP/1 reply, for the reader to write in hyper's place.
    header_reply: Mutex<Option<Bytes>>,
}

/// Which of Envoy's stream timers fired while a request's headers were still arriving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderTimeout {
    /// `request_headers_timeout`: 408 `request header timeout`.
    Headers,
    /// `stream_idle_timeout`: 408 `stream timeout`, `SI`.
    StreamIdle,
    /// `request_timeout`: 408 `request timeout`.
    Request,
}

// === impl HttpConnectionManager ===

impl HttpConnectionManager {
    /// Builds an HCM from its proto. Errors are the listener's NACK text.
    pub fn new(proto: &HcmProto, ctx: &HttpContext) -> Result<Self, ConfigError> {
        let config = HcmConfig::new(proto, ctx)?;
        let stats = HcmStats::new(&ctx.store, &config.stat_prefix);
        let suppress = config.filters.iter().any(|f| {
            matches!(
                f,
                super::filter::HttpFilter::Router {
                    suppress_envoy_headers: true
                }
            )
        });
        let (mut request_keys, mut response_keys) = (Vec::new(), Vec::new());
        for log in &config.access_logs {
            log.keys(&mut request_keys, &mut response_keys);
        }
        let istio_stats = config
            .filters
            .iter()
            .any(|f| matches!(f, super::filter::HttpFilter::IstioStats));
        let peer_metadata = config.filters.iter().find_map(|f| match f {
            super::filter::HttpFilter::PeerMetadata(m) => Some(m.clone()),
            _ => None,
        });
        if istio_stats {
            // Istio's labels read the request's host and content type.
            for key in [
                HeaderKey::Authority,
                HeaderKey::Header(http::header::CONTENT_TYPE),
            ] {
                if !request_keys.contains(&key) {
                    request_keys.push(key);
                }
            }
        }
        Ok(Self {
            inner: Arc::new(Hcm {
                router: Router {
                    pools: ctx.pools.clone(),
                    suppress_envoy_headers: suppress,
                    retry_buffer_limit: ctx.buffer_limit,
                },
                config,
                stats,
                request_keys,
                response_keys,
                istio_stats,
                peer_metadata,
            }),
        })
    }

    pub fn config(&self) -> &HcmConfig {
        &self.inner.config
    }

    /// Serves a downstream connection until it closes. Cancelling `drain` drains it:
    /// HTTP/2 gets a GOAWAY (and after `drain_timeout` what is left is closed), HTTP/1's next
    /// response says `connection: close`; the listener closes what is left when its drain
    /// time ends.
    pub async fn serve(&self, io: DownstreamIo, downstream: Downstream, drain: CancellationToken) {
        let hcm = self.inner.clone();
        let stats = &hcm.stats;
        stats.downstream_cx_total.inc();
        stats.downstream_cx_active.inc();
        let tls = downstream.tls.clone();
        if tls.is_some() {
            stats.downstream_cx_ssl_total.inc();
            stats.downstream_cx_ssl_active.inc();
        }
        let h2_alpn = tls.as_ref().and_then(|t| t.alpn.as_deref()) == Some(b"h2");
        let conn = Arc::new(Conn {
            hcm: hcm.clone(),
            downstream,
            draining: AtomicBool::new(false),
            listener_draining: AtomicBool::new(false),
            protocol: AtomicU8::new(0),
            active: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            opened: Instant::now(),
            header_clock: AtomicBool::new(cfg_h1_clock(&hcm.config, h2_alpn)),
            header_started: AtomicU64::new(0),
            header_notify: Notify::new(),
            header_reply: Mutex::new(None),
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        let cfg = &hcm.config;
        builder
            .http1()
            .timer(TokioTimer::new())
            .max_buf_size((cfg.max_request_headers_bytes + 4096).max(8192))
            // Headroom for our own count check, which answers like Envoy (hyper's 431 has no body).
            .max_headers(cfg.max_headers_count * 2 + 16)
            // Hyper's own timer would also run on idle keep-alive connections and close
            // without a response; the connection's header clock replaces it.
            .header_read_timeout(None);
        builder
            .http2()
            .timer(TokioTimer::new())
            // Headroom for our own size check, which resets the stream like Envoy.
            .max_header_list_size(
                u32::try_from(cfg.max_request_headers_bytes * 2 + 16 * 1024).unwrap_or(u32::MAX),
            )
            .max_concurrent_streams(cfg.h2_max_concurrent_streams.or(Some(1024)))
            .initial_stream_window_size(cfg.h2_initial_stream_window)
            .initial_connection_window_size(cfg.h2_initial_connection_window);
        let builder = match cfg.codec {
            Codec::Http1 => builder.http1_only(),
            Codec::Http2 => builder.http2_only(),
            Codec::Auto if h2_alpn => builder.http2_only(),
            Codec::Auto => builder,
        };
        let service = {
            let conn = conn.clone();
            hyper::service::service_fn(move |req| {
                let conn = conn.clone();
                async move { conn.handle(req).await }
            })
        };
        let io = io::Counted::new(
            io,
            stats.downstream_cx_rx_bytes_total.clone(),
            stats.downstream_cx_tx_bytes_total.clone(),
            conn.header_clock
                .load(Ordering::Acquire)
                .then(|| conn.clone()),
        );
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(connection);
        let mut drained_at: Option<Instant> = None;
        let mut listener_drain = false;
        let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
        let max_duration = cfg.max_connection_duration.map(|d| conn.opened + d);
        loop {
            let idle_check = conn.idle_deadline(cfg.idle_timeout);
            let drain_deadline = drained_at.map(|t| t + cfg.drain_timeout);
            let header_deadline = conn.header_deadline();
            tokio::select! {
                r = connection.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "downstream connection error");
                        if e.downcast_ref::<hyper::Error>().is_some_and(|h| h.is_parse()) {
                            stats.downstream_cx_protocol_error.inc();
                        }
                    }
                    break;
                }
                _ = conn.header_notify.notified() => {}
                _ = tokio::time::sleep_until(header_deadline.map_or(far, |(at, _, _)| at)), if header_deadline.is_some() => {
                    if let Some((_, started, which)) = header_deadline {
                        conn.header_timed_out(started, which);
                    }
                }
                _ = drain.cancelled(), if drained_at.is_none() && !listener_drain => {
                    listener_drain = true;
                    conn.listener_draining.store(true, Ordering::Release);
                    // HTTP/2 gets its GOAWAY now: the client retries unprocessed streams
                    // safely. HTTP/1 is left alone until its next response says
                    // `connection: close` (or the drain time ends), as in Envoy: closing an
                    // idle keep-alive connection now would race a request on its way.
                    if conn.protocol.load(Ordering::Acquire) == 2 {
                        drained_at = Some(Instant::now());
                        conn.start_drain();
                        connection.as_mut().graceful_shutdown();
                    }
                }
                _ = tokio::time::sleep_until(idle_check.unwrap_or(far)), if idle_check.is_some() && drained_at.is_none() => {
                    if conn.is_idle(cfg.idle_timeout) {
                        stats.downstream_cx_idle_timeout.inc();
                        drained_at = Some(Instant::now());
                        conn.draining.store(true, Ordering::Release);
                        connection.as_mut().graceful_shutdown();
                    }
                }
                _ = tokio::time::sleep_until(max_duration.unwrap_or(far)), if max_duration.is_some() && drained_at.is_none() => {
                    drained_at = Some(Instant::now());
                    conn.start_drain();
                    connection.as_mut().graceful_shutdown();
                }
                _ = tokio::time::sleep_until(drain_deadline.unwrap_or(far)), if drain_deadline.is_some() => {
                    stats.downstream_cx_destroy_local.inc();
                    break;
                }
            }
        }
        stats.downstream_cx_destroy.inc();
        stats.downstream_cx_active.dec();
        if tls.is_some() {
            stats.downstream_cx_ssl_active.dec();
        }
        match conn.protocol.load(Ordering::Acquire) {
            1 => stats.downstream_cx_http1_active.dec(),
            2 => stats.downstream_cx_http2_active.dec(),
            _ => {}
        }
        stats
            .downstream_cx_length_ms
            .record(conn.opened.elapsed().as_millis() as u64);
    }
}

/// Whether a connection's requests may be HTTP/1 (and so get the header clock).
fn cfg_h1_clock(cfg: &HcmConfig, h2_alpn: bool) -> bool {
    match cfg.codec {
        Codec::Http2 => false,
        Codec::Auto => !h2_alpn,
        Codec::Http1 => true,
    }
}

// === impl Conn ===

impl Conn {
    fn start_drain(&self) {
        if !self.draining.swap(true, Ordering::AcqRel) {
            self.hcm.stats.downstream_cx_drain_close.inc();
        }
    }

    fn is_draining(&self) -> bool {
        if self.listener_draining.load(Ordering::Acquire) {
            self.start_drain();
        }
        self.draining.load(Ordering::Acquire)
    }

    /// When the idle timeout would fire if nothing happens.
    fn idle_deadline(&self, idle: Option<Duration>) -> Option<Instant> {
        let idle = idle?;
        let since = Duration::from_millis(self.idle_since.load(Ordering::Acquire));
        Some(self.opened + since + idle)
    }

    fn is_idle(&self, idle: Option<Duration>) -> bool {
        self.active.load(Ordering::Acquire) == 0
            && self.header_started.load(Ordering::Acquire) == 0
            && self
                .idle_deadline(idle)
                .is_some_and(|d| d <= Instant::now())
    }

    /// The reader saw request bytes: with no stream open they start a request, and its
    /// timers.
    fn request_bytes_arrived(&self) {
        if self.header_clock.load(Ordering::Acquire)
            && self.active.load(Ordering::Acquire) == 0
            && self.header_started.load(Ordering::Acquire) == 0
        {
            let now = self.opened.elapsed().as_millis() as u64 + 1;
            self.header_started.store(now, Ordering::Release);
            self.header_notify.notify_one();
        }
    }

    /// The request's headers are complete: its header clock stops.
    fn headers_complete(&self) {
        self.header_started.store(0, Ordering::Release);
    }

    /// An HTTP/2 connection: streams begin with whole HEADERS frames.
    fn stop_header_clock(&self) {
        self.header_clock.store(false, Ordering::Release);
        self.header_started.store(0, Ordering::Release);
    }

    /// When the first of the request's timers fires, the clock value it belongs to, and
    /// which timer it is.
    fn header_deadline(&self) -> Option<(Instant, u64, HeaderTimeout)> {
        let started = self.header_started.load(Ordering::Acquire);
        if started == 0 {
            return None;
        }
        let cfg = &self.hcm.config;
        let at = self.opened + Duration::from_millis(started - 1);
        [
            (cfg.request_headers_timeout, HeaderTimeout::Headers),
            (cfg.stream_idle_timeout, HeaderTimeout::StreamIdle),
            (cfg.request_timeout, HeaderTimeout::Request),
        ]
        .into_iter()
        .filter_map(|(d, which)| Some((at + d?, started, which)))
        .min_by_key(|(at, _, _)| *at)
    }

    /// A timer fired before the request's headers were complete: the reader writes the
    /// 408 in hyper's place and closes the connection, as Envoy does.
    fn header_timed_out(self: &Arc<Self>, started: u64, which: HeaderTimeout) {
        if self.header_started.load(Ordering::Acquire) != started
            || self.active.load(Ordering::Acquire) != 0
        {
            return;
        }
        self.stop_header_clock();
        let reply = self.header_timeout_reply(which);
        *self
            .header_reply
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(reply);
    }

    fn take_header_reply(&self) -> Option<Bytes> {
        self.header_reply
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn stream_ended(&self) {
        self.idle_since
            .store(self.opened.elapsed().as_millis() as u64, Ordering::Release);
        self.active.fetch_sub(1, Ordering::AcqRel);
    }
}
