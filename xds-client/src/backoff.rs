//! Reconnect delays: exponential, bounded, jittered so that a fleet of proxies does not
//! reconnect in lockstep after a control plane restart.

use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use crate::config::Backoff;

/// The delay sequence for one run of failures; reset once a stream has made progress.
#[derive(Debug)]
pub(crate) struct BackoffState {
    config: Backoff,
    attempt: u32,
    random: RandomState,
}

// === impl BackoffState ===

impl BackoffState {
    pub(crate) fn new(config: Backoff) -> Self {
        Self {
            config,
            attempt: 0,
            random: RandomState::new(),
        }
    }

    /// Starts over from the base delay.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next delay: uniform in `[d/2, d]`, `d = min(base * 2^attempt, max)`.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
        if spread == 0 {
            return ceiling;
        }
        let jitter = self.random_u64() % (spread + 1);
        half + Duration::from_nanos(jitter)
    }

    fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.config
            .base
            .checked_mul(factor)
            .unwrap_or(self.config.max)
            .min(self.config.max)
    }

    /// A pseudo-random number from std's randomly keyed hasher; good enough for jitter.
    fn random_u64(&self) -> u64 {
        self.random.hash_one((self.attempt, Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(base_ms: u64, max_ms: u64) -> BackoffState {
        BackoffState::new(Backoff {
            base: Duration::from_millis(base_ms),
            max: Duration::from_millis(max_ms),
        })
    }

    #[test]
    fn delays_double_within_jitter_bounds_and_cap() {
        let mut b = state(500, 30_000);
        for ceiling_ms in [500u64, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000] {
            let d = b.next_delay();
            let ceiling = Duration::from_millis(ceiling_ms);
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} outside [{ceiling:?}/2, {ceiling:?}]"
            );
        }
    }

    #[test]
    fn reset_starts_again_from_base() {
        let mut b = state(100, 10_000);
        for _ in 0..10 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn many_attempts_never_overflow() {
        let mut b = state(500, 30_000);
        for _ in 0..200 {
            assert!(b.next_delay() <= Duration::from_secs(30));
        }
    }

    #[test]
    fn jitter_varies() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let mut b = state(1000, 1000);
            seen.insert(b.next_delay());
        }
        assert!(seen.len() > 1, "all delays equal: {seen:?}");
    }
}
