//! The load generator: a fixed number of connections on one thread, closed-loop (as fast as
//! answers come back) or open-loop at a fixed total rate with staggered connection starts;
//! latency is measured from the time a request was due, so a stalled proxy cannot hide its
//! queueing (no coordinated omission).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::upstream::find;

/// What one request is.
#[derive(Debug, Clone, Copy)]
pub enum Work {
    /// Write `size` bytes on a kept-open TCP connection, read them echoed back.
    Echo {
        /// Message size in bytes.
        size: usize,
    },
    /// One echo per connection, then hold the connection open, idle, until the end: for
    /// memory per open connection.
    EchoHold {
        /// Message size in bytes.
        size: usize,
    },
    /// As `Echo`, on a new TCP connection each time (connect, exchange, close).
    EchoNewConn {
        /// Message size in bytes.
        size: usize,
    },
    /// Ask the bulk backend for `bytes` bytes and read them all.
    Bulk {
        /// Bytes per transfer.
        bytes: u64,
    },
    /// `GET /` over HTTP/1.1, expecting 200 with a `body`-byte body.
    Http1 {
        /// Expected body size.
        body: usize,
        /// A new connection per request.
        new_conn: bool,
    },
    /// `GET /` over HTTP/2 with prior knowledge (h2c), one stream at a time per connection.
    Http2 {
        /// Expected body size.
        body: usize,
    },
}

/// One load run.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// What each request is.
    pub work: Work,
    /// Where requests go (the first proxy, or the backend for the direct baseline).
    pub target: SocketAddr,
    /// Concurrent connections.
    pub connections: usize,
    /// How long to send.
    pub duration: Duration,
    /// Total requests per second (open loop), or `None` for as fast as possible.
    pub rate: Option<f64>,
}

/// What a load run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Requests answered correctly.
    pub requests: u64,
    /// Requests failed (errors, timeouts, wrong answers).
    pub errors: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Latency of correct answers, nanoseconds.
    pub latency: Histogram<u64>,
    /// The first failure, for the report.
    pub first_error: Option<String>,
}

impl Outcome {
    /// Correct answers per second.
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// Received payload in Gbit/s.
    pub fn gbps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64() / 1e9
    }

    /// A latency quantile in microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `load` on a fresh single-threaded runtime (the calling thread) and returns what it
/// measured.
pub fn run(load: Load) -> std::io::Result<Outcome> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    Ok(local.block_on(&rt, drive(load)))
}

async fn drive(load: Load) -> Outcome {
    let start = Instant::now() + Duration::from_millis(20);
    let deadline = start + load.duration;
    let n = load.connections.max(1);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        // Open loop: each connection sends every `period`, the starts staggered evenly
        // across one period so the total rate is smooth, not a burst per tick.
        let schedule = load.rate.map(|rate| {
            let period = Duration::from_secs_f64(n as f64 / rate);
            (start + period.mul_f64(i as f64 / n as f64), period)
        });
        // Held connections open at 1 per ms over at most half the run, not in one burst
        // that would overflow accept queues and measure that instead.
        let opens = match load.work {
            Work::EchoHold { .. } => {
                let spacing = Duration::from_millis(1).min(load.duration / 2 / n as u32);
                start + spacing * i as u32
            }
            _ => start,
        };
        tasks.push(tokio::task::spawn_local(connection(
            load.work,
            load.target,
            opens,
            deadline,
            schedule,
        )));
    }
    let mut total = Outcome {
        requests: 0,
        errors: 0,
        bytes: 0,
        elapsed: Duration::ZERO,
        latency: new_histogram(),
        first_error: None,
    };
    for task in tasks {
        let Ok(part) = task.await else {
            total.errors += 1;
            continue;
        };
        total.requests += part.requests;
        total.errors += part.errors;
        total.bytes += part.bytes;
        let _ = total.latency.add(&part.latency);
        if total.first_error.is_none() {
            total.first_error = part.first_error;
        }
    }
    total.elapsed = Instant::now().saturating_duration_since(start);
    total
}

fn new_histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("valid histogram bounds")
}

/// A kept-open connection.
enum Conn {
    Tcp(TcpStream),
    H2(h2::client::SendRequest<Bytes>),
}

async fn connection(
    work: Work,
    target: SocketAddr,
    start: Instant,
    deadline: Instant,
    schedule: Option<(Instant, Duration)>,
) -> Outcome {
    let mut out = Outcome {
        requests: 0,
        errors: 0,
        bytes: 0,
        elapsed: Duration::ZERO,
        latency: new_histogram(),
        first_error: None,
    };
    let mut conn: Option<Conn> = None;
    let mut scratch = Scratch::new(&work);
    tokio::time::sleep_until(start.into()).await;
    let mut k: u32 = 0;
    let mut prev_done = start;
    loop {
        let due = match schedule {
            Some((first, period)) => {
                let due = first + period * k;
                k += 1;
                if due >= deadline {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                due
            }
            None => {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                now
            }
        };
        // Latency starts when the request was due if the previous one on this connection
        // was still outstanding then (queueing the proxy caused, which must count), else
        // when it is actually sent (the timer's up-to-1 ms lateness is the harness's, not
        // the proxy's).
        let sent = if prev_done > due { due } else { Instant::now() };
        let result =
            tokio::time::timeout(REQUEST_TIMEOUT, one(work, target, &mut conn, &mut scratch))
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("timed out")));
        prev_done = Instant::now();
        match result {
            Ok(bytes) => {
                out.requests += 1;
                out.bytes += bytes;
                let ns = prev_done.saturating_duration_since(sent).as_nanos().max(1) as u64;
                let _ = out.latency.record(ns);
                if matches!(work, Work::EchoHold { .. }) {
                    tokio::time::sleep_until(deadline.into()).await;
                    break;
                }
            }
            Err(e) => {
                conn = None;
                out.errors += 1;
                if out.first_error.is_none() {
                    out.first_error = Some(e.to_string());
                }
                if schedule.is_none() {
                    // Do not spin on a dead path.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    out
}

/// Per-connection buffers.
struct Scratch {
    send: Vec<u8>,
    recv: Vec<u8>,
}

impl Scratch {
    fn new(work: &Work) -> Self {
        let size = match *work {
            Work::Echo { size } | Work::EchoHold { size } | Work::EchoNewConn { size } => size,
            _ => 0,
        };
        Self {
            send: (0..size).map(|i| (i % 251) as u8).collect(),
            recv: vec![0u8; size.clamp(64 * 1024, 1 << 20)],
        }
    }
}

fn bad(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::other(msg.into())
}

async fn connect(target: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(target).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// One request; the payload bytes it received.
async fn one(
    work: Work,
    target: SocketAddr,
    conn: &mut Option<Conn>,
    scratch: &mut Scratch,
) -> std::io::Result<u64> {
    match work {
        Work::Echo { size } | Work::EchoHold { size } => {
            if conn.is_none() {
                *conn = Some(Conn::Tcp(connect(target).await?));
            }
            let Some(Conn::Tcp(stream)) = conn else {
                return Err(bad("wrong connection kind"));
            };
            echo(stream, scratch, size).await
        }
        Work::EchoNewConn { size } => {
            let mut stream = connect(target).await?;
            let n = echo(&mut stream, scratch, size).await?;
            stream.shutdown().await?;
            // Wait for the far side's close so connections do not pile up in TIME_WAIT on
            // our side only.
            let _ = stream.read(&mut scratch.recv).await;
            Ok(n)
        }
        Work::Bulk { bytes } => {
            if conn.is_none() {
                *conn = Some(Conn::Tcp(connect(target).await?));
            }
            let Some(Conn::Tcp(stream)) = conn else {
                return Err(bad("wrong connection kind"));
            };
            stream.write_all(&bytes.to_be_bytes()).await?;
            let mut left = bytes;
            while left > 0 {
                let want = (left as usize).min(scratch.recv.len());
                let n = stream.read(&mut scratch.recv[..want]).await?;
                if n == 0 {
                    return Err(bad(format!("closed with {left} bytes to go")));
                }
                left -= n as u64;
            }
            Ok(bytes)
        }
        Work::Http1 { body, new_conn } => {
            if conn.is_none() || new_conn {
                *conn = Some(Conn::Tcp(connect(target).await?));
            }
            let Some(Conn::Tcp(stream)) = conn else {
                return Err(bad("wrong connection kind"));
            };
            let close = if new_conn {
                "connection: close\r\n"
            } else {
                ""
            };
            let req = format!("GET / HTTP/1.1\r\nhost: bench.local\r\n{close}\r\n");
            stream.write_all(req.as_bytes()).await?;
            let keep = http1_response(stream, scratch, body).await?;
            if new_conn || !keep {
                *conn = None;
            }
            Ok(body as u64)
        }
        Work::Http2 { body } => {
            if conn.is_none() {
                let stream = connect(target).await?;
                let (send, connection) = h2::client::handshake(stream).await.map_err(h2_err)?;
                tokio::task::spawn_local(async move {
                    let _ = connection.await;
                });
                *conn = Some(Conn::H2(send));
            }
            let Some(Conn::H2(send)) = conn else {
                return Err(bad("wrong connection kind"));
            };
            let mut send = send.clone().ready().await.map_err(h2_err)?;
            let req = http::Request::get("http://bench.local/")
                .body(())
                .map_err(|e| bad(e.to_string()))?;
            let (resp, _) = send.send_request(req, true).map_err(h2_err)?;
            let resp = resp.await.map_err(h2_err)?;
            if resp.status() != 200 {
                return Err(bad(format!("status {}", resp.status())));
            }
            let mut rx = resp.into_body();
            let mut got = 0usize;
            while let Some(chunk) = rx.data().await {
                let chunk = chunk.map_err(h2_err)?;
                got += chunk.len();
                let _ = rx.flow_control().release_capacity(chunk.len());
            }
            if got != body {
                return Err(bad(format!("body of {got} bytes, expected {body}")));
            }
            Ok(got as u64)
        }
    }
}

fn h2_err(e: h2::Error) -> std::io::Error {
    bad(format!("h2: {e}"))
}

async fn echo(stream: &mut TcpStream, scratch: &mut Scratch, size: usize) -> std::io::Result<u64> {
    stream.write_all(&scratch.send).await?;
    let mut got = 0;
    while got < size {
        let want = (size - got).min(scratch.recv.len());
        let n = stream.read(&mut scratch.recv[..want]).await?;
        if n == 0 {
            return Err(bad(format!("closed after {got} of {size} echoed bytes")));
        }
        if scratch.recv[..n] != scratch.send[got..got + n] {
            return Err(bad("echo differs from what was sent"));
        }
        got += n;
    }
    Ok(size as u64)
}

/// Reads one response; whether the connection may be reused.
async fn http1_response(
    stream: &mut TcpStream,
    scratch: &mut Scratch,
    expected_body: usize,
) -> std::io::Result<bool> {
    let mut head = Vec::with_capacity(1024);
    let end = loop {
        if let Some(end) = find(&head, b"\r\n\r\n") {
            break end;
        }
        let n = stream.read(&mut scratch.recv).await?;
        if n == 0 {
            return Err(bad("closed before a response"));
        }
        head.extend_from_slice(&scratch.recv[..n]);
    };
    let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(bad(format!("response {status:?}")));
    }
    let mut length = None;
    let mut keep = true;
    for line in lines {
        if let Some(v) = line.strip_prefix("content-length:") {
            length = v.trim().parse::<usize>().ok();
        } else if line.starts_with("connection:") && line.contains("close") {
            keep = false;
        }
    }
    let length = length.ok_or_else(|| bad("no content-length"))?;
    if length != expected_body {
        return Err(bad(format!(
            "body of {length} bytes, expected {expected_body}"
        )));
    }
    let mut have = head.len() - (end + 4);
    while have < length {
        let n = stream.read(&mut scratch.recv).await?;
        if n == 0 {
            return Err(bad("closed mid-body"));
        }
        have += n;
    }
    Ok(keep)
}
