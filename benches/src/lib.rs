//! Criterion micro-benchmarks live in `benches/`; the load harness against Envoy (the
//! `loadtest` binary) in [`load`].
#![forbid(unsafe_code)]

pub mod load;
