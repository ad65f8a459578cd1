//! The router filter (`envoy.filters.http.router`): picks the cluster and host, sends the
//! request over a pooled connection in the cluster's protocol, and applies the route's
//! timeouts and retry policy. Failures become Envoy's local replies.

pub mod request;
mod retries;
mod upgrade;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tokio::time::Instant;

pub use request::{RouterRequest, Timeouts};

use super::body::{RequestBody, StreamShared};
use super::filter::AlpnOverrides;
use super::format::{Context, Headers};
use super::local_reply::LocalReply;
use super::local_reply::ResetReason;
use super::peer_metadata::PeerMetadataFilter;
use super::pool::{
    ClusterHttp, HostPool, PooledH1, Pools, RequestSlot, SendError, Sent, UpstreamProtocol,
};
use super::retry::{ResetKind, RetryPolicy};
use super::route::action::{ClusterSpec, HostRewrite, WeightedEntry};
use super::route::{Matched, RouteAction};
use super::stream_info::{Captured, HeaderKey, HeaderView, Protocol, ResponseFlag, StreamInfo};
use crate::config::cluster::{UpstreamHttp, UpstreamTransport};
use crate::conn::Downstream;
use crate::upstream::host::{Host, HostAddr};
use crate::upstream::{Cluster, LbContext, lb};
use retries::{Next, Retries};

const UPSTREAM_SERVICE_TIME: http::HeaderName =
    http::HeaderName::from_static("x-envoy-upstream-service-time");

/// The router's settings (one per HCM).
#[derive(Debug, Clone)]
pub struct Router {
    pub pools: Arc<Pools>,
    /// `suppress_envoy_headers`: no `x-envoy-*` headers added.
    pub suppress_envoy_headers: bool,
    /// How much of a request body is kept for retries (the listener's buffer limit).
    pub retry_buffer_limit: usize,
}

/// What the router needs to know about one stream.
#[derive(Debug)]
pub struct Stream<'a> {
    pub matched: Matched<'a>,
    pub action: &'a RouteAction,
    pub downstream: &'a Downstream,
    pub alpn: Option<&'a AlpnOverrides>,
    pub info: &'a mut StreamInfo,
    pub shared: &'a Arc<StreamShared>,
    /// Request headers the access logs read (captured once the headers are final).
    pub request_keys: &'a [HeaderKey],
    /// Istio's metadata exchange: our node's headers go to in-mesh upstreams.
    pub peer_metadata: Option<&'a PeerMetadataFilter>,
    pub stream_idle_timeout: Option<Duration>,
    /// The HCM's `request_timeout`: the whole request must arrive within it.
    pub request_timeout: Option<Duration>,
}

/// An upstream response on its way downstream.
#[derive(Debug)]
pub struct Forwarded {
    pub response: Response<Incoming>,
    pub pooled: Option<PooledH1>,
    pub slot: RequestSlot,
    pub cluster: Arc<ClusterHttp>,
    pub started: Instant,
    /// When the route's timeout fires: it covers the response body too.
    pub deadline: Option<Instant>,
}

/// What the router did.
#[derive(Debug)]
// One per stream, moved once: boxing the response would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
pub enum Outcome {
    Upstream(Forwarded),
    Local(LocalReply),
}

enum Attempt {
    Sent(Box<Sent>),
    Failed(SendError),
    PerTryTimeout,
    GlobalTimeout,
    IdleTimeout,
    RequestTimeout,
}

/// The clocks an attempt races against.
#[derive(Debug, Clone)]
struct Deadlines {
    global: Option<Instant>,
    per_try: Option<Duration>,
    /// The stream idle timeout (or the retry policy's per-try idle timeout).
    idle: Option<Duration>,
    /// `request_timeout`: fires only while the request body is still arriving.
    request: Option<(Instant, Arc<StreamShared>)>,
}

// === impl Router ===

impl Router {
    /// Forwards a request along its route.
    pub async fn forward(
        &self,
        s: Stream<'_>,
        mut req: RouterRequest,
        body: Incoming,
        on_upgrade: Option<OnUpgrade>,
    ) -> Outcome {
        let action = s.action;
        let (name, weighted) = match &action.cluster {
            ClusterSpec::Name(n) => (Some(n.clone()), None),
            ClusterSpec::Header(h) => (
                req.headers
                    .get(h)
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.is_empty())
                    .map(Arc::from),
                None,
            ),
            ClusterSpec::Weighted(w) => {
                let e = w.pick(lb::random());
                (Some(e.name.clone()), Some(e))
            }
        };
        let Some(cluster) = name
            .as_deref()
            .and_then(|n| self.pools.cluster_manager().get(n))
        else {
            return Outcome::Local(LocalReply::no_cluster(action.not_found_status));
        };
        s.info.upstream.cluster = name;
        if let Some(mx) = s.peer_metadata {
            mx.on_upstream_request(&mut req.headers, &cluster);
        }
        let ch = self.pools.cluster(&cluster);
        {
            let ctx = Context {
                info: &*s.info,
                downstream: s.downstream,
                request: Headers::None,
                response: Headers::None,
            };
            req.finalize(
                s.matched,
                action,
                weighted,
                &ctx,
                !self.suppress_envoy_headers,
            );
        }
        s.info.request_headers = Captured::capture(s.request_keys, &req.view());
        if let Some(on_upgrade) = on_upgrade {
            return upgrade::forward(self, s, &cluster, &ch, req, on_upgrade).await;
        }
        self.forward_with_retries(s, cluster, ch, weighted, req, body)
            .await
    }

    async fn forward_with_retries(
        &self,
        mut s: Stream<'_>,
        cluster: Arc<Cluster>,
        ch: Arc<ClusterHttp>,
        weighted: Option<&WeightedEntry>,
        mut req: RouterRequest,
        body: Incoming,
    ) -> Outcome {
        let timeouts = Timeouts::new(s.action, &req.headers);
        let now = Instant::now();
        let policy = s.action.retry.as_deref();
        let deadlines = Deadlines {
            global: timeouts.global.map(|d| now + d),
            per_try: timeouts.per_try,
            idle: min_opt(
                s.stream_idle_timeout,
                policy.and_then(|p| p.per_try_idle_timeout),
            ),
            request: s
                .request_timeout
                .map(|t| (Instant::from_std(s.info.started) + t, s.shared.clone())),
        };
        let mut retries = Retries::new(
            policy,
            &view(&req, s.downstream),
            (body, s.shared.clone()),
            self.retry_buffer_limit,
            deadlines.global,
        );
        let mut tried: Vec<HostAddr> = Vec::new();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let prepared = self.prepare_attempt(
                &mut s,
                &cluster,
                &ch,
                &mut req,
                &mut retries,
                &mut tried,
                attempt,
                &timeouts,
                deadlines.global,
            );
            let (pool, upstream_req) = match prepared {
                Ok(p) => p,
                Err(reply) => return Outcome::Local(reply),
            };
            let Some(slot) = ch.try_request() else {
                return Outcome::Local(LocalReply::reset(&ResetReason::Overflow, attempt > 1));
            };
            let started = Instant::now();
            let (kind, reason) = match run_attempt(&pool, upstream_req, &deadlines, started).await {
                Attempt::Sent(sent) => {
                    let status = sent.response.status();
                    let headers = sent.response.headers();
                    if retries.wants_response(status, headers, &view(&req, s.downstream)) {
                        if retries.allow(&ch, attempt, s.info) {
                            ch.stats.record_status(status.as_u16());
                            drop((sent, slot));
                            match retries.backoff(&ch, attempt).await {
                                Next::Retry => continue,
                                Next::TimedOut => return timeout_reply(&ch),
                            }
                        }
                    } else if attempt > 1 {
                        ch.stats.upstream_rq_retry_success.inc();
                    }
                    let mut out = self.deliver(s, ch, weighted, *sent, slot, started, attempt);
                    if let Outcome::Upstream(f) = &mut out {
                        f.deadline = deadlines.global;
                    }
                    return out;
                }
                Attempt::Failed(err) if err.no_healthy => {
                    return Outcome::Local(LocalReply::no_healthy_upstream());
                }
                Attempt::Failed(err) => {
                    if !matches!(err.kind, ResetKind::ConnectFailure | ResetKind::Overflow) {
                        ch.stats.upstream_rq_rx_reset.inc();
                    }
                    if let Some(t) = err.reason.transport_failure() {
                        s.info.upstream.transport_failure = Some(t.into());
                    }
                    (err.kind, Some(err.reason))
                }
                Attempt::PerTryTimeout => {
                    ch.stats.upstream_rq_per_try_timeout.inc();
                    (ResetKind::Timeout, None)
                }
                Attempt::GlobalTimeout => return timeout_reply(&ch),
                Attempt::IdleTimeout => {
                    s.info.flags.set(ResponseFlag::StreamIdleTimeout);
                    return Outcome::Local(LocalReply::stream_idle_timeout());
                }
                Attempt::RequestTimeout => return Outcome::Local(LocalReply::request_timeout()),
            };
            drop(slot);
            if retries.wants_reset(kind) && retries.allow(&ch, attempt, s.info) {
                match retries.backoff(&ch, attempt).await {
                    Next::Retry => continue,
                    Next::TimedOut => return timeout_reply(&ch),
                }
            }
            return Outcome::Local(match reason {
                Some(r) => LocalReply::reset(&r, attempt > 1),
                None => LocalReply::upstream_timeout(true),
            });
        }
    }

    /// Everything before sending attempt `attempt`: the host (avoiding those tried when the
    /// policy says so), the protocol, Envoy's per-attempt headers, the body and the pool.
    #[allow(clippy::too_many_arguments)]
    fn prepare_attempt(
        &self,
        s: &mut Stream<'_>,
        cluster: &Cluster,
        ch: &Arc<ClusterHttp>,
        req: &mut RouterRequest,
        retries: &mut Retries<'_>,
        tried: &mut Vec<HostAddr>,
        attempt: u32,
        timeouts: &Timeouts,
        deadline: Option<Instant>,
    ) -> Result<(Arc<HostPool>, http::Request<RequestBody>), LocalReply> {
        s.info.upstream.attempts = attempt;
        let lb_ctx = LbContext {
            original_dst: Some(s.downstream.local),
            original_src: None,
        };
        let host = choose(cluster, &lb_ctx, retries.policy(), tried)
            .ok_or_else(LocalReply::no_healthy_upstream)?;
        tried.push(host.addr.clone());
        s.info.upstream.host = Some(host.addr.clone());
        s.info.upstream.metadata = host.metadata.clone();
        if matches!(s.action.host_rewrite, HostRewrite::Auto) {
            req.auto_host_rewrite(
                &host,
                s.action.append_x_forwarded_host,
                !self.suppress_envoy_headers,
            );
        }
        let protocol = upstream_protocol(cluster, req.protocol);
        s.info.upstream.protocol = Some(match protocol {
            UpstreamProtocol::Http1 => Protocol::Http11,
            UpstreamProtocol::Http2 => Protocol::Http2,
        });
        self.attempt_headers(
            req,
            timeouts,
            deadline,
            attempt,
            s.matched.vh.include_attempt_count_in_request,
        );
        let tls = matches!(host.transport, UpstreamTransport::Tls(_));
        let keep = retries.may_follow(attempt);
        let upstream_req = req
            .build(protocol, tls, retries.body(), keep)
            .ok_or_else(|| LocalReply::new(StatusCode::BAD_REQUEST, "", "invalid_request", None))?;
        let alpn = s.alpn.and_then(|a| a.for_protocol(protocol, req.protocol));
        Ok((self.pools.host(ch, &host, protocol, alpn), upstream_req))
    }

    /// The upstream response, finished for downstream.
    #[allow(clippy::too_many_arguments)]
    fn deliver(
        &self,
        s: Stream<'_>,
        ch: Arc<ClusterHttp>,
        weighted: Option<&WeightedEntry>,
        sent: Sent,
        slot: RequestSlot,
        started: Instant,
        attempt: u32,
    ) -> Outcome {
        let status = sent.response.status();
        let mut response = sent.response;
        self.finish_response(
            &mut response,
            s.matched,
            weighted,
            started,
            attempt,
            s.info,
            s.downstream,
        );
        ch.stats.record_status(status.as_u16());
        s.info.upstream.local = sent.local;
        s.info.upstream.principals = sent.principals.clone();
        s.info.first_upstream_rx = Some(s.info.elapsed());
        Outcome::Upstream(Forwarded {
            response,
            pooled: sent.pooled,
            slot,
            cluster: ch,
            started,
            deadline: None,
        })
    }

    fn attempt_headers(
        &self,
        req: &mut RouterRequest,
        timeouts: &Timeouts,
        deadline: Option<Instant>,
        attempt: u32,
        attempt_count: bool,
    ) {
        if !self.suppress_envoy_headers {
            let remaining = match (attempt, timeouts.global, deadline) {
                (1, g, _) => g,
                // Envoy: the timeout minus the whole milliseconds elapsed.
                (_, Some(g), Some(d)) => {
                    let elapsed = g.saturating_sub(d.saturating_duration_since(Instant::now()));
                    Some(g.saturating_sub(Duration::from_millis(elapsed.as_millis() as u64)))
                }
                _ => None,
            };
            if let Some(t) = timeouts.expected(remaining) {
                req.headers.insert(
                    request::EXPECTED_TIMEOUT,
                    HeaderValue::from(t.as_millis() as u64),
                );
            }
        }
        if attempt_count {
            req.headers
                .insert(request::ATTEMPT_COUNT, HeaderValue::from(attempt));
        }
    }

    /// The response headers Envoy's router sets: hop-by-hop removal, service time, the
    /// route's header changes, the attempt count.
    #[allow(clippy::too_many_arguments)]
    fn finish_response(
        &self,
        response: &mut Response<Incoming>,
        matched: Matched<'_>,
        weighted: Option<&WeightedEntry>,
        started: Instant,
        attempt: u32,
        info: &StreamInfo,
        downstream: &Downstream,
    ) {
        let upgrade = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        super::headers::clean_response(response.headers_mut(), upgrade);
        if !self.suppress_envoy_headers {
            response.headers_mut().insert(
                UPSTREAM_SERVICE_TIME,
                HeaderValue::from(started.elapsed().as_millis() as u64),
            );
        }
        let status = response.status();
        let levels = matched.response_levels();
        let weighted = weighted.map(|w| &w.response_headers);
        for level in levels.into_iter().chain(weighted) {
            if level.is_empty() {
                continue;
            }
            let snapshot = response.headers().clone();
            let ctx = Context {
                info,
                downstream,
                request: Headers::Captured(&info.request_headers),
                response: Headers::Live(HeaderView {
                    status: Some(status),
                    ..HeaderView::headers(&snapshot)
                }),
            };
            level.apply(response.headers_mut(), Some(&ctx));
        }
        if matched.vh.include_attempt_count_in_response {
            response
                .headers_mut()
                .insert(request::ATTEMPT_COUNT, HeaderValue::from(attempt));
        }
    }
}

fn view<'a>(req: &'a RouterRequest, ds: &'a Downstream) -> super::route::RequestView<'a> {
    super::route::RequestView {
        method: &req.method,
        scheme: req.scheme.to_str().unwrap_or("http"),
        authority: &req.authority,
        path: &req.path,
        headers: &req.headers,
        tls: ds.tls.as_deref(),
        internal: req.internal,
    }
}

fn timeout_reply(ch: &ClusterHttp) -> Outcome {
    ch.stats.upstream_rq_timeout.inc();
    Outcome::Local(LocalReply::upstream_timeout(false))
}

/// The HTTP protocol towards a cluster.
pub fn upstream_protocol(cluster: &Cluster, downstream: Protocol) -> UpstreamProtocol {
    match cluster.config.http {
        UpstreamHttp::Http1 => UpstreamProtocol::Http1,
        UpstreamHttp::Http2 => UpstreamProtocol::Http2,
        UpstreamHttp::UseDownstream if downstream == Protocol::Http2 => UpstreamProtocol::Http2,
        UpstreamHttp::UseDownstream => UpstreamProtocol::Http1,
    }
}

/// Picks a host, avoiding hosts already tried when the retry policy says so.
fn choose(
    cluster: &Cluster,
    ctx: &LbContext,
    policy: Option<&RetryPolicy>,
    tried: &[HostAddr],
) -> Option<Arc<Host>> {
    let avoid = policy.is_some_and(|p| p.avoid_previous_hosts) && !tried.is_empty();
    let attempts = if avoid {
        policy.map_or(1, |p| p.host_selection_max_attempts)
    } else {
        1
    };
    let mut host = cluster.choose(ctx)?;
    for _ in 1..attempts {
        if !tried.contains(&host.addr) {
            break;
        }
        host = cluster.choose(ctx)?;
    }
    Some(host)
}

async fn run_attempt(
    pool: &Arc<HostPool>,
    req: http::Request<RequestBody>,
    d: &Deadlines,
    started: Instant,
) -> Attempt {
    let far = started + Duration::from_secs(365 * 24 * 3600);
    let per_try = d.per_try.map(|p| started + p);
    let idle = d.idle.map(|i| started + i);
    let request = async {
        let Some((at, shared)) = &d.request else {
            return std::future::pending().await;
        };
        tokio::time::sleep_until(*at).await;
        if shared.request_done() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        r = pool.send(req) => match r {
            Ok(sent) => Attempt::Sent(Box::new(sent)),
            Err(e) => Attempt::Failed(e),
        },
        _ = tokio::time::sleep_until(per_try.unwrap_or(far)), if per_try.is_some() => Attempt::PerTryTimeout,
        _ = tokio::time::sleep_until(d.global.unwrap_or(far)), if d.global.is_some() => Attempt::GlobalTimeout,
        _ = tokio::time::sleep_until(idle.unwrap_or(far)), if idle.is_some() => Attempt::IdleTimeout,
        _ = request => Attempt::RequestTimeout,
    }
}

fn min_opt(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
