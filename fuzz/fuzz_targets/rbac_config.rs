//! Fuzz target `rbac_config`. The body, with what it drives and the input format, is
//! `fuzz_harness::rbac_config` (fuzz-harness/ in the main workspace, where CI replays the corpus
//! through it on every test run).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_harness::rbac_config(data));
