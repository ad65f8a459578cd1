#!/usr/bin/env bash
# The test command: formatting, lints, then every test in the workspace.
# Tests that need root (network namespaces, iptables, uid 1337) print SKIPPED without it.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
