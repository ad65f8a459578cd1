//! The network RBAC filters of a chain, run on the client's data before the terminal filter
//! sees it.
//!
//! Like Envoy, the terminal filter starts at once (tcp_proxy connects upstream, so a
//! server-first protocol still gets its greeting) and the policies are decided on the first
//! bytes the client sends (on every read for `CONTINUOUS` enforcement). A denied connection
//! never has its data forwarded: the read fails, after `delay_deny` if set, and the terminal
//! filter closes both sides.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::conn::Downstream;
use crate::rbac::{EnforcementType, Input, NetworkAction, NetworkRbac, NetworkRbacState};

/// A downstream stream whose reads pass the chain's network RBAC filters.
#[derive(Debug)]
pub struct RbacGate<'a, S> {
    inner: S,
    filters: &'a [NetworkRbac],
    states: Vec<NetworkRbacState>,
    downstream: &'a Downstream,
    /// Set once denied: reads fail from then on (after the delay, when one is pending).
    denied: Option<Denied>,
    /// No filter needs to run again (all one-time and decided).
    settled: bool,
}

#[derive(Debug)]
struct Denied {
    delay: Option<Pin<Box<Sleep>>>,
}

// === impl RbacGate ===

impl<'a, S> RbacGate<'a, S> {
    pub fn new(inner: S, filters: &'a [NetworkRbac], downstream: &'a Downstream) -> Self {
        Self {
            inner,
            filters,
            states: vec![NetworkRbacState::default(); filters.len()],
            downstream,
            denied: None,
            settled: filters.is_empty(),
        }
    }

    /// Whether a filter denied the connection.
    pub fn is_denied(&self) -> bool {
        self.denied.is_some()
    }

    /// Runs every filter on one read; the first denial wins, as in Envoy's filter chain.
    fn decide(&mut self) -> NetworkAction {
        let input = Input::connection(self.downstream);
        let mut action = NetworkAction::Continue;
        for (filter, state) in self.filters.iter().zip(&mut self.states) {
            let verdict = filter.on_data(state, &input);
            if let NetworkAction::Deny { .. } = verdict.action {
                tracing::debug!(
                    peer = %self.downstream.peer,
                    chain = &*self.downstream.filter_chain,
                    details = verdict.termination_details().as_deref().unwrap_or(""),
                    "network RBAC denied the connection"
                );
                action = verdict.action;
                break;
            }
        }
        self.settled = self
            .filters
            .iter()
            .all(|f| f.enforcement() == EnforcementType::OneTimeOnFirstByte);
        action
    }
}

fn denied_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "connection denied by network RBAC",
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for RbacGate<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(denied) = &mut this.denied {
            if let Some(delay) = &mut denied.delay {
                ready!(delay.as_mut().poll(cx));
                denied.delay = None;
            }
            return Poll::Ready(Err(denied_error()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if this.settled || buf.filled().len() == before {
            return Poll::Ready(Ok(()));
        }
        match this.decide() {
            NetworkAction::Continue => Poll::Ready(Ok(())),
            NetworkAction::Deny { delay } => {
                // The denied bytes are never passed on.
                buf.set_filled(before);
                let mut denied = Denied {
                    delay: delay.map(|d| Box::pin(tokio::time::sleep(d))),
                };
                if let Some(delay) = &mut denied.delay
                    && delay.as_mut().poll(cx).is_pending()
                {
                    this.denied = Some(denied);
                    return Poll::Pending;
                }
                this.denied = Some(Denied { delay: None });
                Poll::Ready(Err(denied_error()))
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for RbacGate<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.denied.is_some() {
            return Poll::Ready(Err(denied_error()));
        }
        Pin::new(&mut this.inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
