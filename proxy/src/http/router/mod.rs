//! The router filter (`envoy.filters.http.router`): picks the cluster and host, sends the
//! request over a pooled connection in the cluster's protocol, and applies the route's
//! timeouts and retry policy. Failures become Envoy's local replies.

pub mod request;
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
use super::pool::{
    ClusterHttp, HostPool, PooledH1, Pools, RequestSlot, SendError, Sent, UpstreamProtocol,
};
use super::retry::{ResetKind, RetryOn, RetryPolicy};
use super::route::action::{ClusterSpec, HostRewrite, WeightedEntry};
use super::route::{Matched, RouteAction};
use super::stream_info::{Captured, HeaderKey, HeaderView, Protocol, ResponseFlag, StreamInfo};
use crate::config::cluster::{UpstreamHttp, UpstreamTransport};
use crate::conn::Downstream;
use crate::upstream::host::{Host, HostAddr};
use crate::upstream::{Cluster, LbContext, lb};

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
    pub stream_idle_timeout: Option<Duration>,
}

/// An upstream response on its way downstream.
#[derive(Debug)]
pub struct Forwarded {
    pub response: Response<Incoming>,
    pub pooled: Option<PooledH1>,
    pub slot: RequestSlot,
    pub cluster: Arc<ClusterHttp>,
    pub started: Instant,
}

/// What the router did.
#[derive(Debug)]
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
        s: Stream<'_>,
        cluster: Arc<Cluster>,
        ch: Arc<ClusterHttp>,
        weighted: Option<&WeightedEntry>,
        mut req: RouterRequest,
        body: Incoming,
    ) -> Outcome {
        let action = s.action;
        let timeouts = Timeouts::new(action, &req.headers);
        let deadline = timeouts.global.map(|d| Instant::now() + d);
        let policy = action.retry.as_deref().filter(|p| {
            p.request_retriable(&super::route::RequestView {
                method: &req.method,
                scheme: req.scheme.to_str().unwrap_or("http"),
                authority: &req.authority,
                path: &req.path,
                headers: &req.headers,
                tls: s.downstream.tls.as_deref(),
                internal: req.internal,
            })
        });
        let retry_on = policy.map_or(RetryOn::default(), |p| p.on);
        let max_retries = if retry_on.is_empty() {
            0
        } else {
            policy.map_or(0, |p| p.num_retries)
        };
        let replay_limit = (max_retries > 0).then_some(self.retry_buffer_limit);
        let (first, replay) = RequestBody::new(body, s.shared.clone(), replay_limit);
        let mut first = Some(first);
        let lb_ctx = LbContext {
            original_dst: Some(s.downstream.local),
        };
        let mut tried: Vec<HostAddr> = Vec::new();
        let mut attempt = 0u32;
        let mut _retry_slot = None;
        loop {
            attempt += 1;
            s.info.upstream.attempts = attempt;
            let Some(host) = choose(&cluster, &lb_ctx, policy, &tried) else {
                return Outcome::Local(LocalReply::no_healthy_upstream());
            };
            tried.push(host.addr.clone());
            s.info.upstream.host = Some(host.addr.clone());
            if matches!(action.host_rewrite, HostRewrite::Auto) {
                req.auto_host_rewrite(
                    &host,
                    action.append_x_forwarded_host,
                    !self.suppress_envoy_headers,
                );
            }
            let protocol = upstream_protocol(&cluster, req.protocol);
            s.info.upstream.protocol = Some(match protocol {
                UpstreamProtocol::Http1 => Protocol::Http11,
                UpstreamProtocol::Http2 => Protocol::Http2,
            });
            self.attempt_headers(
                &mut req,
                &timeouts,
                deadline,
                attempt,
                s.matched.vh.include_attempt_count_in_request,
            );
            let body = match (first.take(), &replay) {
                (Some(b), _) => b,
                (None, Some(r)) => r.request_body(),
                (None, None) => RequestBody::Empty,
            };
            let keep = replay.is_some() && attempt <= max_retries;
            let tls = matches!(host.transport, UpstreamTransport::Tls(_));
            let Some(upstream_req) = req.build(protocol, tls, body, keep) else {
                return Outcome::Local(LocalReply::new(
                    StatusCode::BAD_REQUEST,
                    "",
                    "invalid_request",
                    None,
                ));
            };
            let alpn = s.alpn.and_then(|a| a.for_protocol(protocol, req.protocol));
            let pool = self.pools.host(&ch, &host, protocol, alpn);
            let Some(slot) = ch.try_request() else {
                return Outcome::Local(LocalReply::reset(
                    &super::local_reply::ResetReason::Overflow,
                    attempt > 1,
                ));
            };
            let started = Instant::now();
            let result = run_attempt(
                &pool,
                upstream_req,
                &timeouts,
                deadline,
                s.stream_idle_timeout,
                started,
            )
            .await;
            let kind = match result {
                Attempt::Sent(sent) => {
                    let status = sent.response.status();
                    let retry = policy.is_some_and(|p| {
                        p.retry_response(
                            retry_on,
                            status,
                            sent.response.headers(),
                            &view(&req, s.downstream),
                        )
                    });
                    if retry {
                        if let Some(slot_r) =
                            self.may_retry(&ch, attempt, max_retries, replay.as_ref(), s.info)
                        {
                            ch.stats.record_status(status.as_u16());
                            drop(sent);
                            drop(slot);
                            _retry_slot = Some(slot_r);
                            if !backoff(policy, attempt, deadline, &ch).await {
                                return timeout_reply(&ch);
                            }
                            continue;
                        }
                    } else if attempt > 1 {
                        ch.stats.upstream_rq_retry_success.inc();
                    }
                    let sent = *sent;
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
                    s.info.first_upstream_rx = Some(s.info.elapsed());
                    return Outcome::Upstream(Forwarded {
                        response,
                        pooled: sent.pooled,
                        slot,
                        cluster: ch,
                        started,
                    });
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
            };
            drop(slot);
            let (kind, reason) = kind;
            if policy.is_some()
                && RetryPolicy::retry_reset(retry_on, kind)
                && let Some(slot_r) =
                    self.may_retry(&ch, attempt, max_retries, replay.as_ref(), s.info)
            {
                _retry_slot = Some(slot_r);
                if !backoff(policy, attempt, deadline, &ch).await {
                    return timeout_reply(&ch);
                }
                continue;
            }
            return Outcome::Local(match reason {
                Some(r) => LocalReply::reset(&r, attempt > 1),
                None => LocalReply::upstream_timeout(true),
            });
        }
    }

    /// Whether a retry may happen now: retries left, the body replayable, and the
    /// `max_retries` circuit breaker closed.
    fn may_retry(
        &self,
        ch: &Arc<ClusterHttp>,
        attempt: u32,
        max_retries: u32,
        replay: Option<&super::body::Replay>,
        info: &mut StreamInfo,
    ) -> Option<super::pool::RetrySlot> {
        if attempt > max_retries {
            ch.stats.upstream_rq_retry_limit_exceeded.inc();
            info.flags.set(ResponseFlag::UpstreamRetryLimitExceeded);
            return None;
        }
        if !replay.is_some_and(|r| r.replayable()) {
            return None;
        }
        let slot = ch.try_retry()?;
        ch.stats.upstream_rq_retry.inc();
        Some(slot)
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
            // The first attempt announces the whole timeout, retries what is left of it.
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

/// Sleeps the retry back-off; false when the global deadline passes first.
async fn backoff(
    policy: Option<&RetryPolicy>,
    attempt: u32,
    deadline: Option<Instant>,
    ch: &ClusterHttp,
) -> bool {
    let Some(p) = policy else { return true };
    ch.stats.upstream_rq_retry_backoff_exponential.inc();
    let wake = Instant::now() + p.backoff(attempt, lb::random());
    match deadline {
        Some(d) if d <= wake => {
            tokio::time::sleep_until(d).await;
            false
        }
        _ => {
            tokio::time::sleep_until(wake).await;
            true
        }
    }
}

async fn run_attempt(
    pool: &Arc<HostPool>,
    req: http::Request<RequestBody>,
    timeouts: &Timeouts,
    deadline: Option<Instant>,
    idle: Option<Duration>,
    started: Instant,
) -> Attempt {
    let per_try = timeouts.per_try.map(|p| started + p);
    let idle = idle.map(|i| started + i);
    let far = started + Duration::from_secs(365 * 24 * 3600);
    tokio::select! {
        r = pool.send(req) => match r {
            Ok(sent) => Attempt::Sent(Box::new(sent)),
            Err(e) => Attempt::Failed(e),
        },
        _ = tokio::time::sleep_until(per_try.unwrap_or(far)), if per_try.is_some() => Attempt::PerTryTimeout,
        _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => Attempt::GlobalTimeout,
        _ = tokio::time::sleep_until(idle.unwrap_or(far)), if idle.is_some() => Attempt::IdleTimeout,
    }
}
