//! The server's lifecycle, as Envoy reports it in `server.state` and `/ready`.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::stats::{Gauge, Store};

/// Envoy's `server.state` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    Live = 0,
    Draining = 1,
    PreInitializing = 2,
    Initializing = 3,
}

// === impl State ===

impl State {
    pub fn name(self) -> &'static str {
        match self {
            Self::Live => "LIVE",
            Self::Draining => "DRAINING",
            Self::PreInitializing => "PRE_INITIALIZING",
            Self::Initializing => "INITIALIZING",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Live,
            1 => Self::Draining,
            2 => Self::PreInitializing,
            _ => Self::Initializing,
        }
    }
}

/// Lifecycle state and the `server.*` stats that describe it.
#[derive(Debug)]
pub struct ServerState {
    state: AtomicU8,
    state_gauge: Gauge,
    live: Gauge,
    uptime: Gauge,
    started: Instant,
    /// `/healthcheck/fail` sets this; `/healthcheck/ok` clears it.
    health_failed: AtomicBool,
    /// Cancelled to begin shutdown (SIGTERM, `/quitquitquit`).
    pub shutdown: CancellationToken,
}

// === impl ServerState ===

impl ServerState {
    pub fn new(store: &Store, concurrency: u32) -> Self {
        let s = store.scope("server.");
        let state = Self {
            state: AtomicU8::new(State::PreInitializing as u8),
            state_gauge: s.gauge("state"),
            live: s.gauge("live"),
            uptime: s.gauge("uptime"),
            started: Instant::now(),
            health_failed: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
        };
        state.state_gauge.set(State::PreInitializing as u64);
        state.live.set(0);
        s.gauge("concurrency").set(u64::from(concurrency));
        s.gauge("hot_restart_epoch").set(0);
        s.gauge("days_until_first_cert_expiring")
            .set(u64::from(u32::MAX));
        state
    }

    pub fn get(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    pub fn set(&self, s: State) {
        self.state.store(s as u8, Ordering::Release);
        self.state_gauge.set(s as u64);
        self.live.set(u64::from(s == State::Live));
    }

    pub fn uptime_secs(&self) -> u64 {
        let secs = self.started.elapsed().as_secs();
        self.uptime.set(secs);
        secs
    }

    pub fn health_failed(&self) -> bool {
        self.health_failed.load(Ordering::Relaxed)
    }

    pub fn set_health_failed(&self, failed: bool) {
        self.health_failed.store(failed, Ordering::Relaxed);
    }
}
