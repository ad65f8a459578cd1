#!/usr/bin/env bash
# Container health check: exits 0 when the proxy's admin API answers GET /ready with
# "200 ... LIVE", non-zero otherwise (not started, still initializing, draining, or
# failing /healthcheck/fail). Needs nothing but bash.
#
#   ADMIN_HOST  admin address (default 127.0.0.1)
#   ADMIN_PORT  admin port (default 15000, as in the bootstraps Istio renders)
set -u
host=${ADMIN_HOST:-127.0.0.1}
port=${ADMIN_PORT:-15000}
exec 3<>"/dev/tcp/${host}/${port}" || exit 1
printf 'GET /ready HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n\r\n' "$host" "$port" >&3
response=$(timeout 2 cat <&3) || exit 1
status=${response%%$'\r'*}
case "$status" in
    "HTTP/1.1 200"*) ;;
    *) echo "proxy not ready: ${status:-no response}" >&2; exit 1 ;;
esac
case "$response" in
    *LIVE*) exit 0 ;;
    *) echo "proxy not LIVE" >&2; exit 1 ;;
esac
