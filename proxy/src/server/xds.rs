//! Applying xDS updates: convert, apply what is valid, and tell the client what to NACK.
//!
//! Each resource is converted on its own; a bad one is rejected by name while the others are
//! applied (Envoy's partial acceptance) and the previous version of the bad one keeps
//! serving. After CDS the EDS subscriptions follow the clusters that need endpoints; after
//! LDS the RDS subscriptions follow the route configuration names live HTTP connection
//! managers use. Route configurations replace a name's table atomically: connections keep
//! running and their next stream sees the new routes.

use std::sync::Arc;

use xds_client::{ClientHandle, RejectedResource, Rejection, Resource, ResourceType, Update};

use crate::config::cluster::ClusterConfig;
use crate::config::endpoint::endpoints_from_assignment;
use crate::config::listener::ListenerConfig;
use crate::listener::ListenerManager;
use crate::upstream::ClusterManager;

/// The proxy's side of the ADS stream.
#[derive(Debug, Clone)]
pub struct XdsHandler {
    pub clusters: Arc<ClusterManager>,
    pub listeners: Arc<ListenerManager>,
    /// Follows the secrets the new listeners and clusters need; applies ADS secrets.
    pub sds: Arc<super::sds::Sds>,
    pub client: ClientHandle,
}

// === impl XdsHandler ===

impl xds_client::Handler for XdsHandler {
    fn on_update(&self, update: Update) -> Result<(), Rejection> {
        let result = match update.resource_type {
            ResourceType::Cluster => self.clusters_update(&update),
            ResourceType::ClusterLoadAssignment => self.endpoints_update(&update),
            ResourceType::Listener => self.listeners_update(&update),
            ResourceType::RouteConfiguration => self.routes_update(&update),
            ResourceType::Secret => super::sds::SecretHandler {
                secrets: self.clusters.tls().secrets.clone(),
            }
            .apply(&update),
        };
        if let Err(rejection) = &result {
            tracing::warn!(
                "rejected {:?} update {:?}: {rejection:?}",
                update.resource_type,
                update.version_info
            );
        }
        result
    }
}

impl XdsHandler {
    fn clusters_update(&self, update: &Update) -> Result<(), Rejection> {
        let mut rejected = Vec::new();
        let mut good = Vec::new();
        for r in &update.resources {
            let Resource::Cluster(c) = &r.resource else {
                continue;
            };
            match ClusterConfig::from_proto(c) {
                Ok(cfg) => good.push(cfg),
                Err(e) => rejected.push(reject(&r.name, e)),
            }
        }
        let outcome = self
            .clusters
            .apply_cds(good, &update.removed, false, &update.version_info);
        tracing::info!(
            "cds: version {:?}: {} added, {} modified, {} removed, {} rejected",
            update.version_info,
            outcome.added.len(),
            outcome.modified.len(),
            outcome.removed.len(),
            rejected.len()
        );
        self.sds.sync();
        let names = self.clusters.eds_service_names();
        if let Err(e) = self
            .client
            .set_subscriptions(ResourceType::ClusterLoadAssignment, names)
        {
            tracing::error!("cannot subscribe to endpoints: {e}");
        }
        verdict(rejected)
    }

    fn endpoints_update(&self, update: &Update) -> Result<(), Rejection> {
        let mut rejected = Vec::new();
        let mut good = Vec::new();
        for r in &update.resources {
            let Resource::ClusterLoadAssignment(cla) = &r.resource else {
                continue;
            };
            match endpoints_from_assignment(cla, false) {
                Ok(eps) => good.push((r.name.clone(), eps)),
                Err(e) => rejected.push(reject(&r.name, e)),
            }
        }
        self.clusters.apply_eds(good);
        if !update.removed.is_empty() {
            self.clusters.forget_eds(&update.removed);
        }
        verdict(rejected)
    }

    fn listeners_update(&self, update: &Update) -> Result<(), Rejection> {
        let mut rejected = Vec::new();
        let mut good = Vec::new();
        for r in &update.resources {
            let Resource::Listener(l) = &r.resource else {
                continue;
            };
            match ListenerConfig::from_proto(l) {
                Ok(cfg) => good.push(cfg),
                Err(e) => rejected.push(reject(&r.name, e)),
            }
        }
        let outcome = self
            .listeners
            .apply_lds(good, &update.removed, false, &update.version_info);
        tracing::info!(
            "lds: version {:?}: {} added, {} modified, {} removed, {} rejected",
            update.version_info,
            outcome.added.len(),
            outcome.modified.len(),
            outcome.removed.len(),
            rejected.len() + outcome.rejected.len()
        );
        self.sds.sync();
        rejected.extend(
            outcome
                .rejected
                .into_iter()
                .map(|(name, reason)| RejectedResource { name, reason }),
        );
        self.subscribe_routes();
        verdict(rejected)
    }

    /// Asks for the route configurations live HTTP connection managers use.
    pub fn subscribe_routes(&self) {
        let rds = &self.listeners.http().rds;
        rds.prune();
        if let Err(e) = self
            .client
            .set_subscriptions(ResourceType::RouteConfiguration, rds.names())
        {
            tracing::error!("cannot subscribe to route configurations: {e}");
        }
    }

    /// Each route configuration is compiled on its own: a bad one is NACKed by name and its
    /// previous table keeps serving.
    fn routes_update(&self, update: &Update) -> Result<(), Rejection> {
        let rds = &self.listeners.http().rds;
        let mut rejected = Vec::new();
        let mut accepted = 0;
        for r in &update.resources {
            let Resource::RouteConfiguration(rc) = &r.resource else {
                continue;
            };
            match rds.update_versioned(std::slice::from_ref(&**rc), &update.version_info) {
                Ok(()) => accepted += 1,
                Err(e) => rejected.push(reject(&r.name, e.at(format!("route {:?}", r.name)))),
            }
        }
        if !update.removed.is_empty() {
            rds.remove(&update.removed);
        }
        self.listeners.routes_updated();
        tracing::info!(
            "rds: version {:?}: {accepted} accepted, {} removed, {} rejected",
            update.version_info,
            update.removed.len(),
            rejected.len()
        );
        verdict(rejected)
    }
}

fn reject(name: &str, e: impl std::fmt::Display) -> RejectedResource {
    RejectedResource {
        name: name.to_string(),
        reason: e.to_string(),
    }
}

fn verdict(rejected: Vec<RejectedResource>) -> Result<(), Rejection> {
    if rejected.is_empty() {
        Ok(())
    } else {
        Err(Rejection::Resources(rejected))
    }
}
