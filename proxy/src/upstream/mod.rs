//! The upstream side: clusters, their hosts, load balancing, circuit breakers, connecting.

pub mod cluster;
pub mod connect;
pub mod dns;
pub mod host;
pub mod lb;
pub mod manager;

pub use cluster::{Cluster, LbContext};
pub use connect::{ConnectError, ConnectOptions, Upstream, UpstreamIo, connect};
pub use manager::ClusterManager;
