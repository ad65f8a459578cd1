#!/usr/bin/env bash
# The mesh acceptance suite in one command: builds what it needs (iptables-init, proxy,
# the suite), then runs every scenario, prints the matrix of expected vs observed per
# request and a final "N passed, N failed" line. Needs root and Envoy
# (scripts/install-deps.sh); without root it says it was skipped and why.
#
#   scripts/mesh-suite.sh                         # every scenario, every sidecar Envoy
#   scripts/mesh-suite.sh --mode ours tcp-plaintext
#   scripts/mesh-suite.sh --mode all auto-mtls    # envoy, ours and both mixed modes
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet --locked -p iptables-init -p proxy -p e2e --bins
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
exec "$target_dir/debug/mesh-suite" "$@"
