#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Istio's standard TCP and HTTP metrics from the `proxy` binary, scraped from `/stats/prometheus`
//! the way Prometheus does, with the bootstrap's Istio stats inclusion list in force.
//! (Upstream Envoy has no `istio.stats`, so there is no Envoy to compare with here.)

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

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

fn bootstrap(port: u16, upstream: u16) -> String {
    format!(
        r#"
node:
  id: sidecar~10.244.1.5~sleep-7d4f.full~full.svc.cluster.local
  cluster: sleep.full
  metadata:
    WORKLOAD_NAME: sleep
    NAMESPACE: full
    CLUSTER_ID: Kubernetes
    LABELS: {{app: sleep, version: v1}}
stats_config:
  stats_matcher:
    inclusion_list:
      patterns: [{{prefix: "reporter="}}, {{prefix: "cluster_manager"}}, {{prefix: "listener_manager"}}, {{prefix: "server"}}, {{prefix: "component"}}, {{prefix: "istio"}}]
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
static_resources:
  listeners:
  - name: 10.96.0.20_9000
    traffic_direction: OUTBOUND
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: istio.stats
        typed_config: {{"@type": type.googleapis.com/stats.PluginConfig}}
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: "outbound|9000||tcp-echo.rot.svc.cluster.local"
          cluster: "outbound|9000||tcp-echo.rot.svc.cluster.local"
  clusters:
  - name: "outbound|9000||tcp-echo.rot.svc.cluster.local"
    connect_timeout: 1s
    load_assignment:
      cluster_name: "outbound|9000||tcp-echo.rot.svc.cluster.local"
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}
          metadata:
            filter_metadata:
              istio: {{workload: "tcp-echo-v3;rot;tcp-echo;v3;Kubernetes"}}
"#
    )
}

/// The sample line of `metric` in a Prometheus scrape.
fn sample(text: &str, metric: &str) -> Option<String> {
    text.lines()
        .find(|l| l.starts_with(&format!("{metric}{{")))
        .map(str::to_string)
}

#[test]
fn tcp_connections_are_reported_with_istio_labels() {
    let upstream = echo();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = ProxyProcess::start(Path::new(PROXY), &bootstrap(port, upstream), &[]).unwrap();
    for payload in [&b"hello"[..], b"world!"] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(payload).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).unwrap();
        assert_eq!(back, payload);
    }

    let deadline = Instant::now() + Duration::from_secs(10);
    let scrape = loop {
        let (status, text) = e2e::http::get(p.admin, "/stats/prometheus").unwrap();
        assert_eq!(status, 200);
        let closed = sample(&text, "istio_tcp_connections_closed_total");
        if closed.as_deref().is_some_and(|l| l.ends_with(" 2")) || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let sent = sample(&scrape, "istio_tcp_sent_bytes_total").unwrap_or_else(|| panic!("{scrape}"));
    for label in [
        "reporter=\"source\"",
        "source_workload=\"sleep\"",
        "source_workload_namespace=\"full\"",
        "source_app=\"sleep\"",
        "source_version=\"v1\"",
        "source_cluster=\"Kubernetes\"",
        "destination_workload=\"tcp-echo-v3\"",
        "destination_workload_namespace=\"rot\"",
        "destination_canonical_service=\"tcp-echo\"",
        "destination_canonical_revision=\"v3\"",
        "destination_service=\"tcp-echo.rot.svc.cluster.local\"",
        "destination_service_name=\"tcp-echo\"",
        "destination_service_namespace=\"rot\"",
        "request_protocol=\"tcp\"",
        "response_flags=\"-\"",
        "connection_security_policy=\"unknown\"",
    ] {
        assert!(sent.contains(label), "{label} missing: {sent}");
    }
    assert!(sent.ends_with(" 11"), "bytes sent: {sent}");
    let received = sample(&scrape, "istio_tcp_received_bytes_total").unwrap();
    assert!(received.ends_with(" 11"), "{received}");
    let opened = sample(&scrape, "istio_tcp_connections_opened_total").unwrap();
    assert!(opened.ends_with(" 2"), "{opened}");
    assert!(
        scrape.contains("# TYPE istio_tcp_connections_closed_total counter"),
        "{scrape}"
    );
}

/// A minimal HTTP/1.1 backend: answers every request with `200 ok`.
fn http_backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while let Ok(n @ 1..) = s.read(&mut buf) {
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if s.write_all(reply).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

fn http_bootstrap(port: u16, upstream: u16) -> String {
    format!(
        r#"
node:
  id: sidecar~10.244.1.5~sleep-7d4f.full~full.svc.cluster.local
  metadata: {{WORKLOAD_NAME: sleep, NAMESPACE: full, LABELS: {{app: sleep, version: v1}}}}
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
static_resources:
  listeners:
  - name: 0.0.0.0_8000
    traffic_direction: OUTBOUND
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: outbound_0.0.0.0_8000
          route_config:
            name: "8000"
            virtual_hosts:
            - name: httpbin
              domains: ["*"]
              routes: [{{match: {{prefix: /}}, route: {{cluster: "outbound|8000||httpbin.full.svc.cluster.local"}}}}]
          http_filters:
          - name: istio.stats
            typed_config: {{"@type": type.googleapis.com/stats.PluginConfig}}
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
  - name: "outbound|8000||httpbin.full.svc.cluster.local"
    connect_timeout: 1s
    load_assignment:
      cluster_name: "outbound|8000||httpbin.full.svc.cluster.local"
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}}}]}}]
"#
    )
}

#[test]
fn http_requests_are_reported_with_istio_labels() {
    let upstream = http_backend();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = ProxyProcess::start(Path::new(PROXY), &http_bootstrap(port, upstream), &[]).unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..3 {
        s.write_all(b"GET /headers HTTP/1.1\r\nhost: httpbin.full.svc.cluster.local:8000\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let scrape = loop {
        let (_, text) = e2e::http::get(p.admin, "/stats/prometheus").unwrap();
        let total = sample(&text, "istio_requests_total");
        if total.as_deref().is_some_and(|l| l.ends_with(" 3")) || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let total = sample(&scrape, "istio_requests_total").unwrap_or_else(|| panic!("{scrape}"));
    for label in [
        "reporter=\"source\"",
        "source_workload=\"sleep\"",
        "destination_service=\"httpbin.full.svc.cluster.local\"",
        "destination_service_name=\"httpbin\"",
        "destination_service_namespace=\"full\"",
        "request_protocol=\"http\"",
        "response_code=\"200\"",
        "response_flags=\"-\"",
    ] {
        assert!(total.contains(label), "{label} missing: {total}");
    }
    assert!(total.ends_with(" 3"), "{total}");
    assert!(
        scrape.contains("istio_request_duration_milliseconds_count{"),
        "{scrape}"
    );
}

/// The value of `metric`'s sample, if the scrape has it.
fn value(text: &str, metric: &str) -> Option<u64> {
    sample(text, metric)?.rsplit(' ').next()?.parse().ok()
}

/// Istio reports a long-lived TCP connection every `tcp_reporting_duration` (5 s), not
/// only when it closes: the open and the bytes show while it stays open, and the close
/// adds only what is new.
#[test]
fn open_tcp_connections_are_reported_periodically() {
    let upstream = echo();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = ProxyProcess::start(Path::new(PROXY), &bootstrap(port, upstream), &[]).unwrap();
    let scrape = || e2e::http::get(p.admin, "/stats/prometheus").unwrap().1;
    // Waits (past a report period or two) until the scrape shows `want`.
    let wait_for = |want: (Option<u64>, Option<u64>, Option<u64>, Option<u64>)| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = scrape();
            let seen = (
                value(&text, "istio_tcp_connections_opened_total"),
                value(&text, "istio_tcp_sent_bytes_total"),
                value(&text, "istio_tcp_received_bytes_total"),
                value(&text, "istio_tcp_connections_closed_total"),
            );
            if seen == want || Instant::now() > deadline {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut echo_back = |payload: &[u8]| {
        s.write_all(payload).unwrap();
        let mut back = vec![0u8; payload.len()];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, payload);
    };
    echo_back(b"hello");
    // Open: reported as opened with its bytes, not as closed.
    assert_eq!(
        wait_for((Some(1), Some(5), Some(5), Some(0))),
        (Some(1), Some(5), Some(5), Some(0))
    );
    echo_back(b"world!");
    assert_eq!(
        wait_for((Some(1), Some(11), Some(11), Some(0))),
        (Some(1), Some(11), Some(11), Some(0)),
        "the bytes of a connection still open grow"
    );
    s.shutdown(Shutdown::Both).unwrap();
    drop(s);
    assert_eq!(
        wait_for((Some(1), Some(11), Some(11), Some(1))),
        (Some(1), Some(11), Some(11), Some(1)),
        "the close counts once and adds no bytes twice"
    );
}
