#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian 12 machine (run as root).
# The Rust toolchain itself is expected to be installed already (rustup, Rust >= 1.89).
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps.sh: run as root (it installs Debian packages)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
packages=(
    iptables   # iptables-nft and iptables-legacy, with -save/-restore
    nftables   # nft: removes the empty tables iptables-nft leaves after a cleanup
    iproute2   # ip netns, veth, ip rule/route for TPROXY
    util-linux # setpriv, nsenter
    bash
)
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
echo "install-deps.sh: ok"
