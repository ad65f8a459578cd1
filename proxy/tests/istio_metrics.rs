#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Istio's standard TCP and HTTP metrics from the `proxy` binary, scraped from `/stats/prometheus`
//! the way Prometheus does, with the bootstrap's Istio stats inclusion list in force.
//! (Upstream Envoy has no `istio.stats`, so there is no Envoy to compare with here.)

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use e2e::ProxyProcess;
use support::pki::{Ca, STATIC, indent, istio_inbound, istio_mutual};

mod support;

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

/// An HTTP/1.1 backend that answers each request with the request's header names, one per
/// line, so a test sees what reached the app.
fn header_echo_backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                let mut seen = Vec::new();
                while let Ok(n @ 1..) = s.read(&mut buf) {
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&seen[..end]).to_string();
                        seen.drain(..end + 4);
                        let names: String = head
                            .lines()
                            .skip(1)
                            .filter_map(|l| l.split_once(':'))
                            .map(|(k, _)| format!("{}\n", k.to_ascii_lowercase()))
                            .collect();
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{names}",
                            names.len()
                        );
                        if s.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

const NODE_SLEEP: &str = "id: sidecar~10.244.1.5~sleep-7d4f.full~full.svc.cluster.local\n  metadata: {WORKLOAD_NAME: sleep, NAME: sleep-7d4f, NAMESPACE: full, CLUSTER_ID: Kubernetes, LABELS: {app: sleep, version: v1}}";
const NODE_HTTPBIN: &str = "id: sidecar~10.244.1.6~httpbin-5c9d.full~full.svc.cluster.local\n  metadata: {WORKLOAD_NAME: httpbin, NAME: httpbin-5c9d, NAMESPACE: full, CLUSTER_ID: Kubernetes, LABELS: {app: httpbin, version: v2}}";

/// The TLS pieces of one sidecar: its `default`/`ROOTCA` secrets (files in `dir`), and
/// the transport socket YAML for its mTLS side.
struct SidecarTls {
    secrets: String,
    transport: String,
}

fn sidecar_tls(dir: &Path, ca: &Ca, id: &str, inbound: bool) -> SidecarTls {
    let name = id.rsplit('/').next().unwrap_or("leaf");
    let (cert, key) = ca.leaf(id).write(dir, name);
    let root = ca.write(dir, "root-cert.pem");
    let secrets = format!(
        "  - name: default\n    tls_certificate: {{certificate_chain: {{filename: {}}}, private_key: {{filename: {}}}}}\n  - name: ROOTCA\n    validation_context: {{trusted_ca: {{filename: {}}}}}\n",
        cert.display(),
        key.display(),
        root.display()
    );
    let (kind, ctx) = if inbound {
        (
            "DownstreamTlsContext",
            istio_inbound(&["istio-http/1.1", "h2", "http/1.1"], STATIC),
        )
    } else {
        (
            "UpstreamTlsContext",
            istio_mutual(
                &[SA_HTTPBIN],
                &["istio-http/1.1", "istio", "http/1.1"],
                STATIC,
            ),
        )
    };
    let transport = format!(
        "transport_socket:\n  name: envoy.transport_sockets.tls\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.{kind}\n{}",
        indent(&ctx, 4)
    );
    SidecarTls { secrets, transport }
}

const SA_SLEEP: &str = "spiffe://cluster.local/ns/full/sa/sleep";
const SA_HTTPBIN: &str = "spiffe://cluster.local/ns/full/sa/httpbin";

/// A sidecar with one HTTP listener on `port` whose routes send `/details` to a cluster of
/// `details` (an app without a sidecar: its workload is in the endpoint metadata, as istiod
/// writes it) and everything else to `cluster` at `upstream`, with Istio's
/// `istio.metadata_exchange` and `istio.stats` HTTP filters. An inbound sidecar requires
/// mTLS on its listener; an outbound one originates it to `cluster`.
fn mx_sidecar(
    node: &str,
    tls: &SidecarTls,
    port: u16,
    cluster: &str,
    upstream: u16,
    details: u16,
) -> String {
    let inbound = tls.transport.contains("DownstreamTlsContext");
    let (direction, mx, chain_tls, cluster_tls) = if inbound {
        (
            "INBOUND",
            "{downstream_discovery: [{istio_headers: {}}, {workload_discovery: {}}], downstream_propagation: [{istio_headers: {}}]}",
            indent(&tls.transport, 6),
            String::new(),
        )
    } else {
        (
            "OUTBOUND",
            "{upstream_discovery: [{istio_headers: {}}, {workload_discovery: {}}], upstream_propagation: [{istio_headers: {skip_external_clusters: true}}]}",
            String::new(),
            indent(&tls.transport, 4),
        )
    };
    let secrets = &tls.secrets;
    format!(
        r#"
node:
  {node}
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
static_resources:
  secrets:
{secrets}  listeners:
  - name: mx_{port}
    traffic_direction: {direction}
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: mx_{port}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - {{match: {{prefix: /details}}, route: {{cluster: "outbound|9080||details.full.svc.cluster.local"}}}}
              - {{match: {{prefix: /}}, route: {{cluster: "{cluster}"}}}}
          http_filters:
          - name: istio.metadata_exchange
            typed_config:
              "@type": type.googleapis.com/udpa.type.v1.TypedStruct
              type_url: type.googleapis.com/io.istio.http.peer_metadata.Config
              value: {mx}
          - name: istio.stats
            typed_config: {{"@type": type.googleapis.com/stats.PluginConfig}}
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
{chain_tls}  clusters:
  - name: "{cluster}"
    connect_timeout: 1s
{cluster_tls}    load_assignment:
      cluster_name: "{cluster}"
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}}}]}}]
  - name: "outbound|9080||details.full.svc.cluster.local"
    connect_timeout: 1s
    load_assignment:
      cluster_name: details
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {details}}}}}}}
          metadata: {{filter_metadata: {{istio: {{workload: "details-v1;full;details;v1;Kubernetes"}}}}}}
"#
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 GET on a fresh connection: the response head (lower-cased) and body.
fn get(port: u16, path: &str, extra: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: httpbin.full.svc.cluster.local:8000\r\nconnection: close\r\n{extra}\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_ascii_lowercase(), body.to_string())
}

/// Scrapes until `istio_requests_total` has a series containing every label in `want` with
/// `count`, then returns it.
fn series(p: &ProxyProcess, want: &[&str], count: u32) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = e2e::http::get(p.admin, "/stats/prometheus").unwrap();
        let found = text
            .lines()
            .filter(|l| l.starts_with("istio_requests_total{"))
            .find(|l| want.iter().all(|w| l.contains(w)))
            .map(str::to_string);
        match found {
            Some(l) if l.ends_with(&format!(" {count}")) => return l,
            _ if Instant::now() > deadline => {
                panic!("no istio_requests_total with {want:?} = {count}:\n{text}")
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Istio's HTTP metadata exchange between two sidecars over mTLS: each side's
/// `istio_requests_total` names the other workload and principal, the exchange headers never
/// reach either app, and an upstream without a sidecar is named from its endpoint metadata.
/// (A client that sends no exchange headers gets none back: a unit test of
/// `http::peer_metadata`.)
#[test]
fn http_metadata_exchange_labels_both_sides_and_stays_between_sidecars() {
    let app = header_echo_backend();
    let details = header_echo_backend();
    let (client_port, server_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster.local");
    let server_tls = sidecar_tls(dir.path(), &ca, SA_HTTPBIN, true);
    let client_tls = sidecar_tls(dir.path(), &ca, SA_SLEEP, false);
    let server = ProxyProcess::start(
        Path::new(PROXY),
        &mx_sidecar(
            NODE_HTTPBIN,
            &server_tls,
            server_port,
            "inbound|8000||",
            app,
            details,
        ),
        &[],
    )
    .unwrap();
    let client = ProxyProcess::start(
        Path::new(PROXY),
        &mx_sidecar(
            NODE_SLEEP,
            &client_tls,
            client_port,
            "outbound|8000||httpbin.full.svc.cluster.local",
            server_port,
            details,
        ),
        &[],
    )
    .unwrap();

    for _ in 0..3 {
        let (head, body) = get(client_port, "/headers", "");
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(
            !body.contains("x-envoy-peer-metadata"),
            "the app saw: {body}"
        );
        assert!(
            !head.contains("x-envoy-peer-metadata"),
            "the client saw: {head}"
        );
    }
    let outbound = series(
        &client,
        &[
            "reporter=\"source\"",
            "source_workload=\"sleep\"",
            "destination_workload=\"httpbin\"",
            "destination_workload_namespace=\"full\"",
            "destination_app=\"httpbin\"",
            "destination_version=\"v2\"",
            "destination_service=\"httpbin.full.svc.cluster.local\"",
            "response_code=\"200\"",
        ],
        3,
    );
    assert!(
        outbound.contains("destination_cluster=\"Kubernetes\""),
        "{outbound}"
    );
    for label in [
        format!("destination_principal=\"{SA_HTTPBIN}\""),
        format!("source_principal=\"{SA_SLEEP}\""),
    ] {
        assert!(outbound.contains(&label), "{label} missing: {outbound}");
    }
    let inbound = series(
        &server,
        &[
            "reporter=\"destination\"",
            "destination_workload=\"httpbin\"",
            "source_workload=\"sleep\"",
            "source_workload_namespace=\"full\"",
            "source_app=\"sleep\"",
            "source_version=\"v1\"",
            "response_code=\"200\"",
        ],
        3,
    );
    assert!(
        inbound.contains("source_cluster=\"Kubernetes\""),
        "{inbound}"
    );

    for label in [
        format!("source_principal=\"{SA_SLEEP}\""),
        format!("destination_principal=\"{SA_HTTPBIN}\""),
        "connection_security_policy=\"mutual_tls\"".to_string(),
    ] {
        assert!(inbound.contains(&label), "{label} missing: {inbound}");
    }

    // An upstream without a sidecar: its workload comes from the endpoint's metadata.
    let (head, body) = get(client_port, "/details", "");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        body.contains("x-envoy-peer-metadata"),
        "in-mesh upstreams get ours: {body}"
    );
    series(
        &client,
        &[
            "reporter=\"source\"",
            "destination_workload=\"details-v1\"",
            "destination_app=\"details\"",
            "destination_version=\"v1\"",
        ],
        1,
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
