//! Fuzz target `http_inspector`. The body, with what it drives and the input format, is
//! `fuzz_harness::http_inspector` (fuzz-harness/ in the main workspace, where CI replays the corpus
//! through it on every test run).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_harness::http_inspector(data));
