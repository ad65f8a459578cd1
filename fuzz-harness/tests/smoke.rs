#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The fuzz targets' short run for CI: every target replays its committed corpus
//! (`fuzz/corpus/<target>/`) and then a fixed number of inputs mutated from it.
//!
//! This is a corpus replay plus a blind mutation smoke run, not fuzzing: there is no
//! coverage feedback, no sanitizer and the build is the test profile (debug assertions, so
//! overflow panics as under `cargo fuzz run -a`). It catches a change that makes a known
//! input (or a near miss of one) panic, and keeps the targets building; finding new bugs is
//! the job of `scripts/fuzz.sh` (docs/fuzzing.md).
//!
//! Everything is bounded by count, not time, and deterministic (fixed seeds), so a failure
//! reproduces. Every corpus file is replayed (the largest corpus, `xds_resource`, is about
//! 9,700 files and replays in a few seconds unoptimized); should one grow past `MAX_REPLAY`
//! files, every n-th file in name order is replayed instead, n chosen so at most
//! `MAX_REPLAY` run. The whole test takes about 12 s of CPU in the test profile (7 to 11 s
//! wall time on two cores). `FUZZ_SMOKE_SCALE` multiplies both bounds (say 10 for a longer
//! local run).
//!
//! A failing input is written to `<target dir>/tmp/fuzz-smoke/<target>-<what>` and named in
//! the failure; reproduce it under libFuzzer with
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run -a <target> <file>` in fuzz/.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// Corpus files replayed per target, at most.
const MAX_REPLAY: usize = 20_000;
/// Mutated inputs per target.
const MUTATIONS: usize = 20_000;

fn scale() -> usize {
    std::env::var("FUZZ_SMOKE_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// The target's committed corpus, in name order.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn new(seed: &str) -> Self {
        // FNV-1a of the target name, so every target gets its own sequence.
        let mut h = 0xcbf2_9ce4_8422_2325_u64;
        for b in seed.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        Self(h | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// Applies one to four random edits to `input`: bit flips, interesting bytes, truncation,
/// insertion and deletion of a run, duplication of a range, splicing with `other`.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8]) {
    const INTERESTING: [u8; 8] = [0, 1, 0x7f, 0x80, 0xff, b'\n', b':', b'"'];
    for _ in 0..1 + rng.below(4) {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = if rng.below(2) == 0 {
                    INTERESTING[rng.below(INTERESTING.len())]
                } else {
                    rng.byte()
                };
            }
            2 if len > 0 => input.truncate(rng.below(len)),
            3 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
                input.splice(at..at, bytes);
            }
            4 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                input.drain(at..at + n);
            }
            5 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                let copy = input[at..at + n].to_vec();
                let to = rng.below(len + 1);
                input.splice(to..to, copy);
            }
            6 if !other.is_empty() => {
                // Splice: a prefix of this input, a suffix of the other.
                let cut = rng.below(len + 1);
                let from = rng.below(other.len());
                input.truncate(cut);
                input.extend_from_slice(&other[from..]);
            }
            _ => {
                // Protobuf and text inputs lead with a selector byte: try another one.
                if let Some(first) = input.first_mut() {
                    *first = rng.byte();
                }
            }
        }
    }
}

/// Runs `target` on the corpus and the mutations; fails with every input that panicked
/// (stopping after a few), each saved for `cargo fuzz run`.
fn smoke(name: &str) {
    let (_, target) = fuzz_harness::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .copied()
        .unwrap();
    let files = corpus(name);
    assert!(!files.is_empty(), "no corpus for {name}");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-smoke");
    let mut failures = Vec::new();
    let mut run = |what: String, input: &[u8]| {
        if failures.len() >= 5 {
            return;
        }
        if catch_unwind(AssertUnwindSafe(|| target(input))).is_err() {
            std::fs::create_dir_all(&out).unwrap();
            let path = out.join(format!("{name}-{what}"));
            std::fs::write(&path, input).unwrap();
            failures.push(format!("{what} (saved as {})", path.display()));
        }
    };

    let max_replay = MAX_REPLAY * scale();
    let stride = files.len().div_ceil(max_replay.max(1));
    let mut replayed = 0;
    if max_replay > 0 {
        for (path, bytes) in files.iter().step_by(stride) {
            let file = path.file_name().unwrap().to_string_lossy();
            run(format!("corpus-{file}"), bytes);
            replayed += 1;
        }
    }

    let mut rng = Rng::new(name);
    let mutations = MUTATIONS * scale();
    for i in 0..mutations {
        let mut input = files[rng.below(files.len())].1.clone();
        let other = &files[rng.below(files.len())].1;
        mutate(&mut rng, &mut input, other);
        run(format!("mutation-{i}"), &input);
    }
    // A few inputs with no corpus behind them.
    for i in 0..16 * scale() {
        let len = rng.below(512);
        let input: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
        run(format!("random-{i}"), &input);
    }

    eprintln!(
        "{name}: {replayed} of {} corpus files replayed, {mutations} mutations",
        files.len()
    );
    assert!(
        failures.is_empty(),
        "{name} panicked on:\n  {}",
        failures.join("\n  ")
    );
}

#[test]
fn every_target_has_a_test_and_a_corpus() {
    let tested = [
        "bootstrap",
        "http_inspector",
        "iptables_args",
        "peer_exchange",
        "rbac_config",
        "tls_client_hello",
        "xds_resource",
    ];
    let names: Vec<&str> = fuzz_harness::TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, tested);
    for name in names {
        let target = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/fuzz_targets")
            .join(format!("{name}.rs"));
        assert!(target.is_file(), "{} is missing", target.display());
    }
}

#[test]
fn bootstrap() {
    smoke("bootstrap");
}

#[test]
fn http_inspector() {
    smoke("http_inspector");
}

#[test]
fn iptables_args() {
    smoke("iptables_args");
}

#[test]
fn peer_exchange() {
    smoke("peer_exchange");
}

#[test]
fn rbac_config() {
    smoke("rbac_config");
}

#[test]
fn tls_client_hello() {
    smoke("tls_client_hello");
}

#[test]
fn xds_resource() {
    smoke("xds_resource");
}
