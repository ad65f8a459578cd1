//! The load harness: runs each scenario through our proxy and through the real Envoy with
//! the same static bootstrap, backend, load and CPU placement, and reports the ratios.
//! `cargo run --release -p benches --bin loadtest -- --help`; see docs/benchmarks.md.

pub mod bootstrap;
pub mod client;
pub mod process;
pub mod report;
pub mod run;
pub mod scenario;
pub mod upstream;
pub mod verify;
