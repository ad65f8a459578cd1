//! Hosts: the concrete endpoints a cluster balances over, and the sets it picks from.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use envoy_types::pb::envoy::config::core::v3::{Locality, Metadata};

use crate::config::cluster::{ClusterConfig, UpstreamTransport};
use crate::config::endpoint::{EndpointConfig, Health, socket_match_applies};

/// Where a host is, once names are resolved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostAddr {
    Ip(SocketAddr),
    Pipe(PathBuf),
}

impl std::fmt::Display for HostAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ip(a) => write!(f, "{a}"),
            Self::Pipe(p) => write!(f, "{}", p.display()),
        }
    }
}

/// One upstream host.
#[derive(Debug)]
pub struct Host {
    pub addr: HostAddr,
    pub weight: u32,
    pub health: Health,
    pub priority: u32,
    pub hostname: String,
    /// The transport socket this host gets (cluster default or a transport_socket_match).
    pub transport: UpstreamTransport,
    /// The name of the matched `transport_socket_matches` entry, if any.
    pub transport_match: Option<String>,
    pub metadata: Option<Arc<Metadata>>,
    /// In-flight requests (HTTP) or connections (TCP) through this host, for LEAST_REQUEST.
    pub active: AtomicU64,
    pub locality: Option<Arc<Locality>>,
    /// Per-host stats for `/clusters`.
    pub stats: HostStats,
}

/// Envoy's per-host stats, shown by `/clusters` (not in `/stats`).
#[derive(Debug, Default)]
pub struct HostStats {
    pub cx_total: AtomicU64,
    pub cx_connect_fail: AtomicU64,
    pub rq_total: AtomicU64,
    pub rq_error: AtomicU64,
    pub rq_success: AtomicU64,
    pub rq_timeout: AtomicU64,
    pub rq_active: AtomicU64,
    pub rq_pending_active: AtomicU64,
}

// === impl HostStats ===

impl HostStats {
    /// `(name, value, is_gauge)` in Envoy's `/clusters` order.
    pub fn snapshot(&self, cx_active: u64) -> [(&'static str, u64, bool); 9] {
        let v = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("cx_active", cx_active, true),
            ("cx_connect_fail", v(&self.cx_connect_fail), false),
            ("cx_total", v(&self.cx_total), false),
            ("rq_active", v(&self.rq_active), true),
            ("rq_error", v(&self.rq_error), false),
            ("rq_pending_active", v(&self.rq_pending_active), true),
            ("rq_success", v(&self.rq_success), false),
            ("rq_timeout", v(&self.rq_timeout), false),
            ("rq_total", v(&self.rq_total), false),
        ]
    }
}

// === impl Host ===

impl Host {
    /// A host for an endpoint at a resolved address, with the transport socket Envoy would
    /// pick: the first `transport_socket_matches` entry whose criterion the endpoint's
    /// `envoy.transport_socket_match` metadata satisfies, else the cluster's own.
    pub fn new(cluster: &ClusterConfig, ep: &EndpointConfig, addr: HostAddr) -> Self {
        let matched = cluster
            .transport_socket_matches
            .iter()
            .find(|m| socket_match_applies(&m.criterion, ep.socket_match()));
        let (transport, transport_match) = match matched {
            Some(m) => (m.transport.clone(), Some(m.name.clone())),
            None => (cluster.transport.clone(), None),
        };
        Self {
            addr,
            weight: ep.weight,
            health: ep.health,
            priority: ep.priority,
            hostname: ep.hostname.clone(),
            transport,
            transport_match,
            metadata: ep.metadata.clone(),
            active: AtomicU64::new(0),
            locality: ep.locality.clone(),
            stats: HostStats::default(),
        }
    }

    /// A host that exists for one connection (ORIGINAL_DST).
    pub fn transient(cluster: &ClusterConfig, addr: SocketAddr) -> Self {
        Self {
            addr: HostAddr::Ip(addr),
            weight: 1,
            health: Health::Healthy,
            priority: 0,
            hostname: String::new(),
            transport: cluster.transport.clone(),
            transport_match: None,
            metadata: None,
            active: AtomicU64::new(0),
            locality: None,
            stats: HostStats::default(),
        }
    }

    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }
}

/// The hosts of a cluster at one moment, with what load balancing needs precomputed.
#[derive(Debug, Default)]
pub struct HostSet {
    /// Every host.
    pub all: Vec<Arc<Host>>,
    /// The hosts traffic goes to: the healthy ones of the best priority that has any
    /// (degraded ones if none is healthy, all of them if none is usable: Envoy's panic mode).
    pub targets: Vec<Arc<Host>>,
    /// Whether `targets` fell back to unhealthy hosts.
    pub panic: bool,
    /// Weighted round robin order over `targets` (indices), when weights differ.
    pub wrr: Vec<u32>,
    pub total_weight: u64,
}

// === impl HostSet ===

impl HostSet {
    pub fn new(all: Vec<Arc<Host>>) -> Self {
        let usable = |h: &&Arc<Host>, health: Health| h.health == health;
        let mut priorities: Vec<u32> = all.iter().map(|h| h.priority).collect();
        priorities.sort_unstable();
        priorities.dedup();
        let pick = |health: Health| -> Vec<Arc<Host>> {
            for p in &priorities {
                let hosts: Vec<Arc<Host>> = all
                    .iter()
                    .filter(|h| h.priority == *p && usable(h, health))
                    .cloned()
                    .collect();
                if !hosts.is_empty() {
                    return hosts;
                }
            }
            Vec::new()
        };
        let mut targets = pick(Health::Healthy);
        if targets.is_empty() {
            targets = pick(Health::Degraded);
        }
        let panic = targets.is_empty() && !all.is_empty();
        if panic {
            targets = all.clone();
        }
        let total_weight = targets.iter().map(|h| u64::from(h.weight)).sum();
        let wrr = weighted_order(&targets);
        Self {
            all,
            targets,
            panic,
            wrr,
            total_weight,
        }
    }

    pub fn healthy_count(&self) -> usize {
        self.all
            .iter()
            .filter(|h| h.health == Health::Healthy)
            .count()
    }
}

/// A smooth weighted round-robin sequence over hosts whose weights differ (empty when all
/// weights are equal and plain rotation does). Capped so huge weights cannot blow memory;
/// beyond the cap weights are scaled down proportionally.
fn weighted_order(hosts: &[Arc<Host>]) -> Vec<u32> {
    const MAX_LEN: u64 = 65_536;
    if hosts.windows(2).all(|w| w[0].weight == w[1].weight) {
        return Vec::new();
    }
    let total: u64 = hosts.iter().map(|h| u64::from(h.weight)).sum();
    let scale = if total > MAX_LEN {
        total as f64 / MAX_LEN as f64
    } else {
        1.0
    };
    let weights: Vec<i64> = hosts
        .iter()
        .map(|h| ((f64::from(h.weight) / scale).round() as i64).max(1))
        .collect();
    let sum: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut order = Vec::with_capacity(sum as usize);
    for _ in 0..sum {
        let mut best = 0;
        for i in 0..weights.len() {
            current[i] += weights[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= sum;
        order.push(best as u32);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(addr: &str, weight: u32, health: Health, priority: u32) -> Arc<Host> {
        Arc::new(Host {
            addr: HostAddr::Ip(addr.parse().unwrap()),
            weight,
            health,
            priority,
            hostname: String::new(),
            transport: UpstreamTransport::Raw,
            transport_match: None,
            metadata: None,
            active: AtomicU64::new(0),
            locality: None,
            stats: HostStats::default(),
        })
    }

    #[test]
    fn targets_are_healthy_hosts_of_the_best_priority() {
        let set = HostSet::new(vec![
            host("10.0.0.1:80", 1, Health::Unhealthy, 0),
            host("10.0.0.2:80", 1, Health::Healthy, 1),
            host("10.0.0.3:80", 1, Health::Healthy, 1),
            host("10.0.0.4:80", 1, Health::Healthy, 2),
        ]);
        let addrs: Vec<String> = set.targets.iter().map(|h| h.addr.to_string()).collect();
        assert_eq!(addrs, ["10.0.0.2:80", "10.0.0.3:80"]);
        assert!(!set.panic);
    }

    #[test]
    fn all_unhealthy_means_panic_mode() {
        let set = HostSet::new(vec![host("10.0.0.1:80", 1, Health::Unhealthy, 0)]);
        assert!(set.panic);
        assert_eq!(set.targets.len(), 1);
    }

    #[test]
    fn weighted_order_is_proportional_and_smooth() {
        let hosts = vec![
            host("10.0.0.1:80", 5, Health::Healthy, 0),
            host("10.0.0.2:80", 1, Health::Healthy, 0),
        ];
        let order = weighted_order(&hosts);
        assert_eq!(order.len(), 6);
        assert_eq!(order.iter().filter(|i| **i == 1).count(), 1);
        assert!(weighted_order(&[hosts[0].clone(), hosts[0].clone()]).is_empty());
    }
}
