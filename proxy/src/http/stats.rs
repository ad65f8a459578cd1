//! Envoy's HTTP stats: the connection manager's (`http.<stat_prefix>.*`) and the router's per
//! cluster (`cluster.<name>.upstream_rq_*`). Handles are created once; recording a stat is
//! an atomic add, and per-status counters are created on first use and cached lock-free.

use std::sync::OnceLock;

use crate::stats::{Counter, Gauge, Histogram, Scope, Store};

/// `http.<stat_prefix>.*`.
#[derive(Debug, Clone)]
pub struct HcmStats {
    pub downstream_cx_total: Counter,
    pub downstream_cx_active: Gauge,
    pub downstream_cx_http1_total: Counter,
    pub downstream_cx_http1_active: Gauge,
    pub downstream_cx_http2_total: Counter,
    pub downstream_cx_http2_active: Gauge,
    pub downstream_cx_ssl_total: Counter,
    pub downstream_cx_ssl_active: Gauge,
    pub downstream_cx_destroy: Counter,
    pub downstream_cx_destroy_remote: Counter,
    pub downstream_cx_destroy_local: Counter,
    pub downstream_cx_drain_close: Counter,
    pub downstream_cx_idle_timeout: Counter,
    pub downstream_cx_protocol_error: Counter,
    pub downstream_cx_rx_bytes_total: Counter,
    pub downstream_cx_tx_bytes_total: Counter,
    pub downstream_cx_length_ms: Histogram,
    pub downstream_rq_total: Counter,
    pub downstream_rq_http1_total: Counter,
    pub downstream_rq_http2_total: Counter,
    pub downstream_rq_active: Gauge,
    pub downstream_rq_completed: Counter,
    pub downstream_rq_xx: [Counter; 5],
    pub downstream_rq_time: Histogram,
    pub downstream_rq_timeout: Counter,
    pub downstream_rq_idle_timeout: Counter,
    pub downstream_rq_header_timeout: Counter,
    pub downstream_rq_too_large: Counter,
    pub downstream_rq_rx_reset: Counter,
    pub downstream_rq_tx_reset: Counter,
    pub downstream_rq_ws_on_non_ws_route: Counter,
    pub downstream_rq_redirected_with_normalized_path: Counter,
    pub downstream_rq_failed_path_normalization: Counter,
    pub no_route: Counter,
    pub no_cluster: Counter,
    pub rq_redirect: Counter,
    pub rq_direct_response: Counter,
    pub rq_total: Counter,
    pub rq_reset_after_downstream_response_started: Counter,
}

// === impl HcmStats ===

impl HcmStats {
    pub fn new(store: &Store, stat_prefix: &str) -> Self {
        let s = store.scope(format!("http.{stat_prefix}."));
        Self {
            downstream_cx_total: s.counter("downstream_cx_total"),
            downstream_cx_active: s.gauge("downstream_cx_active"),
            downstream_cx_http1_total: s.counter("downstream_cx_http1_total"),
            downstream_cx_http1_active: s.gauge("downstream_cx_http1_active"),
            downstream_cx_http2_total: s.counter("downstream_cx_http2_total"),
            downstream_cx_http2_active: s.gauge("downstream_cx_http2_active"),
            downstream_cx_ssl_total: s.counter("downstream_cx_ssl_total"),
            downstream_cx_ssl_active: s.gauge("downstream_cx_ssl_active"),
            downstream_cx_destroy: s.counter("downstream_cx_destroy"),
            downstream_cx_destroy_remote: s.counter("downstream_cx_destroy_remote"),
            downstream_cx_destroy_local: s.counter("downstream_cx_destroy_local"),
            downstream_cx_drain_close: s.counter("downstream_cx_drain_close"),
            downstream_cx_idle_timeout: s.counter("downstream_cx_idle_timeout"),
            downstream_cx_protocol_error: s.counter("downstream_cx_protocol_error"),
            downstream_cx_rx_bytes_total: s.counter("downstream_cx_rx_bytes_total"),
            downstream_cx_tx_bytes_total: s.counter("downstream_cx_tx_bytes_total"),
            downstream_cx_length_ms: s.histogram("downstream_cx_length_ms"),
            downstream_rq_total: s.counter("downstream_rq_total"),
            downstream_rq_http1_total: s.counter("downstream_rq_http1_total"),
            downstream_rq_http2_total: s.counter("downstream_rq_http2_total"),
            downstream_rq_active: s.gauge("downstream_rq_active"),
            downstream_rq_completed: s.counter("downstream_rq_completed"),
            downstream_rq_xx: xx(&s, "downstream_rq_"),
            downstream_rq_time: s.histogram("downstream_rq_time"),
            downstream_rq_timeout: s.counter("downstream_rq_timeout"),
            downstream_rq_idle_timeout: s.counter("downstream_rq_idle_timeout"),
            downstream_rq_header_timeout: s.counter("downstream_rq_header_timeout"),
            downstream_rq_too_large: s.counter("downstream_rq_too_large"),
            downstream_rq_rx_reset: s.counter("downstream_rq_rx_reset"),
            downstream_rq_tx_reset: s.counter("downstream_rq_tx_reset"),
            downstream_rq_ws_on_non_ws_route: s.counter("downstream_rq_ws_on_non_ws_route"),
            downstream_rq_redirected_with_normalized_path: s
                .counter("downstream_rq_redirected_with_normalized_path"),
            downstream_rq_failed_path_normalization: s
                .counter("downstream_rq_failed_path_normalization"),
            no_route: s.counter("no_route"),
            no_cluster: s.counter("no_cluster"),
            rq_redirect: s.counter("rq_redirect"),
            rq_direct_response: s.counter("rq_direct_response"),
            rq_total: s.counter("rq_total"),
            rq_reset_after_downstream_response_started: s
                .counter("rq_reset_after_downstream_response_started"),
        }
    }

    /// Counts a finished request by status class.
    pub fn record_status(&self, status: u16) {
        if let Some(c) = class(status).and_then(|i| self.downstream_rq_xx.get(i)) {
            c.inc();
        }
    }
}

fn xx(s: &Scope, prefix: &str) -> [Counter; 5] {
    [1, 2, 3, 4, 5].map(|i| s.counter(&format!("{prefix}{i}xx")))
}

fn class(status: u16) -> Option<usize> {
    matches!(status, 100..=599).then(|| usize::from(status / 100 - 1))
}

/// A cluster's router stats (`cluster.<name>.upstream_rq_*`).
#[derive(Debug)]
pub struct ClusterHttpStats {
    scope: Scope,
    pub upstream_rq_total: Counter,
    pub upstream_rq_active: Gauge,
    pub upstream_rq_completed: Counter,
    pub upstream_rq_time: Histogram,
    pub upstream_rq_xx: [Counter; 5],
    pub upstream_rq_pending_total: Counter,
    pub upstream_rq_pending_active: Gauge,
    pub upstream_rq_pending_overflow: Counter,
    pub upstream_rq_pending_failure_eject: Counter,
    pub upstream_rq_timeout: Counter,
    pub upstream_rq_per_try_timeout: Counter,
    pub upstream_rq_rx_reset: Counter,
    pub upstream_rq_tx_reset: Counter,
    pub upstream_rq_retry: Counter,
    pub upstream_rq_retry_success: Counter,
    pub upstream_rq_retry_overflow: Counter,
    pub upstream_rq_retry_limit_exceeded: Counter,
    pub upstream_rq_retry_backoff_exponential: Counter,
    pub upstream_rq_max_duration_reached: Counter,
    pub upstream_cx_http1_total: Counter,
    pub upstream_cx_http2_total: Counter,
    pub upstream_cx_max_requests: Counter,
    pub upstream_cx_close_notify: Counter,
    /// `upstream_rq_<code>`, created on first use (indexed by code - 100).
    codes: Box<[OnceLock<Counter>]>,
}

// === impl ClusterHttpStats ===

impl ClusterHttpStats {
    pub fn new(store: &Store, stat_name: &str) -> Self {
        let s = store.scope(format!("cluster.{stat_name}."));
        Self {
            upstream_rq_total: s.counter("upstream_rq_total"),
            upstream_rq_active: s.gauge("upstream_rq_active"),
            upstream_rq_completed: s.counter("upstream_rq_completed"),
            upstream_rq_time: s.histogram("upstream_rq_time"),
            upstream_rq_xx: xx(&s, "upstream_rq_"),
            upstream_rq_pending_total: s.counter("upstream_rq_pending_total"),
            upstream_rq_pending_active: s.gauge("upstream_rq_pending_active"),
            upstream_rq_pending_overflow: s.counter("upstream_rq_pending_overflow"),
            upstream_rq_pending_failure_eject: s.counter("upstream_rq_pending_failure_eject"),
            upstream_rq_timeout: s.counter("upstream_rq_timeout"),
            upstream_rq_per_try_timeout: s.counter("upstream_rq_per_try_timeout"),
            upstream_rq_rx_reset: s.counter("upstream_rq_rx_reset"),
            upstream_rq_tx_reset: s.counter("upstream_rq_tx_reset"),
            upstream_rq_retry: s.counter("upstream_rq_retry"),
            upstream_rq_retry_success: s.counter("upstream_rq_retry_success"),
            upstream_rq_retry_overflow: s.counter("upstream_rq_retry_overflow"),
            upstream_rq_retry_limit_exceeded: s.counter("upstream_rq_retry_limit_exceeded"),
            upstream_rq_retry_backoff_exponential: s
                .counter("upstream_rq_retry_backoff_exponential"),
            upstream_rq_max_duration_reached: s.counter("upstream_rq_max_duration_reached"),
            upstream_cx_http1_total: s.counter("upstream_cx_http1_total"),
            upstream_cx_http2_total: s.counter("upstream_cx_http2_total"),
            upstream_cx_max_requests: s.counter("upstream_cx_max_requests"),
            upstream_cx_close_notify: s.counter("upstream_cx_close_notify"),
            codes: (100..600).map(|_| OnceLock::new()).collect(),
            scope: s,
        }
    }

    /// Counts an upstream response: `upstream_rq_<code>`, `upstream_rq_<N>xx`,
    /// `upstream_rq_completed`.
    pub fn record_status(&self, status: u16) {
        if let Some(slot) = status
            .checked_sub(100)
            .and_then(|i| self.codes.get(usize::from(i)))
        {
            slot.get_or_init(|| self.scope.counter(&format!("upstream_rq_{status}")))
                .inc();
        }
        if let Some(c) = class(status).and_then(|i| self.upstream_rq_xx.get(i)) {
            c.inc();
        }
        self.upstream_rq_completed.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_counters_use_envoy_names() {
        let store = Store::new(None).unwrap();
        let s = ClusterHttpStats::new(&store, "backend");
        s.record_status(503);
        s.record_status(503);
        s.record_status(200);
        assert_eq!(store.value("cluster.backend.upstream_rq_503"), Some(2));
        assert_eq!(store.value("cluster.backend.upstream_rq_5xx"), Some(2));
        assert_eq!(store.value("cluster.backend.upstream_rq_200"), Some(1));
        assert_eq!(
            store.value("cluster.backend.upstream_rq_completed"),
            Some(3)
        );
        let h = HcmStats::new(&store, "ingress");
        h.record_status(404);
        assert_eq!(store.value("http.ingress.downstream_rq_4xx"), Some(1));
    }
}
