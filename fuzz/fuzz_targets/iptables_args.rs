//! Fuzz target `iptables_args`. The body, with what it drives and the input format, is
//! `fuzz_harness::iptables_args` (fuzz-harness/ in the main workspace, where CI replays the corpus
//! through it on every test run).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_harness::iptables_args(data));
