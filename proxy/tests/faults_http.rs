#![allow(clippy::unwrap_used, clippy::expect_used)]
//! HTTP faults a sidecar meets in production, against the `proxy` binary and the real Envoy
//! on the same bootstrap (Envoy is the reference; where it is not installed only ours
//! runs, against the figures observed from Envoy 1.40): clients that never finish their
//! request headers, headers over the limits, and upstreams that reset, refuse or hang
//! mid-response. Each runs under steady traffic that must stay unharmed, and checks the
//! proxy leaks no descriptors or threads.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use e2e::ProxyProcess;

const PROXY: &str = env!("CARGO_BIN_EXE_proxy");

/// Ours, and Envoy when installed.
fn binaries(test: &str) -> Vec<PathBuf> {
    let mut bins = vec![PathBuf::from(PROXY)];
    bins.extend(e2e::require_envoy(test));
    bins
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An HTTP/1.1 upstream that misbehaves on purpose, chosen by the request path:
/// `/ok` answers 200 `ok`; `/many-headers` answers with 150 headers; `/close-before` and
/// `/rst-before` close (FIN or RST) before answering; `/close-mid` and `/rst-mid` send the
/// headers and 10 of 1000 body bytes, then close or reset; `/hang-mid` and `/hang-before`
/// stall (after the headers, or before them) until the proxy gives up.
fn faulty_upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || serve_faulty(stream));
        }
    });
    port
}

fn serve_faulty(mut s: TcpStream) {
    loop {
        let Some(head) = read_head(&mut s) else {
            return;
        };
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        let partial = b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nxxxxxxxxxx";
        let rst = |s: &TcpStream| {
            socket2::SockRef::from(s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        };
        match path.as_str() {
            "/ok" => {
                if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .is_err()
                {
                    return;
                }
                continue;
            }
            "/many-headers" => {
                let mut r = b"HTTP/1.1 200 OK\r\n".to_vec();
                for i in 0..150 {
                    r.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
                }
                r.extend_from_slice(b"content-length: 2\r\n\r\nok");
                let _ = s.write_all(&r);
            }
            "/close-before" => {}
            "/rst-before" => rst(&s),
            "/close-mid" | "/rst-mid" => {
                let _ = s.write_all(partial);
                std::thread::sleep(Duration::from_millis(200));
                if path == "/rst-mid" {
                    rst(&s);
                }
            }
            "/hang-mid" | "/hang-before" => {
                if path == "/hang-mid" {
                    let _ = s.write_all(partial);
                }
                // Until the proxy closes its side.
                let mut b = [0u8; 64];
                while matches!(s.read(&mut b), Ok(n) if n > 0) {}
            }
            _ => {}
        }
        return;
    }
}

/// Reads one request or response head (through the blank line), byte by byte so nothing
/// past it is consumed.
fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// One response read off a keep-alive connection: status, head and body (by
/// content-length).
fn read_response(s: &mut TcpStream) -> Option<(u16, String, Vec<u8>)> {
    let head = read_head(s)?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some((status, head, body))
}

/// Whether the peer has closed: EOF or reset within `wait`.
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut b = [0u8; 256];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// A listener's HCM: `stat_prefix`, extra HCM fields, and the access log all listeners
/// share (`prefix path code flags details`).
struct Hcm<'a> {
    prefix: &'a str,
    port: u16,
    extra: &'a str,
}

/// Listeners with an HCM each routing `/refused` to a port nothing listens on and the rest
/// to `upstream`, with a 1s route timeout.
fn bootstrap(listeners: &[Hcm<'_>], upstream: u16, log: &Path) -> String {
    let mut out = String::from(
        "admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}\nstatic_resources:\n  listeners:\n",
    );
    for l in listeners {
        out.push_str(&format!(
            r#"  - name: {prefix}
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {prefix}
{extra}
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {log}
              log_format: {{text_format_source: {{inline_string: "{prefix} %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\n"}}}}
          route_config:
            virtual_hosts:
            - name: vh
              domains: ['*']
              routes:
              - {{match: {{prefix: /refused}}, route: {{cluster: refused}}}}
              - {{match: {{prefix: /}}, route: {{cluster: up, timeout: 1s}}}}
          http_filters: [{{name: envoy.filters.http.router, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}]
"#,
            prefix = l.prefix,
            port = l.port,
            extra = l.extra,
            log = log.display(),
        ));
    }
    out.push_str(&format!(
        r#"  clusters:
  - name: up
    connect_timeout: 2s
    load_assignment: {{cluster_name: up, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}}}]}}]}}
  - name: refused
    connect_timeout: 2s
    load_assignment: {{cluster_name: refused, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {refused}}}}}}}}}]}}]}}
"#,
        refused = free_port(),
    ));
    out
}

/// A running proxy and its access log.
struct Side {
    proxy: ProxyProcess,
    log: PathBuf,
    name: String,
    _dir: tempfile::TempDir,
}

impl Side {
    fn start(bin: &Path, listeners: &[Hcm<'_>], upstream: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        // Access logs flushed every 100 ms (Envoy's default is 10 s).
        let proxy = ProxyProcess::start(
            bin,
            &bootstrap(listeners, upstream, &log),
            &["--file-flush-interval-msec", "100"],
        )
        .unwrap();
        Self {
            proxy,
            log,
            name: bin.file_name().unwrap().to_string_lossy().into_owned(),
            _dir: dir,
        }
    }

    fn stat(&self, name: &str) -> u64 {
        self.proxy.stats().unwrap().get(name).copied().unwrap_or(0)
    }

    /// Waits until `name` reaches `want`; returns the last value.
    fn wait_stat(&self, name: &str, want: u64) -> u64 {
        poll_until(Duration::from_secs(30), || {
            let v = self.stat(name);
            (v >= want).then_some(v)
        })
        .unwrap_or_else(|| self.stat(name))
    }

    /// The access log lines starting with `prefix`, once there are `n`.
    fn log_lines(&self, prefix: &str, n: usize) -> Vec<String> {
        let read = || {
            std::fs::read_to_string(&self.log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with(prefix))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        poll_until(Duration::from_secs(30), || {
            let lines = read();
            (lines.len() >= n).then_some(lines)
        })
        .unwrap_or_else(read)
    }
}

fn poll_until<T>(deadline: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Steady keep-alive traffic (`GET /ok`, a new connection every 20 requests) on `port`
/// until stopped; counts good and failed requests.
struct Steady {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Steady {
    fn start(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let (st, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let thread = std::thread::spawn(move || {
            let mut conn: Option<TcpStream> = None;
            let mut n = 0u64;
            while !st.load(Ordering::Relaxed) {
                n += 1;
                if conn.is_none() {
                    conn = TcpStream::connect(("127.0.0.1", port)).ok();
                }
                let good = conn.as_mut().is_some_and(|s| {
                    s.set_read_timeout(Some(Duration::from_secs(20))).is_ok()
                        && s.write_all(b"GET /ok HTTP/1.1\r\nhost: steady\r\n\r\n")
                            .is_ok()
                        && matches!(read_response(s), Some((200, _, body)) if body == b"ok")
                });
                if good {
                    o.fetch_add(1, Ordering::Relaxed);
                } else {
                    f.fetch_add(1, Ordering::Relaxed);
                    conn = None;
                }
                if n.is_multiple_of(20) {
                    conn = None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self {
            stop,
            ok,
            failed,
            thread: Some(thread),
        }
    }

    /// Stops; returns (good, failed).
    fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// A client that sends a request head a byte every 100 ms and never finishes it. Returns
/// what it got back and whether the proxy closed the connection, within `limit`.
fn slowloris(port: u16, limit: Duration) -> (Vec<u8>, bool) {
    let mut s = connect(port);
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let head = format!(
        "GET /ok HTTP/1.1\r\nhost: slow\r\nx-slow: {}",
        "a".repeat(400)
    );
    let start = Instant::now();
    let mut got = Vec::new();
    let mut sent = 0;
    let mut buf = [0u8; 1024];
    while start.elapsed() < limit {
        if sent < head.len() && s.write_all(&head.as_bytes()[sent..=sent]).is_ok() {
            sent += 1;
        }
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn threads(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// The response's status line and body, with the varying `date` left out.
fn status_and_body(raw: &[u8]) -> (String, String, bool) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or("").to_string();
    let close = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("connection: close"));
    (status, body.to_string(), close)
}

#[test]
fn slowloris_request_headers_get_408_and_close_while_others_are_served() {
    let upstream = faulty_upstream();
    let mut all = Vec::new();
    for bin in binaries("slowloris (envoy)") {
        let (rht, sit) = (free_port(), free_port());
        let side = Side::start(
            &bin,
            &[
                Hcm {
                    prefix: "rht",
                    port: rht,
                    extra: "          request_headers_timeout: 1s",
                },
                Hcm {
                    prefix: "sit",
                    port: sit,
                    extra: "          stream_idle_timeout: 1s",
                },
            ],
            upstream,
        );
        let steady = Steady::start(rht);
        // A keep-alive client idle for longer than request_headers_timeout between
        // requests is not cut off: the timer runs only while a request's headers arrive.
        let mut keep = connect(rht);
        keep.write_all(b"GET /ok HTTP/1.1\r\nhost: keep\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut keep).map(|r| r.0), Some(200));
        let slow: Vec<_> = (0..20)
            .map(|i| {
                let port = if i % 2 == 0 { rht } else { sit };
                std::thread::spawn(move || (port, slowloris(port, Duration::from_secs(30))))
            })
            .collect();
        let slow: Vec<_> = slow.into_iter().map(|t| t.join().unwrap()).collect();
        keep.write_all(b"GET /ok HTTP/1.1\r\nhost: keep\r\n\r\n")
            .unwrap();
        let keep_alive = read_response(&mut keep).map(|r| r.0);
        let (ok, failed) = steady.finish();
        let replies: Vec<_> = slow
            .iter()
            .map(|(port, (got, closed))| {
                let (status, body, close) = status_and_body(got);
                (*port == rht, status, body, close, *closed)
            })
            .collect();
        println!(
            "{}: steady traffic {ok} ok / {failed} failed during 20 slowloris clients",
            side.name
        );
        for (headers_timeout, status, body, close, closed) in &replies {
            let want = if *headers_timeout {
                "request header timeout"
            } else {
                "stream timeout"
            };
            assert_eq!(
                (status.as_str(), body.as_str(), *close, *closed),
                ("HTTP/1.1 408 Request Timeout", want, true, true),
                "{}",
                side.name
            );
        }
        assert_eq!(
            keep_alive,
            Some(200),
            "{}: idle keep-alive connection",
            side.name
        );
        assert_eq!(failed, 0, "{}: steady requests failed", side.name);
        assert!(ok > 10, "{}: only {ok} steady requests", side.name);
        assert_eq!(
            side.wait_stat("http.rht.downstream_rq_header_timeout", 10),
            10
        );
        assert_eq!(
            side.wait_stat("http.sit.downstream_rq_idle_timeout", 10),
            10
        );
        let mut lines = side.log_lines("rht - ", 10);
        lines.extend(side.log_lines("sit - ", 10));
        lines.sort();
        lines.dedup();
        assert_eq!(
            lines,
            [
                "rht - 408 - request_header_timeout",
                "sit - 408 SI stream_idle_timeout"
            ],
            "{}",
            side.name
        );
        all.push((side.name, replies));
    }
    if let [(_, ours), (_, envoy)] = &all[..] {
        assert_eq!(ours, envoy, "ours and Envoy answer slowloris clients alike");
    }
}

/// Sends `raw` on a new connection; returns the response's status line, body, and whether
/// the connection closed after it.
fn h1_exchange(port: u16, raw: &[u8]) -> (String, String, bool) {
    let mut s = connect(port);
    s.write_all(raw).unwrap();
    let (status, head, body) = read_response(&mut s).unwrap();
    // Long enough for a close to arrive; a keep-alive connection stays open past it.
    let closed = closed_within(&mut s, Duration::from_secs(3));
    let _ = head;
    (
        format!("{status}"),
        String::from_utf8_lossy(&body).into_owned(),
        closed,
    )
}

/// An HTTP/2 (prior knowledge) GET with `headers`; the status, or the stream's reset
/// reason.
fn h2_get(port: u16, headers: &[(String, String)]) -> Result<u16, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let io = hyper_util::rt::TokioIo::new(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
        let (mut tx, conn) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .max_header_list_size(1 << 20)
                .handshake(io)
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut req = http::Request::builder().uri(format!("http://svc:{port}/ok"));
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        match tx.send_request(req).await {
            Ok(r) => Ok(r.status().as_u16()),
            Err(e) => Err(std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<h2::Error>())
                .and_then(h2::Error::reason)
                .map_or_else(|| e.to_string(), |r| format!("reset {r:?}"))),
        }
    })
}

#[test]
fn oversized_request_headers_are_refused_like_envoy() {
    let upstream = faulty_upstream();
    let big = |kib: usize| {
        format!(
            "GET /ok HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
            "a".repeat(kib * 1024 - 200)
        )
    };
    let many = |n: usize| {
        let mut r = String::from("GET /ok HTTP/1.1\r\nhost: x\r\n");
        for i in 0..n - 1 {
            r.push_str(&format!("x-h{i}: v\r\n"));
        }
        r + "\r\n"
    };
    let mut all = Vec::new();
    for bin in binaries("oversized headers (envoy)") {
        let port = free_port();
        let side = Side::start(
            &bin,
            &[Hcm {
                prefix: "big",
                port,
                extra: "          codec_type: AUTO",
            }],
            upstream,
        );
        let steady = Steady::start(port);
        // Another client's keep-alive connection, open throughout.
        let mut other = connect(port);
        let too_large = "Request Header Fields Too Large";
        let h1 = [
            ("60 KiB", h1_exchange(port, big(60).as_bytes())),
            ("61 KiB", h1_exchange(port, big(61).as_bytes())),
            ("100 headers", h1_exchange(port, many(100).as_bytes())),
            ("101 headers", h1_exchange(port, many(101).as_bytes())),
        ];
        let ok = |closed| ("200".to_string(), "ok".to_string(), closed);
        let refused = ("431".to_string(), too_large.to_string(), true);
        let h2_big = vec![("x-big".to_string(), "a".repeat(61 * 1024))];
        let h2_many: Vec<_> = (0..101)
            .map(|i| (format!("x-h{i}"), "v".to_string()))
            .collect();
        let h2 = [
            h2_get(port, &[]),
            h2_get(port, &h2_big),
            h2_get(port, &h2_many),
        ];
        let upstream_many = h1_exchange(port, b"GET /many-headers HTTP/1.1\r\nhost: x\r\n\r\n");
        other
            .write_all(b"GET /ok HTTP/1.1\r\nhost: other\r\n\r\n")
            .unwrap();
        let other_status = read_response(&mut other).map(|r| r.0);
        let (good, failed) = steady.finish();
        println!(
            "{}: {h1:?} h2 {h2:?} upstream {upstream_many:?}; steady {good} ok / {failed} failed",
            side.name
        );
        // Under the limits: served, keep-alive (not closed within the wait).
        assert_eq!(h1[0].1, ok(false), "{}", side.name);
        assert_eq!(h1[2].1, ok(false), "{}", side.name);
        // Over: 431 with Envoy's body, and the connection closes.
        assert_eq!(h1[1].1, refused, "{}", side.name);
        assert_eq!(h1[3].1, refused, "{}", side.name);
        // HTTP/2: the stream is reset with INTERNAL_ERROR, no response.
        assert_eq!(h2[0], Ok(200), "{}", side.name);
        assert_eq!(
            h2[1],
            Err("reset INTERNAL_ERROR".to_string()),
            "{}",
            side.name
        );
        assert_eq!(
            h2[2],
            Err("reset INTERNAL_ERROR".to_string()),
            "{}",
            side.name
        );
        // An upstream answering with more than 100 headers: 502, protocol error.
        assert_eq!(
            upstream_many,
            (
                "502".to_string(),
                "upstream connect error or disconnect/reset before headers. reset reason: protocol error".to_string(),
                false
            ),
            "{}",
            side.name
        );
        assert_eq!(other_status, Some(200), "{}: other connection", side.name);
        assert_eq!(failed, 0, "{}: steady requests failed", side.name);
        let mut lines = side.log_lines("big - ", 4);
        lines.sort();
        assert_eq!(
            lines,
            [
                "big - 0 DR http2.header_list_size_too_large",
                "big - 0 DR http2.too_many_headers",
                "big - 431 DPE http1.headers_too_large",
                "big - 431 DPE http1.too_many_headers",
            ],
            "{}",
            side.name
        );
        assert_eq!(
            side.log_lines("big /many-headers", 1),
            ["big /many-headers 502 UPE upstream_reset_before_response_started{protocol_error}"],
            "{}",
            side.name
        );
        all.push((h1, h2, upstream_many));
    }
    if let [ours, envoy] = &all[..] {
        assert_eq!(ours, envoy, "ours and Envoy refuse oversized headers alike");
    }
}

/// One failure case: the path, what the client sees (status, body bytes received, whether
/// the connection closed before the response was complete) and the access log line.
fn upstream_case(port: u16, path: &str) -> (u16, usize, bool) {
    let mut s = connect(port);
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .unwrap();
    let head = read_head(&mut s).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = Vec::new();
    let _ = s.take(len as u64).read_to_end(&mut body);
    (status, body.len(), body.len() < len)
}

#[test]
fn upstream_resets_refusals_and_hangs_match_envoy_and_leak_nothing() {
    let upstream = faulty_upstream();
    let cases: [(&str, (u16, usize, bool), &str); 7] = [
        (
            "/refused",
            (503, 98, false),
            "503 UF upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}",
        ),
        (
            "/close-before",
            (503, 95, false),
            "503 UC upstream_reset_before_response_started{connection_termination}",
        ),
        (
            "/rst-before",
            (503, 95, false),
            "503 UC upstream_reset_before_response_started{connection_termination}",
        ),
        ("/hang-before", (504, 24, false), "504 UT response_timeout"),
        (
            "/close-mid",
            (200, 10, true),
            "200 UPE upstream_reset_after_response_started{protocol_error}",
        ),
        (
            "/rst-mid",
            (200, 10, true),
            "200 UPE upstream_reset_after_response_started{protocol_error}",
        ),
        ("/hang-mid", (200, 10, true), "200 UT response_timeout"),
    ];
    for bin in binaries("upstream faults (envoy)") {
        let port = free_port();
        let side = Side::start(
            &bin,
            &[Hcm {
                prefix: "f",
                port,
                extra: "",
            }],
            upstream,
        );
        let pid = side.proxy.pid();
        let steady = Steady::start(port);
        // Each case once, checked one by one.
        for (path, want, line) in &cases {
            assert_eq!(upstream_case(port, path), *want, "{}: {path}", side.name);
            assert_eq!(
                side.log_lines(&format!("f {path} "), 1),
                [format!("f {path} {line}")],
                "{}",
                side.name
            );
        }
        // The baseline, with the steady client's connections in place.
        std::thread::sleep(Duration::from_millis(500));
        let (fds0, threads0) = (open_fds(pid), threads(pid));
        // A burst: every case 10 times, 7 clients at once.
        let burst: Vec<_> = cases
            .iter()
            .map(|(path, want, _)| {
                let (path, want) = (path.to_string(), *want);
                std::thread::spawn(move || {
                    (0..10)
                        .filter(|_| upstream_case(port, &path) != want)
                        .count()
                })
            })
            .collect();
        let wrong: usize = burst.into_iter().map(|t| t.join().unwrap()).sum();
        let peak = open_fds(pid);
        let (good, failed) = steady.finish();
        let settled = poll_until(Duration::from_secs(60), || {
            let (f, t) = (open_fds(pid), threads(pid));
            (f <= fds0 && t <= threads0).then_some((f, t))
        });
        let (fds1, threads1) = (open_fds(pid), threads(pid));
        println!(
            "{}: 70 failing requests ({wrong} answered otherwise), steady {good} ok / {failed} failed; \
             fds {fds0} before, {peak} right after the burst, {fds1} settled; threads {threads0} before, {threads1} after",
            side.name
        );
        assert_eq!(wrong, 0, "{}: burst answers", side.name);
        assert_eq!(failed, 0, "{}: steady requests failed", side.name);
        assert!(
            settled.is_some(),
            "{}: leaked: fds {fds0} -> {fds1}, threads {threads0} -> {threads1}",
            side.name
        );
        // Every failure is logged with its flags: once checked, then ten in the burst.
        for (path, _, line) in &cases {
            let lines = side.log_lines(&format!("f {path} "), 11);
            assert_eq!(lines.len(), 11, "{}: {path}", side.name);
            assert!(
                lines.iter().all(|l| *l == format!("f {path} {line}")),
                "{}: {lines:?}",
                side.name
            );
        }
        // No request of the burst is left open.
        let active = poll_until(Duration::from_secs(30), || {
            (side.stat("http.f.downstream_rq_active") == 0).then_some(())
        });
        assert!(active.is_some(), "{}: requests left active", side.name);
    }
}
