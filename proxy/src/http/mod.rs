//! Envoy's HTTP connection manager (`envoy.filters.network.http_connection_manager`) on
//! hyper: routes (inline and RDS), the router with upstream connection pools, retries and
//! timeouts, local replies, access logs.
//!
//! - [`HttpConnectionManager`]: built from the HCM proto, serves downstream connections;
//! - [`HttpContext`]: what all HCMs share (clusters, pools, RDS, access log sinks, RBAC);
//! - [`rds::RdsStore`]: route configurations by name, fed by RDS;
//! - [`route`]: route tables and matching; [`router`]: forwarding, retries, timeouts;
//! - [`pool`]: upstream HTTP/1.1 and HTTP/2 connection pools and circuit breakers;
//! - [`peer_metadata`]: Istio's HTTP metadata exchange, for `istio.stats`' peer labels.

pub mod access_log;
pub mod body;
pub mod filter;
pub mod format;
pub mod hcm;
pub mod headers;
pub mod local_reply;
pub mod mutation;
pub mod path;
pub mod peer_metadata;
pub mod pool;
pub mod rds;
pub mod retry;
pub mod route;
pub mod router;
pub mod stats;
pub mod stream_info;

pub use filter::{AuthzDecision, AuthzRequest, HttpAuthorizer, RbacFactory};
pub use hcm::{HttpConnectionManager, HttpContext, RouteSource};
pub use rds::RdsStore;
