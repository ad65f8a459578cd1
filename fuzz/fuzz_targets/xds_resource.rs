//! Fuzz target `xds_resource`. The body, with what it drives and the input format, is
//! `fuzz_harness::xds_resource` (fuzz-harness/ in the main workspace, where CI replays the corpus
//! through it on every test run).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_harness::xds_resource(data));
