#![allow(clippy::unwrap_used, clippy::expect_used)]
//! tcp_proxy against a cluster's circuit breakers, in the `proxy` binary next to the real
//! Envoy. Each proxied connection is an upstream request, pending while it connects: Envoy's
//! TCP pool holds it to `max_pending_requests` while connecting (see the fault tests' crowd
//! of 9,000) but not to `max_requests` once connected, and neither do we.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use e2e::ProxyProcess;

const PROXY: &str = env!("CARGO_BIN_EXE_proxy");

fn echo() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn bootstrap(port: u16, upstream: u16) -> String {
    format!(
        r#"
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
static_resources:
  listeners:
  - name: ingress
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: ingress
          cluster: echo
  clusters:
  - name: echo
    connect_timeout: 1s
    circuit_breakers: {{thresholds: [{{max_connections: 100, max_requests: 2}}]}}
    load_assignment:
      cluster_name: echo
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}}}]}}]
"#
    )
}

/// Opens a connection and checks one byte goes there and back.
fn open(port: u16) -> (TcpStream, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 1];
    let ok = s.write_all(b"x").is_ok() && s.read_exact(&mut b).is_ok();
    (s, ok)
}

/// What a client sees: two held connections, one over `max_requests`, and one more after
/// the first closes; and the cluster's overflow count.
fn drive(p: &ProxyProcess, port: u16) -> (Vec<bool>, u64) {
    let (a, a_ok) = open(port);
    let (_b, b_ok) = open(port);
    let (_c, c_ok) = open(port);
    a.shutdown(Shutdown::Both).unwrap();
    drop(a);
    let (_d, d_ok) = open(port);
    let overflow = p.stats().unwrap()["cluster.echo.upstream_rq_pending_overflow"];
    (vec![a_ok, b_ok, c_ok, d_ok], overflow)
}

#[test]
fn max_requests_does_not_cap_tcp_proxy_as_in_envoy() {
    let Some(envoy_bin) = e2e::require_envoy("max_requests_does_not_cap_tcp_proxy_as_in_envoy")
    else {
        return;
    };
    let upstream = echo();
    let (ep, op) = (free_port(), free_port());
    let envoy = ProxyProcess::start(&envoy_bin, &bootstrap(ep, upstream), &[]).unwrap();
    let ours = ProxyProcess::start(Path::new(PROXY), &bootstrap(op, upstream), &[]).unwrap();
    let envoy_seen = drive(&envoy, ep);
    let our_seen = drive(&ours, op);
    assert_eq!(envoy_seen, (vec![true, true, true, true], 0), "envoy");
    assert_eq!(our_seen, envoy_seen, "ours vs envoy");
}
