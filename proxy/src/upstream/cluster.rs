//! A live cluster: its configuration, its current hosts, its stats and circuit breakers.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use super::host::{Host, HostAddr, HostSet};
use super::lb;
use crate::config::cluster::{ClusterConfig, Discovery};
use crate::config::endpoint::{EndpointConfig, Health, HostAddress};
use crate::stats::{Counter, Gauge, Histogram, Scope, Store};
use crate::tls::TlsResources;
use crate::tls::cluster::ClusterTls;

/// What choosing and opening an upstream connection may know about the downstream one.
#[derive(Debug, Clone, Copy, Default)]
pub struct LbContext {
    /// The downstream connection's original destination (for ORIGINAL_DST clusters).
    pub original_dst: Option<SocketAddr>,
    /// Connect from the downstream peer's address (`original_src`).
    pub original_src: Option<OriginalSrc>,
}

/// `envoy.filters.listener.original_src`: the upstream socket is transparent, bound to the
/// downstream peer's IP (any port) and marked, so the app sees the real client and its
/// replies route back through the proxy (iptables-init's TPROXY mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginalSrc {
    pub ip: std::net::IpAddr,
    /// SO_MARK; 0 sets none.
    pub mark: u32,
}

/// Envoy's cluster stats (`cluster.<name>.*`).
#[derive(Debug, Clone)]
pub struct ClusterStats {
    pub upstream_cx_total: Counter,
    pub upstream_cx_active: Gauge,
    pub upstream_cx_connect_fail: Counter,
    pub upstream_cx_connect_timeout: Counter,
    pub upstream_cx_overflow: Counter,
    pub upstream_cx_none_healthy: Counter,
    pub upstream_cx_destroy: Counter,
    pub upstream_cx_destroy_local: Counter,
    pub upstream_cx_destroy_remote: Counter,
    pub upstream_cx_rx_bytes_total: Counter,
    pub upstream_cx_tx_bytes_total: Counter,
    pub upstream_cx_connect_ms: Histogram,
    pub upstream_cx_length_ms: Histogram,
    pub bind_errors: Counter,
    pub membership_total: Gauge,
    pub membership_healthy: Gauge,
    pub membership_degraded: Gauge,
    pub membership_excluded: Gauge,
    pub membership_change: Counter,
    pub lb_healthy_panic: Counter,
    pub max_host_weight: Gauge,
    pub update_attempt: Counter,
    pub update_success: Counter,
    pub update_empty: Counter,
    pub update_no_rebuild: Counter,
    pub cx_open: Gauge,
    pub rq_open: Gauge,
    pub rq_pending_open: Gauge,
    pub rq_retry_open: Gauge,
    pub original_dst_host_invalid: Counter,
    pub upstream_rq_total: Counter,
    pub upstream_rq_active: Gauge,
    pub upstream_rq_pending_total: Counter,
    pub upstream_rq_pending_active: Gauge,
    pub upstream_rq_pending_failure_eject: Counter,
    pub upstream_rq_pending_overflow: Counter,
    pub upstream_cx_connect_attempts_exceeded: Counter,
    pub upstream_cx_destroy_with_active_rq: Counter,
    pub upstream_cx_destroy_local_with_active_rq: Counter,
    pub upstream_cx_destroy_remote_with_active_rq: Counter,
    pub scope: Scope,
}

/// Envoy's cluster counters we declare (so dashboards and `/stats` see Envoy's full set) but
/// whose events this proxy does not produce yet: retries, HTTP/3, subsets, zone routing.
const DECLARED_COUNTERS: &[&str] = &[
    "assignment_stale",
    "assignment_timeout_received",
    "assignment_use_cached",
    "lb_local_cluster_not_ok",
    "lb_recalculate_zone_structures",
    "lb_subsets_created",
    "lb_subsets_fallback",
    "lb_subsets_fallback_panic",
    "lb_subsets_removed",
    "lb_subsets_selected",
    "lb_zone_cluster_too_small",
    "lb_zone_no_capacity_left",
    "lb_zone_routing_all_directly",
    "lb_zone_routing_cross_zone",
    "lb_zone_routing_sampled",
    "retry_or_shadow_abandoned",
    "update_failure",
    "upstream_cx_close_notify",
    "upstream_cx_connect_with_0_rtt",
    "upstream_cx_http1_total",
    "upstream_cx_http2_total",
    "upstream_cx_http3_total",
    "upstream_cx_idle_timeout",
    "upstream_cx_max_duration_reached",
    "upstream_cx_max_requests",
    "upstream_cx_pool_overflow",
    "upstream_cx_preconnect_skipped",
    "upstream_cx_protocol_error",
    "upstream_flow_control_backed_up_total",
    "upstream_flow_control_drained_total",
    "upstream_flow_control_paused_reading_total",
    "upstream_flow_control_resumed_reading_total",
    "upstream_http3_broken",
    "upstream_internal_redirect_failed_total",
    "upstream_internal_redirect_succeeded_total",
    "upstream_rq_0rtt",
    "upstream_rq_active_overflow",
    "upstream_rq_cancelled",
    "upstream_rq_completed",
    "upstream_rq_maintenance_mode",
    "upstream_rq_max_duration_reached",
    "upstream_rq_per_try_idle_timeout",
    "upstream_rq_per_try_timeout",
    "upstream_rq_retry",
    "upstream_rq_retry_backoff_exponential",
    "upstream_rq_retry_backoff_ratelimited",
    "upstream_rq_retry_limit_exceeded",
    "upstream_rq_retry_overflow",
    "upstream_rq_retry_success",
    "upstream_rq_rx_reset",
    "upstream_rq_rx_reset_no_error",
    "upstream_rq_timeout",
    "upstream_rq_tx_reset",
];

/// Envoy's cluster gauges declared the same way.
const DECLARED_GAUGES: &[&str] = &[
    "lb_subsets_active",
    "upstream_cx_rx_bytes_buffered",
    "upstream_cx_tx_bytes_buffered",
    "upstream_queue_overloaded",
    "version",
    "warming_state",
];

// === impl ClusterStats ===

impl ClusterStats {
    pub fn new(store: &Store, stat_name: &str) -> Self {
        let s = store.scope(format!("cluster.{stat_name}."));
        let cb = s.scope("circuit_breakers").scope("default");
        for name in DECLARED_COUNTERS {
            s.counter(name);
        }
        for name in DECLARED_GAUGES {
            s.gauge(name);
        }
        // Envoy reports both priorities; only `default` thresholds are enforced here.
        cb.gauge("cx_pool_open");
        let high = s.scope("circuit_breakers").scope("high");
        for name in [
            "cx_open",
            "cx_pool_open",
            "rq_open",
            "rq_pending_open",
            "rq_retry_open",
        ] {
            high.gauge(name);
        }
        Self {
            upstream_cx_total: s.counter("upstream_cx_total"),
            upstream_cx_active: s.gauge("upstream_cx_active"),
            upstream_cx_connect_fail: s.counter("upstream_cx_connect_fail"),
            upstream_cx_connect_timeout: s.counter("upstream_cx_connect_timeout"),
            upstream_cx_overflow: s.counter("upstream_cx_overflow"),
            upstream_cx_none_healthy: s.counter("upstream_cx_none_healthy"),
            upstream_cx_destroy: s.counter("upstream_cx_destroy"),
            upstream_cx_destroy_local: s.counter("upstream_cx_destroy_local"),
            upstream_cx_destroy_remote: s.counter("upstream_cx_destroy_remote"),
            upstream_cx_rx_bytes_total: s.counter("upstream_cx_rx_bytes_total"),
            upstream_cx_tx_bytes_total: s.counter("upstream_cx_tx_bytes_total"),
            upstream_cx_connect_ms: s.histogram("upstream_cx_connect_ms"),
            upstream_cx_length_ms: s.histogram("upstream_cx_length_ms"),
            bind_errors: s.counter("bind_errors"),
            membership_total: s.gauge("membership_total"),
            membership_healthy: s.gauge("membership_healthy"),
            membership_degraded: s.gauge("membership_degraded"),
            membership_excluded: s.gauge("membership_excluded"),
            membership_change: s.counter("membership_change"),
            lb_healthy_panic: s.counter("lb_healthy_panic"),
            max_host_weight: s.gauge("max_host_weight"),
            update_attempt: s.counter("update_attempt"),
            update_success: s.counter("update_success"),
            update_empty: s.counter("update_empty"),
            update_no_rebuild: s.counter("update_no_rebuild"),
            cx_open: cb.gauge("cx_open"),
            rq_open: cb.gauge("rq_open"),
            rq_pending_open: cb.gauge("rq_pending_open"),
            rq_retry_open: cb.gauge("rq_retry_open"),
            original_dst_host_invalid: s.counter("original_dst_host_invalid"),
            upstream_rq_total: s.counter("upstream_rq_total"),
            upstream_rq_active: s.gauge("upstream_rq_active"),
            upstream_rq_pending_total: s.counter("upstream_rq_pending_total"),
            upstream_rq_pending_active: s.gauge("upstream_rq_pending_active"),
            upstream_rq_pending_failure_eject: s.counter("upstream_rq_pending_failure_eject"),
            upstream_rq_pending_overflow: s.counter("upstream_rq_pending_overflow"),
            upstream_cx_connect_attempts_exceeded: s
                .counter("upstream_cx_connect_attempts_exceeded"),
            upstream_cx_destroy_with_active_rq: s.counter("upstream_cx_destroy_with_active_rq"),
            upstream_cx_destroy_local_with_active_rq: s
                .counter("upstream_cx_destroy_local_with_active_rq"),
            upstream_cx_destroy_remote_with_active_rq: s
                .counter("upstream_cx_destroy_remote_with_active_rq"),
            scope: s,
        }
    }
}

/// Which side closed an upstream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    Local,
    Remote,
}

impl ClusterStats {
    /// Accounts a connection closed while a request (for TCP, the proxied connection) was
    /// still using it; `upstream_cx_destroy` itself is counted when the connection drops.
    pub fn closed_with_active_rq(&self, by: Close) {
        self.upstream_cx_destroy_with_active_rq.inc();
        match by {
            Close::Local => {
                self.upstream_cx_destroy_local.inc();
                self.upstream_cx_destroy_local_with_active_rq.inc();
            }
            Close::Remote => {
                self.upstream_cx_destroy_remote.inc();
                self.upstream_cx_destroy_remote_with_active_rq.inc();
            }
        }
    }
}

/// A cluster in service.
#[derive(Debug)]
pub struct Cluster {
    pub config: Arc<ClusterConfig>,
    pub stats: ClusterStats,
    hosts: ArcSwap<HostSet>,
    rr: AtomicUsize,
    /// Open upstream connections, for the max_connections circuit breaker.
    connections: AtomicU64,
    /// Whether the cluster has its first set of endpoints (EDS clusters start without).
    warm: AtomicBool,
    /// When the cluster was added or last modified, for `/config_dump`.
    pub last_updated: SystemTime,
    /// TLS connectors for the cluster's TLS transports, built once with the cluster.
    pub tls: ClusterTls,
}

// === impl Cluster ===

impl Cluster {
    /// A cluster with its configured endpoints (STATIC), or none yet (EDS, DNS), and no
    /// secrets: TLS transports work only with inline certificates.
    pub fn new(config: ClusterConfig, store: &Store) -> Self {
        Self::with_tls(config, store, &TlsResources::default())
    }

    /// A cluster whose TLS transports take their secrets from `tls`.
    pub fn with_tls(config: ClusterConfig, store: &Store, tls: &TlsResources) -> Self {
        let stats = ClusterStats::new(store, &config.stat_name);
        let tls = ClusterTls::new(&config, tls, Some(&stats.scope));
        let warm = !matches!(
            config.discovery,
            Discovery::Eds { .. } | Discovery::StrictDns { .. } | Discovery::LogicalDns { .. }
        );
        let cluster = Self {
            config: Arc::new(config),
            stats,
            hosts: ArcSwap::from_pointee(HostSet::default()),
            rr: AtomicUsize::new(0),
            connections: AtomicU64::new(0),
            warm: AtomicBool::new(warm),
            last_updated: SystemTime::now(),
            tls,
        };
        if let Discovery::Static(endpoints) = &cluster.config.discovery {
            let hosts = endpoints
                .iter()
                .filter_map(|ep| match &ep.address {
                    HostAddress::Ip(a) => Some((ep, HostAddr::Ip(*a))),
                    HostAddress::Pipe(p) => Some((ep, HostAddr::Pipe(p.clone()))),
                    HostAddress::Dns { .. } => None,
                })
                .map(|(ep, addr)| Arc::new(Host::new(&cluster.config, ep, addr)))
                .collect();
            cluster.set_hosts(hosts);
        }
        cluster
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Whether the cluster has received its endpoints (always true for STATIC and
    /// ORIGINAL_DST clusters) and the secrets of its TLS transports, as Envoy's warming.
    pub fn is_warm(&self) -> bool {
        self.warm.load(Ordering::Acquire) && self.tls.is_ready()
    }

    pub fn hosts(&self) -> Arc<HostSet> {
        self.hosts.load_full()
    }

    /// Replaces the hosts with those of new endpoint configs (EDS).
    pub fn update_endpoints(&self, endpoints: &[EndpointConfig]) {
        self.stats.update_attempt.inc();
        let hosts = endpoints
            .iter()
            .filter_map(|ep| match &ep.address {
                HostAddress::Ip(a) => Some(Arc::new(Host::new(&self.config, ep, HostAddr::Ip(*a)))),
                HostAddress::Pipe(p) => Some(Arc::new(Host::new(
                    &self.config,
                    ep,
                    HostAddr::Pipe(p.clone()),
                ))),
                HostAddress::Dns { .. } => None,
            })
            .collect::<Vec<_>>();
        if hosts.is_empty() {
            self.stats.update_empty.inc();
        }
        self.set_hosts(hosts);
        self.stats.update_success.inc();
    }

    /// Replaces the hosts (resolved by DNS, or built from endpoints).
    pub fn set_hosts(&self, hosts: Vec<Arc<Host>>) {
        let set = HostSet::new(hosts);
        let s = &self.stats;
        let count = |h: Health| set.all.iter().filter(|x| x.health == h).count() as u64;
        let before = self.hosts.load();
        // Envoy resolves a host's transport socket once, when the host is created, and
        // counts it under the matched `transport_socket_matches` name (or `default`).
        let known: HashSet<&HostAddr> = before.all.iter().map(|h| &h.addr).collect();
        let mut matches: HashMap<&str, u64> = HashMap::new();
        for host in set.all.iter().filter(|h| !known.contains(&h.addr)) {
            *matches
                .entry(host.transport_match.as_deref().unwrap_or("default"))
                .or_default() += 1;
        }
        for (name, n) in matches {
            s.scope.counter(&format!("{name}.total_match_count")).add(n);
        }
        let changed = before.all.len() != set.all.len()
            || before
                .all
                .iter()
                .zip(&set.all)
                .any(|(a, b)| a.addr != b.addr || a.weight != b.weight || a.health != b.health);
        if changed {
            s.membership_change.inc();
        }
        s.membership_total.set(set.all.len() as u64);
        s.membership_healthy.set(count(Health::Healthy));
        s.membership_degraded.set(count(Health::Degraded));
        s.membership_excluded.set(0);
        // Envoy computes it for dynamic host lists (EDS, STRICT_DNS) only.
        if matches!(
            self.config.discovery,
            Discovery::Eds { .. } | Discovery::StrictDns { .. }
        ) {
            s.max_host_weight.set(
                set.all
                    .iter()
                    .map(|h| u64::from(h.weight))
                    .max()
                    .unwrap_or(0),
            );
        }
        self.hosts.store(Arc::new(set));
        self.warm.store(true, Ordering::Release);
    }

    /// Picks the host for a new connection or request.
    pub fn choose(&self, ctx: &LbContext) -> Option<Arc<Host>> {
        if let Discovery::OriginalDst { port_override } = self.config.discovery {
            let Some(mut dst) = ctx.original_dst else {
                self.stats.original_dst_host_invalid.inc();
                return None;
            };
            if let Some(port) = port_override {
                dst.set_port(port);
            }
            return Some(Arc::new(Host::transient(&self.config, dst)));
        }
        let set = self.hosts.load();
        if set.panic {
            self.stats.lb_healthy_panic.inc();
        }
        let host = lb::pick(self.config.lb_policy, &set, &self.rr);
        if host.is_none() {
            self.stats.upstream_cx_none_healthy.inc();
        }
        host
    }

    /// Takes one slot of the max_connections circuit breaker, or `None` if it is open.
    pub fn acquire_connection(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let max = self.config.thresholds.max_connections;
        let prev = self.connections.fetch_add(1, Ordering::AcqRel);
        if prev >= max {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            self.stats.upstream_cx_overflow.inc();
            self.stats.cx_open.set(1);
            return None;
        }
        Some(ConnectionSlot(self.clone()))
    }

    pub fn open_connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

/// One open upstream connection counted against max_connections; released on drop.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<Cluster>);

impl ConnectionSlot {
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.0
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let prev = self.0.connections.fetch_sub(1, Ordering::AcqRel);
        if prev <= self.0.config.thresholds.max_connections {
            self.0.stats.cx_open.set(0);
        }
    }
}
