//! Benchmarks live in `benches/`; the load harness against Envoy arrives with the benches
//! issue.
#![forbid(unsafe_code)]
