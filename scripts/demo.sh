#!/usr/bin/env bash
# The main job: a working Istio-style mesh on this machine, every sidecar our proxy.
# Builds iptables-init, proxy and the mesh harness, then brings up pods in network
# namespaces (iptables-init capture, apps, our proxy as uid 1337 with Istio's bootstrap),
# a test control plane serving istiod-shaped xDS and SDS, and runs Istio's own scenarios:
# automatic mTLS (PERMISSIVE/STRICT/DISABLE), AuthorizationPolicy, bypass attempts, TCP with
# network RBAC, certificate rotation and a control plane restart under traffic. Prints the
# matrix of expected vs observed per request and "N passed, N failed".
#
#   sudo scripts/demo.sh                 # every scenario, every sidecar ours
#   sudo scripts/demo.sh --mode all      # also every sidecar Envoy, and both mixes
#   sudo scripts/demo.sh auto-mtls       # one scenario
# Needs root (network namespaces, iptables, uid 1337) and scripts/install-deps.sh once.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "demo.sh: run as root: pods are network namespaces with iptables rules" >&2
    exit 1
fi
mode=(--mode ours)
for a in "$@"; do
    [ "$a" = "--mode" ] && mode=()
done
exec scripts/mesh-suite.sh "${mode[@]}" "$@"
