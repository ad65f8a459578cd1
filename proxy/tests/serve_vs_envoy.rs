#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `proxy` binary next to the real Envoy, on the same bootstrap: what a client sees
//! (bytes, closes), what an operator sees (stats, admin pages) and how each shuts down.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use e2e::ProxyProcess;

const PROXY: &str = env!("CARGO_BIN_EXE_proxy");

/// Ports one process listens on.
#[derive(Clone, Copy, Debug)]
struct Ports {
    good: u16,
    dead: u16,
}

/// An echo server for the upstream, on a thread per connection; lives for the test.
fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
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
    port
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_ports() -> Ports {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    Ports {
        good: a.local_addr().unwrap().port(),
        dead: b.local_addr().unwrap().port(),
    }
}

/// Two tcp_proxy listeners: one to an echo cluster, one to a cluster whose only endpoint
/// refuses connections.
fn tcp_bootstrap(ports: Ports, echo: u16, refused: u16) -> String {
    let listener = |port: u16, prefix: &str, cluster: &str| {
        format!(
            "  - name: {prefix}\n    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}\n\
             \x20   filter_chains:\n    - filters:\n      - name: envoy.filters.network.tcp_proxy\n\
             \x20       typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n\
             \x20         stat_prefix: {prefix}\n          cluster: {cluster}\n"
        )
    };
    let cluster = |name: &str, port: u16| {
        format!(
            "  - name: {name}\n    connect_timeout: 1s\n    load_assignment:\n      cluster_name: {name}\n\
             \x20     endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]\n"
        )
    };
    format!(
        "admin:\n  address:\n    socket_address: {{ address: 127.0.0.1, port_value: 0 }}\n\
         static_resources:\n  listeners:\n{}{}  clusters:\n{}{}",
        listener(ports.good, "ingress", "echo"),
        listener(ports.dead, "nowhere", "dead"),
        cluster("echo", echo),
        cluster("dead", refused),
    )
}

fn start_ours(yaml: &str) -> ProxyProcess {
    ProxyProcess::start(Path::new(PROXY), yaml, &[]).unwrap()
}

/// Sends `payload`, half-closes and returns everything read until the peer closes.
fn round_trip(port: u16, payload: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // A refused upstream may close us before the write lands; the read tells.
    let _ = stream.write_all(payload);
    let _ = stream.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

/// The traffic both processes get.
fn drive(ports: Ports) -> Vec<Vec<u8>> {
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    vec![
        round_trip(ports.good, b"hello"),
        round_trip(ports.good, &big),
        round_trip(ports.good, b""),
        round_trip(ports.dead, b"anyone there?"),
    ]
}

/// Stats whose names start with one of `prefixes`, with the process's own ports replaced
/// by placeholders so the two processes compare.
fn stats_of(p: &ProxyProcess, ports: Ports, prefixes: &[&str]) -> BTreeMap<String, u64> {
    p.stats()
        .unwrap()
        .into_iter()
        .map(|(k, v)| {
            let k = k
                .replace(&format!("_{}.", ports.good), "_GOOD.")
                .replace(&format!("_{}.", ports.dead), "_DEAD.");
            (k, v)
        })
        .filter(|(k, _)| prefixes.iter().any(|p| k.starts_with(p)))
        .collect()
}

/// Stats that depend on timing or on implementation details a user cannot observe.
fn comparable(name: &str) -> bool {
    const SKIP: &[&str] = &[
        // Buffer occupancy at an instant.
        "rx_bytes_buffered",
        "tx_bytes_buffered",
    ];
    !SKIP.iter().any(|s| name.ends_with(s))
}

/// Polls until the connection counters settle (connections close asynchronously).
fn settled(p: &ProxyProcess, ports: Ports) -> BTreeMap<String, u64> {
    let prefixes = [
        "tcp.",
        "cluster.echo.",
        "cluster.dead.",
        "listener.127.0.0.1_GOOD.",
        "listener.127.0.0.1_DEAD.",
    ];
    for _ in 0..100 {
        let s = stats_of(p, ports, &prefixes);
        let active: u64 = s
            .iter()
            .filter(|(k, _)| k.ends_with("_cx_active"))
            .map(|(_, v)| v)
            .sum();
        if active == 0 && s.get("tcp.ingress.downstream_cx_total") == Some(&3) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stats_of(p, ports, &prefixes)
}

#[test]
fn tcp_proxy_bytes_and_stats_match_envoy() {
    let Some(envoy_bin) = e2e::require_envoy("tcp_proxy_bytes_and_stats_match_envoy") else {
        return;
    };
    let echo = echo_server();
    let refused = closed_port();
    let (envoy_ports, our_ports) = (free_ports(), free_ports());
    let envoy =
        ProxyProcess::start(&envoy_bin, &tcp_bootstrap(envoy_ports, echo, refused), &[]).unwrap();
    let ours = start_ours(&tcp_bootstrap(our_ports, echo, refused));

    let envoy_seen = drive(envoy_ports);
    let our_seen = drive(our_ports);
    assert_eq!(envoy_seen[0], b"hello");
    assert_eq!(envoy_seen[1].len(), 200_000);
    for (i, (e, o)) in envoy_seen.iter().zip(&our_seen).enumerate() {
        assert!(
            e == o,
            "connection {i}: envoy read {} bytes, we {}",
            e.len(),
            o.len()
        );
    }

    let envoy_stats = settled(&envoy, envoy_ports);
    let our_stats = settled(&ours, our_ports);
    let mut differences = Vec::new();
    for (name, value) in envoy_stats.iter().filter(|(k, _)| comparable(k)) {
        match our_stats.get(name) {
            None => differences.push(format!("{name}: envoy {value}, missing in ours")),
            Some(v) if v != value => differences.push(format!("{name}: envoy {value}, ours {v}")),
            Some(_) => {}
        }
    }
    for name in our_stats.keys().filter(|k| !envoy_stats.contains_key(*k)) {
        differences.push(format!("{name}: ours only"));
    }
    assert!(
        differences.is_empty(),
        "{} stats differ:\n{}",
        differences.len(),
        differences.join("\n")
    );
    assert_eq!(our_stats["tcp.ingress.downstream_cx_total"], 3);
    assert_eq!(our_stats["cluster.dead.upstream_cx_connect_fail"], 1);
}

/// The keys an operator's tooling reads from the admin pages.
fn admin_shape(p: &ProxyProcess, ports: Ports) -> BTreeMap<&'static str, BTreeSet<String>> {
    let get = |path: &str| {
        let (status, body) = e2e::http::get(p.admin, path).unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        body
    };
    let normalize = |s: &str| {
        s.replace(&format!(":{}", ports.good), ":GOOD")
            .replace(&format!(":{}", ports.dead), ":DEAD")
    };
    let mut shape = BTreeMap::new();
    // `/clusters`: `cluster::host::stat::value`; keep `cluster::key` and host stat names.
    let clusters: BTreeSet<String> = get("/clusters")
        .lines()
        .map(|l| {
            let parts: Vec<&str> = l.split("::").collect();
            match parts.as_slice() {
                [c, host, stat, _] if host.contains(':') => format!("{c}::HOST::{stat}"),
                [c, key, rest @ ..] if rest.len() <= 2 => {
                    format!("{c}::{key}{}", if rest.len() == 2 { "::.." } else { "" })
                }
                _ => l.to_string(),
            }
        })
        .collect();
    shape.insert("/clusters", clusters);
    shape.insert(
        "/listeners",
        get("/listeners").lines().map(normalize).collect(),
    );
    let info: serde_json::Value = serde_json::from_str(&get("/server_info")).unwrap();
    shape.insert(
        "/server_info keys",
        info.as_object().unwrap().keys().cloned().collect(),
    );
    shape.insert(
        "/server_info command_line_options",
        info["command_line_options"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect(),
    );
    let dump: serde_json::Value = serde_json::from_str(&get("/config_dump")).unwrap();
    shape.insert(
        "/config_dump types",
        dump["configs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["@type"].as_str().unwrap().to_string())
            .collect(),
    );
    shape.insert("/ready", BTreeSet::from([get("/ready").trim().to_string()]));
    shape
}

#[test]
fn admin_pages_have_envoys_shape() {
    let Some(envoy_bin) = e2e::require_envoy("admin_pages_have_envoys_shape") else {
        return;
    };
    let echo = echo_server();
    let refused = closed_port();
    let (envoy_ports, our_ports) = (free_ports(), free_ports());
    let envoy =
        ProxyProcess::start(&envoy_bin, &tcp_bootstrap(envoy_ports, echo, refused), &[]).unwrap();
    let ours = start_ours(&tcp_bootstrap(our_ports, echo, refused));
    let envoy_shape = admin_shape(&envoy, envoy_ports);
    let our_shape = admin_shape(&ours, our_ports);
    for (page, envoy_keys) in &envoy_shape {
        let ours = &our_shape[page];
        let missing: Vec<_> = envoy_keys.difference(ours).collect();
        let extra: Vec<_> = ours.difference(envoy_keys).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{page}: missing {missing:?}, extra {extra:?}"
        );
    }
}

/// An open connection through the `good` listener, checked to be proxying.
fn open_connection(ports: Ports) -> TcpStream {
    let mut open = TcpStream::connect(("127.0.0.1", ports.good)).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    open.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    open.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    open
}

fn is_closed(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    matches!(stream.read_to_end(&mut rest), Ok(0) | Err(_))
}

fn sigterm(p: &ProxyProcess) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(p.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}

/// What asks the proxy to stop.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Sigterm,
    Quitquitquit,
}

fn stop(p: &ProxyProcess, how: Stop) {
    match how {
        Stop::Sigterm => sigterm(p),
        Stop::Quitquitquit => {
            let (status, _) =
                e2e::http::request(p.admin, "POST", "/quitquitquit", &[], "").unwrap();
            assert_eq!(status, 200);
        }
    }
}

/// SIGTERM and `/quitquitquit` drain (Envoy would exit at once): the listener stops
/// accepting, an open connection keeps working, and the process exits 0 as soon as it
/// closes.
#[test]
fn stopping_lets_open_connections_finish_then_exits_zero() {
    let echo = echo_server();
    for how in [Stop::Sigterm, Stop::Quitquitquit] {
        let ports = free_ports();
        let yaml = tcp_bootstrap(ports, echo, closed_port());
        let mut p =
            ProxyProcess::start(Path::new(PROXY), &yaml, &["--drain-time-s", "30"]).unwrap();
        let mut open = open_connection(ports);
        stop(&p, how);
        let mut refused = false;
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", ports.good)).is_err() {
                refused = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(refused, "{how:?}: the listener should stop accepting");
        assert_eq!(
            p.wait_exit(Duration::from_millis(300)).unwrap(),
            None,
            "{how:?}"
        );
        open.write_all(b"still there?").unwrap();
        let mut buf = [0u8; 12];
        open.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"still there?", "{how:?}");
        drop(open);
        let status = p.wait_exit(Duration::from_secs(10)).unwrap();
        let status = status
            .unwrap_or_else(|| panic!("{how:?}: still running after the last close: {}", p.log()));
        assert!(status.success(), "{how:?}: {status}");
    }
}

/// A connection that outlives the drain time is closed, then the process exits 0; a second
/// SIGTERM ends the drain at once.
#[test]
fn stopping_closes_what_is_left_after_the_drain_time() {
    let echo = echo_server();
    for (how, drain, second_signal) in [
        (Stop::Sigterm, "1", false),
        (Stop::Quitquitquit, "1", false),
        (Stop::Sigterm, "600", true),
    ] {
        let ports = free_ports();
        let yaml = tcp_bootstrap(ports, echo, closed_port());
        let mut p =
            ProxyProcess::start(Path::new(PROXY), &yaml, &["--drain-time-s", drain]).unwrap();
        let mut open = open_connection(ports);
        stop(&p, how);
        if second_signal {
            std::thread::sleep(Duration::from_millis(200));
            sigterm(&p);
        }
        let status = p.wait_exit(Duration::from_secs(10)).unwrap();
        let status =
            status.unwrap_or_else(|| panic!("{how:?}: still running after the drain: {}", p.log()));
        assert!(status.success(), "{how:?}: {status}");
        assert!(
            is_closed(&mut open),
            "{how:?}: the connection should be closed at exit"
        );
    }
}
