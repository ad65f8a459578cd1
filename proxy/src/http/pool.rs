//! Upstream HTTP connection pools. A pool serves one (cluster, endpoint, transport socket,
//! ALPN override, protocol): HTTP/1.1 connections are kept alive and reused one request at a
//! time (a lock-free idle queue), HTTP/2 connections are shared by concurrent streams.
//! Circuit breakers (max_requests, max_pending_requests, max_retries) and Envoy's
//! `upstream_rq_*` stats are per cluster.
//!
//! Lookups on the data path are an atomic load and a hash lookup; creating a pool (the first
//! request to a new endpoint) takes a lock.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use crossbeam_queue::SegQueue;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::Notify;

use super::body::RequestBody;
use super::local_reply::ResetReason;
use super::retry::ResetKind;
use super::stats::ClusterHttpStats;
use crate::config::cluster::Thresholds;
use crate::stats::Store;
use crate::upstream::connect::{ConnectOptions, connect_host_with};
use crate::upstream::host::{Host, HostAddr};
use crate::upstream::{Cluster, ClusterManager, ConnectError, UpstreamIo};

/// The HTTP protocol of upstream connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamProtocol {
    Http1,
    Http2,
}

/// ALPN protocols to offer on an upstream TLS connection (Istio's `istio.alpn` filter sets
/// them per request). Compared by content.
#[derive(Debug, Clone)]
pub struct Alpn {
    id: u64,
    protocols: Arc<[Vec<u8>]>,
}

// === impl Alpn ===

impl Alpn {
    pub fn new(protocols: Vec<Vec<u8>>) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        protocols.hash(&mut h);
        Self {
            id: h.finish(),
            protocols: protocols.into(),
        }
    }

    pub fn protocols(&self) -> &[Vec<u8>] {
        &self.protocols
    }
}

impl PartialEq for Alpn {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.protocols == other.protocols
    }
}
impl Eq for Alpn {}
impl Hash for Alpn {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    /// The cluster instance (pools hold it, so the address is not reused while keyed).
    cluster: usize,
    addr: HostAddr,
    /// Which transport socket the endpoint gets (plaintext, or a TLS match).
    transport: u64,
    protocol: UpstreamProtocol,
    alpn: Option<Alpn>,
}

/// A cluster's HTTP state: router stats and circuit breaker counts.
#[derive(Debug)]
pub struct ClusterHttp {
    pub cluster: Arc<Cluster>,
    pub stats: ClusterHttpStats,
    requests: AtomicU64,
    pending: AtomicU64,
    retries: AtomicU64,
}

/// An active request counted against `max_requests`.
#[derive(Debug)]
pub struct RequestSlot(Arc<ClusterHttp>);

/// An active retry counted against `max_retries`.
#[derive(Debug)]
pub struct RetrySlot(Arc<ClusterHttp>);

/// A request waiting for a connection, counted against `max_pending_requests`.
#[derive(Debug)]
struct PendingSlot(Arc<ClusterHttp>);

// === impl ClusterHttp ===

impl ClusterHttp {
    fn thresholds(&self) -> Thresholds {
        self.cluster.config.thresholds
    }

    /// Starts an upstream request, or `None` when `max_requests` is reached (counted as
    /// `upstream_rq_pending_overflow`, as Envoy does).
    pub fn try_request(self: &Arc<Self>) -> Option<RequestSlot> {
        let max = self.thresholds().max_requests;
        if self.requests.fetch_add(1, Ordering::AcqRel) >= max {
            self.requests.fetch_sub(1, Ordering::AcqRel);
            self.stats.upstream_rq_pending_overflow.inc();
            self.cluster.stats.rq_open.set(1);
            return None;
        }
        self.stats.upstream_rq_total.inc();
        self.stats.upstream_rq_active.inc();
        Some(RequestSlot(self.clone()))
    }

    /// Starts a retry, or `None` when `max_retries` is reached (`upstream_rq_retry_overflow`).
    pub fn try_retry(self: &Arc<Self>) -> Option<RetrySlot> {
        let max = self.thresholds().max_retries;
        if self.retries.fetch_add(1, Ordering::AcqRel) >= max {
            self.retries.fetch_sub(1, Ordering::AcqRel);
            self.stats.upstream_rq_retry_overflow.inc();
            self.cluster.stats.rq_retry_open.set(1);
            return None;
        }
        Some(RetrySlot(self.clone()))
    }

    fn try_pending(self: &Arc<Self>) -> Option<PendingSlot> {
        let max = self.thresholds().max_pending_requests;
        if self.pending.fetch_add(1, Ordering::AcqRel) >= max {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.stats.upstream_rq_pending_overflow.inc();
            self.cluster.stats.rq_pending_open.set(1);
            return None;
        }
        self.stats.upstream_rq_pending_total.inc();
        self.stats.upstream_rq_pending_active.inc();
        Some(PendingSlot(self.clone()))
    }
}

impl Drop for RequestSlot {
    fn drop(&mut self) {
        let prev = self.0.requests.fetch_sub(1, Ordering::AcqRel);
        self.0.stats.upstream_rq_active.dec();
        if prev <= self.0.thresholds().max_requests {
            self.0.cluster.stats.rq_open.set(0);
        }
    }
}

impl Drop for RetrySlot {
    fn drop(&mut self) {
        let prev = self.0.retries.fetch_sub(1, Ordering::AcqRel);
        if prev <= self.0.thresholds().max_retries {
            self.0.cluster.stats.rq_retry_open.set(0);
        }
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let prev = self.0.pending.fetch_sub(1, Ordering::AcqRel);
        self.0.stats.upstream_rq_pending_active.dec();
        if prev <= self.0.thresholds().max_pending_requests {
            self.0.cluster.stats.rq_pending_open.set(0);
        }
    }
}

/// Why an attempt got no response.
#[derive(Debug)]
pub struct SendError {
    pub reason: ResetReason,
    pub kind: ResetKind,
    /// No host could be picked or connected to for a reason other than a connection
    /// failure (`no healthy upstream`).
    pub no_healthy: bool,
}

/// A response and where it came from.
#[derive(Debug)]
pub struct Sent {
    pub response: Response<Incoming>,
    /// The HTTP/1 connection, to return to the pool when the response ends.
    pub pooled: Option<PooledH1>,
    pub local: Option<SocketAddr>,
    /// The mTLS identities of the connection, for Istio's principal labels.
    pub principals: Principals,
}

/// The URI SANs of an upstream TLS connection: the server's verified certificate and ours.
#[derive(Debug, Clone, Default)]
pub struct Principals {
    pub peer: Option<Arc<str>>,
    pub local: Option<Arc<str>>,
}

#[derive(Debug)]
struct IdleH1 {
    sender: http1::SendRequest<RequestBody>,
    requests: u32,
    local: Option<SocketAddr>,
    principals: Principals,
}

#[derive(Debug)]
struct H2Conn {
    sender: http2::SendRequest<RequestBody>,
    requests: AtomicU32,
    local: Option<SocketAddr>,
    principals: Principals,
}

/// A new upstream connection, before the HTTP handshake.
struct Opened {
    io: UpstreamIo,
    local: Option<SocketAddr>,
    principals: Principals,
    handle: crate::upstream::connect::UpstreamHandle,
}

/// A checked-out HTTP/1 connection.
#[derive(Debug)]
pub struct PooledH1 {
    pool: Arc<HostPool>,
    conn: IdleH1,
}

// === impl PooledH1 ===

impl PooledH1 {
    /// Returns the connection for reuse (its response is complete).
    pub fn release(self) {
        let max = self.pool.cluster.cluster.config.max_requests_per_connection;
        if max.is_some_and(|m| self.conn.requests >= m) {
            self.pool.cluster.stats.upstream_cx_max_requests.inc();
            return;
        }
        if self.conn.sender.is_closed() {
            return;
        }
        self.pool.idle.push(self.conn);
        self.pool.released.notify_one();
    }
}

/// The connections to one endpoint over one transport and protocol.
#[derive(Debug)]
pub struct HostPool {
    cluster: Arc<ClusterHttp>,
    host: Arc<Host>,
    protocol: UpstreamProtocol,
    alpn: Option<Alpn>,
    idle: SegQueue<IdleH1>,
    h2: ArcSwapOption<H2Conn>,
    /// Held only while an HTTP/2 connection is being established.
    connecting: tokio::sync::Mutex<()>,
    /// Signals a connection returned (for requests waiting on `max_connections`).
    released: Notify,
}

// === impl HostPool ===

impl HostPool {
    pub fn host(&self) -> &Arc<Host> {
        &self.host
    }

    pub fn protocol(&self) -> UpstreamProtocol {
        self.protocol
    }

    /// Sends a request on a pooled or new connection.
    pub async fn send(self: &Arc<Self>, req: Request<RequestBody>) -> Result<Sent, SendError> {
        match self.protocol {
            UpstreamProtocol::Http1 => self.send_h1(req).await,
            UpstreamProtocol::Http2 => self.send_h2(req).await,
        }
    }

    /// Sends on a dedicated new HTTP/1 connection that never returns to the pool (upgrades).
    pub async fn send_fresh_h1(
        self: &Arc<Self>,
        req: Request<RequestBody>,
    ) -> Result<Sent, SendError> {
        let mut conn = self.connect_h1().await?;
        conn.requests += 1;
        let response = conn
            .sender
            .send_request(req)
            .await
            .map_err(|e| reset(&e, false))?;
        Ok(Sent {
            response,
            pooled: None,
            local: conn.local,
            principals: conn.principals.clone(),
        })
    }

    async fn send_h1(self: &Arc<Self>, mut req: Request<RequestBody>) -> Result<Sent, SendError> {
        while let Some(mut conn) = self.idle.pop() {
            if conn.sender.is_closed() || conn.sender.ready().await.is_err() {
                continue;
            }
            conn.requests += 1;
            match conn.sender.try_send_request(req).await {
                Ok(response) => return Ok(self.sent_h1(response, conn)),
                Err(mut e) => match e.take_message() {
                    // Never written: the connection was closing; try another.
                    Some(r) => req = r,
                    None => return Err(reset(&e.into_error(), false)),
                },
            }
        }
        let mut conn = self.connect_h1().await?;
        conn.requests += 1;
        match conn.sender.send_request(req).await {
            Ok(response) => Ok(self.sent_h1(response, conn)),
            Err(e) => Err(reset(&e, false)),
        }
    }

    fn sent_h1(self: &Arc<Self>, response: Response<Incoming>, conn: IdleH1) -> Sent {
        let local = conn.local;
        let principals = conn.principals.clone();
        Sent {
            response,
            pooled: Some(PooledH1 {
                pool: self.clone(),
                conn,
            }),
            local,
            principals,
        }
    }

    /// Opens an HTTP/1 connection; waits for one to be released while `max_connections`
    /// is reached.
    async fn connect_h1(self: &Arc<Self>) -> Result<IdleH1, SendError> {
        let _pending = self.cluster.try_pending().ok_or_else(overflow)?;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            match self.open().await {
                Ok(Opened {
                    io,
                    local,
                    principals,
                    handle,
                }) => {
                    let (sender, conn) = http1::Builder::new()
                        .handshake(TokioIo::new(io))
                        .await
                        .map_err(|e| reset(&e, true))?;
                    tokio::spawn(async move {
                        let _ = conn.with_upgrades().await;
                        drop(handle);
                    });
                    self.cluster.stats.upstream_cx_http1_total.inc();
                    return Ok(IdleH1 {
                        sender,
                        requests: 0,
                        local,
                        principals,
                    });
                }
                Err(e) if matches!(e.reason, ResetReason::Overflow) => {
                    if let Some(conn) = self.idle.pop() {
                        // A connection came back while we tried: use it.
                        if !conn.sender.is_closed() {
                            return Ok(conn);
                        }
                        continue;
                    }
                    // Connections to other hosts of the cluster free slots too: look
                    // again after a short while even without a release here.
                    let _ = tokio::time::timeout(Duration::from_millis(50), released).await;
                    if let Some(conn) = self.idle.pop().filter(|c| !c.sender.is_closed()) {
                        return Ok(conn);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn send_h2(self: &Arc<Self>, req: Request<RequestBody>) -> Result<Sent, SendError> {
        let conn = self.h2_conn().await?;
        let mut sender = conn.sender.clone();
        let response = sender
            .send_request(req)
            .await
            .map_err(|e| reset(&e, false))?;
        Ok(Sent {
            response,
            pooled: None,
            local: conn.local,
            principals: conn.principals.clone(),
        })
    }

    /// The shared HTTP/2 connection, established on first use (or after it closed or hit
    /// `max_requests_per_connection`).
    async fn h2_conn(self: &Arc<Self>) -> Result<Arc<H2Conn>, SendError> {
        if let Some(c) = self.take_h2_stream() {
            return Ok(c);
        }
        let _pending = self.cluster.try_pending().ok_or_else(overflow)?;
        let _connecting = self.connecting.lock().await;
        if let Some(c) = self.take_h2_stream() {
            return Ok(c);
        }
        let Opened {
            io,
            local,
            principals,
            handle,
        } = self.open().await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| reset(&e, true))?;
        tokio::spawn(async move {
            let _ = conn.await;
            drop(handle);
        });
        self.cluster.stats.upstream_cx_http2_total.inc();
        let c = Arc::new(H2Conn {
            sender,
            requests: AtomicU32::new(1),
            local,
            principals,
        });
        self.h2.store(Some(c.clone()));
        Ok(c)
    }

    fn take_h2_stream(&self) -> Option<Arc<H2Conn>> {
        let c = self.h2.load_full()?;
        if c.sender.is_closed() {
            self.h2.compare_and_swap(&Some(c.clone()), None);
            return None;
        }
        let n = c.requests.fetch_add(1, Ordering::AcqRel) + 1;
        let max = self.cluster.cluster.config.max_requests_per_connection;
        match max {
            Some(m) if n > m => {
                self.h2.compare_and_swap(&Some(c), None);
                None
            }
            Some(m) if n == m => {
                // The last stream on this connection: the next request opens a new one.
                self.cluster.stats.upstream_cx_max_requests.inc();
                self.h2.compare_and_swap(&Some(c.clone()), None);
                Some(c)
            }
            _ => Some(c),
        }
    }

    async fn open(&self) -> Result<Opened, SendError> {
        let upstream =
            connect_upstream(&self.cluster.cluster, self.host.clone(), self.alpn.as_ref())
                .await
                .map_err(connect_error)?;
        let local = upstream.io.local_addr();
        let principals = match &upstream.io {
            UpstreamIo::Tls(tls) => {
                let info = tls.info();
                Principals {
                    peer: info
                        .peer_certificate
                        .as_ref()
                        .and_then(|c| c.uri_sans.first())
                        .map(|s| Arc::from(s.as_str())),
                    local: info.local_uri_sans.first().map(|s| Arc::from(s.as_str())),
                }
            }
            _ => Principals::default(),
        };
        let (io, _host, handle) = upstream.into_parts();
        Ok(Opened {
            io,
            local,
            principals,
            handle,
        })
    }
}

/// Opens a connection to a host. This is where TLS origination gets the per-request ALPN
/// override (Istio's `istio.alpn`): the pool key already separates connections by ALPN.
async fn connect_upstream(
    cluster: &Arc<Cluster>,
    host: Arc<Host>,
    alpn: Option<&Alpn>,
) -> Result<crate::upstream::Upstream, ConnectError> {
    let options = ConnectOptions {
        alpn: alpn.map(|a| a.protocols().to_vec()),
        // Not yet: HTTP pools are shared by all clients, so connecting from each client's
        // address (Envoy's original_src) would need a pool per source.
        original_src: None,
    };
    connect_host_with(cluster, host, &options).await
}

fn overflow() -> SendError {
    SendError {
        reason: ResetReason::Overflow,
        kind: ResetKind::Overflow,
        no_healthy: false,
    }
}

fn connect_error(e: ConnectError) -> SendError {
    let (reason, no_healthy) = match &e {
        ConnectError::Overflow => (ResetReason::Overflow, false),
        ConnectError::NoHealthyUpstream => (ResetReason::ConnectionFailure(None), true),
        ConnectError::Timeout => (ResetReason::ConnectionTimeout, false),
        ConnectError::Failed(io) | ConnectError::Bind { source: io, .. } => (
            ResetReason::ConnectionFailure(Some(transport_failure(io))),
            false,
        ),
        ConnectError::TlsUnavailable(e) => (
            ResetReason::ConnectionFailure(Some(format!("TLS_error:_{}", e).replace(' ', "_"))),
            false,
        ),
        ConnectError::Tls(e) => (
            ResetReason::ConnectionFailure(Some(format!("TLS_error:_{e}").replace(' ', "_"))),
            false,
        ),
    };
    let kind = match reason {
        ResetReason::Overflow => ResetKind::Overflow,
        _ => ResetKind::ConnectFailure,
    };
    SendError {
        reason,
        kind,
        no_healthy,
    }
}

/// Envoy's transport failure text for a failed connect, e.g.
/// `delayed_connect_error:_Connection_refused`.
pub(crate) fn transport_failure(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    format!("delayed connect error: {text}").replace(' ', "_")
}

/// Classifies a hyper error on an upstream stream.
fn reset(e: &hyper::Error, handshake: bool) -> SendError {
    let h2_reason = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<h2::Error>())
        .and_then(h2::Error::reason);
    let (reason, kind) = if handshake {
        (
            ResetReason::ConnectionFailure(Some(e.to_string().replace(' ', "_"))),
            ResetKind::ConnectFailure,
        )
    } else if h2_reason == Some(h2::Reason::REFUSED_STREAM) {
        (ResetReason::RemoteRefusedStream, ResetKind::RefusedStream)
    } else if h2_reason.is_some() {
        (ResetReason::RemoteReset, ResetKind::Reset)
    } else if e.is_canceled() {
        (ResetReason::ConnectionTermination, ResetKind::BeforeRequest)
    } else if e.is_parse() || e.is_user() {
        (ResetReason::ProtocolError, ResetKind::Reset)
    } else {
        (ResetReason::ConnectionTermination, ResetKind::Reset)
    };
    SendError {
        reason,
        kind,
        no_healthy: false,
    }
}

/// Every pool of the process, and each cluster's HTTP state.
#[derive(Debug)]
pub struct Pools {
    clusters_mgr: Arc<ClusterManager>,
    store: Store,
    hosts: ArcSwap<HashMap<PoolKey, Arc<HostPool>>>,
    clusters: ArcSwap<HashMap<usize, Arc<ClusterHttp>>>,
    write: Mutex<()>,
}

// === impl Pools ===

impl Pools {
    pub fn new(clusters: Arc<ClusterManager>, store: Store) -> Arc<Self> {
        Arc::new(Self {
            clusters_mgr: clusters,
            store,
            hosts: ArcSwap::from_pointee(HashMap::new()),
            clusters: ArcSwap::from_pointee(HashMap::new()),
            write: Mutex::new(()),
        })
    }

    pub fn cluster_manager(&self) -> &Arc<ClusterManager> {
        &self.clusters_mgr
    }

    /// The HTTP state of a cluster instance.
    pub fn cluster(&self, cluster: &Arc<Cluster>) -> Arc<ClusterHttp> {
        let id = Arc::as_ptr(cluster) as usize;
        if let Some(c) = self.clusters.load().get(&id) {
            return c.clone();
        }
        let _w = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.clusters.load_full();
        if let Some(c) = current.get(&id) {
            return c.clone();
        }
        let mut map: HashMap<usize, Arc<ClusterHttp>> = current
            .iter()
            .filter(|(_, c)| self.is_current(&c.cluster))
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        let created = Arc::new(ClusterHttp {
            cluster: cluster.clone(),
            stats: ClusterHttpStats::new(&self.store, &cluster.config.stat_name),
            requests: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        });
        map.insert(id, created.clone());
        self.clusters.store(Arc::new(map));
        created
    }

    /// The pool for a host of a cluster.
    pub fn host(
        &self,
        cluster: &Arc<ClusterHttp>,
        host: &Arc<Host>,
        protocol: UpstreamProtocol,
        alpn: Option<&Alpn>,
    ) -> Arc<HostPool> {
        let key = PoolKey {
            cluster: Arc::as_ptr(&cluster.cluster) as usize,
            addr: host.addr.clone(),
            transport: transport_id(host),
            protocol,
            alpn: alpn.cloned(),
        };
        if let Some(p) = self.hosts.load().get(&key) {
            return p.clone();
        }
        let _w = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.hosts.load_full();
        if let Some(p) = current.get(&key) {
            return p.clone();
        }
        let mut map: HashMap<PoolKey, Arc<HostPool>> = current
            .iter()
            .filter(|(_, p)| self.is_current(&p.cluster.cluster))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let pool = Arc::new(HostPool {
            cluster: cluster.clone(),
            host: host.clone(),
            protocol,
            alpn: alpn.cloned(),
            idle: SegQueue::new(),
            h2: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
            released: Notify::new(),
        });
        map.insert(key, pool.clone());
        self.hosts.store(Arc::new(map));
        pool
    }

    /// Whether a cluster instance is still the one the cluster manager serves.
    fn is_current(&self, cluster: &Arc<Cluster>) -> bool {
        self.clusters_mgr
            .get(cluster.name())
            .is_some_and(|c| Arc::ptr_eq(&c, cluster))
    }

    /// Number of pools (for tests and `/clusters`-style introspection).
    pub fn len(&self) -> usize {
        self.hosts.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn transport_id(host: &Host) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    matches!(
        host.transport,
        crate::config::cluster::UpstreamTransport::Tls(_)
    )
    .hash(&mut h);
    host.transport_match.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_failures_read_like_envoy() {
        let e = std::io::Error::from_raw_os_error(111);
        assert_eq!(
            transport_failure(&e),
            "delayed_connect_error:_Connection_refused"
        );
    }

    #[test]
    fn alpn_compares_by_content() {
        let a = Alpn::new(vec![
            b"istio-h2".to_vec(),
            b"istio".to_vec(),
            b"h2".to_vec(),
        ]);
        let b = Alpn::new(vec![
            b"istio-h2".to_vec(),
            b"istio".to_vec(),
            b"h2".to_vec(),
        ]);
        let c = Alpn::new(vec![b"istio-http/1.1".to_vec()]);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
