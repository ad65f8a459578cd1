//! Preparing a request for upstream: the route's header changes, host and path rewrites,
//! Envoy's `x-envoy-*` request headers, the timeouts in effect, and the per-attempt request
//! in the upstream protocol's form.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};

use super::super::body::RequestBody;
use super::super::format::{Context, Headers};
use super::super::headers::{TE, X_ENVOY_ORIGINAL_PATH, X_FORWARDED_HOST};
use super::super::pool::UpstreamProtocol;
use super::super::route::Matched;
use super::super::route::action::{HostRewrite, RouteAction, WeightedEntry};
use super::super::stream_info::{HeaderView, Protocol};
use crate::upstream::host::Host;

pub const EXPECTED_TIMEOUT: HeaderName = HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
pub const ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");
const X_ENVOY_ORIGINAL_HOST: HeaderName = HeaderName::from_static("x-envoy-original-host");
const UPSTREAM_TIMEOUT: HeaderName = HeaderName::from_static("x-envoy-upstream-rq-timeout-ms");
const PER_TRY_TIMEOUT: HeaderName =
    HeaderName::from_static("x-envoy-upstream-rq-per-try-timeout-ms");
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// A request as the connection manager hands it to the router.
#[derive(Debug)]
pub struct RouterRequest {
    pub method: Method,
    /// `:path` (normalized), query included.
    pub path: String,
    pub authority: String,
    /// `x-forwarded-proto`.
    pub scheme: HeaderValue,
    pub headers: HeaderMap,
    pub protocol: Protocol,
    pub internal: bool,
}

// === impl RouterRequest ===

impl RouterRequest {
    pub fn view(&self) -> HeaderView<'_> {
        HeaderView {
            method: Some(&self.method),
            path: Some(&self.path),
            authority: Some(&self.authority),
            scheme: self.scheme.to_str().ok(),
            status: None,
            headers: &self.headers,
        }
    }

    /// Applies the route's header changes and rewrites (Envoy's `finalizeRequestHeaders`).
    /// `original_path` keeps the pre-rewrite path in `x-envoy-original-path`.
    pub fn finalize(
        &mut self,
        matched: Matched<'_>,
        action: &RouteAction,
        weighted: Option<&WeightedEntry>,
        ctx: &Context<'_>,
        original_path: bool,
    ) {
        let weighted_headers = weighted.map(|w| &w.request_headers);
        for level in matched.request_levels().into_iter().chain(weighted_headers) {
            if level.is_empty() {
                continue;
            }
            // Values may read request headers (`%REQ(x)%`): they see a copy taken before
            // this level's changes, made only when a value needs it.
            let snapshot = level.reads_request_headers().then(|| self.headers.clone());
            let empty = HeaderMap::new();
            let view = HeaderView {
                method: Some(&self.method),
                path: Some(&self.path),
                authority: Some(&self.authority),
                scheme: self.scheme.to_str().ok(),
                status: None,
                headers: snapshot.as_ref().unwrap_or(&empty),
            };
            let live = Context {
                request: Headers::Live(view),
                ..*ctx
            };
            level.apply(&mut self.headers, Some(&live));
        }
        let host = match (
            &action.host_rewrite,
            weighted.and_then(|w| w.host_rewrite.as_ref()),
        ) {
            (_, Some(h)) => h.to_str().ok().map(str::to_string),
            (HostRewrite::Literal(h), None) => h.to_str().ok().map(str::to_string),
            (HostRewrite::Header(name), None) => self
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_string),
            _ => None,
        };
        if let Some(h) = host {
            self.set_authority(h, action.append_x_forwarded_host, original_path);
        }
        if let Some(new_path) = action
            .path_rewrite
            .apply(&self.path, &matched.route.matcher.path)
        {
            if original_path && let Ok(v) = HeaderValue::from_str(&self.path) {
                self.headers.insert(X_ENVOY_ORIGINAL_PATH, v);
            }
            self.path = new_path;
        }
    }

    /// `auto_host_rewrite`: the chosen host's hostname, when it has one.
    pub fn auto_host_rewrite(&mut self, host: &Host, append_xfh: bool, keep_original: bool) {
        if !host.hostname.is_empty() {
            self.set_authority(host.hostname.clone(), append_xfh, keep_original);
        }
    }

    /// Rewrites `:authority`; `keep_original` records the old one in
    /// `x-envoy-original-host`, as Envoy's router does unless `suppress_envoy_headers`.
    fn set_authority(&mut self, host: String, append_xfh: bool, keep_original: bool) {
        if keep_original
            && !self.headers.contains_key(&X_ENVOY_ORIGINAL_HOST)
            && let Ok(old) = HeaderValue::from_str(&self.authority)
        {
            self.headers.insert(X_ENVOY_ORIGINAL_HOST, old);
        }
        if append_xfh && let Ok(old) = HeaderValue::from_str(&self.authority) {
            let joined = match self.headers.get(&X_FORWARDED_HOST) {
                Some(prev) => [prev.as_bytes(), b",", old.as_bytes()].concat(),
                None => old.as_bytes().to_vec(),
            };
            if let Ok(v) = HeaderValue::from_bytes(&joined) {
                self.headers.insert(X_FORWARDED_HOST, v);
            }
        }
        self.authority = host;
    }

    /// Builds an attempt's request in the upstream protocol's form. `keep` is set when a
    /// retry may follow (the headers are copied rather than moved).
    pub fn build(
        &mut self,
        protocol: UpstreamProtocol,
        tls: bool,
        body: RequestBody,
        keep: bool,
    ) -> Option<Request<RequestBody>> {
        let mut headers = if keep {
            self.headers.clone()
        } else {
            std::mem::take(&mut self.headers)
        };
        let (uri, version) = match protocol {
            UpstreamProtocol::Http1 => {
                headers.insert(
                    http::header::HOST,
                    HeaderValue::from_str(&self.authority).ok()?,
                );
                (self.path.parse::<Uri>().ok()?, Version::HTTP_11)
            }
            UpstreamProtocol::Http2 => {
                headers.remove(http::header::HOST);
                if headers.get(&TE).is_some_and(|v| v != "trailers") {
                    headers.remove(&TE);
                }
                let scheme = if tls { "https" } else { "http" };
                let uri = Uri::builder()
                    .scheme(scheme)
                    .authority(self.authority.as_str())
                    .path_and_query(self.path.as_str())
                    .build()
                    .ok()?;
                (uri, Version::HTTP_2)
            }
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = version;
        *req.headers_mut() = headers;
        Some(req)
    }
}

/// The timeouts of one request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timeouts {
    /// The whole request (`route.timeout`, or the headers that override it).
    pub global: Option<Duration>,
    pub per_try: Option<Duration>,
}

// === impl Timeouts ===

impl Timeouts {
    /// The timeouts in effect: gRPC's `grpc-timeout` when the route allows it, Envoy's
    /// timeout headers (present only on internal requests), else the route's.
    pub fn new(action: &RouteAction, headers: &HeaderMap) -> Self {
        let mut global = action.timeout;
        if let Some(max) = action.grpc_timeout_max
            && let Some(t) = headers
                .get(&GRPC_TIMEOUT)
                .and_then(|v| grpc_timeout(v.to_str().ok()?))
        {
            global = Some(if max.is_zero() { t } else { t.min(max) }).filter(|d| !d.is_zero());
        }
        if let Some(ms) = header_ms(headers, &UPSTREAM_TIMEOUT) {
            global = Some(ms).filter(|d| !d.is_zero());
        }
        let mut per_try = action.retry.as_ref().and_then(|r| r.per_try_timeout);
        if let Some(ms) = header_ms(headers, &PER_TRY_TIMEOUT) {
            per_try = Some(ms).filter(|d| !d.is_zero());
        }
        // A per-try timeout longer than the global one never fires.
        if let (Some(p), Some(g)) = (per_try, global)
            && p >= g
        {
            per_try = None;
        }
        Self { global, per_try }
    }

    /// `x-envoy-expected-rq-timeout-ms` for an attempt: the per-try timeout, or what is left
    /// of the global one.
    pub fn expected(&self, remaining: Option<Duration>) -> Option<Duration> {
        match (self.per_try, remaining) {
            (Some(p), Some(r)) => Some(p.min(r)),
            (Some(p), None) => Some(p),
            (None, r) => r,
        }
    }
}

fn header_ms(headers: &HeaderMap, name: &HeaderName) -> Option<Duration> {
    headers
        .get(name)?
        .to_str()
        .ok()?
        .parse::<u64>()
        .ok()
        .map(Duration::from_millis)
}

/// Parses a gRPC `grpc-timeout` value (`100m`, `5S`, ...).
pub fn grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (n, unit) = v.split_at(v.len() - 1);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto_test_util::from_yaml;

    fn action(yaml: &str) -> RouteAction {
        RouteAction::new(&from_yaml(yaml), None).unwrap()
    }

    #[test]
    fn timeouts_from_route_headers_and_grpc() {
        let mut h = HeaderMap::new();
        let a = action(
            "{ cluster: c, timeout: 2s, retry_policy: { retry_on: 5xx, per_try_timeout: 0.5s } }",
        );
        let t = Timeouts::new(&a, &h);
        assert_eq!(t.global, Some(Duration::from_secs(2)));
        assert_eq!(t.per_try, Some(Duration::from_millis(500)));
        assert_eq!(
            t.expected(Some(Duration::from_millis(300))),
            Some(Duration::from_millis(300))
        );
        h.insert("x-envoy-upstream-rq-timeout-ms", "100".parse().unwrap());
        let t = Timeouts::new(&a, &h);
        assert_eq!(t.global, Some(Duration::from_millis(100)));
        assert_eq!(
            t.per_try, None,
            "a per-try timeout beyond the global one is moot"
        );
        let g = action(
            "{ cluster: c, timeout: 0s, max_stream_duration: { grpc_timeout_header_max: 0s } }",
        );
        let mut h = HeaderMap::new();
        h.insert("grpc-timeout", "250m".parse().unwrap());
        assert_eq!(
            Timeouts::new(&g, &h).global,
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            Timeouts::new(&a, &h).global,
            Some(Duration::from_secs(2)),
            "not enabled on this route"
        );
    }

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout("10u"), Some(Duration::from_micros(10)));
        assert_eq!(grpc_timeout("10x"), None);
        assert_eq!(grpc_timeout("m"), None);
    }

    fn request() -> RouterRequest {
        let mut headers = HeaderMap::new();
        headers.insert("te", "gzip".parse().unwrap());
        RouterRequest {
            method: Method::GET,
            path: "/a?b=1".into(),
            authority: "svc:80".into(),
            scheme: HeaderValue::from_static("http"),
            headers,
            protocol: Protocol::Http11,
            internal: false,
        }
    }

    #[test]
    fn requests_take_the_upstream_form() {
        let mut r = request();
        let h1 = r
            .build(UpstreamProtocol::Http1, false, RequestBody::Empty, true)
            .unwrap();
        assert_eq!(h1.uri(), "/a?b=1");
        assert_eq!(h1.headers()["host"], "svc:80");
        assert_eq!(h1.version(), Version::HTTP_11);
        let h2 = r
            .build(UpstreamProtocol::Http2, true, RequestBody::Empty, false)
            .unwrap();
        assert_eq!(h2.uri(), "https://svc:80/a?b=1");
        assert!(!h2.headers().contains_key("host"));
        assert!(
            !h2.headers().contains_key("te"),
            "only `te: trailers` may go to HTTP/2"
        );
        assert_eq!(h2.version(), Version::HTTP_2);
    }
}
