//! The pods' client apps (`sleep` running curl, or `nc`): one HTTP/1.1 request or one TCP
//! echo exchange from inside a pod, reported the way a user would see it.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::netns::Netns;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP request as `curl -H 'Host: <authority>' http://<addr><path>` sends it.
#[derive(Clone, Debug)]
pub struct HttpRequest {
    pub method: String,
    /// The Host header (`httpbin.full:8000`).
    pub authority: String,
    /// Where the client connects (the service VIP or a pod IP).
    pub addr: SocketAddr,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

/// What the client saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A complete HTTP response.
    Http { status: u16, body: String },
    /// The TCP echo's answer line.
    Tcp(String),
    /// The connection was reset or closed before any answer (`curl: (56)` / `(52)`).
    Reset(String),
    /// No answer in time.
    Timeout,
    /// The connection could not be made.
    ConnectFailed(String),
}

// === impl HttpRequest ===

impl HttpRequest {
    /// `GET <path>` to `addr` with Host `authority`.
    pub fn get(authority: &str, addr: SocketAddr, path: &str) -> Self {
        Self {
            method: "GET".into(),
            authority: authority.into(),
            addr,
            path: path.into(),
            headers: Vec::new(),
        }
    }

    /// The same request with another method.
    pub fn method(mut self, method: &str) -> Self {
        self.method = method.into();
        self
    }

    /// The same request with an extra header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn encode(&self) -> String {
        let mut req = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\nConnection: close\r\n",
            self.method, self.path, self.authority
        );
        for (k, v) in &self.headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("Content-Length: 0\r\n\r\n");
        req
    }
}

/// Sends `req` from inside `ns`.
pub fn http(ns: &Netns, req: &HttpRequest) -> Outcome {
    let addr = req.addr;
    match ns.enter(move || TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)) {
        Ok(stream) => exchange_http(stream, req),
        Err(e) => connect_failed(&e),
    }
}

/// Sends `req` from the calling thread's network namespace (for load loops that entered a
/// pod once).
pub fn http_here(req: &HttpRequest) -> Outcome {
    match TcpStream::connect_timeout(&req.addr, CONNECT_TIMEOUT) {
        Ok(stream) => exchange_http(stream, req),
        Err(e) => connect_failed(&e),
    }
}

/// Sends one line to a TCP echo from inside `ns` and reads the answer line.
pub fn tcp(ns: &Netns, addr: SocketAddr, line: &str) -> Outcome {
    match ns.enter(move || TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)) {
        Ok(stream) => exchange_line(stream, line),
        Err(e) => connect_failed(&e),
    }
}

/// [`tcp`] from the calling thread's network namespace.
pub fn tcp_here(addr: SocketAddr, line: &str) -> Outcome {
    match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
        Ok(stream) => exchange_line(stream, line),
        Err(e) => connect_failed(&e),
    }
}

fn exchange_line(stream: TcpStream, line: &str) -> Outcome {
    let raw = match exchange(stream, format!("{line}\n").as_bytes(), Until::Line) {
        Ok(raw) => raw,
        Err(outcome) => return outcome,
    };
    let text = String::from_utf8_lossy(&raw);
    match text.lines().next() {
        Some(l) => Outcome::Tcp(l.to_string()),
        None => Outcome::Reset("closed without an answer".into()),
    }
}

fn connect_failed(e: &std::io::Error) -> Outcome {
    if e.kind() == ErrorKind::TimedOut {
        Outcome::Timeout
    } else {
        Outcome::ConnectFailed(e.to_string())
    }
}

/// When to stop reading an answer.
#[derive(Clone, Copy)]
enum Until {
    /// The first line (TCP echo).
    Line,
    /// A complete HTTP response: as curl does, stop at the end of a Content-Length body
    /// rather than waiting for the server to close (Envoy delays its close after a local
    /// reply).
    Response,
}

/// Whether `raw` holds a complete HTTP response with a Content-Length body.
fn response_complete(raw: &[u8]) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]);
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .is_some_and(|len| raw.len() >= end + 4 + len)
}

/// Writes `payload`, then reads until EOF or `until` says the answer is complete.
fn exchange(mut stream: TcpStream, payload: &[u8], until: Until) -> Result<Vec<u8>, Outcome> {
    let io = |e: std::io::Error| match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Outcome::Timeout,
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted => {
            Outcome::Reset(e.to_string())
        }
        _ => Outcome::Reset(e.to_string()),
    };
    stream.set_read_timeout(Some(READ_TIMEOUT)).map_err(io)?;
    stream.write_all(payload).map_err(io)?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                let done = match until {
                    Until::Line => raw.contains(&b'\n'),
                    Until::Response => response_complete(&raw),
                };
                if done {
                    break;
                }
            }
            // A reset after a complete answer still counts as the answer.
            Err(e) if !raw.is_empty() && e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => return Err(io(e)),
        }
    }
    if raw.is_empty() {
        return Err(Outcome::Reset("closed without a response".into()));
    }
    Ok(raw)
}

fn exchange_http(stream: TcpStream, req: &HttpRequest) -> Outcome {
    let raw = match exchange(stream, req.encode().as_bytes(), Until::Response) {
        Ok(raw) => raw,
        Err(outcome) => return outcome,
    };
    let text = String::from_utf8_lossy(&raw);
    let Some((head, rest)) = text.split_once("\r\n\r\n") else {
        return Outcome::Reset(format!("incomplete response: {text:?}"));
    };
    let Some(status) = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
    else {
        return Outcome::Reset(format!("no status line in {head:?}"));
    };
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Outcome::Http { status, body }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
