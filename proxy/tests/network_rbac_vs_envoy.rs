#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `envoy.filters.network.rbac` in front of tcp_proxy, in the `proxy` binary next to the real
//! Envoy on the same bootstrap: clients from different source addresses must see the same
//! bytes and closes, the upstream must never get a denied client's data, and the `rbac.*`
//! stats must agree.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use e2e::ProxyProcess;

const PROXY: &str = env!("CARGO_BIN_EXE_proxy");

/// An upstream that greets each connection (a server-first protocol), then echoes; counts
/// the bytes clients sent it.
struct Upstream {
    port: u16,
    received: Arc<AtomicU64>,
}

fn greeting_echo() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let _ = stream.write_all(b"220 ready\n");
                let mut buf = [0u8; 4096];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            counter.fetch_add(n as u64, Ordering::SeqCst);
                            if stream.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = stream.shutdown(Shutdown::Write);
            });
        }
    });
    Upstream { port, received }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Two listeners: `deny` refuses clients from 127.0.0.2 (Istio's DENY policy shape);
/// `allow` admits only 127.0.0.3, with a shadow policy and a deny delay.
fn bootstrap(deny_port: u16, allow_port: u16, upstream: u16) -> String {
    format!(
        r#"
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
static_resources:
  listeners:
  - name: deny
    address: {{socket_address: {{address: 127.0.0.1, port_value: {deny_port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.rbac
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC
          stat_prefix: "tcp.deny."
          rules:
            action: DENY
            policies:
              ns[default]-policy[deny-two]-rule[0]:
                permissions: [{{any: true}}]
                principals: [{{direct_remote_ip: {{address_prefix: 127.0.0.2, prefix_len: 32}}}}]
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: deny
          cluster: upstream
  - name: allow
    address: {{socket_address: {{address: 127.0.0.1, port_value: {allow_port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.rbac
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC
          stat_prefix: "tcp.allow."
          shadow_rules_stat_prefix: "istio_dry_run_allow_"
          delay_deny: 0.2s
          rules:
            action: ALLOW
            policies:
              only-three:
                permissions: [{{destination_port: {allow_port}}}]
                principals: [{{direct_remote_ip: {{address_prefix: 127.0.0.3, prefix_len: 32}}}}]
          shadow_rules:
            action: DENY
            policies:
              shadow-one:
                permissions: [{{any: true}}]
                principals: [{{direct_remote_ip: {{address_prefix: 127.0.0.1, prefix_len: 32}}}}]
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: allow
          cluster: upstream
  clusters:
  - name: upstream
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}}}]}}]
"#
    )
}

/// Connects from `source`, reads the greeting if one comes, sends a line, half-closes and
/// returns everything read until the proxy closes.
fn session(source: &str, port: u16) -> Vec<u8> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&from.into()).unwrap();
    let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    socket.connect(&to.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut out = vec![0u8; 10];
    // The greeting comes from the upstream before any RBAC decision (Envoy connects
    // upstream at once and decides on the client's first bytes).
    stream.read_exact(&mut out).unwrap();
    let _ = stream.write_all(b"USER alice\n");
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.read_to_end(&mut out);
    out
}

fn rbac_stats(p: &ProxyProcess) -> BTreeMap<String, u64> {
    p.stats()
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k.contains("rbac."))
        .collect()
}

/// Runs every client against one process; returns what each read.
fn drive(deny_port: u16, allow_port: u16) -> Vec<(String, Vec<u8>)> {
    let mut seen = Vec::new();
    for source in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
        seen.push((format!("deny from {source}"), session(source, deny_port)));
        seen.push((format!("allow from {source}"), session(source, allow_port)));
    }
    seen
}

#[test]
fn network_rbac_matches_envoy() {
    let Some(envoy_bin) = e2e::require_envoy("network_rbac_matches_envoy") else {
        return;
    };
    let (envoy_up, our_up) = (greeting_echo(), greeting_echo());
    let envoy_ports = (free_port(), free_port());
    let our_ports = (free_port(), free_port());
    let envoy = ProxyProcess::start(
        &envoy_bin,
        &bootstrap(envoy_ports.0, envoy_ports.1, envoy_up.port),
        &[],
    )
    .unwrap();
    let ours = ProxyProcess::start(
        Path::new(PROXY),
        &bootstrap(our_ports.0, our_ports.1, our_up.port),
        &[],
    )
    .unwrap();

    let envoy_seen = drive(envoy_ports.0, envoy_ports.1);
    let our_seen = drive(our_ports.0, our_ports.1);
    let allowed = b"220 ready\nUSER alice\n".to_vec();
    let denied = b"220 ready\n".to_vec();
    for ((case, e), (_, o)) in envoy_seen.iter().zip(&our_seen) {
        assert_eq!(
            String::from_utf8_lossy(o),
            String::from_utf8_lossy(e),
            "{case}: ours vs envoy"
        );
    }
    let expect = |case: &str| -> &Vec<u8> { &our_seen.iter().find(|(c, _)| c == case).unwrap().1 };
    assert_eq!(expect("deny from 127.0.0.1"), &allowed);
    assert_eq!(expect("deny from 127.0.0.2"), &denied);
    assert_eq!(expect("allow from 127.0.0.3"), &allowed);
    assert_eq!(expect("allow from 127.0.0.1"), &denied);

    // Three sessions were admitted by each process: only their bytes reached the upstream.
    let line = b"USER alice\n".len() as u64;
    assert_eq!(envoy_up.received.load(Ordering::SeqCst), 3 * line);
    assert_eq!(our_up.received.load(Ordering::SeqCst), 3 * line);

    let (e, o) = (rbac_stats(&envoy), rbac_stats(&ours));
    assert!(!e.is_empty(), "envoy reported no rbac stats");
    assert_eq!(o, e, "rbac stats: ours vs envoy");
    assert_eq!(o["tcp.deny.rbac.denied"], 1);
    assert_eq!(o["tcp.allow.rbac.allowed"], 1);
}
