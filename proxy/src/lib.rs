//! The sidecar data plane: an Envoy-compatible proxy driven by xDS.
//!
//! Not built yet: the command line, bootstrap, listeners and filters arrive with the
//! proxy-core issue. This crate exists so the workspace layout of `DESIGN.md` holds from
//! the start.
#![forbid(unsafe_code)]
