# Istio's proxyv2 image with our proxy in place of Envoy (and our iptables-init beside
# istio-iptables). pilot-agent runs /usr/local/bin/envoy with Envoy's command line and the
# bootstrap it renders; ours takes both unchanged. Everything else (pilot-agent, the
# bootstrap template, the injected pod spec) stays Istio's.
#
#   docker build -t sidecar .
#   docker build -f deploy/docker/proxyv2.Dockerfile \
#       --build-arg SIDECAR_IMAGE=sidecar --build-arg ISTIO_VERSION=1.28.0 \
#       -t proxyv2-sidecar:1.28.0 .
#
# The one line that matters is the first COPY. Pick ISTIO_VERSION equal to istiod's.
ARG SIDECAR_IMAGE=sidecar:latest
ARG ISTIO_VERSION=1.28.0

FROM ${SIDECAR_IMAGE} AS sidecar

FROM docker.io/istio/proxyv2:${ISTIO_VERSION}
COPY --from=sidecar /usr/local/bin/proxy /usr/local/bin/envoy
COPY --from=sidecar /usr/local/bin/iptables-init /usr/local/bin/iptables-init
