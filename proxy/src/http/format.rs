//! Envoy's substitution format strings (`%START_TIME%`, `%REQ(:PATH)%`, ...), parsed once at
//! config time and rendered per stream. Access logs and header values
//! (`request_headers_to_add`) share them.

use std::borrow::Cow;
use std::fmt::Write;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::stream_info::{Captured, HeaderKey, HeaderView, Protocol, StreamInfo};
use crate::conn::Downstream;

/// Why a format string is invalid. The text is the NACK reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("not supported field in StreamInfo: {0}")]
    Unsupported(String),
    #[error("incorrect configuration: {0}; couldn't find valid command at position {1}")]
    Unterminated(String, usize),
    #[error("invalid header name in {0}")]
    HeaderName(String),
    #[error("{0} requires a parameter")]
    MissingParameter(String),
}

/// A value as typed JSON logs want it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Str(Cow<'a, str>),
    Num(u64),
    /// Not available: `-` in text, `null` in JSON.
    None,
}

/// A compiled format string.
#[derive(Debug, Clone)]
pub struct Formatter {
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Text(Box<str>),
    Op { op: Op, max_len: Option<usize> },
}

#[derive(Debug, Clone)]
enum Op {
    Req(HeaderKey, Option<HeaderKey>),
    Resp(HeaderKey, Option<HeaderKey>),
    StartTime(Option<Box<str>>),
    Protocol,
    UpstreamProtocol,
    ResponseCode,
    ResponseFlags,
    ResponseFlagsLong,
    ResponseCodeDetails,
    ConnectionTerminationDetails,
    BytesReceived,
    BytesSent,
    Duration,
    RequestDuration,
    ResponseDuration,
    ResponseTxDuration,
    UpstreamHost,
    UpstreamCluster,
    UpstreamLocalAddress,
    UpstreamTransportFailureReason,
    UpstreamRequestAttemptCount,
    RemoteAddress { port: bool },
    RemotePort,
    DirectRemoteAddress { port: bool },
    LocalAddress { port: bool },
    LocalPort,
    RequestedServerName,
    RouteName,
    Hostname(Box<str>),
    PeerUriSan,
    LocalUriSan,
    PeerSubject,
    TlsVersion,
    PeerFingerprint256,
}

/// What a formatter reads from.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub info: &'a StreamInfo,
    pub downstream: &'a Downstream,
    pub request: Headers<'a>,
    pub response: Headers<'a>,
}

/// Where `%REQ()%` / `%RESP()%` values come from.
#[derive(Debug, Clone, Copy)]
pub enum Headers<'a> {
    None,
    Live(HeaderView<'a>),
    Captured(&'a Captured),
}

// === impl Headers ===

impl Headers<'_> {
    fn get(&self, key: &HeaderKey) -> Option<http::HeaderValue> {
        match self {
            Self::None => None,
            Self::Live(v) => v.get(key),
            Self::Captured(c) => c.get(key).cloned(),
        }
    }
}

// === impl Formatter ===

impl Formatter {
    /// Parses a format string. `%%` is a literal `%`.
    pub fn parse(text: &str) -> Result<Self, FormatError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'%' {
                let next = text[i..].find('%').map_or(text.len(), |n| i + n);
                literal.push_str(&text[i..next]);
                i = next;
                continue;
            }
            if bytes.get(i + 1) == Some(&b'%') {
                literal.push('%');
                i += 2;
                continue;
            }
            let end = find_command_end(text, i + 1)
                .ok_or_else(|| FormatError::Unterminated(text.to_string(), i))?;
            let command = &text[i + 1..end];
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal).into_boxed_str()));
            }
            parts.push(parse_command(command)?);
            i = end + 1;
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal.into_boxed_str()));
        }
        Ok(Self { parts })
    }

    /// Whether the string has no commands (a plain literal).
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// The text of a literal format string (with `%%` unescaped).
    pub fn literal_text(&self) -> String {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(&**t),
                Part::Op { .. } => None,
            })
            .collect()
    }

    /// Request header keys the formatter reads (so the HCM can capture them).
    pub fn request_keys(&self, out: &mut Vec<HeaderKey>) {
        self.keys(out, true);
    }

    /// Response header keys the formatter reads.
    pub fn response_keys(&self, out: &mut Vec<HeaderKey>) {
        self.keys(out, false);
    }

    fn keys(&self, out: &mut Vec<HeaderKey>, request: bool) {
        for p in &self.parts {
            let (a, b) = match (p, request) {
                (
                    Part::Op {
                        op: Op::Req(a, b), ..
                    },
                    true,
                ) => (a, b),
                (
                    Part::Op {
                        op: Op::Resp(a, b), ..
                    },
                    false,
                ) => (a, b),
                _ => continue,
            };
            for k in std::iter::once(a).chain(b.as_ref()) {
                if !out.contains(k) {
                    out.push(k.clone());
                }
            }
        }
    }

    /// Renders as text: unavailable values print as `-`.
    pub fn render(&self, ctx: &Context<'_>, out: &mut String) {
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Op { op, max_len } => match op.eval(ctx) {
                    Value::Str(s) => push_truncated(out, &s, *max_len),
                    Value::Num(n) => {
                        let _ = write!(out, "{n}");
                    }
                    Value::None => out.push('-'),
                },
            }
        }
    }

    /// Renders as a header value: unavailable values are empty.
    pub fn render_header(&self, ctx: &Context<'_>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Op { op, max_len } => match op.eval(ctx) {
                    Value::Str(s) => push_truncated(&mut out, &s, *max_len),
                    Value::Num(n) => {
                        let _ = write!(out, "{n}");
                    }
                    Value::None => {}
                },
            }
        }
        out
    }

    /// A typed value when the string is exactly one command (JSON logs keep numbers as
    /// numbers and missing values as null), else the rendered text.
    pub fn typed<'a>(&self, ctx: &Context<'a>) -> Value<'a> {
        if let [Part::Op { op, max_len }] = self.parts.as_slice() {
            return match op.eval(ctx) {
                Value::Str(s) => match max_len {
                    Some(n) if s.len() > *n => {
                        let mut out = String::new();
                        push_truncated(&mut out, &s, Some(*n));
                        Value::Str(Cow::Owned(out))
                    }
                    _ => Value::Str(s),
                },
                other => other,
            };
        }
        let mut out = String::new();
        self.render(ctx, &mut out);
        Value::Str(Cow::Owned(out))
    }
}

fn push_truncated(out: &mut String, s: &str, max_len: Option<usize>) {
    match max_len {
        Some(n) if s.len() > n => {
            let mut end = n;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            out.push_str(&s[..end]);
        }
        _ => out.push_str(s),
    }
}

/// The `%` closing the command that starts at `start`, skipping `%` inside parentheses.
fn find_command_end(text: &str, start: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in text[start..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            '%' if depth == 0 => return Some(start + i),
            _ => {}
        }
    }
    None
}

fn parse_command(command: &str) -> Result<Part, FormatError> {
    // NAME, NAME(arg) or NAME(arg):len.
    let (head, max_len) = match command.rfind(')') {
        Some(close) => {
            let rest = &command[close + 1..];
            let len = match rest.strip_prefix(':') {
                Some(n) => Some(
                    n.parse::<usize>()
                        .map_err(|_| FormatError::Unsupported(command.to_string()))?,
                ),
                None if rest.is_empty() => None,
                None => return Err(FormatError::Unsupported(command.to_string())),
            };
            (&command[..=close], len)
        }
        None => (command, None),
    };
    let (name, arg) = match head.find('(') {
        Some(open) if head.ends_with(')') => (&head[..open], Some(&head[open + 1..head.len() - 1])),
        _ => (head, None),
    };
    let op = match (name, arg) {
        ("REQ", Some(a)) => header_op(a, command, Op::Req)?,
        ("RESP", Some(a)) => header_op(a, command, Op::Resp)?,
        ("REQ" | "RESP", None) => return Err(FormatError::MissingParameter(name.to_string())),
        ("START_TIME", a) => Op::StartTime(a.filter(|a| !a.is_empty()).map(Box::from)),
        (_, Some(_)) => return Err(FormatError::Unsupported(command.to_string())),
        (name, None) => simple_op(name)?,
    };
    Ok(Part::Op { op, max_len })
}

fn header_op(
    arg: &str,
    command: &str,
    make: fn(HeaderKey, Option<HeaderKey>) -> Op,
) -> Result<Op, FormatError> {
    let (main, alt) = match arg.split_once('?') {
        Some((m, a)) => (m, Some(a)),
        None => (arg, None),
    };
    let key = |s: &str| HeaderKey::parse(s).ok_or_else(|| FormatError::HeaderName(command.into()));
    Ok(make(key(main)?, alt.map(key).transpose()?))
}

fn simple_op(name: &str) -> Result<Op, FormatError> {
    Ok(match name {
        "PROTOCOL" => Op::Protocol,
        "UPSTREAM_PROTOCOL" => Op::UpstreamProtocol,
        "RESPONSE_CODE" => Op::ResponseCode,
        "RESPONSE_FLAGS" => Op::ResponseFlags,
        "RESPONSE_FLAGS_LONG" => Op::ResponseFlagsLong,
        "RESPONSE_CODE_DETAILS" => Op::ResponseCodeDetails,
        "CONNECTION_TERMINATION_DETAILS" => Op::ConnectionTerminationDetails,
        "BYTES_RECEIVED" => Op::BytesReceived,
        "BYTES_SENT" => Op::BytesSent,
        "DURATION" => Op::Duration,
        "REQUEST_DURATION" => Op::RequestDuration,
        "RESPONSE_DURATION" => Op::ResponseDuration,
        "RESPONSE_TX_DURATION" => Op::ResponseTxDuration,
        "UPSTREAM_HOST" => Op::UpstreamHost,
        "UPSTREAM_CLUSTER" | "UPSTREAM_CLUSTER_RAW" => Op::UpstreamCluster,
        "UPSTREAM_LOCAL_ADDRESS" => Op::UpstreamLocalAddress,
        "UPSTREAM_TRANSPORT_FAILURE_REASON" => Op::UpstreamTransportFailureReason,
        "UPSTREAM_REQUEST_ATTEMPT_COUNT" => Op::UpstreamRequestAttemptCount,
        "DOWNSTREAM_REMOTE_ADDRESS" => Op::RemoteAddress { port: true },
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => Op::RemoteAddress { port: false },
        "DOWNSTREAM_REMOTE_PORT" => Op::RemotePort,
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS" => Op::DirectRemoteAddress { port: true },
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT" => Op::DirectRemoteAddress { port: false },
        "DOWNSTREAM_LOCAL_ADDRESS" => Op::LocalAddress { port: true },
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => Op::LocalAddress { port: false },
        "DOWNSTREAM_LOCAL_PORT" => Op::LocalPort,
        "REQUESTED_SERVER_NAME" => Op::RequestedServerName,
        "ROUTE_NAME" => Op::RouteName,
        "HOSTNAME" => Op::Hostname(hostname().into()),
        "DOWNSTREAM_PEER_URI_SAN" => Op::PeerUriSan,
        "DOWNSTREAM_LOCAL_URI_SAN" => Op::LocalUriSan,
        "DOWNSTREAM_PEER_SUBJECT" => Op::PeerSubject,
        "DOWNSTREAM_TLS_VERSION" => Op::TlsVersion,
        "DOWNSTREAM_PEER_FINGERPRINT_256" => Op::PeerFingerprint256,
        other => return Err(FormatError::Unsupported(other.to_string())),
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "-".to_string())
}

fn millis(d: Option<Duration>) -> Value<'static> {
    d.map_or(Value::None, |d| Value::Num(d.as_millis() as u64))
}

fn addr(a: SocketAddr, port: bool) -> Value<'static> {
    Value::Str(Cow::Owned(if port {
        a.to_string()
    } else {
        a.ip().to_string()
    }))
}

fn non_empty(s: &str) -> Value<'_> {
    if s.is_empty() {
        Value::None
    } else {
        Value::Str(Cow::Borrowed(s))
    }
}

// === impl Op ===

impl Op {
    fn eval<'a>(&self, ctx: &Context<'a>) -> Value<'a> {
        let info = ctx.info;
        let ds = ctx.downstream;
        let tls = ds.tls.as_deref();
        let peer_cert = tls.and_then(|t| t.peer_certificate.as_ref());
        match self {
            Self::Req(a, b) => header_value(ctx.request, a, b.as_ref()),
            Self::Resp(a, b) => header_value(ctx.response, a, b.as_ref()),
            Self::StartTime(fmt) => Value::Str(Cow::Owned(format_time(info.start, fmt.as_deref()))),
            Self::Protocol if info.protocol == Protocol::Tcp => Value::None,
            Self::Protocol => Value::Str(Cow::Borrowed(info.protocol.as_str())),
            Self::UpstreamProtocol => info
                .upstream
                .protocol
                .map_or(Value::None, |p| Value::Str(Cow::Borrowed(p.as_str()))),
            Self::ResponseCode => Value::Num(u64::from(info.response_code.unwrap_or(0))),
            Self::ResponseFlags => Value::Str(info.flags.short_string()),
            Self::ResponseFlagsLong => Value::Str(info.flags.long_string()),
            Self::ResponseCodeDetails => non_empty(&info.details),
            Self::ConnectionTerminationDetails => info
                .termination_details
                .map_or(Value::None, |d| Value::Str(Cow::Borrowed(d))),
            Self::BytesReceived => Value::Num(info.bytes_received),
            Self::BytesSent => Value::Num(info.bytes_sent),
            Self::Duration => millis(info.finished.or_else(|| Some(info.elapsed()))),
            Self::RequestDuration => millis(info.request_done),
            Self::ResponseDuration => millis(info.first_upstream_rx),
            Self::ResponseTxDuration => match (info.first_upstream_rx, info.finished) {
                (Some(a), Some(b)) => millis(Some(b.saturating_sub(a))),
                _ => Value::None,
            },
            Self::UpstreamHost => info
                .upstream
                .host
                .as_ref()
                .map_or(Value::None, |h| Value::Str(Cow::Owned(h.to_string()))),
            Self::UpstreamCluster => info
                .upstream
                .cluster
                .as_deref()
                .map_or(Value::None, |c| Value::Str(Cow::Owned(c.to_string()))),
            Self::UpstreamLocalAddress => {
                info.upstream.local.map_or(Value::None, |a| addr(a, true))
            }
            Self::UpstreamTransportFailureReason => info
                .upstream
                .transport_failure
                .as_deref()
                .map_or(Value::None, |r| Value::Str(Cow::Owned(r.to_string()))),
            Self::UpstreamRequestAttemptCount => Value::Num(u64::from(info.upstream.attempts)),
            Self::RemoteAddress { port } => addr(info.remote, *port),
            Self::RemotePort => Value::Num(u64::from(info.remote.port())),
            Self::DirectRemoteAddress { port } => addr(ds.peer, *port),
            Self::LocalAddress { port } => addr(ds.local, *port),
            Self::LocalPort => Value::Num(u64::from(ds.local.port())),
            Self::RequestedServerName => ds
                .requested_server_name
                .as_deref()
                .map_or(Value::None, non_empty),
            Self::RouteName => info.route_name.as_deref().map_or(Value::None, |n| {
                if n.is_empty() {
                    Value::None
                } else {
                    Value::Str(Cow::Owned(n.to_string()))
                }
            }),
            Self::Hostname(h) => Value::Str(Cow::Owned(h.to_string())),
            Self::PeerUriSan => peer_cert
                .filter(|c| !c.uri_sans.is_empty())
                .map_or(Value::None, |c| {
                    Value::Str(Cow::Owned(c.uri_sans.join(",")))
                }),
            Self::LocalUriSan => tls
                .filter(|t| !t.local_uri_sans.is_empty())
                .map_or(Value::None, |t| {
                    Value::Str(Cow::Owned(t.local_uri_sans.join(",")))
                }),
            Self::PeerSubject => peer_cert.map_or(Value::None, |c| non_empty(&c.subject)),
            Self::TlsVersion => tls.map_or(Value::None, |t| non_empty(&t.version)),
            Self::PeerFingerprint256 => peer_cert.map_or(Value::None, |c| non_empty(&c.sha256_hex)),
        }
    }
}

fn header_value<'a>(h: Headers<'a>, main: &HeaderKey, alt: Option<&HeaderKey>) -> Value<'a> {
    let v = h.get(main).or_else(|| alt.and_then(|a| h.get(a)));
    match v {
        Some(v) => Value::Str(Cow::Owned(
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        )),
        None => Value::None,
    }
}

/// Formats a time as Envoy's `%START_TIME%` does: the default is
/// `2024-01-02T03:04:05.678Z`; a custom format takes strftime directives plus Envoy's
/// `%E<n>S` (seconds with n decimals), `%<n>f`/`%f` (fraction) and `%s` (epoch seconds).
pub fn format_time(t: SystemTime, fmt: Option<&str>) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let nanos = since.subsec_nanos();
    let ((y, mo, d), (h, mi, s)) = crate::proto::utc_parts(secs);
    let Some(fmt) = fmt else {
        return format!(
            "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
            nanos / 1_000_000
        );
    };
    let mut out = String::with_capacity(fmt.len() + 16);
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut digits = String::new();
        let mut e = false;
        if chars.peek() == Some(&'E') {
            e = true;
            chars.next();
        }
        while let Some(d) = chars.peek().filter(|c| c.is_ascii_digit()) {
            digits.push(*d);
            chars.next();
        }
        let width = digits.parse::<usize>().ok();
        let Some(directive) = chars.next() else {
            out.push('%');
            break;
        };
        let _ = match (directive, e) {
            ('S', true) => {
                let n = width.unwrap_or(0).min(9);
                if n == 0 {
                    write!(out, "{s:02}")
                } else {
                    write!(out, "{s:02}.{}", fraction(nanos, n))
                }
            }
            ('f', _) => write!(out, "{}", fraction(nanos, width.unwrap_or(9).min(9))),
            ('s', _) => write!(out, "{secs}"),
            ('Y', _) => write!(out, "{y:04}"),
            ('y', _) => write!(out, "{:02}", y % 100),
            ('m', _) => write!(out, "{mo:02}"),
            ('d', _) => write!(out, "{d:02}"),
            ('e', _) => write!(out, "{d:2}"),
            ('H', _) => write!(out, "{h:02}"),
            ('M', _) => write!(out, "{mi:02}"),
            ('S', false) => write!(out, "{s:02}"),
            ('T', _) => write!(out, "{h:02}:{mi:02}:{s:02}"),
            ('F', _) => write!(out, "{y:04}-{mo:02}-{d:02}"),
            ('z', _) => write!(out, "+0000"),
            ('Z', _) => write!(out, "UTC"),
            ('%', _) => write!(out, "%"),
            (other, _) => write!(out, "%{other}"),
        };
    }
    out
}

fn fraction(nanos: u32, digits: usize) -> String {
    let s = format!("{nanos:09}");
    s[..digits].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::stream_info::{Protocol, ResponseFlag};
    use std::sync::Arc;

    fn downstream() -> Downstream {
        Downstream {
            local: "10.0.0.1:8080".parse().unwrap(),
            peer: "10.0.0.2:5000".parse().unwrap(),
            listener: Arc::from("l"),
            direction: Default::default(),
            filter_chain: Arc::from("c"),
            requested_server_name: None,
            tls: None,
            original_src_mark: None,
        }
    }

    fn render(fmt: &str, info: &StreamInfo, req: &http::HeaderMap) -> String {
        let ds = downstream();
        let f = Formatter::parse(fmt).unwrap();
        let ctx = Context {
            info,
            downstream: &ds,
            request: Headers::Live(HeaderView {
                method: Some(&http::Method::GET),
                path: Some("/p?q=1"),
                authority: Some("svc:80"),
                scheme: Some("http"),
                status: None,
                headers: req,
            }),
            response: Headers::None,
        };
        let mut out = String::new();
        f.render(&ctx, &mut out);
        out
    }

    #[test]
    fn commands_render_like_envoy() {
        let mut info = StreamInfo::new(Protocol::Http11, "10.0.0.2:5000".parse().unwrap());
        info.response_code = Some(503);
        info.flags.set(ResponseFlag::UpstreamConnectionFailure);
        info.start = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let mut req = http::HeaderMap::new();
        req.insert("user-agent", "curl/8".parse().unwrap());
        let out = render(
            "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" \
             %RESPONSE_CODE% %RESPONSE_FLAGS% \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \
             %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %UPSTREAM_HOST% 100%% %REQ(:AUTHORITY):3%",
            &info,
            &req,
        );
        assert_eq!(
            out,
            "[2023-11-14T22:13:20.123Z] \"GET /p?q=1 HTTP/1.1\" 503 UF \"curl/8\" \"-\" \
             10.0.0.2 - 100% svc"
        );
    }

    #[test]
    fn bad_commands_are_config_errors() {
        assert!(matches!(
            Formatter::parse("%NOPE%"),
            Err(FormatError::Unsupported(_))
        ));
        assert!(matches!(
            Formatter::parse("x %REQ(a"),
            Err(FormatError::Unterminated(..))
        ));
        assert!(matches!(
            Formatter::parse("%REQ%"),
            Err(FormatError::MissingParameter(_))
        ));
        assert!(Formatter::parse("plain").unwrap().is_literal());
    }

    #[test]
    fn single_commands_are_typed() {
        let info = StreamInfo::new(Protocol::Http2, "10.0.0.2:5000".parse().unwrap());
        let ds = downstream();
        let ctx = Context {
            info: &info,
            downstream: &ds,
            request: Headers::None,
            response: Headers::None,
        };
        assert_eq!(
            Formatter::parse("%BYTES_SENT%").unwrap().typed(&ctx),
            Value::Num(0)
        );
        assert_eq!(
            Formatter::parse("%REQ(x)%").unwrap().typed(&ctx),
            Value::None
        );
        assert_eq!(
            Formatter::parse("a %PROTOCOL%").unwrap().typed(&ctx),
            Value::Str("a HTTP/2".into())
        );
    }

    #[test]
    fn custom_time_formats() {
        let t = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        assert_eq!(
            format_time(t, Some("%Y/%m/%d %H:%M:%E3S %s %6f")),
            "2023/11/14 22:13:20.123 1700000000 123456"
        );
    }
}
