//! Readiness with Envoy's `initial_fetch_timeout` semantics: the client is ready once every
//! subscribed type has had its first response (accepted or rejected, as in Envoy's init
//! manager) or its initial fetch timed out. `0s` means wait forever. Readiness latches: once
//! ready, later subscriptions do not make the client unready again.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::resource::ResourceType;
use crate::stats::StatsRecorder;

/// Where the initial fetch of one type stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitialFetch {
    /// Subscribed, no response yet.
    Pending,
    /// A first response arrived and was handled (ACKed or NACKed).
    Received,
    /// `initial_fetch_timeout` elapsed first; the type no longer holds readiness back.
    TimedOut,
}

/// A snapshot of readiness.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadinessState {
    /// Every subscribed type has finished its initial fetch (latched).
    pub ready: bool,
    /// Per-type initial fetch state.
    pub types: BTreeMap<ResourceType, InitialFetch>,
}

/// A cloneable view of the client's readiness.
#[derive(Clone, Debug)]
pub struct Readiness {
    rx: watch::Receiver<ReadinessState>,
}

/// The writer side, owned by the client.
#[derive(Debug)]
pub(crate) struct ReadinessTracker {
    tx: watch::Sender<ReadinessState>,
    deadlines: Mutex<BTreeMap<ResourceType, Instant>>,
    deadlines_changed: Notify,
    /// Set once the client runs: before that, "no subscriptions yet" must not latch ready.
    armed: AtomicBool,
}

// === impl Readiness ===

impl Readiness {
    /// Whether the initial fetch is complete.
    pub fn is_ready(&self) -> bool {
        self.rx.borrow().ready
    }

    /// The current per-type state.
    pub fn state(&self) -> ReadinessState {
        self.rx.borrow().clone()
    }

    /// Resolves once the client is ready (immediately if it already is). Never resolves if the
    /// client is dropped before becoming ready.
    pub async fn ready(&self) {
        self.wait_for(|s| s.ready).await;
    }

    /// Resolves with the first state that satisfies `predicate` (e.g. one type timed out).
    /// Never resolves if the client is dropped first.
    pub async fn wait_for(
        &self,
        mut predicate: impl FnMut(&ReadinessState) -> bool,
    ) -> ReadinessState {
        let mut rx = self.rx.clone();
        match rx.wait_for(|s| predicate(s)).await {
            Ok(state) => state.clone(),
            Err(_) => std::future::pending().await,
        }
    }
}

// === impl ReadinessTracker ===

impl ReadinessTracker {
    pub(crate) fn new() -> Self {
        let (tx, _) = watch::channel(ReadinessState::default());
        Self {
            tx,
            deadlines: Mutex::new(BTreeMap::new()),
            deadlines_changed: Notify::new(),
            armed: AtomicBool::new(false),
        }
    }

    /// The client starts: from now on readiness is evaluated (a client with no subscriptions
    /// at all is ready at once, like Envoy's init manager without targets).
    pub(crate) fn arm(&self) {
        self.armed.store(true, Ordering::Release);
        self.update(|_| {});
    }

    pub(crate) fn readiness(&self) -> Readiness {
        Readiness {
            rx: self.tx.subscribe(),
        }
    }

    /// A type got a subscription; its initial fetch starts now unless it already ran.
    pub(crate) fn subscribe(&self, resource_type: ResourceType, timeout: Option<Duration>) {
        let mut started = false;
        self.update(|s| {
            if let Entry::Vacant(entry) = s.types.entry(resource_type) {
                entry.insert(InitialFetch::Pending);
                started = true;
            }
        });
        if let (true, Some(timeout)) = (started, timeout) {
            self.with_deadlines(|d| d.insert(resource_type, Instant::now() + timeout));
            self.deadlines_changed.notify_one();
        }
    }

    /// A named type lost all its names before its first response: it no longer holds
    /// readiness back (a later subscription starts a new initial fetch).
    pub(crate) fn unsubscribe(&self, resource_type: ResourceType) {
        self.update(|s| {
            if s.types.get(&resource_type) == Some(&InitialFetch::Pending) {
                s.types.remove(&resource_type);
            }
        });
        self.with_deadlines(|d| d.remove(&resource_type));
    }

    /// A response for the type was handled.
    pub(crate) fn received(&self, resource_type: ResourceType) {
        self.update(|s| {
            if let Some(state) = s.types.get_mut(&resource_type) {
                *state = InitialFetch::Received;
            }
        });
        self.with_deadlines(|d| d.remove(&resource_type));
    }

    /// Fires initial fetch timeouts as they fall due. Runs for the client's lifetime.
    pub(crate) async fn run_timers(&self, stats: &StatsRecorder) {
        loop {
            let next = self.with_deadlines(|d| d.values().min().copied());
            match next {
                Some(deadline) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => self.expire(stats),
                        _ = self.deadlines_changed.notified() => {}
                    }
                }
                None => self.deadlines_changed.notified().await,
            }
        }
    }

    fn expire(&self, stats: &StatsRecorder) {
        let now = Instant::now();
        let due: Vec<ResourceType> = self.with_deadlines(|d| {
            let due: Vec<_> = d
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(t, _)| *t)
                .collect();
            for t in &due {
                d.remove(t);
            }
            due
        });
        for resource_type in due {
            let mut fired = false;
            self.update(|s| {
                if let Some(state @ InitialFetch::Pending) = s.types.get_mut(&resource_type) {
                    *state = InitialFetch::TimedOut;
                    fired = true;
                }
            });
            if fired {
                tracing::warn!(%resource_type, "initial fetch timed out; continuing without it");
                stats.record_fetch_timeout(resource_type);
            }
        }
    }

    fn update(&self, f: impl FnOnce(&mut ReadinessState)) {
        let armed = self.armed.load(Ordering::Acquire);
        self.tx.send_modify(|s| {
            f(s);
            if armed && !s.ready && s.types.values().all(|t| *t != InitialFetch::Pending) {
                s.ready = true;
            }
        });
    }

    fn with_deadlines<T>(&self, f: impl FnOnce(&mut BTreeMap<ResourceType, Instant>) -> T) -> T {
        let mut guard = self
            .deadlines
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_every_subscribed_type_received_and_latched() {
        let t = ReadinessTracker::new();
        t.subscribe(ResourceType::Cluster, None);
        t.subscribe(ResourceType::Listener, None);
        t.arm();
        let r = t.readiness();
        assert!(!r.is_ready());
        t.received(ResourceType::Cluster);
        assert!(!r.is_ready());
        t.subscribe(ResourceType::ClusterLoadAssignment, None);
        t.received(ResourceType::Listener);
        assert!(!r.is_ready(), "EDS subscribed during init still pending");
        t.received(ResourceType::ClusterLoadAssignment);
        assert!(r.is_ready());
        t.subscribe(ResourceType::Secret, None);
        assert!(r.is_ready(), "readiness latches");
        assert_eq!(
            r.state().types[&ResourceType::Secret],
            InitialFetch::Pending
        );
    }

    #[test]
    fn not_ready_before_the_client_runs() {
        let t = ReadinessTracker::new();
        assert!(!t.readiness().is_ready());
        t.arm();
        assert!(
            t.readiness().is_ready(),
            "nothing subscribed: ready at once"
        );
    }

    #[test]
    fn dropping_a_pending_named_type_releases_readiness() {
        let t = ReadinessTracker::new();
        t.arm();
        t.subscribe(ResourceType::Listener, None);
        t.subscribe(ResourceType::RouteConfiguration, None);
        t.received(ResourceType::Listener);
        t.unsubscribe(ResourceType::RouteConfiguration);
        assert!(t.readiness().is_ready());
    }
}
