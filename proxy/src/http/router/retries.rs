//! One request's retry state: the policy in effect, what is left of it, the replayable body,
//! and the `max_retries` circuit breaker slot while a retry is under way.

use std::sync::Arc;

use http::{HeaderMap, StatusCode};
use tokio::time::Instant;

use crate::http::body::{Replay, RequestBody};
use crate::http::pool::{ClusterHttp, RetrySlot};
use crate::http::retry::{ResetKind, RetryOn, RetryPolicy};
use crate::http::route::RequestView;
use crate::http::stream_info::{ResponseFlag, StreamInfo};
use crate::upstream::lb;

/// What follows a back-off.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    Retry,
    /// The global timeout passed during the back-off.
    TimedOut,
}

#[derive(Debug)]
pub(super) struct Retries<'a> {
    policy: Option<&'a RetryPolicy>,
    on: RetryOn,
    max: u32,
    replay: Option<Replay>,
    first: Option<RequestBody>,
    deadline: Option<Instant>,
    slot: Option<RetrySlot>,
}

// === impl Retries ===

impl<'a> Retries<'a> {
    /// The retry state for a request, and its first body. The body is kept for replay only
    /// when a retry may happen.
    pub fn new(
        policy: Option<&'a RetryPolicy>,
        req: &RequestView<'_>,
        first: (hyper::body::Incoming, Arc<crate::http::body::StreamShared>),
        buffer_limit: usize,
        deadline: Option<Instant>,
    ) -> Self {
        let policy = policy.filter(|p| !p.on.is_empty() && p.request_retriable(req));
        let max = policy.map_or(0, |p| p.num_retries);
        let (body, replay) = RequestBody::new(first.0, first.1, (max > 0).then_some(buffer_limit));
        Self {
            policy,
            on: policy.map_or(RetryOn::default(), |p| p.on),
            max,
            replay,
            first: Some(body),
            deadline,
            slot: None,
        }
    }

    pub fn policy(&self) -> Option<&'a RetryPolicy> {
        self.policy
    }

    /// The body for the next attempt.
    pub fn body(&mut self) -> RequestBody {
        match (self.first.take(), &self.replay) {
            (Some(b), _) => b,
            (None, Some(r)) => r.request_body(),
            (None, None) => RequestBody::Empty,
        }
    }

    /// Whether attempt `n` may be followed by another (so its headers must be kept).
    pub fn may_follow(&self, attempt: u32) -> bool {
        self.replay.is_some() && attempt <= self.max
    }

    pub fn wants_response(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        req: &RequestView<'_>,
    ) -> bool {
        self.policy
            .is_some_and(|p| p.retry_response(self.on, status, headers, req))
    }

    pub fn wants_reset(&self, kind: ResetKind) -> bool {
        self.policy.is_some() && RetryPolicy::retry_reset(self.on, kind)
    }

    /// Whether a retry may follow attempt `attempt`: retries left, the body replayable, and
    /// the `max_retries` circuit breaker closed (its slot is held until the next retry).
    pub fn allow(&mut self, ch: &Arc<ClusterHttp>, attempt: u32, info: &mut StreamInfo) -> bool {
        if attempt > self.max {
            ch.stats.upstream_rq_retry_limit_exceeded.inc();
            info.flags.set(ResponseFlag::UpstreamRetryLimitExceeded);
            return false;
        }
        if !self.replay.as_ref().is_some_and(Replay::replayable) {
            return false;
        }
        let Some(slot) = ch.try_retry() else {
            return false;
        };
        ch.stats.upstream_rq_retry.inc();
        self.slot = Some(slot);
        true
    }

    /// Sleeps the back-off before retry `attempt`.
    pub async fn backoff(&self, ch: &ClusterHttp, attempt: u32) -> Next {
        let Some(p) = self.policy else {
            return Next::Retry;
        };
        ch.stats.upstream_rq_retry_backoff_exponential.inc();
        let wake = Instant::now() + p.backoff(attempt, lb::random());
        match self.deadline {
            Some(d) if d <= wake => {
                tokio::time::sleep_until(d).await;
                Next::TimedOut
            }
            _ => {
                tokio::time::sleep_until(wake).await;
                Next::Retry
            }
        }
    }
}
