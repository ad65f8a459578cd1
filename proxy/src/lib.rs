//! The sidecar data plane: an Envoy-compatible proxy driven by xDS.
//!
//! Layout follows Envoy's concepts (see the repository's DESIGN notes):
//!
//! - [`cli`]: Envoy's command line, as pilot-agent passes it;
//! - [`proto`]: the Envoy v3 protos as JSON/YAML (proto3 JSON mapping, `@type` Any,
//!   `TypedStruct`), for bootstrap files and `/config_dump`;
//! - [`bootstrap`]: loading and checking a bootstrap;
//! - [`listener`]: classifying accepted connections: the TLS and HTTP inspectors and
//!   Envoy's filter chain selection.
#![forbid(unsafe_code)]

pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod conn;
pub mod http;
pub mod io;
pub mod listener;
pub mod matcher;
pub mod proto;
pub mod stats;
pub mod tcp;
pub mod upstream;

#[cfg(test)]
mod proto_test_util;
