//! The sidecar data plane: an Envoy-compatible proxy driven by xDS.
//!
//! Layout follows Envoy's concepts (see the repository's DESIGN notes):
//!
//! - [`cli`]: Envoy's command line, as pilot-agent passes it;
//! - [`proto`]: the Envoy v3 protos as JSON/YAML (proto3 JSON mapping, `@type` Any,
//!   `TypedStruct`), for bootstrap files and `/config_dump`;
//! - [`bootstrap`]: loading and checking a bootstrap;
//! - [`listener`]: classifying accepted connections: the TLS and HTTP inspectors and
//!   Envoy's filter chain selection;
//! - [`rbac`]: Envoy's RBAC engine and its network and HTTP filters;
//! - [`tls`]: the secret store, TLS termination and origination, SPIFFE identities and
//!   Istio's metadata exchange.
#![forbid(unsafe_code)]

pub mod admin;
pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod conn;
pub mod drain;
pub mod http;
pub mod io;
pub mod istio_stats;
pub mod limits;
pub mod listener;
pub mod matcher;
pub mod proto;
pub mod rbac;
pub mod server;
pub mod stats;
pub mod tcp;
pub mod tls;
pub mod upstream;
pub mod worker;

#[cfg(test)]
mod proto_test_util;
