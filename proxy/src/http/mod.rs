//! Envoy's HTTP connection manager (`envoy.filters.network.http_connection_manager`) on
//! hyper: routes (inline and RDS), the router with upstream connection pools, retries and
//! timeouts, local replies, access logs.

pub mod format;
pub mod mutation;
pub mod retry;
pub mod route;
pub mod stream_info;
