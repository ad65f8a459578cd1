//! The bodies of the fuzz targets in `fuzz/` (cargo-fuzz), one function per target taking
//! the raw input. They live here, in the main workspace, so that CI builds them with
//! everything else and `tests/smoke.rs` runs them on the committed corpus plus mutations
//! of it on every `cargo test`; the `fuzz/` binaries only call into this crate.
//!
//! Each function must not panic on any input, except where it asserts a property of the
//! code under test (then the panic is the finding). See docs/fuzzing.md.

mod config;
mod inspect;
mod iptables;

pub use config::{bootstrap, rbac_config, xds_resource};
pub use inspect::{http_inspector, peer_exchange, tls_client_hello};
pub use iptables::iptables_args;

/// A fuzz target: its name (as in `fuzz/fuzz_targets/` and `fuzz/corpus/`) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, in the order `cargo fuzz list` prints them.
pub const TARGETS: [Target; 7] = [
    ("bootstrap", bootstrap),
    ("http_inspector", http_inspector),
    ("iptables_args", iptables_args),
    ("peer_exchange", peer_exchange),
    ("rbac_config", rbac_config),
    ("tls_client_hello", tls_client_hello),
    ("xds_resource", xds_resource),
];
