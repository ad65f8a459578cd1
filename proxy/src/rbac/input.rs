//! What an RBAC decision looks at, borrowed from the connection and the request.

use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::Metadata;
use http::header::{GetAll, HOST, HeaderName, HeaderValue};

use crate::conn::Downstream;

/// A connection, and for HTTP the request head, as RBAC sees them. Everything is borrowed:
/// building an `Input` and evaluating it allocates nothing.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    downstream: &'a Downstream,
    request: Option<&'a http::request::Parts>,
    remote: Option<IpAddr>,
    metadata: Option<&'a Metadata>,
    /// `:path` and `:authority` as the connection manager settled them, when they differ
    /// from the request head's URI (normalized path; HTTP/1 `host`).
    path: Option<&'a str>,
    authority: Option<&'a str>,
}

/// Which request header a header matcher reads. Envoy's pseudo-headers come from the
/// request line; `host` is the same header as `:authority`, as in Envoy's header map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderKey {
    Authority,
    Method,
    Path,
    Scheme,
    Other(HeaderName),
    /// A name no request can carry (another pseudo-header, or not a valid header name).
    Never,
}

/// The values of one header in a request.
#[derive(Debug)]
pub(crate) enum Values<'a> {
    Absent,
    One(&'a [u8]),
    /// A regular header, possibly repeated.
    All(GetAll<'a, HeaderValue>),
}

// === impl Input ===

impl<'a> Input<'a> {
    /// A connection with no request: what the network filter evaluates. Header matchers see
    /// no headers and `url_path` never matches, as in Envoy.
    pub fn connection(downstream: &'a Downstream) -> Self {
        Self {
            downstream,
            request: None,
            remote: None,
            metadata: None,
            path: None,
            authority: None,
        }
    }

    /// A request on a connection: what the HTTP filter evaluates. `request` must be the head
    /// as the connection manager hands it to filters (path normalized when `normalize_path`
    /// is set, its own headers such as `x-forwarded-proto` added).
    pub fn request(downstream: &'a Downstream, request: &'a http::request::Parts) -> Self {
        Self {
            request: Some(request),
            ..Self::connection(downstream)
        }
    }

    /// The client address the connection manager settled on (`remote_ip`): from
    /// `x-forwarded-for` when its config says so. Without it, `remote_ip` is the peer.
    pub fn with_remote(mut self, remote: IpAddr) -> Self {
        self.remote = Some(remote);
        self
    }

    /// The request's `:path` (query included) and `:authority` as the connection manager
    /// hands them to filters, overriding the head's URI.
    pub fn with_request_line(mut self, path: &'a str, authority: &'a str) -> Self {
        self.path = Some(path);
        self.authority = Some(authority);
        self
    }

    /// Dynamic metadata set by earlier filters, for `metadata` matchers. Without it every
    /// metadata value is absent.
    pub fn with_metadata(mut self, metadata: &'a Metadata) -> Self {
        self.metadata = Some(metadata);
        self
    }

    pub(crate) fn downstream(&self) -> &'a Downstream {
        self.downstream
    }

    pub(crate) fn metadata(&self) -> Option<&'a Metadata> {
        self.metadata
    }

    /// `direct_remote_ip` and the deprecated `source_ip`: the connected peer.
    pub(crate) fn peer_ip(&self) -> IpAddr {
        self.downstream.peer.ip()
    }

    /// `remote_ip`: the connection manager's remote address, else the peer.
    pub(crate) fn remote_ip(&self) -> IpAddr {
        self.remote.unwrap_or_else(|| self.peer_ip())
    }

    /// `:path` with query and fragment removed; `None` without a request or a path.
    pub(crate) fn url_path(&self) -> Option<&'a str> {
        let path = self.path()?;
        Some(path.find(['?', '#']).map_or(path, |i| &path[..i]))
    }

    /// The whole `:path`, as `uri_template` sees it before stripping the query.
    pub(crate) fn path(&self) -> Option<&'a str> {
        let request = self.request?;
        if let Some(p) = self.path {
            return Some(p);
        }
        request.uri.path_and_query().map(|p| p.as_str())
    }

    /// The values of a header; a request-less input has none.
    pub(crate) fn header(&self, key: &HeaderKey) -> Values<'a> {
        let Some(req) = self.request else {
            return Values::Absent;
        };
        let one = |s: Option<&'a str>| s.map_or(Values::Absent, |s| Values::One(s.as_bytes()));
        match key {
            HeaderKey::Method => Values::One(req.method.as_str().as_bytes()),
            HeaderKey::Path => one(self.path()),
            HeaderKey::Authority if self.authority.is_some() => one(self.authority),
            HeaderKey::Authority => match req.uri.authority() {
                Some(a) => Values::One(a.as_str().as_bytes()),
                None => all(req.headers.get_all(HOST)),
            },
            HeaderKey::Scheme => match req.uri.scheme_str() {
                Some(s) => Values::One(s.as_bytes()),
                None if self.downstream.tls.is_some() => Values::One(b"https"),
                None => Values::One(b"http"),
            },
            HeaderKey::Other(name) => all(req.headers.get_all(name)),
            HeaderKey::Never => Values::Absent,
        }
    }
}

fn all(values: GetAll<'_, HeaderValue>) -> Values<'_> {
    if values.iter().next().is_none() {
        Values::Absent
    } else {
        Values::All(values)
    }
}

// === impl HeaderKey ===

impl HeaderKey {
    /// The key for a configured header name (matched case-insensitively, as Envoy lowercases
    /// it).
    pub(crate) fn new(name: &str) -> Self {
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            ":authority" | "host" => Self::Authority,
            ":method" => Self::Method,
            ":path" => Self::Path,
            ":scheme" => Self::Scheme,
            n if n.starts_with(':') => Self::Never,
            n => HeaderName::from_bytes(n.as_bytes()).map_or(Self::Never, Self::Other),
        }
    }
}
