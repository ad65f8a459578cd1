//! Envoy's xDS subscription statistics, kept by the client and rendered with Envoy's names so
//! the proxy's `/stats` can show them unchanged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::Service;
use crate::resource::ResourceType;

/// A snapshot of the client's statistics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Whether this client feeds `control_plane.*` (the ADS client does, an SDS client not).
    service: Option<Service>,
    /// Whether a stream to the server is currently established.
    pub connected: bool,
    /// Per-type subscription statistics (Envoy keeps these for CDS and LDS).
    pub types: BTreeMap<ResourceType, SubscriptionStats>,
    /// Per-resource statistics for named subscriptions (EDS, RDS, SDS), keyed by resource name;
    /// Envoy keeps one subscription per cluster, route configuration and secret.
    pub resources: BTreeMap<ResourceType, BTreeMap<String, SubscriptionStats>>,
}

/// Envoy's subscription statistics (`config.subscription` stats).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscriptionStats {
    /// Responses processed plus initial fetch timeouts.
    pub update_attempt: u64,
    /// Updates accepted.
    pub update_success: u64,
    /// Updates rejected (NACKed), wholly or in part.
    pub update_rejected: u64,
    /// Stream failures while subscribed.
    pub update_failure: u64,
    /// Accepted updates that carried no resources.
    pub update_empty: u64,
    /// Initial fetches that timed out.
    pub init_fetch_timeout: u64,
    /// The last accepted version.
    pub version_text: String,
}

/// One rendered stat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Envoy's full stat name, e.g. `cluster_manager.cds.update_success`.
    pub name: String,
    /// Its value.
    pub value: StatValue,
}

/// The kind and value of a stat, as Envoy distinguishes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatValue {
    /// A monotonically increasing count.
    Counter(u64),
    /// A current level.
    Gauge(u64),
    /// A text readout (e.g. `version_text`).
    Text(String),
}

/// How a response ended for the stats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Accepted { empty: bool },
    Rejected,
}

/// The writer side, shared between the client task and its handles.
#[derive(Clone, Debug, Default)]
pub(crate) struct StatsRecorder {
    inner: Arc<Mutex<Stats>>,
}

// === impl Stats ===

impl Stats {
    /// Stats under Envoy's names: `control_plane.connected_state`,
    /// `cluster_manager.cds.*`, `listener_manager.lds.*`, `cluster.<name>.*` for EDS and
    /// `sds.<name>.*` for secrets. RDS stats live under the HTTP connection manager's
    /// `stat_prefix` in Envoy (`http.<prefix>.rds.<name>.*`), which the proxy knows and this
    /// client does not: render them from [`Stats::resources`].
    pub fn envoy_stats(&self) -> Vec<Stat> {
        let mut out = Vec::new();
        if self.service == Some(Service::Aggregated) {
            out.push(Stat {
                name: "control_plane.connected_state".into(),
                value: StatValue::Gauge(u64::from(self.connected)),
            });
        }
        for (resource_type, prefix) in [
            (ResourceType::Cluster, "cluster_manager.cds"),
            (ResourceType::Listener, "listener_manager.lds"),
        ] {
            if let Some(stats) = self.types.get(&resource_type) {
                stats.render(prefix, &mut out);
            }
        }
        for (resource_type, prefix) in [
            (ResourceType::ClusterLoadAssignment, "cluster"),
            (ResourceType::Secret, "sds"),
        ] {
            for (name, stats) in self.resources.get(&resource_type).into_iter().flatten() {
                stats.render(&format!("{prefix}.{name}"), &mut out);
            }
        }
        out
    }

    /// One rendered stat by full name, for tests and the admin endpoint.
    pub fn get(&self, name: &str) -> Option<StatValue> {
        self.envoy_stats()
            .into_iter()
            .find(|s| s.name == name)
            .map(|s| s.value)
    }

    /// The stats of one named subscription (e.g. an RDS route configuration).
    pub fn resource(&self, resource_type: ResourceType, name: &str) -> Option<&SubscriptionStats> {
        self.resources.get(&resource_type)?.get(name)
    }
}

// === impl SubscriptionStats ===

impl SubscriptionStats {
    fn render(&self, prefix: &str, out: &mut Vec<Stat>) {
        let counters = [
            ("update_attempt", self.update_attempt),
            ("update_success", self.update_success),
            ("update_rejected", self.update_rejected),
            ("update_failure", self.update_failure),
            ("update_empty", self.update_empty),
            ("init_fetch_timeout", self.init_fetch_timeout),
        ];
        for (name, value) in counters {
            out.push(Stat {
                name: format!("{prefix}.{name}"),
                value: StatValue::Counter(value),
            });
        }
        out.push(Stat {
            name: format!("{prefix}.version_text"),
            value: StatValue::Text(self.version_text.clone()),
        });
    }

    fn record(&mut self, outcome: Outcome, version: &str) {
        self.update_attempt += 1;
        match outcome {
            Outcome::Accepted { empty } => {
                self.update_success += 1;
                if empty {
                    self.update_empty += 1;
                }
                self.version_text = version.to_string();
            }
            Outcome::Rejected => self.update_rejected += 1,
        }
    }
}

// === impl StatsRecorder ===

impl StatsRecorder {
    pub(crate) fn new(service: Service) -> Self {
        let recorder = Self::default();
        recorder.with(|s| s.service = Some(service));
        recorder
    }

    pub(crate) fn snapshot(&self) -> Stats {
        self.with(|s| s.clone())
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.with(|s| s.connected = connected);
    }

    /// Makes sure a subscription's stats exist (Envoy creates them with the subscription).
    pub(crate) fn subscribe_type(&self, resource_type: ResourceType) {
        self.with(|s| {
            s.types.entry(resource_type).or_default();
        });
    }

    pub(crate) fn subscribe_resource(&self, resource_type: ResourceType, name: &str) {
        self.with(|s| {
            s.resources
                .entry(resource_type)
                .or_default()
                .entry(name.to_string())
                .or_default();
        });
    }

    pub(crate) fn unsubscribe_resource(&self, resource_type: ResourceType, name: &str) {
        self.with(|s| {
            if let Some(names) = s.resources.get_mut(&resource_type) {
                names.remove(name);
            }
        });
    }

    pub(crate) fn record_type(&self, resource_type: ResourceType, outcome: Outcome, version: &str) {
        self.with(|s| {
            s.types
                .entry(resource_type)
                .or_default()
                .record(outcome, version)
        });
    }

    /// Records an outcome for named subscriptions that exist (unsubscribed names are skipped).
    pub(crate) fn record_resources<'a>(
        &self,
        resource_type: ResourceType,
        outcomes: impl IntoIterator<Item = (&'a str, Outcome, &'a str)>,
    ) {
        self.with(|s| {
            let Some(names) = s.resources.get_mut(&resource_type) else {
                return;
            };
            for (name, outcome, version) in outcomes {
                if let Some(stats) = names.get_mut(name) {
                    stats.record(outcome, version);
                }
            }
        });
    }

    /// A stream failed: `update_failure` for every subscription, as Envoy's
    /// `ConnectionFailure` does.
    pub(crate) fn record_failure(&self) {
        self.with(|s| {
            s.connected = false;
            for stats in s.types.values_mut() {
                stats.update_failure += 1;
            }
            for stats in s.resources.values_mut().flat_map(|m| m.values_mut()) {
                stats.update_failure += 1;
            }
        });
    }

    pub(crate) fn record_fetch_timeout(&self, resource_type: ResourceType) {
        self.with(|s| {
            let stats = s.types.entry(resource_type).or_default();
            stats.update_attempt += 1;
            stats.init_fetch_timeout += 1;
            for stats in s.resources.get_mut(&resource_type).into_iter().flatten() {
                stats.1.update_attempt += 1;
                stats.1.init_fetch_timeout += 1;
            }
        });
    }

    fn with<T>(&self, f: impl FnOnce(&mut Stats) -> T) -> T {
        // Stats are plain counters: a panic elsewhere cannot leave them inconsistent.
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_envoy_names() {
        let rec = StatsRecorder::new(Service::Aggregated);
        rec.set_connected(true);
        rec.subscribe_type(ResourceType::Cluster);
        rec.record_type(
            ResourceType::Cluster,
            Outcome::Accepted { empty: false },
            "v1",
        );
        rec.record_type(ResourceType::Cluster, Outcome::Rejected, "v2");
        rec.subscribe_resource(ResourceType::Secret, "default");
        rec.record_resources(
            ResourceType::Secret,
            [("default", Outcome::Accepted { empty: false }, "s1")],
        );
        let stats = rec.snapshot();
        assert_eq!(
            stats.get("control_plane.connected_state"),
            Some(StatValue::Gauge(1))
        );
        assert_eq!(
            stats.get("cluster_manager.cds.update_attempt"),
            Some(StatValue::Counter(2))
        );
        assert_eq!(
            stats.get("cluster_manager.cds.update_rejected"),
            Some(StatValue::Counter(1))
        );
        assert_eq!(
            stats.get("cluster_manager.cds.version_text"),
            Some(StatValue::Text("v1".into()))
        );
        assert_eq!(
            stats.get("sds.default.update_success"),
            Some(StatValue::Counter(1))
        );
        assert_eq!(stats.get("listener_manager.lds.update_attempt"), None);
    }

    #[test]
    fn sds_client_has_no_control_plane_gauge() {
        let rec = StatsRecorder::new(Service::Secret);
        assert_eq!(rec.snapshot().get("control_plane.connected_state"), None);
    }
}
