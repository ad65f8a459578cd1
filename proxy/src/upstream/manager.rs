//! The cluster manager: every cluster by name, updated from the bootstrap, CDS and EDS.
//!
//! Lookups on the data path are one atomic load and a hash lookup. An update builds a new
//! map and swaps it in; connections that already hold a cluster keep it until they end, so
//! removing or replacing a cluster never breaks a live connection.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;

use super::cluster::Cluster;
use super::dns;
use crate::config::cluster::{ClusterConfig, Discovery};
use crate::config::endpoint::EndpointConfig;
use crate::stats::{Counter, Gauge, Store};
use crate::tls::TlsResources;

/// `cluster_manager.*` stats.
#[derive(Debug, Clone)]
struct ManagerStats {
    active_clusters: Gauge,
    warming_clusters: Gauge,
    cluster_added: Counter,
    cluster_modified: Counter,
    cluster_removed: Counter,
    cluster_updated: Counter,
}

/// What a CDS update did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CdsOutcome {
    pub added: Vec<String>,
    pub modified: Vec<String>,
    pub removed: Vec<String>,
}

#[derive(Debug, Default)]
struct Mutable {
    /// Clusters from the bootstrap: CDS cannot modify or remove them.
    static_names: HashSet<String>,
    /// The latest endpoints per EDS service name, so a new or modified cluster gets them at
    /// once.
    eds: HashMap<String, Vec<EndpointConfig>>,
    /// DNS refresh tasks per cluster name.
    dns: HashMap<String, JoinHandle<()>>,
    /// The xDS version of the last accepted CDS update.
    version_info: String,
}

/// All clusters.
#[derive(Debug)]
pub struct ClusterManager {
    store: Store,
    /// Secrets (and node identity) for the clusters' TLS transports.
    tls: TlsResources,
    clusters: ArcSwap<HashMap<Arc<str>, Arc<Cluster>>>,
    stats: ManagerStats,
    state: Mutex<Mutable>,
}

// === impl ClusterManager ===

impl ClusterManager {
    /// A manager whose clusters have no secret store: TLS transports work only with
    /// inline certificates.
    pub fn new(store: Store) -> Arc<Self> {
        Self::with_tls(store, TlsResources::default())
    }

    /// A manager whose clusters take their TLS secrets from `tls` (the proxy's
    /// `SecretStore`, fed by the bootstrap and SDS).
    pub fn with_tls(store: Store, tls: TlsResources) -> Arc<Self> {
        let s = store.scope("cluster_manager.");
        let stats = ManagerStats {
            active_clusters: s.gauge("active_clusters"),
            warming_clusters: s.gauge("warming_clusters"),
            cluster_added: s.counter("cluster_added"),
            cluster_modified: s.counter("cluster_modified"),
            cluster_removed: s.counter("cluster_removed"),
            cluster_updated: s.counter("cluster_updated"),
        };
        stats.active_clusters.set(0);
        stats.warming_clusters.set(0);
        let manager = Arc::new(Self {
            store,
            tls,
            clusters: ArcSwap::from_pointee(HashMap::new()),
            stats,
            state: Mutex::default(),
        });
        manager.follow_secrets();
        manager
    }

    /// A cluster waiting for its TLS secrets is warming; when secrets arrive (SDS) the
    /// warming and active gauges are recounted, as pilot-agent and the mesh tests read them.
    fn follow_secrets(self: &Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut changes = self.tls.secrets.changes();
        let weak = Arc::downgrade(self);
        rt.spawn(async move {
            while changes.changed().await.is_ok() {
                let Some(manager) = weak.upgrade() else {
                    return;
                };
                manager.update_gauges(&manager.clusters.load());
            }
        });
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Mutable> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cluster with this name.
    pub fn get(&self, name: &str) -> Option<Arc<Cluster>> {
        self.clusters.load().get(name).cloned()
    }

    /// Every cluster, sorted by name.
    pub fn all(&self) -> Vec<Arc<Cluster>> {
        let mut v: Vec<Arc<Cluster>> = self.clusters.load().values().cloned().collect();
        v.sort_by(|a, b| a.name().cmp(b.name()));
        v
    }

    /// Whether a cluster came from the bootstrap.
    pub fn is_static(&self, name: &str) -> bool {
        self.state().static_names.contains(name)
    }

    /// The version of the last accepted CDS update.
    pub fn version_info(&self) -> String {
        self.state().version_info.clone()
    }

    /// Adds the bootstrap's clusters. A duplicate name is an error, as in Envoy.
    pub fn add_static(self: &Arc<Self>, configs: Vec<ClusterConfig>) -> Result<(), String> {
        let mut seen = HashSet::new();
        for c in &configs {
            if !seen.insert(c.name.to_string()) {
                return Err(format!(
                    "cluster manager: duplicate cluster '{}' found",
                    c.name
                ));
            }
        }
        let mut map = (**self.clusters.load()).clone();
        for cfg in configs {
            let name = cfg.name.to_string();
            let cluster = Arc::new(Cluster::with_tls(cfg, &self.store, &self.tls));
            self.start_dns(&cluster);
            map.insert(cluster.config.name.clone(), cluster);
            self.state().static_names.insert(name);
            self.stats.cluster_added.inc();
        }
        self.publish(map);
        Ok(())
    }

    /// Applies a CDS update. `complete` means the update lists every dynamic cluster
    /// (state of the world), so dynamic clusters it does not list are removed; with delta
    /// xDS `removed` says what goes. Bootstrap clusters are never touched.
    pub fn apply_cds(
        self: &Arc<Self>,
        configs: Vec<ClusterConfig>,
        removed: &[String],
        complete: bool,
        version_info: &str,
    ) -> CdsOutcome {
        let mut outcome = CdsOutcome::default();
        let current = self.clusters.load_full();
        let mut map = (*current).clone();
        let statics = self.state().static_names.clone();
        let listed: HashSet<String> = configs.iter().map(|c| c.name.to_string()).collect();
        for cfg in configs {
            let name = cfg.name.to_string();
            if statics.contains(&name) {
                tracing::warn!("CDS cluster {name:?} has the name of a bootstrap cluster; ignored");
                continue;
            }
            let old = current.get(name.as_str());
            if old.is_some_and(|o| o.config.proto == cfg.proto) {
                continue;
            }
            let cluster = Arc::new(Cluster::with_tls(cfg, &self.store, &self.tls));
            self.prime_endpoints(&cluster, old);
            self.start_dns(&cluster);
            if old.is_some() {
                self.stats.cluster_modified.inc();
                outcome.modified.push(name.clone());
            } else {
                self.stats.cluster_added.inc();
                outcome.added.push(name.clone());
            }
            map.insert(cluster.config.name.clone(), cluster);
        }
        let gone: Vec<String> = map
            .keys()
            .filter(|n| !statics.contains(n.as_ref()))
            .filter(|n| {
                removed.iter().any(|r| r == n.as_ref())
                    || (complete && !listed.contains(n.as_ref()))
            })
            .map(|n| n.to_string())
            .collect();
        for name in gone {
            map.remove(name.as_str());
            if let Some(task) = self.state().dns.remove(&name) {
                task.abort();
            }
            self.stats.cluster_removed.inc();
            outcome.removed.push(name);
        }
        self.state().version_info = version_info.to_string();
        self.publish(map);
        self.store.prune();
        outcome
    }

    /// Applies endpoints for EDS service names. Assignments for names no cluster uses are
    /// kept for when one does.
    pub fn apply_eds(&self, assignments: Vec<(String, Vec<EndpointConfig>)>) {
        let clusters = self.clusters.load();
        for (service, endpoints) in assignments {
            for c in clusters.values() {
                if c.config.eds_service_name() == Some(service.as_str()) {
                    c.update_endpoints(&endpoints);
                    self.stats.cluster_updated.inc();
                }
            }
            self.state().eds.insert(service, endpoints);
        }
        self.update_gauges(&clusters);
    }

    /// Removes cached EDS assignments (delta xDS removals); clusters keep their hosts.
    pub fn forget_eds(&self, services: &[String]) {
        let mut state = self.state();
        for s in services {
            state.eds.remove(s);
        }
    }

    /// The TLS resources clusters are built with.
    pub fn tls(&self) -> &TlsResources {
        &self.tls
    }

    /// The EDS service names the current clusters need.
    pub fn eds_service_names(&self) -> BTreeSet<String> {
        self.clusters
            .load()
            .values()
            .filter_map(|c| c.config.eds_service_name().map(String::from))
            .collect()
    }

    /// Whether every cluster has its endpoints.
    pub fn all_warm(&self) -> bool {
        self.clusters.load().values().all(|c| c.is_warm())
    }

    /// A new cluster starts with the endpoints its EDS service already has, or those of the
    /// cluster it replaces, so traffic does not pause while EDS catches up.
    fn prime_endpoints(&self, cluster: &Arc<Cluster>, old: Option<&Arc<Cluster>>) {
        let Some(service) = cluster.config.eds_service_name() else {
            return;
        };
        if let Some(eps) = self.state().eds.get(service) {
            cluster.update_endpoints(eps);
            return;
        }
        if let Some(old) =
            old.filter(|o| o.config.eds_service_name() == Some(service) && o.is_warm())
        {
            cluster.set_hosts(old.hosts().all.clone());
        }
    }

    fn start_dns(&self, cluster: &Arc<Cluster>) {
        if !matches!(
            cluster.config.discovery,
            Discovery::StrictDns { .. } | Discovery::LogicalDns { .. }
        ) {
            return;
        }
        let weak: Weak<Cluster> = Arc::downgrade(cluster);
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::error!(
                "cluster {}: no runtime to resolve DNS on; it will have no hosts",
                cluster.name()
            );
            return;
        };
        let task = handle.spawn(dns::refresh(weak));
        if let Some(old) = self.state().dns.insert(cluster.name().to_string(), task) {
            old.abort();
        }
    }

    fn publish(&self, map: HashMap<Arc<str>, Arc<Cluster>>) {
        self.update_gauges(&map);
        self.clusters.store(Arc::new(map));
    }

    fn update_gauges(&self, map: &HashMap<Arc<str>, Arc<Cluster>>) {
        let warming = map.values().filter(|c| !c.is_warm()).count() as u64;
        self.stats.warming_clusters.set(warming);
        self.stats.active_clusters.set(map.len() as u64 - warming);
    }
}
