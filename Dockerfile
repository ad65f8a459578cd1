# syntax=docker/dockerfile:1
#
# The sidecar image: `proxy` (Envoy's command line, bootstrap and xDS) and `iptables-init`
# (istio-iptables' flags and rules), with iptables (nft and legacy back ends), iproute2 and
# CA certificates, running as uid 1337 by default.
#
#   docker build -t sidecar .
#   docker run --rm -v $PWD/bootstrap.yaml:/etc/sidecar/bootstrap.yaml sidecar
#
# As the init container it runs as root with NET_ADMIN and NET_RAW:
#   command: ["/usr/local/bin/iptables-init"]
# To put our proxy inside Istio's proxyv2 image instead, see deploy/docker/proxyv2.Dockerfile.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM docker.io/library/rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /src
# Every workspace member, so cargo can load the workspace; nothing else.
COPY Cargo.toml Cargo.lock ./
COPY proxy proxy
COPY xds-client xds-client
COPY iptables-init iptables-init
COPY benches benches
COPY tests tests
COPY fuzz-harness fuzz-harness
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p proxy -p iptables-init \
    && install -D -m 0755 target/release/proxy /out/proxy \
    && install -D -m 0755 target/release/iptables-init /out/iptables-init

FROM docker.io/library/debian:${DEBIAN_RELEASE}-slim
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="sidecar" \
      org.opencontainers.image.description="Envoy-compatible sidecar proxy and istio-iptables replacement for Istio-style meshes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/sidecar" \
      org.opencontainers.image.documentation="https://example.invalid/sidecar/docs/deploy.md"

# iptables brings iptables-nft and iptables-legacy (with -save/-restore); iproute2 is for
# TPROXY's policy routing; bash runs the health check. Versions come from the pinned
# Debian release, so the packages are not pinned one by one.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables iproute2 ca-certificates bash \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 1337 istio-proxy \
    && useradd --system --uid 1337 --gid 1337 --home-dir /var/lib/istio \
       --shell /usr/sbin/nologin istio-proxy \
    && mkdir -p /etc/sidecar/sds /etc/certs /etc/istio/proxy /var/lib/istio/data \
    && chown -R 1337:1337 /etc/istio/proxy /var/lib/istio

COPY --from=builder /out/proxy /usr/local/bin/proxy
COPY --from=builder /out/iptables-init /usr/local/bin/iptables-init
COPY deploy/docker/healthcheck.sh /usr/local/bin/proxy-healthcheck
COPY deploy/examples/ /usr/share/sidecar/examples/
COPY deploy/examples/tcp-proxy.yaml /etc/sidecar/bootstrap.yaml
COPY deploy/examples/sds/ /etc/sidecar/sds/

# 15001 outbound capture, 15006 inbound capture, 15021 health, 15090 Prometheus.
EXPOSE 15001 15006 15021 15090
USER 1337:1337
WORKDIR /
# Healthy when the admin API (127.0.0.1:15000 unless ADMIN_PORT says otherwise) answers
# /ready with 200 LIVE.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["/usr/local/bin/proxy-healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/proxy"]
CMD ["-c", "/etc/sidecar/bootstrap.yaml", "--disable-hot-restart", "-l", "info"]
