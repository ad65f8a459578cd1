//! Bodies as they cross the proxy, streamed frame by frame (never buffered whole):
//! requests going upstream (counted, and kept for replay when a retry may need them) and
//! responses going downstream (counted, idle-timed, returning HTTP/1 connections to their
//! pool at the end, and closing the stream's books when done).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use super::hcm::StreamEnd;
use super::local_reply::ResetReason;
use super::pool::PooledH1;

/// Why a body stopped early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("downstream body: {0}")]
    Downstream(hyper::Error),
    #[error("upstream body: {0}")]
    Upstream(hyper::Error),
    #[error("stream idle timeout")]
    IdleTimeout,
    #[error("upstream request timeout")]
    RouteTimeout,
}

/// What the request side and the response side of one stream share.
#[derive(Debug, Default)]
pub struct StreamShared {
    bytes_received: AtomicU64,
    request_done: AtomicBool,
}

// === impl StreamShared ===

impl StreamShared {
    pub fn bytes_received(&self) -> u64 {
        self.bytes_received.load(Ordering::Relaxed)
    }

    /// Whether the whole request body was read.
    pub fn request_done(&self) -> bool {
        self.request_done.load(Ordering::Acquire)
    }

    pub fn mark_request_done(&self) {
        self.request_done.store(true, Ordering::Release);
    }

    fn count(&self, frame: &Frame<Bytes>) {
        if let Some(d) = frame.data_ref() {
            self.bytes_received
                .fetch_add(d.len() as u64, Ordering::Relaxed);
        }
    }
}

/// A request body going upstream.
#[derive(Debug)]
pub enum RequestBody {
    Empty,
    /// The downstream body, streamed once.
    Streaming {
        inner: Incoming,
        shared: Arc<StreamShared>,
    },
    /// The downstream body, kept so a retry can send it again.
    Replay(ReplayBody),
}

// === impl RequestBody ===

impl RequestBody {
    /// A body for the first attempt. With `replay_limit`, up to that many bytes are kept for
    /// retries; the returned handle makes the bodies of later attempts.
    pub fn new(
        inner: Incoming,
        shared: Arc<StreamShared>,
        replay_limit: Option<usize>,
    ) -> (Self, Option<Replay>) {
        if inner.is_end_stream() {
            shared.mark_request_done();
            return (Self::Empty, replay_limit.map(|_| Replay::empty()));
        }
        match replay_limit {
            None => (Self::Streaming { inner, shared }, None),
            Some(limit) => {
                let replay = Replay {
                    state: Arc::new(Mutex::new(ReplayState {
                        source: Some(inner),
                        shared: Some(shared),
                        chunks: Vec::new(),
                        buffered: 0,
                        limit,
                        overflow: false,
                        trailers: None,
                        done: false,
                    })),
                };
                (Self::Replay(replay.body()), Some(replay))
            }
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::Streaming { inner, shared } => {
                let frame = ready!(Pin::new(inner).poll_frame(cx));
                match &frame {
                    Some(Ok(f)) => shared.count(f),
                    None => shared.mark_request_done(),
                    Some(Err(_)) => {}
                }
                Poll::Ready(frame.map(|f| f.map_err(BodyError::Downstream)))
            }
            Self::Replay(r) => r.poll(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Streaming { inner, .. } => inner.is_end_stream(),
            Self::Replay(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Streaming { inner, .. } => inner.size_hint(),
            Self::Replay(_) => SizeHint::default(),
        }
    }
}

#[derive(Debug)]
struct ReplayState {
    source: Option<Incoming>,
    shared: Option<Arc<StreamShared>>,
    chunks: Vec<Bytes>,
    buffered: usize,
    limit: usize,
    /// The body outgrew the limit: it can no longer be replayed.
    overflow: bool,
    trailers: Option<HeaderMap>,
    done: bool,
}

/// Makes replayable request bodies. Only one attempt reads at a time, so the lock inside is
/// never contended; only requests that have a retry policy and a body use it.
#[derive(Debug, Clone)]
pub struct Replay {
    state: Arc<Mutex<ReplayState>>,
}

/// One attempt's view of a replayable body.
#[derive(Debug)]
pub struct ReplayBody {
    state: Arc<Mutex<ReplayState>>,
    pos: usize,
    trailers_sent: bool,
}

// === impl Replay ===

impl Replay {
    fn empty() -> Self {
        Self {
            state: Arc::new(Mutex::new(ReplayState {
                source: None,
                shared: None,
                chunks: Vec::new(),
                buffered: 0,
                limit: 0,
                overflow: false,
                trailers: None,
                done: true,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReplayState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether another attempt can send the body again.
    pub fn replayable(&self) -> bool {
        !self.lock().overflow
    }

    /// A body for the next attempt.
    pub fn body(&self) -> ReplayBody {
        ReplayBody {
            state: self.state.clone(),
            pos: 0,
            trailers_sent: false,
        }
    }

    /// The request body for an attempt: nothing for body-less requests.
    pub fn request_body(&self) -> RequestBody {
        let s = self.lock();
        if s.done && s.chunks.is_empty() && s.trailers.is_none() {
            RequestBody::Empty
        } else {
            drop(s);
            RequestBody::Replay(self.body())
        }
    }
}

// === impl ReplayBody ===

impl ReplayBody {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(chunk) = s.chunks.get(self.pos) {
            self.pos += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        if s.done {
            if !self.trailers_sent
                && let Some(t) = s.trailers.clone()
            {
                self.trailers_sent = true;
                return Poll::Ready(Some(Ok(Frame::trailers(t))));
            }
            return Poll::Ready(None);
        }
        let Some(source) = s.source.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = ready!(Pin::new(source).poll_frame(cx));
        match frame {
            None => {
                s.done = true;
                if let Some(shared) = &s.shared {
                    shared.mark_request_done();
                }
                Poll::Ready(None)
            }
            Some(Err(e)) => Poll::Ready(Some(Err(BodyError::Downstream(e)))),
            Some(Ok(frame)) => {
                if let Some(shared) = &s.shared {
                    shared.count(&frame);
                }
                if let Some(data) = frame.data_ref() {
                    if !s.overflow {
                        s.buffered += data.len();
                        if s.buffered > s.limit {
                            s.overflow = true;
                            s.chunks = Vec::new();
                        } else {
                            s.chunks.push(data.clone());
                            self.pos += 1;
                        }
                    }
                } else if let Some(t) = frame.trailers_ref() {
                    s.trailers = Some(t.clone());
                    self.trailers_sent = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }
}

/// A response body going downstream.
#[derive(Debug)]
pub enum ResponseKind {
    /// A local reply (or nothing).
    Full(Option<Bytes>),
    /// The upstream response, with its HTTP/1 connection to return when it ends.
    Upstream {
        inner: Incoming,
        pooled: Option<PooledH1>,
        shared: Arc<StreamShared>,
        /// The route's timeout: Envoy's covers the whole response.
        deadline: Option<Instant>,
    },
}

pin_project_lite::pin_project! {
    /// The body hyper sends downstream. Dropping it (at the end, or when the client goes
    /// away) closes the stream's books: stats and access log.
    #[project = ResponseBodyProj]
    pub struct ResponseBody {
        kind: ResponseKind,
        #[pin]
        idle: Option<Sleep>,
        idle_timeout: Option<Duration>,
        deadline: Option<Instant>,
        #[pin]
        route_timer: Option<Sleep>,
        sent: u64,
        complete: bool,
        end: Option<StreamEnd>,
    }

    impl PinnedDrop for ResponseBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(end) = this.end.take() {
                end.finish(*this.complete, *this.sent);
            }
        }
    }
}

// === impl ResponseBody ===

impl ResponseBody {
    pub fn new(
        mut kind: ResponseKind,
        idle_timeout: Option<Duration>,
        end: Option<StreamEnd>,
    ) -> Self {
        let complete = match &mut kind {
            ResponseKind::Full(d) => d.is_none(),
            // hyper may never poll an empty body: settle it now.
            ResponseKind::Upstream {
                inner,
                pooled,
                shared,
                ..
            } if inner.is_end_stream() => {
                if let Some(p) = pooled.take().filter(|_| shared.request_done()) {
                    p.release();
                }
                true
            }
            ResponseKind::Upstream { .. } => false,
        };
        Self {
            kind,
            idle: None,
            idle_timeout,
            deadline: None,
            route_timer: None,
            sent: 0,
            complete,
            end,
        }
    }

    /// A body with nothing to send and no books to close (tests, upgrades).
    pub fn empty() -> Self {
        Self::new(ResponseKind::Full(None), None, None)
    }
}

/// Why an upstream response body failed, as Envoy names it: an HTTP/2 stream reset is a
/// remote reset, a lost HTTP/2 connection a connection termination, and an HTTP/1 body cut
/// short (closed or reset connection) a protocol error from the codec.
fn reset_after_headers(e: &hyper::Error) -> ResetReason {
    let h2 = std::error::Error::source(e).and_then(|s| s.downcast_ref::<h2::Error>());
    match h2 {
        Some(h) if h.reason().is_some() => ResetReason::RemoteReset,
        Some(_) => ResetReason::ConnectionTermination,
        None => ResetReason::ProtocolError,
    }
}

/// The lazily reset idle timer: a frame only moves the deadline; the timer is re-armed when
/// it fires early. True when the stream has been idle for the whole timeout.
fn poll_idle(
    mut idle: Pin<&mut Option<Sleep>>,
    timeout: Option<Duration>,
    deadline: &mut Option<Instant>,
    cx: &mut Context<'_>,
) -> bool {
    let Some(timeout) = timeout else {
        return false;
    };
    let at = *deadline.get_or_insert_with(|| Instant::now() + timeout);
    if idle.as_mut().as_pin_mut().is_none() {
        idle.set(Some(tokio::time::sleep_until(at)));
    }
    let Some(mut sleep) = idle.as_mut().as_pin_mut() else {
        return false;
    };
    loop {
        if sleep.as_mut().poll(cx).is_pending() {
            return false;
        }
        let at = deadline.unwrap_or_else(Instant::now);
        if at <= Instant::now() {
            return true;
        }
        sleep.as_mut().reset(at);
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut this = self.project();
        match this.kind {
            ResponseKind::Full(data) => {
                let frame = data.take().map(|d| {
                    *this.sent += d.len() as u64;
                    Ok(Frame::data(d))
                });
                *this.complete = true;
                Poll::Ready(frame)
            }
            ResponseKind::Upstream {
                inner,
                pooled,
                shared,
                deadline,
            } => {
                let frame = match Pin::new(&mut *inner).poll_frame(cx) {
                    Poll::Ready(f) => f,
                    Poll::Pending => {
                        if let Some(at) = *deadline {
                            if this.route_timer.as_mut().as_pin_mut().is_none() {
                                this.route_timer.set(Some(tokio::time::sleep_until(at)));
                            }
                            if let Some(timer) = this.route_timer.as_mut().as_pin_mut()
                                && timer.poll(cx).is_ready()
                            {
                                if let Some(end) = this.end.as_mut() {
                                    end.response_timeout();
                                }
                                return Poll::Ready(Some(Err(BodyError::RouteTimeout)));
                            }
                        }
                        if poll_idle(this.idle.as_mut(), *this.idle_timeout, this.deadline, cx) {
                            if let Some(end) = this.end.as_mut() {
                                end.idle_timeout();
                            }
                            return Poll::Ready(Some(Err(BodyError::IdleTimeout)));
                        }
                        return Poll::Pending;
                    }
                };
                if let Some(t) = *this.idle_timeout {
                    *this.deadline = Some(Instant::now() + t);
                }
                match frame {
                    Some(Ok(f)) => {
                        if let Some(d) = f.data_ref() {
                            *this.sent += d.len() as u64;
                        }
                        // hyper stops polling once a sized body is done: settle it now.
                        if inner.is_end_stream() {
                            *this.complete = true;
                            if let Some(p) = pooled.take().filter(|_| shared.request_done()) {
                                p.release();
                            }
                        }
                        Poll::Ready(Some(Ok(f)))
                    }
                    Some(Err(e)) => {
                        if let Some(end) = this.end.as_mut() {
                            end.upstream_reset(&reset_after_headers(&e));
                        }
                        Poll::Ready(Some(Err(BodyError::Upstream(e))))
                    }
                    None => {
                        *this.complete = true;
                        if let Some(p) = pooled.take().filter(|_| shared.request_done()) {
                            p.release();
                        }
                        Poll::Ready(None)
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            ResponseKind::Full(d) => d.is_none(),
            ResponseKind::Upstream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            ResponseKind::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            ResponseKind::Full(None) => SizeHint::with_exact(0),
            ResponseKind::Upstream { inner, .. } => inner.size_hint(),
        }
    }
}
