//! An xDS client that behaves like Envoy's: one ADS stream (state of the world or delta) to
//! the control plane, plus optional SDS streams, delivering decoded `Cluster`,
//! `ClusterLoadAssignment`, `Listener`, `RouteConfiguration` and `Secret` resources to a
//! consumer and ACKing or NACKing each response according to the consumer's verdict.
//!
//! The crate knows nothing about the proxy. The proxy's config layer implements [`Handler`]:
//! it receives an [`Update`] per response, builds and publishes a new snapshot, and returns
//! `Ok(())` or a [`Rejection`] (whole update, or named resources for Envoy-style partial
//! acceptance). The client turns that into the exact ACK/NACK Envoy would send.
//!
//! - LDS and CDS are wildcard subscriptions; EDS, RDS and SDS names follow what the consumer
//!   needs, set at any time with [`ClientHandle::set_subscriptions`] (also from inside the
//!   handler, e.g. EDS for the clusters CDS just delivered).
//! - On disconnect the consumer keeps its config; the client reconnects with jittered
//!   exponential backoff (immediately after a clean close), re-sends what it has (SotW: last
//!   accepted `version_info`; delta: `initial_resource_versions`) and never synthesises
//!   removals.
//! - [`Readiness`] follows Envoy's `initial_fetch_timeout`; [`Stats`] renders Envoy's stat names.
//! - Malformed input (undecodable `Any`, wrong type URL, unknown type, duplicates) is NACKed
//!   with a readable reason; oversized messages and server errors end the stream and the
//!   client reconnects. Nothing panics.
//!
//! # Example
//!
//! ```no_run
//! use envoy_types::pb::envoy::config::core::v3::Node;
//! use xds_client::{
//!     ApiType, Client, ClientConfig, Rejection, Resource, ResourceType, Transport, Update,
//! };
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let node = Node {
//!     id: "sidecar~10.1.2.3~app-7d4f.default~default.svc.cluster.local".into(),
//!     cluster: "app.default".into(),
//!     ..Default::default()
//! };
//! let transport = Transport::Uds("./etc/istio/proxy/XDS".into());
//! let client = Client::new(ClientConfig::ads(transport, ApiType::DeltaGrpc, node));
//! let handle = client.handle();
//!
//! // The consumer: validate, publish a snapshot, answer. Here: follow CDS with EDS.
//! let subscriber = handle.clone();
//! let handler = move |update: Update| -> Result<(), Rejection> {
//!     if update.resource_type == ResourceType::Cluster {
//!         let mut eds = subscriber.subscriptions(ResourceType::ClusterLoadAssignment);
//!         for resource in &update.resources {
//!             if let Resource::Cluster(cluster) = &resource.resource {
//!                 if cluster.name.is_empty() {
//!                     return Err(Rejection::resource(&resource.name, "cluster has no name"));
//!                 }
//!                 eds.insert(cluster.name.clone());
//!             }
//!         }
//!         for removed in &update.removed {
//!             eds.remove(removed);
//!         }
//!         subscriber
//!             .set_subscriptions(ResourceType::ClusterLoadAssignment, eds)
//!             .map_err(|e| Rejection::update(e.to_string()))?;
//!     }
//!     Ok(())
//! };
//!
//! tokio::spawn(client.run(handler));
//! handle.readiness().ready().await;
//! for stat in handle.stats().envoy_stats() {
//!     println!("{}: {:?}", stat.name, stat.value);
//! }
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod backoff;
mod bootstrap;
mod client;
mod config;
mod delta;
mod handler;
mod readiness;
mod resource;
mod sotw;
mod state;
mod stats;
mod stream;
mod transport;

#[cfg(feature = "testing")]
pub mod testing;

pub use bootstrap::{BootstrapError, SdsSource, USER_AGENT_NAME};
pub use client::{Client, ClientHandle, SubscriptionError};
pub use config::{
    ApiType, Backoff, ClientConfig, DEFAULT_INITIAL_FETCH_TIMEOUT, Identity, PemSource, Service,
    TlsConfig, Transport,
};
pub use handler::{Handler, RejectedResource, Rejection, Update};
pub use readiness::{InitialFetch, Readiness, ReadinessState};
pub use resource::{
    CLUSTER_LOAD_ASSIGNMENT_TYPE_URL, CLUSTER_TYPE_URL, DecodeError, DecodedResource,
    LISTENER_TYPE_URL, ROUTE_CONFIGURATION_TYPE_URL, Resource, ResourceType, SECRET_TYPE_URL,
};
pub use stats::{Stat, StatValue, Stats, SubscriptionStats};
pub use transport::TransportError;
