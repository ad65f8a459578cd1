//! Route configurations by name, for HCMs that use RDS. The xDS side replaces a table
//! atomically; a connection manager holds the slot and loads the current table once per
//! stream (one atomic load, no lock).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;

use super::route::RouteTable;
use super::route::config::Validation;
use crate::config::ConfigError;
use crate::upstream::ClusterManager;

/// The current table of one route configuration name (none until RDS delivers it).
#[derive(Debug, Default)]
pub struct RouteSlot {
    table: ArcSwapOption<RouteTable>,
    /// What RDS last delivered for this name, for `/config_dump`.
    applied: ArcSwapOption<Applied>,
}

/// A route configuration as RDS delivered it.
#[derive(Debug, Clone)]
pub struct Applied {
    pub proto: Arc<RouteConfiguration>,
    pub version_info: String,
    pub last_updated: SystemTime,
}

// === impl RouteSlot ===

impl RouteSlot {
    /// The table for a new stream.
    pub fn current(&self) -> Option<Arc<RouteTable>> {
        self.table.load_full()
    }
}

/// Every route configuration name some HCM uses.
#[derive(Debug)]
pub struct RdsStore {
    slots: Mutex<HashMap<String, Arc<RouteSlot>>>,
    clusters: Option<Arc<ClusterManager>>,
    /// Some connection manager was built: Envoy creates its route config provider manager
    /// (and the route dumps of `/config_dump`) with the first one.
    used: AtomicBool,
}

// === impl RdsStore ===

impl RdsStore {
    /// A store; with a cluster manager, route configs that set `validate_clusters` are
    /// checked against it.
    pub fn new(clusters: Option<Arc<ClusterManager>>) -> Arc<Self> {
        Arc::new(Self {
            slots: Mutex::default(),
            clusters,
            used: AtomicBool::new(false),
        })
    }

    /// Records that a connection manager was built (with inline routes or RDS).
    pub fn mark_used(&self) {
        self.used.store(true, Ordering::Relaxed);
    }

    /// Whether any connection manager was ever built.
    pub fn is_used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<RouteSlot>>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The slot for a route configuration name (an HCM with `rds` calls this when built).
    pub fn subscribe(&self, name: &str) -> Arc<RouteSlot> {
        self.slots().entry(name.to_string()).or_default().clone()
    }

    /// The names to request over RDS: those some live HCM holds.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .slots()
            .iter()
            .filter(|(_, s)| Arc::strong_count(s) > 1)
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    }

    /// Applies an RDS response: every config is compiled first; if any fails nothing
    /// changes and the error is the NACK text.
    pub fn update(&self, configs: &[RouteConfiguration]) -> Result<(), ConfigError> {
        self.update_versioned(configs, "")
    }

    /// [`Self::update`], recording the xDS version for `/config_dump`.
    pub fn update_versioned(
        &self,
        configs: &[RouteConfiguration],
        version_info: &str,
    ) -> Result<(), ConfigError> {
        let validation = Validation {
            clusters: self.clusters.as_deref(),
            default: false,
        };
        let tables = configs
            .iter()
            .map(|rc| RouteTable::new(rc, validation).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let mut slots = self.slots();
        let now = SystemTime::now();
        for (t, proto) in tables.into_iter().zip(configs) {
            let slot = slots.entry(t.name.to_string()).or_default();
            slot.table.store(Some(t));
            slot.applied.store(Some(Arc::new(Applied {
                proto: Arc::new(proto.clone()),
                version_info: version_info.to_string(),
                last_updated: now,
            })));
        }
        Ok(())
    }

    /// The route configurations RDS delivered and that are in place, sorted by name.
    pub fn applied(&self) -> Vec<Arc<Applied>> {
        let mut out: Vec<Arc<Applied>> = self
            .slots()
            .values()
            .filter(|s| s.table.load().is_some())
            .filter_map(|s| s.applied.load_full())
            .collect();
        out.sort_by(|a, b| a.proto.name.cmp(&b.proto.name));
        out
    }

    /// Forgets route configurations (delta xDS removals); streams keep the tables they hold.
    pub fn remove(&self, names: &[String]) {
        let slots = self.slots();
        for n in names {
            if let Some(s) = slots.get(n) {
                s.table.store(None);
                s.applied.store(None);
            }
        }
    }

    /// Drops slots no HCM holds any more.
    pub fn prune(&self) {
        self.slots().retain(|_, s| Arc::strong_count(s) > 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto_test_util::from_yaml;

    fn rc(name: &str, status: u32) -> RouteConfiguration {
        from_yaml(&format!(
            "{{ name: '{name}', virtual_hosts: [{{ name: v, domains: ['*'], routes: [{{ match: {{ prefix: / }}, direct_response: {{ status: {status} }} }}] }}] }}"
        ))
    }

    #[test]
    fn updates_swap_tables_atomically_and_all_or_nothing() {
        let store = RdsStore::new(None);
        let slot = store.subscribe("80");
        assert!(slot.current().is_none());
        assert_eq!(store.names(), ["80"]);
        store.update(&[rc("80", 200)]).unwrap();
        let before = slot.current().unwrap();
        store.update(&[rc("80", 201)]).unwrap();
        assert!(
            !Arc::ptr_eq(&before, &slot.current().unwrap()),
            "a held table is not mutated"
        );
        let bad = from_yaml::<RouteConfiguration>(
            "{ name: '81', virtual_hosts: [{ name: v, domains: ['*'], routes: [{ match: { prefix: / } }] }] }",
        );
        assert!(store.update(&[rc("80", 202), bad]).is_err());
        let current = slot.current().unwrap();
        let crate::http::route::Action::Direct(d) = &current.virtual_hosts()[0].routes[0].action
        else {
            panic!()
        };
        assert_eq!(d.status, 201, "a rejected update changes nothing");
        drop(slot);
        assert!(store.names().is_empty());
        store.prune();
    }
}
