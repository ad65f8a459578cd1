//! What happened to one HTTP stream, as Envoy's access logs, response flags and stats report
//! it: timings, the response code and its details, the upstream that served it, bytes.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, Version};

use envoy_types::pb::envoy::config::core::v3::Metadata;

use super::peer_metadata::PeerHeadersReceived;
use crate::tls::PeerMetadata;
use crate::upstream::host::HostAddr;

/// Envoy's response flags (`%RESPONSE_FLAGS%`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseFlag {
    NoHealthyUpstream,
    UpstreamRequestTimeout,
    LocalReset,
    UpstreamRemoteReset,
    UpstreamConnectionFailure,
    UpstreamConnectionTermination,
    UpstreamOverflow,
    NoRouteFound,
    DownstreamConnectionTermination,
    UpstreamRetryLimitExceeded,
    StreamIdleTimeout,
    DownstreamProtocolError,
    UpstreamMaxStreamDurationReached,
    DurationTimeout,
    UpstreamProtocolError,
    NoClusterFound,
    DownstreamRemoteReset,
}

// === impl ResponseFlag ===

impl ResponseFlag {
    /// The short name in access logs (`UF`, `NR`, ...).
    pub fn short(self) -> &'static str {
        match self {
            Self::NoHealthyUpstream => "UH",
            Self::UpstreamRequestTimeout => "UT",
            Self::LocalReset => "LR",
            Self::UpstreamRemoteReset => "UR",
            Self::UpstreamConnectionFailure => "UF",
            Self::UpstreamConnectionTermination => "UC",
            Self::UpstreamOverflow => "UO",
            Self::NoRouteFound => "NR",
            Self::DownstreamConnectionTermination => "DC",
            Self::UpstreamRetryLimitExceeded => "URX",
            Self::StreamIdleTimeout => "SI",
            Self::DownstreamProtocolError => "DPE",
            Self::UpstreamMaxStreamDurationReached => "UMSDR",
            Self::DurationTimeout => "DT",
            Self::UpstreamProtocolError => "UPE",
            Self::NoClusterFound => "NC",
            Self::DownstreamRemoteReset => "DR",
        }
    }

    /// The long name (`%RESPONSE_FLAGS_LONG%`).
    pub fn long(self) -> &'static str {
        match self {
            Self::NoHealthyUpstream => "NoHealthyUpstream",
            Self::UpstreamRequestTimeout => "UpstreamRequestTimeout",
            Self::LocalReset => "LocalReset",
            Self::UpstreamRemoteReset => "UpstreamRemoteReset",
            Self::UpstreamConnectionFailure => "UpstreamConnectionFailure",
            Self::UpstreamConnectionTermination => "UpstreamConnectionTermination",
            Self::UpstreamOverflow => "UpstreamOverflow",
            Self::NoRouteFound => "NoRouteFound",
            Self::DownstreamConnectionTermination => "DownstreamConnectionTermination",
            Self::UpstreamRetryLimitExceeded => "UpstreamRetryLimitExceeded",
            Self::StreamIdleTimeout => "StreamIdleTimeout",
            Self::DownstreamProtocolError => "DownstreamProtocolError",
            Self::UpstreamMaxStreamDurationReached => "UpstreamMaxStreamDurationReached",
            Self::DurationTimeout => "DurationTimeout",
            Self::UpstreamProtocolError => "UpstreamProtocolError",
            Self::NoClusterFound => "NoClusterFound",
            Self::DownstreamRemoteReset => "DownstreamRemoteReset",
        }
    }
}

/// The flags of a stream, in the order they were set (Envoy prints them that way, e.g.
/// `URX,UF`). Inline, no allocation; more than four flags on one stream never happens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseFlags {
    list: [Option<ResponseFlag>; 4],
}

// === impl ResponseFlags ===

impl ResponseFlags {
    pub fn set(&mut self, flag: ResponseFlag) {
        for slot in &mut self.list {
            match slot {
                Some(f) if *f == flag => return,
                None => {
                    *slot = Some(flag);
                    return;
                }
                Some(_) => {}
            }
        }
    }

    pub fn has(&self, flag: ResponseFlag) -> bool {
        self.list.contains(&Some(flag))
    }

    pub fn is_empty(&self) -> bool {
        self.list[0].is_none()
    }

    pub fn iter(&self) -> impl Iterator<Item = ResponseFlag> + '_ {
        self.list.iter().map_while(|f| *f)
    }

    /// `UF`, `URX,UF`, or `-`.
    pub fn short_string(&self) -> Cow<'static, str> {
        join(self.iter().map(ResponseFlag::short))
    }

    pub fn long_string(&self) -> Cow<'static, str> {
        join(self.iter().map(ResponseFlag::long))
    }
}

fn join(mut names: impl Iterator<Item = &'static str>) -> Cow<'static, str> {
    let Some(first) = names.next() else {
        return Cow::Borrowed("-");
    };
    let Some(second) = names.next() else {
        return Cow::Borrowed(first);
    };
    let mut s = format!("{first},{second}");
    for n in names {
        s.push(',');
        s.push_str(n);
    }
    Cow::Owned(s)
}

/// The downstream protocol of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http10,
    Http11,
    Http2,
    /// A tcp_proxy connection: no HTTP protocol (`%PROTOCOL%` is `-`).
    Tcp,
}

// === impl Protocol ===

impl Protocol {
    pub fn from_version(v: Version) -> Self {
        match v {
            Version::HTTP_10 | Version::HTTP_09 => Self::Http10,
            Version::HTTP_2 => Self::Http2,
            _ => Self::Http11,
        }
    }

    /// As `%PROTOCOL%` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http10 => "HTTP/1.0",
            Self::Http11 => "HTTP/1.1",
            Self::Http2 => "HTTP/2",
            Self::Tcp => "-",
        }
    }
}

/// A request or response header an access log refers to (`%REQ(...)%`, `%RESP(...)%`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HeaderKey {
    Method,
    Path,
    Authority,
    Scheme,
    Status,
    Header(HeaderName),
}

// === impl HeaderKey ===

impl HeaderKey {
    /// Parses `:path`, `x-foo`, ... (case-insensitive). `None` for an invalid name.
    pub fn parse(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        Some(match lower.as_str() {
            ":method" => Self::Method,
            ":path" => Self::Path,
            ":authority" | "host" => Self::Authority,
            ":scheme" => Self::Scheme,
            ":status" => Self::Status,
            other => Self::Header(HeaderName::from_bytes(other.as_bytes()).ok()?),
        })
    }
}

/// The values of the headers the HCM's access logs refer to, copied when the stream's
/// headers were final (values are reference-counted, so copying is cheap).
#[derive(Debug, Clone, Default)]
pub struct Captured {
    values: Vec<(HeaderKey, HeaderValue)>,
}

// === impl Captured ===

impl Captured {
    /// Copies `keys` out of a request or response.
    pub fn capture(keys: &[HeaderKey], view: &HeaderView<'_>) -> Self {
        let mut values = Vec::new();
        for k in keys {
            if let Some(v) = view.get(k) {
                values.push((k.clone(), v));
            }
        }
        Self { values }
    }

    pub fn get(&self, key: &HeaderKey) -> Option<&HeaderValue> {
        self.values.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// Request or response headers with their pseudo-headers, as formatters and matchers read
/// them.
#[derive(Debug, Clone, Copy)]
pub struct HeaderView<'a> {
    pub method: Option<&'a http::Method>,
    pub path: Option<&'a str>,
    pub authority: Option<&'a str>,
    pub scheme: Option<&'a str>,
    pub status: Option<http::StatusCode>,
    pub headers: &'a HeaderMap,
}

// === impl HeaderView ===

impl<'a> HeaderView<'a> {
    pub fn headers(headers: &'a HeaderMap) -> Self {
        Self {
            method: None,
            path: None,
            authority: None,
            scheme: None,
            status: None,
            headers,
        }
    }

    /// The first value of a header (pseudo-headers included).
    pub fn get(&self, key: &HeaderKey) -> Option<HeaderValue> {
        let s = match key {
            HeaderKey::Method => self.method.map(|m| m.as_str()),
            HeaderKey::Path => self.path,
            HeaderKey::Authority => self.authority,
            HeaderKey::Scheme => self.scheme,
            HeaderKey::Status => {
                return self.status.map(|s| HeaderValue::from(s.as_u16()));
            }
            HeaderKey::Header(name) => return self.headers.get(name).cloned(),
        }?;
        HeaderValue::from_str(s).ok()
    }
}

/// The upstream a stream went to.
#[derive(Debug, Clone, Default)]
pub struct UpstreamInfo {
    pub cluster: Option<Arc<str>>,
    pub host: Option<HostAddr>,
    pub local: Option<SocketAddr>,
    pub transport_failure: Option<Box<str>>,
    /// Attempts made (1 + retries).
    pub attempts: u32,
    pub protocol: Option<Protocol>,
    /// The upstream host's endpoint metadata (`istio.workload` for Istio's labels).
    pub metadata: Option<Arc<Metadata>>,
    /// The URI SANs of the upstream mTLS connection (server's and ours).
    pub principals: crate::http::pool::Principals,
}

/// Everything recorded about one stream.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    pub start: SystemTime,
    pub started: Instant,
    pub protocol: Protocol,
    /// The client address after XFF processing (`%DOWNSTREAM_REMOTE_ADDRESS%`).
    pub remote: SocketAddr,
    pub response_code: Option<u16>,
    pub flags: ResponseFlags,
    pub details: Cow<'static, str>,
    pub termination_details: Option<&'static str>,
    pub route_name: Option<Arc<str>>,
    pub upstream: UpstreamInfo,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// When the whole request was received.
    pub request_done: Option<Duration>,
    /// When the first byte of the upstream response arrived.
    pub first_upstream_rx: Option<Duration>,
    /// When the last byte of the response was sent.
    pub finished: Option<Duration>,
    pub request_headers: Captured,
    pub response_headers: Captured,
    /// Istio's metadata exchange: the client's workload (inbound) and the server's
    /// (outbound), and which exchange headers the client sent.
    pub downstream_peer: Option<Arc<PeerMetadata>>,
    pub upstream_peer: Option<Arc<PeerMetadata>>,
    pub peer_headers: PeerHeadersReceived,
}

// === impl StreamInfo ===

impl StreamInfo {
    pub fn new(protocol: Protocol, remote: SocketAddr) -> Self {
        Self {
            start: SystemTime::now(),
            started: Instant::now(),
            protocol,
            remote,
            response_code: None,
            flags: ResponseFlags::default(),
            details: Cow::Borrowed(""),
            termination_details: None,
            route_name: None,
            upstream: UpstreamInfo::default(),
            bytes_received: 0,
            bytes_sent: 0,
            request_done: None,
            first_upstream_rx: None,
            finished: None,
            request_headers: Captured::default(),
            response_headers: Captured::default(),
            downstream_peer: None,
            upstream_peer: None,
            peer_headers: PeerHeadersReceived::default(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_print_in_the_order_set_without_duplicates() {
        let mut f = ResponseFlags::default();
        assert_eq!(f.short_string(), "-");
        f.set(ResponseFlag::UpstreamRetryLimitExceeded);
        f.set(ResponseFlag::UpstreamConnectionFailure);
        f.set(ResponseFlag::UpstreamRetryLimitExceeded);
        assert_eq!(f.short_string(), "URX,UF");
        assert!(f.has(ResponseFlag::UpstreamConnectionFailure));
        assert!(!f.has(ResponseFlag::NoRouteFound));
    }

    #[test]
    fn captured_headers_include_pseudo_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("abc"));
        let view = HeaderView {
            method: Some(&http::Method::POST),
            path: Some("/a?b"),
            authority: Some("example.com"),
            scheme: Some("http"),
            status: None,
            headers: &headers,
        };
        let keys = [
            HeaderKey::parse(":METHOD").unwrap(),
            HeaderKey::parse(":path").unwrap(),
            HeaderKey::parse("X-Request-Id").unwrap(),
            HeaderKey::parse("user-agent").unwrap(),
        ];
        let c = Captured::capture(&keys, &view);
        assert_eq!(c.get(&keys[0]).unwrap(), "POST");
        assert_eq!(c.get(&keys[1]).unwrap(), "/a?b");
        assert_eq!(c.get(&keys[2]).unwrap(), "abc");
        assert!(c.get(&keys[3]).is_none());
    }
}
