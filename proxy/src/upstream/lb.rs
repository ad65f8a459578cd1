//! Picking a host: round robin (weighted when weights differ), least request (power of two
//! choices), random. Lock-free: one atomic increment or a thread-local random number.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::host::{Host, HostSet};
use crate::config::cluster::LbPolicy;

/// Chooses a host from `set.targets`.
pub fn pick(policy: LbPolicy, set: &HostSet, rr: &AtomicUsize) -> Option<Arc<Host>> {
    let targets = &set.targets;
    if targets.is_empty() {
        return None;
    }
    let n = targets.len();
    let weighted = !set.wrr.is_empty();
    let host = match policy {
        LbPolicy::RoundRobin | LbPolicy::ClusterProvided => {
            let i = rr.fetch_add(1, Ordering::Relaxed);
            if weighted {
                &targets[set.wrr[i % set.wrr.len()] as usize]
            } else {
                &targets[i % n]
            }
        }
        LbPolicy::Random => &targets[weighted_random(set)],
        LbPolicy::LeastRequest { choice_count } => {
            let mut best = weighted_random(set);
            for _ in 1..choice_count.max(2) {
                let other = weighted_random(set);
                // Fewer active requests per unit of weight wins.
                let load = |i: usize| {
                    (targets[i].active() + 1) as f64 / f64::from(targets[i].weight.max(1))
                };
                if load(other) < load(best) {
                    best = other;
                }
            }
            &targets[best]
        }
    };
    Some(host.clone())
}

/// An index into `set.targets`, proportional to weight.
fn weighted_random(set: &HostSet) -> usize {
    let n = set.targets.len();
    if set.wrr.is_empty() || set.total_weight == 0 {
        return (random() % n as u64) as usize;
    }
    let mut r = random() % set.total_weight;
    for (i, h) in set.targets.iter().enumerate() {
        let w = u64::from(h.weight);
        if r < w {
            return i;
        }
        r -= w;
    }
    n - 1
}

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let local = 0u8;
    (t ^ (&local as *const u8 as u64).rotate_left(32)) | 1
}

/// A fast non-cryptographic random number (xorshift64*), per thread.
pub fn random() -> u64 {
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cluster::UpstreamTransport;
    use crate::config::endpoint::Health;
    use crate::upstream::host::HostAddr;
    use std::sync::atomic::AtomicU64;

    fn set(weights: &[u32]) -> HostSet {
        HostSet::new(
            weights
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    Arc::new(Host {
                        addr: HostAddr::Ip(format!("10.0.0.{}:80", i + 1).parse().unwrap()),
                        weight: *w,
                        health: Health::Healthy,
                        priority: 0,
                        hostname: String::new(),
                        transport: UpstreamTransport::Raw,
                        transport_match: None,
                        metadata: None,
                        active: AtomicU64::new(0),
                        locality: None,
                        stats: Default::default(),
                    })
                })
                .collect(),
        )
    }

    fn counts(policy: LbPolicy, set: &HostSet, n: usize) -> Vec<usize> {
        let rr = AtomicUsize::new(0);
        let mut c = vec![0; set.targets.len()];
        for _ in 0..n {
            let h = pick(policy, set, &rr).unwrap();
            let i = set.targets.iter().position(|t| Arc::ptr_eq(t, &h)).unwrap();
            c[i] += 1;
        }
        c
    }

    #[test]
    fn round_robin_is_exact_and_weighted() {
        assert_eq!(
            counts(LbPolicy::RoundRobin, &set(&[1, 1, 1]), 300),
            [100, 100, 100]
        );
        assert_eq!(counts(LbPolicy::RoundRobin, &set(&[3, 1]), 400), [300, 100]);
    }

    #[test]
    fn random_follows_weights_within_a_binomial_bound() {
        // 10,000 picks at p = 0.8: mean 8,000, sd 40; 6 sd = 240.
        let c = counts(LbPolicy::Random, &set(&[4, 1]), 10_000);
        assert!((c[0] as i64 - 8000).abs() < 240, "{c:?}");
    }

    #[test]
    fn least_request_avoids_busy_hosts() {
        let s = set(&[1, 1]);
        s.targets[0].active.store(100, Ordering::Relaxed);
        let c = counts(LbPolicy::LeastRequest { choice_count: 2 }, &s, 1000);
        // Only a pick of the busy host twice in a row can choose it: p = 1/4.
        assert!(c[1] > 650, "{c:?}");
    }

    #[test]
    fn no_targets_no_host() {
        assert!(
            pick(
                LbPolicy::RoundRobin,
                &HostSet::default(),
                &AtomicUsize::new(0)
            )
            .is_none()
        );
    }
}
