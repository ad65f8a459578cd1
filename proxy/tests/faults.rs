#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Faults a sidecar meets in production, against the `proxy` binary (and the real Envoy as
//! the yardstick where a figure is reported): thousands of idle connections, running out of
//! file descriptors, and clients that stall in the listener filters. Each test checks that
//! the proxy keeps serving and leaks nothing; memory figures are printed, never asserted.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e::ProxyProcess;
use nix::sys::resource::{Resource, getrlimit, setrlimit};

const PROXY: &str = env!("CARGO_BIN_EXE_proxy");

/// A tokio echo upstream (cheap per connection, unlike a thread each); lives for the test.
fn echo_upstream() -> u16 {
    // A deep backlog: thousands of connections arrive at once.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let addr: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&addr.into()).unwrap();
    socket.listen(4096).unwrap();
    let listener: TcpListener = socket.into();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
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

/// A tcp_proxy listener on `port` to the echo upstream; `listener_extra` goes into the
/// listener (listener filters, timeouts).
fn bootstrap(port: u16, upstream: u16, listener_extra: &str) -> String {
    format!(
        r#"
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
static_resources:
  listeners:
  - name: ingress
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
{listener_extra}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: ingress
          cluster: echo
  clusters:
  - name: echo
    connect_timeout: 10s
    # Envoy's defaults (1024 connections, 1024 connecting at once: each tcp_proxy connection
    # is a pending request while it connects) would cap the crowd; Istio raises them all.
    circuit_breakers: {{thresholds: [{{max_connections: 4294967295, max_pending_requests: 4294967295, max_requests: 4294967295}}]}}
    load_assignment:
      cluster_name: echo
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}}}]}}]
"#
    )
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// One byte there and back: the connection is proxied end to end.
fn ping(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    s.write_all(b"x").is_ok() && s.read_exact(&mut b).is_ok() && &b == b"x"
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn stat(p: &ProxyProcess, name: &str) -> u64 {
    p.stats().unwrap().get(name).copied().unwrap_or(0)
}

/// Waits until `name` reaches `want`; returns the last value.
fn wait_stat(p: &ProxyProcess, name: &str, want: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = stat(p, name);
        if v == want || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Raises this process's soft file limit to the hard one (children inherit it), and past
/// the hard limit to `want` where allowed (CAP_SYS_RESOURCE). Returns the limit in force.
fn raise_nofile(want: u64) -> u64 {
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if hard < want && setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
        return want;
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    hard
}

/// Holds `n` idle proxied connections; returns the RSS growth per connection in bytes and
/// checks every connection works and nothing is left behind once they close.
fn idle_connections(binary: &Path, n: usize) -> f64 {
    let upstream = echo_upstream();
    let port = free_port();
    let p = ProxyProcess::start(binary, &bootstrap(port, upstream, ""), &[]).unwrap();
    // Warm up the worker and the pools, then take the baseline.
    let mut warm = connect(port);
    assert!(ping(&mut warm));
    drop(warm);
    let active = format!("listener.127.0.0.1_{port}.downstream_cx_active");
    wait_stat(&p, &active, 0);
    let (rss0, fds0) = (rss_kib(p.pid()), open_fds(p.pid()));

    let mut conns: Vec<TcpStream> = (0..n).map(|_| connect(port)).collect();
    let failed = conns.iter_mut().map(ping).filter(|ok| !ok).count();
    assert_eq!(
        failed,
        0,
        "{}: {failed} of {n} idle connections did not proxy; stats: {:?}",
        binary.display(),
        p.stats().map(|s| s
            .into_iter()
            .filter(|(k, v)| *v > 0 && (k.contains("cx_") || k.contains("overflow")))
            .collect::<Vec<_>>())
    );
    assert_eq!(wait_stat(&p, &active, n as u64), n as u64);
    let per_conn = (rss_kib(p.pid()).saturating_sub(rss0) * 1024) as f64 / n as f64;

    for c in &conns {
        let _ = c.shutdown(Shutdown::Both);
    }
    conns.clear();
    assert_eq!(wait_stat(&p, &active, 0), 0, "connections left open");
    // Every socket is closed again (the upstream side closes asynchronously).
    let deadline = Instant::now() + Duration::from_secs(20);
    while open_fds(p.pid()) > fds0 + 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        open_fds(p.pid()) <= fds0 + 2,
        "file descriptors leaked: {} before, {} after",
        fds0,
        open_fds(p.pid())
    );
    // Still serving.
    let mut after = connect(port);
    assert!(ping(&mut after));
    per_conn
}

#[test]
fn ten_thousand_idle_connections() {
    // Each proxied connection costs the proxy two descriptors and this process two (client
    // and upstream): 10,000 needs a hard limit above 20,000, else the largest crowd that fits.
    let limit = raise_nofile(32_768);
    let n = (limit.saturating_sub(2_000) / 2).min(10_000) as usize;
    let ours = idle_connections(Path::new(PROXY), n);
    let envoy = e2e::require_envoy("ten_thousand_idle_connections (envoy figure)")
        .map(|bin| idle_connections(&bin, n));
    println!(
        "{n} idle connections: ours {:.0} bytes/connection, envoy {}",
        ours,
        envoy.map_or("not run".to_string(), |e| format!(
            "{e:.0} bytes/connection"
        ))
    );
}

/// A wrapper that runs the proxy with a small file limit, as a badly configured host would.
fn with_nofile(limit: u64, dir: &Path) -> PathBuf {
    let script = dir.join("proxy-lowfd");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nexec prlimit --nofile={limit}:{limit} {PROXY} \"$@\"\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn out_of_file_descriptors_sheds_and_recovers() {
    if !Path::new("/usr/bin/prlimit").exists() {
        println!("SKIPPED out_of_file_descriptors_sheds_and_recovers: prlimit not installed");
        return;
    }
    raise_nofile(4096);
    let dir = tempfile::tempdir().unwrap();
    let upstream = echo_upstream();
    let port = free_port();
    let script = with_nofile(256, dir.path());
    // Another test's fork may still hold the script's write descriptor for an instant
    // (ETXTBSY): try again.
    let p = (0..50)
        .find_map(
            |_| match ProxyProcess::start(&script, &bootstrap(port, upstream, ""), &[]) {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                    std::thread::sleep(Duration::from_millis(20));
                    None
                }
                other => Some(other),
            },
        )
        .expect("the wrapper script stays busy")
        .unwrap();
    // Far more clients than 256 descriptors allow (two per proxied connection).
    let mut flood: Vec<TcpStream> = (0..400).map(|_| connect(port)).collect();
    for c in &flood {
        c.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
    }
    let served = flood.iter_mut().map(ping).filter(|ok| *ok).count();
    assert!(
        served > 50,
        "only {served} of 400 served while below the limit"
    );
    assert!(served < 400, "all 400 served: the limit did not apply");
    // The proxy is alive and its admin answers once descriptors free up.
    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut recovered = false;
    while Instant::now() < deadline && !recovered {
        std::thread::sleep(Duration::from_millis(200));
        let mut c = connect(port);
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        recovered = ping(&mut c);
    }
    assert!(
        recovered,
        "no new connection was served after the flood ended"
    );
    assert!(p.stats().is_ok(), "admin did not answer after the flood");
}

/// Clients that send one byte of a TLS record and stall keep the TLS inspector waiting.
#[test]
fn stalled_clients_in_listener_filters_time_out_like_envoy() {
    let upstream = echo_upstream();
    let extra = r#"    listener_filters_timeout: 0.5s
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"#;
    let mut figures = Vec::new();
    let mut binaries = vec![PathBuf::from(PROXY)];
    binaries.extend(e2e::require_envoy("stalled clients (envoy)"));
    for bin in binaries {
        let port = free_port();
        let p = ProxyProcess::start(&bin, &bootstrap(port, upstream, extra), &[]).unwrap();
        let mut stalled: Vec<TcpStream> = (0..50)
            .map(|_| {
                let mut s = connect(port);
                s.write_all(&[0x16]).unwrap();
                s
            })
            .collect();
        // A well-behaved client is served meanwhile (plaintext: the inspector decides fast).
        let mut good = connect(port);
        good.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut echoed = [0u8; 18];
        good.read_exact(&mut echoed).unwrap();
        assert_eq!(&echoed, b"GET / HTTP/1.1\r\n\r\n");
        // Every stalled client is closed by the proxy after the timeout.
        for s in &mut stalled {
            let mut b = [0u8; 1];
            let closed = matches!(s.read(&mut b), Ok(0) | Err(_));
            assert!(closed, "{}: a stalled client was not closed", bin.display());
        }
        let timeouts = wait_stat(
            &p,
            &format!("listener.127.0.0.1_{port}.downstream_pre_cx_timeout"),
            50,
        );
        figures.push((bin, timeouts));
    }
    for (bin, timeouts) in &figures {
        assert_eq!(
            *timeouts,
            50,
            "{}: downstream_pre_cx_timeout",
            bin.display()
        );
    }
}
