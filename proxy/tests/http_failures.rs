#![allow(clippy::unwrap_used, clippy::expect_used)]
//! What our HTTP connection manager does when things go wrong, over real loopback TCP:
//! Envoy's local replies, response flags in the access log, retries, timeouts, circuit
//! breakers, upgrades and draining.

mod http_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_support::*;
use proxy::http::HttpContext;
use proxy::stats::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A proxy whose access log (`code flags details "transport failure"`) goes to a file.
struct Logged {
    proxy: Proxy,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Logged {
    async fn start(clusters_yaml: &[String], routes: &str, extra: &str) -> Self {
        Self::start_with(clusters_yaml, routes, extra, true).await
    }

    async fn start_with(
        clusters_yaml: &[String],
        routes: &str,
        extra: &str,
        validate: bool,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        let access_log = format!(
            "access_log:\n- name: envoy.access_loggers.file\n  typed_config:\n    '@type': type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n    path: {}\n    log_format: {{ text_format_source: {{ inline_string: \"%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% \\\"%UPSTREAM_TRANSPORT_FAILURE_REASON%\\\" %UPSTREAM_CLUSTER%\\n\" }} }}\n{extra}",
            log.display()
        );
        let store = Store::new(None).unwrap();
        let cm = clusters(&store, clusters_yaml);
        let proxy = Proxy::start(
            HttpContext::new(cm, store),
            &hcm_with(routes, &access_log, validate),
        )
        .await;
        Self {
            proxy,
            log,
            _dir: dir,
        }
    }

    /// The access log lines once there are `n`.
    async fn lines(&self, n: usize) -> Vec<String> {
        for _ in 0..500 {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            if lines.len() >= n {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "fewer than {n} access log lines in {:?}",
            std::fs::read_to_string(&self.log)
        );
    }
}

/// A port nothing listens on.
async fn closed_port() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

const UF_BODY: &str = "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure";

#[tokio::test]
async fn connect_failure_is_503_uf_with_envoys_body() {
    let dead = closed_port().await;
    let t = Logged::start(
        &[static_cluster("dead", &[dead], "")],
        "    - { match: { prefix: / }, route: { cluster: dead } }",
        "",
    )
    .await;
    let mut c = Client::h1(t.proxy.addr).await;
    let (status, headers, body) = c.request(get_h1("svc", "/")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, UF_BODY);
    assert_eq!(headers["content-type"], "text/plain");
    assert_eq!(
        t.lines(1).await,
        [
            "503 UF upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused} \"delayed_connect_error:_Connection_refused\" dead"
        ]
    );
    assert_eq!(t.proxy.stat("cluster.dead.upstream_cx_connect_fail"), 1);
}

#[tokio::test]
async fn retried_connect_failures_say_so() {
    let dead = closed_port().await;
    let t = Logged::start(
        &[static_cluster("dead", &[dead], "")],
        "    - { match: { prefix: / }, route: { cluster: dead, retry_policy: { retry_on: connect-failure, num_retries: 2 } } }",
        "",
    )
    .await;
    let mut c = Client::h1(t.proxy.addr).await;
    let (status, _, body) = c.request(get_h1("svc", "/")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: remote connection failure"
    );
    let line = &t.lines(1).await[0];
    assert!(line.starts_with("503 URX,UF "), "{line}");
    assert_eq!(t.proxy.stat("cluster.dead.upstream_rq_retry"), 2);
    assert_eq!(
        t.proxy
            .stat("cluster.dead.upstream_rq_retry_limit_exceeded"),
        1
    );
}

#[tokio::test]
async fn no_healthy_upstream_and_no_route_and_no_cluster() {
    let t = Logged::start_with(
        &["{ name: empty, type: STATIC, load_assignment: { cluster_name: empty } }".to_string()],
        "    - { match: { prefix: /empty }, route: { cluster: empty } }\n    - { match: { prefix: /missing }, route: { cluster: missing } }",
        "",
        false,
    )
    .await;
    let mut c = Client::h1(t.proxy.addr).await;
    let (status, _, body) = c.request(get_h1("svc", "/empty")).await;
    assert_eq!(
        (status, &body[..]),
        (StatusCode::SERVICE_UNAVAILABLE, &b"no healthy upstream"[..])
    );
    let (status, _, body) = c.request(get_h1("svc", "/nothing")).await;
    assert_eq!((status, body.len()), (StatusCode::NOT_FOUND, 0));
    let (status, _, body) = c.request(get_h1("svc", "/missing")).await;
    assert_eq!((status, body.len()), (StatusCode::SERVICE_UNAVAILABLE, 0));
    assert_eq!(
        t.lines(3).await,
        [
            "503 UH no_healthy_upstream \"-\" empty",
            "404 NR route_not_found \"-\" -",
            "503 NC cluster_not_found \"-\" -",
        ]
    );
    assert_eq!(t.proxy.stat("http.test.no_route"), 1);
    assert_eq!(t.proxy.stat("http.test.no_cluster"), 1);
}

#[tokio::test]
async fn route_timeout_is_504_ut() {
    let up = Echo::start("slow", false).await;
    let t = Logged::start(
        &[static_cluster("backend", &[up.addr], "")],
        "    - { match: { prefix: / }, route: { cluster: backend, timeout: 0.1s } }",
        "",
    )
    .await;
    let mut c = Client::h1(t.proxy.addr).await;
    let (status, _, body) = c.request(get_h1("svc", "/slow/2000")).await;
    assert_eq!(
        (status, &body[..]),
        (
            StatusCode::GATEWAY_TIMEOUT,
            &b"upstream request timeout"[..]
        )
    );
    assert_eq!(t.lines(1).await, ["504 UT response_timeout \"-\" backend"]);
    assert_eq!(t.proxy.stat("cluster.backend.upstream_rq_timeout"), 1);
}

#[tokio::test]
async fn per_try_timeout_retries_then_succeeds() {
    let up = Echo::start("a", false).await;
    let t = Logged::start(
        &[static_cluster("backend", &[up.addr], "")],
        "    - { match: { prefix: / }, route: { cluster: backend, retry_policy: { retry_on: 5xx, num_retries: 1, per_try_timeout: 0.2s } } }",
        "",
    )
    .await;
    let mut c = Client::h1(t.proxy.addr).await;
    let (status, _, _) = c.request(get_h1("svc", "/slow-once/1000")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the first try times out, the retry answers"
    );
    assert_eq!(
        t.proxy.stat("cluster.backend.upstream_rq_per_try_timeout"),
        1
    );
    assert_eq!(t.lines(1).await, ["200 - via_upstream \"-\" backend"]);
    let (status, _, _) = c.request(get_h1("svc", "/slow/1000")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "both tries time out");
    let line = &t.lines(2).await[1];
    assert!(
        line.starts_with("504 URX,UT upstream_per_try_timeout"),
        "{line}"
    );
}

#[tokio::test]
async fn retry_on_5xx_replays_the_body_and_succeeds() {
    let up = Echo::start("a", false).await;
    let t = Logged::start(
        &[static_cluster("backend", &[up.addr], "")],
        "    - { match: { prefix: / }, route: { cluster: backend, retry_policy: { retry_on: 5xx, num_retries: 3, retry_back_off: { base_interval: 0.001s } } } }",
        "",
    )
    .await;
    let mut c = Client::h1(t.proxy.addr).await;
    let req = http::Request::builder()
        .method("POST")
        .uri("/flaky/2")
        .header("host", "svc")
        .body(http_body_util::Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    let (status, _, body) = c.request(req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        seen(&body).body_len,
        7,
        "the retried request carries the whole body"
    );
    assert_eq!(up.requests.load(Ordering::SeqCst), 3);
    assert_eq!(t.proxy.stat("cluster.backend.upstream_rq_retry"), 2);
    assert_eq!(t.proxy.stat("cluster.backend.upstream_rq_retry_success"), 1);
    assert_eq!(t.proxy.stat("cluster.backend.upstream_rq_503"), 2);
    assert_eq!(t.lines(1).await, ["200 - via_upstream \"-\" backend"]);
}

#[tokio::test]
async fn exhausted_retries_return_the_upstream_response_with_urx() {
    let up = Echo::start("a", false).await;
    let t = Logged::start(
        &[static_cluster("backend", &[up.addr], "")],
        "    - { match: { prefix: / }, route: { cluster: backend, retry_policy: { retry_on: gateway-error, num_retries: 1, retry_back_off: { base_interval: 0.001s } } } }",
        "",
    )
    .await;
    let mut c = Client::h1(t.proxy.addr).await;
    let (status, headers, _) = c.request(get_h1("svc", "/status/503")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["x-upstream"], "a", "the upstream's own 503");
    assert_eq!(t.lines(1).await, ["503 URX via_upstream \"-\" backend"]);
}

#[tokio::test]
async fn max_requests_circuit_breaker_overflows_with_uo() {
    let up = Echo::start("a", false).await;
    let cb = "circuit_breakers: { thresholds: [{ max_requests: 1 }] }";
    let t = Logged::start(
        &[static_cluster("backend", &[up.addr], cb)],
        "    - { match: { prefix: / }, route: { cluster: backend } }",
        "",
    )
    .await;
    let addr = t.proxy.addr;
    let slow = tokio::spawn(async move {
        let mut c = Client::h1(addr).await;
        c.request(get_h1("svc", "/slow/500")).await.0
    });
    // Wait until the slow request holds the only slot.
    while up.requests.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut c = Client::h1(addr).await;
    let (status, _, body) = c.request(get_h1("svc", "/")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        "upstream connect error or disconnect/reset before headers. reset reason: overflow"
    );
    assert_eq!(slow.await.unwrap(), StatusCode::OK);
    assert_eq!(
        t.proxy.stat("cluster.backend.upstream_rq_pending_overflow"),
        1
    );
    let lines = t.lines(2).await;
    assert!(lines.iter().any(|l| l.starts_with("503 UO ")), "{lines:?}");
}

#[tokio::test]
async fn websocket_upgrade_tunnels_bytes() {
    let up = Echo::start("ws", false).await;
    let t = Logged::start(
        &[static_cluster("backend", &[up.addr], "")],
        "    - { match: { prefix: / }, route: { cluster: backend } }",
        "upgrade_configs: [{ upgrade_type: websocket }]",
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(t.proxy.addr).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(
            s.read(&mut b).await.unwrap(),
            1,
            "closed early: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    s.write_all(b"ping through the tunnel").await.unwrap();
    let mut buf = [0u8; 23];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping through the tunnel");
}

#[tokio::test]
async fn upgrades_not_configured_are_refused() {
    let up = Echo::start("ws", false).await;
    let t = Logged::start(
        &[static_cluster("backend", &[up.addr], "")],
        "    - { match: { prefix: / }, route: { cluster: backend } }",
        "",
    )
    .await;
    let mut c = Client::h1(t.proxy.addr).await;
    let mut req = get_h1("svc", "/ws");
    req.headers_mut()
        .insert("connection", "upgrade".parse().unwrap());
    req.headers_mut()
        .insert("upgrade", "websocket".parse().unwrap());
    let (status, _, _) = c.request(req).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(up.requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn drain_closes_http1_with_connection_close() {
    let up = Echo::start("a", false).await;
    let t = Logged::start(
        &[static_cluster("backend", &[up.addr], "")],
        "    - { match: { prefix: / }, route: { cluster: backend } }",
        "",
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(t.proxy.addr).await.unwrap();
    s.write_all(b"GET /slow/200 HTTP/1.1\r\nHost: svc\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    t.proxy.drain.cancel();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    assert_eq!(t.proxy.stat("http.test.downstream_cx_drain_close"), 1);
}

#[tokio::test]
async fn drain_sends_http2_goaway() {
    let up = Echo::start("a", false).await;
    let t = Logged::start(
        &[static_cluster("backend", &[up.addr], "")],
        "    - { match: { prefix: / }, route: { cluster: backend } }",
        "",
    )
    .await;
    let io =
        hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(t.proxy.addr).await.unwrap());
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let in_flight = tx.send_request(get("svc", "/slow/200"));
    let in_flight = tokio::spawn(in_flight);
    tokio::time::sleep(Duration::from_millis(50)).await;
    t.proxy.drain.cancel();
    assert_eq!(
        in_flight.await.unwrap().unwrap().status(),
        StatusCode::OK,
        "in-flight streams finish"
    );
    // After GOAWAY and the last stream, the server closes the connection.
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        tx.send_request(get("svc", "/")).await.is_err(),
        "no new streams after GOAWAY"
    );
}

#[tokio::test]
async fn stream_idle_timeout_before_headers_is_408() {
    let up = Echo::start("slow", false).await;
    let t = Logged::start(
        &[static_cluster("backend", &[up.addr], "")],
        "    - { match: { prefix: / }, route: { cluster: backend, timeout: 0s } }",
        "stream_idle_timeout: 0.1s",
    )
    .await;
    let mut c = Client::h1(t.proxy.addr).await;
    let (status, _, body) = c.request(get_h1("svc", "/slow/2000")).await;
    assert_eq!(
        (status, &body[..]),
        (StatusCode::REQUEST_TIMEOUT, &b"stream timeout"[..])
    );
    assert_eq!(
        t.lines(1).await,
        ["408 SI stream_idle_timeout \"-\" backend"]
    );
}

#[tokio::test]
async fn path_normalization_rejects_and_redirects() {
    let up = Echo::start("a", false).await;
    let t = Logged::start(
        &[static_cluster("backend", &[up.addr], "")],
        "    - { match: { prefix: /a }, route: { cluster: backend } }",
        "normalize_path: true\nmerge_slashes: true\npath_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT",
    )
    .await;
    let mut c = Client::h1(t.proxy.addr).await;
    let (status, _, body) = c.request(get_h1("svc", "/x/../a//b/./c")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen(&body).path, "/a/b/c");
    let (status, headers, _) = c.request(get_h1("svc", "/a%2Fb")).await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(headers["location"], "/a/b");
    let (status, _, _) = c.request(get_h1("svc", "/a/%00")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn request_timeout_is_408_while_the_body_is_still_arriving() {
    let up = Echo::start("a", false).await;
    let t = Logged::start(
        &[static_cluster("backend", &[up.addr], "")],
        "    - { match: { prefix: / }, route: { cluster: backend, timeout: 0s } }",
        "request_timeout: 0.1s",
    )
    .await;
    let io =
        hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(t.proxy.addr).await.unwrap());
    let (mut tx, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let (chunks, body) = channel_body();
    let req = http::Request::builder()
        .method("POST")
        .uri("/collects-the-body-first")
        .header("host", "svc")
        .body(body)
        .unwrap();
    chunks
        .send(Ok(hyper::body::Frame::data(Bytes::from_static(b"partial"))))
        .await
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
    drop(chunks);
    let line = &t.lines(1).await[0];
    assert!(line.starts_with("408 - request_overall_timeout"), "{line}");
}
