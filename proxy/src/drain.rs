//! Draining: first a signal to finish gracefully (stop taking new work, HTTP GOAWAY or
//! `Connection: close`), then, when the drain time is up, a signal to close what remains.
//! Used for listeners that were removed or changed, `/drain_listeners` and shutdown.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A drain that can be started once; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Drain {
    draining: CancellationToken,
    closed: CancellationToken,
}

// === impl Drain ===

impl Drain {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts draining now and closes after `grace` (immediately if zero). Starting an
    /// already started drain only ever shortens its deadline.
    pub fn start(&self, grace: Duration) {
        self.draining.cancel();
        if grace.is_zero() {
            self.closed.cancel();
            return;
        }
        let closed = self.closed.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    tokio::time::sleep(grace).await;
                    closed.cancel();
                });
            }
            Err(_) => closed.cancel(),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Resolves when draining starts.
    pub async fn draining(&self) {
        self.draining.cancelled().await
    }

    /// Resolves when connections must close.
    pub async fn closed(&self) {
        self.closed.cancelled().await
    }

    /// The graceful-drain token, for code that takes a `CancellationToken`.
    pub fn draining_token(&self) -> CancellationToken {
        self.draining.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn draining_then_closed_after_the_grace_period() {
        let d = Drain::new();
        assert!(!d.is_draining());
        d.start(Duration::from_secs(45));
        assert!(d.is_draining() && !d.is_closed());
        tokio::time::sleep(Duration::from_secs(44)).await;
        assert!(!d.is_closed());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(d.is_closed());
        d.start(Duration::ZERO);
        assert!(d.is_closed());
    }
}
