//! One stream through the connection manager: header checks and rewriting, path
//! normalization, routing, the filter chain, the router, and the response's final headers.
//! Every stream ends in [`StreamEnd`], which settles stats and writes access logs (also
//! when the client goes away early).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, HOST, LOCATION, SERVER};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tokio::time::Instant;

use super::config::{HcmConfig, ServerHeader};
use super::{Conn, Hcm, HeaderTimeout};
use crate::http::body::{ResponseBody, ResponseKind, StreamShared};
use crate::http::filter::AlpnOverrides;
use crate::http::filter::{AuthzDecision, AuthzRequest, HttpFilter};
use crate::http::format::{Context, Headers};
use crate::http::headers::Classified;
use crate::http::headers::{X_FORWARDED_PROTO, X_REQUEST_ID};
use crate::http::local_reply::{LocalReply, ResetReason};
use crate::http::path::Normalized;
use crate::http::pool::{ClusterHttp, RequestSlot};
use crate::http::route::action::port_start;
use crate::http::route::{
    Action, Matched, Redirect, RequestView, RouteAction, RouteTable, Selected,
};
use crate::http::router::{self, Outcome, RouterRequest};
use crate::http::stream_info::{Captured, HeaderView, Protocol, ResponseFlag, StreamInfo};
use crate::upstream::lb;

const X_FORWARDED_PORT: http::HeaderName = http::HeaderName::from_static("x-forwarded-port");

/// A stream the connection manager resets instead of answering: hyper sends HTTP/2's
/// RST_STREAM (INTERNAL_ERROR), as Envoy's codec does.
#[derive(Debug, thiserror::Error)]
#[error("stream reset: request headers over the limits")]
pub struct StreamReset;

/// Closes a stream's books when dropped: response stats, upstream request time, the
/// circuit breaker slot, and the access logs.
#[derive(Debug)]
pub struct StreamEnd {
    conn: Arc<Conn>,
    info: StreamInfo,
    shared: Arc<StreamShared>,
    upstream: Option<(Arc<ClusterHttp>, RequestSlot, Instant)>,
    complete: bool,
    sent: u64,
    /// HEAD responses have no body to finish.
    head: bool,
    /// The proxy reset the stream (upstream reset or timeout mid-response), so an
    /// unfinished body is not the client's doing.
    reset_by_proxy: bool,
    /// The stream is reset instead of answered (HTTP/2 headers over the limits).
    reset_stream: bool,
}

// === impl StreamEnd ===

impl StreamEnd {
    /// Records how the response body ended; the books close as this drops.
    pub fn finish(mut self, complete: bool, sent: u64) {
        self.complete = complete;
        self.sent = sent;
    }

    /// The stream idle timeout fired while the response was streaming.
    pub fn idle_timeout(&mut self) {
        self.info.flags.set(ResponseFlag::StreamIdleTimeout);
        self.conn.hcm.stats.downstream_rq_idle_timeout.inc();
    }

    /// The upstream reset the stream after the response started: Envoy resets the
    /// downstream stream and logs the reset's reason, not a downstream disconnect.
    pub fn upstream_reset(&mut self, reason: &ResetReason) {
        self.info.flags.set(reason.flag());
        self.info.details = format!(
            "upstream_reset_after_response_started{{{}}}",
            reason.detail()
        )
        .into();
        self.reset_by_proxy = true;
        self.conn
            .hcm
            .stats
            .rq_reset_after_downstream_response_started
            .inc();
    }

    /// The route's timeout fired while the response body was streaming (`UT`).
    pub fn response_timeout(&mut self) {
        self.info.flags.set(ResponseFlag::UpstreamRequestTimeout);
        self.info.details = "response_timeout".into();
        self.reset_by_proxy = true;
        if let Some((ch, _, _)) = &self.upstream {
            ch.stats.upstream_rq_timeout.inc();
        }
    }
}

impl Drop for StreamEnd {
    fn drop(&mut self) {
        let hcm = &self.conn.hcm;
        let stats = &hcm.stats;
        let info = &mut self.info;
        let elapsed = info.elapsed();
        info.finished = Some(elapsed);
        info.bytes_sent = self.sent;
        info.bytes_received = self.shared.bytes_received();
        if self.shared.request_done() && info.request_done.is_none() {
            info.request_done = Some(elapsed);
        }
        if self.reset_by_proxy {
            stats.downstream_rq_tx_reset.inc();
        } else if !self.complete && !self.head {
            info.flags
                .set(ResponseFlag::DownstreamConnectionTermination);
            stats.downstream_rq_rx_reset.inc();
        }
        stats.downstream_rq_completed.inc();
        if let Some(code) = info.response_code {
            stats.record_status(code);
        }
        stats.downstream_rq_time.record(elapsed.as_millis() as u64);
        stats.downstream_rq_active.dec();
        if let Some((ch, slot, started)) = self.upstream.take() {
            ch.stats
                .upstream_rq_time
                .record(started.elapsed().as_millis() as u64);
            drop(slot);
        }
        if !hcm.config.access_logs.is_empty() {
            let info = &self.info;
            let ctx = Context {
                info,
                downstream: &self.conn.downstream,
                request: Headers::Captured(&info.request_headers),
                response: Headers::Captured(&info.response_headers),
            };
            for log in &hcm.config.access_logs {
                log.log(&ctx);
            }
        }
        if hcm.istio_stats
            && let Some(telemetry) = crate::istio_stats::IstioStats::get()
        {
            report_istio(telemetry, &self.info, &self.conn.downstream);
        }
        self.conn.stream_ended();
    }
}

/// Reports a completed request in Istio's HTTP metrics.
fn report_istio(
    telemetry: &crate::istio_stats::IstioStats,
    info: &super::super::stream_info::StreamInfo,
    downstream: &crate::conn::Downstream,
) {
    use super::super::stream_info::HeaderKey;
    use crate::conn::Direction;
    use crate::istio_stats::{HttpRecord, Peer};
    let inbound = downstream.direction == Direction::Inbound;
    let tls = downstream.tls.as_deref();
    let downstream_principal = tls
        .and_then(|t| t.peer_certificate.as_ref())
        .and_then(|c| c.uri_sans.first())
        .map(String::as_str);
    let authority = info
        .request_headers
        .get(&HeaderKey::Authority)
        .and_then(|v| v.to_str().ok());
    let grpc = info
        .request_headers
        .get(&HeaderKey::Header(http::header::CONTENT_TYPE))
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    let flags = info.flags.short_string();
    telemetry.http_completed(&HttpRecord {
        direction: downstream.direction,
        peer: Peer {
            exchanged: if inbound {
                info.downstream_peer.as_deref()
            } else {
                info.upstream_peer.as_deref()
            },
            endpoint: if inbound {
                None
            } else {
                info.upstream.metadata.as_deref()
            },
            principal: if inbound {
                downstream_principal
            } else {
                info.upstream.principals.peer.as_deref()
            },
        },
        local_principal: if inbound {
            tls.and_then(|t| t.local_uri_sans.first())
                .map(String::as_str)
        } else {
            info.upstream.principals.local.as_deref()
        },
        cluster: info.upstream.cluster.as_deref().unwrap_or(""),
        authority,
        mutual_tls: inbound && downstream_principal.is_some(),
        grpc,
        response_code: info.response_code.unwrap_or(0),
        response_flags: &flags,
        duration_ms: info.finished.unwrap_or_else(|| info.elapsed()).as_millis() as u64,
        request_bytes: info.bytes_received,
        response_bytes: info.bytes_sent,
    });
}

/// A request after the connection manager's checks and rewrites, ready to route.
#[derive(Debug)]
struct Prepared {
    parts: http::request::Parts,
    authority: String,
    /// `:path` after normalization.
    path: String,
    /// `x-forwarded-proto`.
    scheme: HeaderValue,
    classified: Classified,
    upgrade: Option<Box<str>>,
    request_id: Option<HeaderValue>,
}

// === impl Prepared ===

impl Prepared {
    fn view<'a>(&'a self, path: &'a str, headers: &'a HeaderMap) -> HeaderView<'a> {
        HeaderView {
            method: Some(&self.parts.method),
            path: Some(path),
            authority: Some(&self.authority),
            scheme: self.scheme.to_str().ok(),
            status: None,
            headers,
        }
    }
}

/// A response ready to go downstream.
#[derive(Debug)]
struct Ready {
    status: StatusCode,
    headers: HeaderMap,
    kind: ResponseKind,
    upstream: Option<(Arc<ClusterHttp>, RequestSlot, Instant)>,
    /// The stream idle timeout while the body streams.
    idle: Option<Duration>,
}

// === impl Conn ===

impl Conn {
    /// Serves one request, or resets it.
    pub(super) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, StreamReset> {
        let protocol = Protocol::from_version(req.version());
        self.count_request(protocol);
        self.active.fetch_add(1, Ordering::AcqRel);
        self.headers_complete();
        let mut end = StreamEnd {
            conn: self.clone(),
            info: StreamInfo::new(protocol, self.downstream.peer),
            shared: Arc::new(StreamShared::default()),
            upstream: None,
            complete: false,
            sent: 0,
            head: req.method() == http::Method::HEAD,
            reset_by_proxy: false,
            reset_stream: false,
        };
        let (request_id, ready) = self.process(req, &mut end).await;
        if end.reset_stream {
            return Err(StreamReset);
        }
        Ok(self.respond(ready, request_id, end))
    }

    /// A stream whose headers never completed ends in a 408 local reply: counted and
    /// access-logged like Envoy's stream, and returned as the raw HTTP/1.1 response (with
    /// `connection: close`) for the reader to write.
    pub(super) fn header_timeout_reply(self: &Arc<Self>, which: HeaderTimeout) -> Bytes {
        let stats = &self.hcm.stats;
        let reply = match which {
            HeaderTimeout::Headers => {
                stats.downstream_rq_header_timeout.inc();
                LocalReply::request_header_timeout()
            }
            HeaderTimeout::StreamIdle => {
                stats.downstream_rq_idle_timeout.inc();
                LocalReply::stream_idle_timeout()
            }
            HeaderTimeout::Request => {
                stats.downstream_rq_timeout.inc();
                LocalReply::request_timeout()
            }
        };
        self.count_request(Protocol::Http11);
        self.active.fetch_add(1, Ordering::AcqRel);
        let mut end = StreamEnd {
            conn: self.clone(),
            info: StreamInfo::new(Protocol::Http11, self.downstream.peer),
            shared: Arc::new(StreamShared::default()),
            upstream: None,
            complete: true,
            sent: 0,
            head: false,
            reset_by_proxy: false,
            reset_stream: false,
        };
        let status = reply.status;
        let body = reply.body.clone();
        local(&mut end, reply);
        end.info.response_code = Some(status.as_u16());
        end.sent = body.len() as u64;
        let cfg = &self.hcm.config;
        let mut raw = format!(
            "HTTP/1.1 {} {}\r\ncontent-length: {}\r\ncontent-type: text/plain\r\ndate: {}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len(),
            http_date(std::time::SystemTime::now()),
        );
        if !matches!(cfg.server_header, ServerHeader::PassThrough)
            && let Ok(name) = cfg.server_name.to_str()
        {
            raw.push_str(&format!("server: {name}\r\n"));
        }
        raw.push_str("connection: close\r\n\r\n");
        let mut out = Vec::with_capacity(raw.len() + body.len());
        out.extend_from_slice(raw.as_bytes());
        out.extend_from_slice(&body);
        drop(end);
        Bytes::from(out)
    }

    fn count_request(&self, protocol: Protocol) {
        let stats = &self.hcm.stats;
        stats.downstream_rq_total.inc();
        stats.downstream_rq_active.inc();
        let (code, total, cx_total, cx_active) = match protocol {
            Protocol::Http2 => (
                2,
                &stats.downstream_rq_http2_total,
                &stats.downstream_cx_http2_total,
                &stats.downstream_cx_http2_active,
            ),
            _ => (
                1,
                &stats.downstream_rq_http1_total,
                &stats.downstream_cx_http1_total,
                &stats.downstream_cx_http1_active,
            ),
        };
        total.inc();
        if self
            .protocol
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            cx_total.inc();
            cx_active.inc();
        }
    }

    fn respond(
        &self,
        ready: Ready,
        request_id: Option<HeaderValue>,
        mut end: StreamEnd,
    ) -> Response<ResponseBody> {
        let cfg = &self.hcm.config;
        let Ready {
            status,
            mut headers,
            kind,
            upstream,
            idle,
        } = ready;
        match cfg.server_header {
            ServerHeader::Overwrite => {
                headers.insert(SERVER, cfg.server_name.clone());
            }
            ServerHeader::AppendIfAbsent if !headers.contains_key(SERVER) => {
                headers.insert(SERVER, cfg.server_name.clone());
            }
            _ => {}
        }
        if let Some(via) = &cfg.headers.via {
            crate::http::headers::append_via(&mut headers, via);
        }
        if end.info.protocol != Protocol::Http2 && self.is_draining() {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        if cfg.always_set_request_id_in_response
            && let Some(id) = request_id
        {
            headers.insert(X_REQUEST_ID, id);
        }
        if let Some(mx) = &self.hcm.peer_metadata {
            mx.on_response(&mut headers, end.info.peer_headers);
        }
        end.info.response_code = Some(status.as_u16());
        if !self.hcm.response_keys.is_empty() {
            let view = HeaderView {
                status: Some(status),
                ..HeaderView::headers(&headers)
            };
            end.info.response_headers = Captured::capture(&self.hcm.response_keys, &view);
        }
        end.upstream = upstream;
        let mut response = Response::new(ResponseBody::new(kind, idle, Some(end)));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response
    }

    /// Runs the stream up to its response. Returns the request ID (for
    /// `always_set_request_id_in_response`) and the response.
    async fn process(
        &self,
        req: Request<Incoming>,
        end: &mut StreamEnd,
    ) -> (Option<HeaderValue>, Ready) {
        let hcm: &Hcm = &self.hcm;
        let (parts, body) = req.into_parts();
        let p = match self.prepare(parts, end) {
            Ok(p) => p,
            Err(done) => return done,
        };
        let rid = p.request_id.clone();
        let Some(table) = hcm.config.routes.current() else {
            hcm.stats.no_route.inc();
            return (rid, local(end, LocalReply::no_route()));
        };
        let (matched, alpn) = match self.route(&p, &table, end) {
            Ok(m) => m,
            Err(ready) => return (rid, ready),
        };
        end.info.route_name = matched.route.name.clone();
        let ready = match &matched.route.action {
            Action::Direct(d) => {
                hcm.stats.rq_direct_response.inc();
                let reply = LocalReply {
                    status: d.status,
                    body: d.body.clone().unwrap_or_default(),
                    details: "direct_response".into(),
                    flag: None,
                };
                let mut ready = local(end, reply);
                self.route_response_headers(end, &mut ready.headers, matched, d.status);
                ready
            }
            Action::Redirect(r) => self.redirect(&p, matched, r, end),
            Action::Forward(a) => self.forward(p, body, matched, a, alpn, end).await,
        };
        (rid, ready)
    }

    /// The connection manager's checks and rewrites before routing: authority, header size,
    /// Envoy's request header mutation, host and path normalization.
    #[allow(clippy::result_large_err)] // The error is the stream's final reply, made once.
    fn prepare(
        &self,
        mut parts: http::request::Parts,
        end: &mut StreamEnd,
    ) -> Result<Prepared, (Option<HeaderValue>, Ready)> {
        let hcm: &Hcm = &self.hcm;
        let cfg = &hcm.config;
        let upgrade = upgrade_type(&parts.headers, end.info.protocol);
        let Some(mut authority) = authority(&parts) else {
            let reply = LocalReply::new(StatusCode::BAD_REQUEST, "", "missing_host_header", None);
            return Err((None, local(end, reply)));
        };
        parts.headers.remove(HOST);
        let too_many = parts.headers.len() + 1 > cfg.max_headers_count;
        if too_many
            || header_bytes(&parts.headers) + authority.len() > cfg.max_request_headers_bytes
        {
            if end.info.protocol == Protocol::Http2 {
                // Envoy's HTTP/2 codec resets the stream (INTERNAL_ERROR), no response.
                let details = if too_many {
                    "http2.too_many_headers"
                } else {
                    "http2.header_list_size_too_large"
                };
                let reset = LocalReply::new(
                    StatusCode::OK,
                    "",
                    details,
                    Some(ResponseFlag::DownstreamRemoteReset),
                );
                end.reset_stream = true;
                end.complete = true;
                hcm.stats.downstream_rq_rx_reset.inc();
                return Err((None, local(end, reset)));
            }
            // HTTP/1: 431, and the connection closes after it.
            self.draining.store(true, Ordering::Release);
            hcm.stats.downstream_cx_protocol_error.inc();
            let reply = if too_many {
                LocalReply::too_many_headers()
            } else {
                LocalReply::headers_too_large()
            };
            return Err((None, local(end, reply)));
        }
        let classified =
            cfg.headers
                .mutate(&mut parts.headers, &self.downstream, upgrade.is_some());
        end.info.remote = classified.remote;
        if let Some(mx) = &hcm.peer_metadata {
            (end.info.downstream_peer, end.info.peer_headers) = mx.on_request(&mut parts.headers);
        }
        if cfg.append_x_forwarded_port && !parts.headers.contains_key(X_FORWARDED_PORT) {
            let port = HeaderValue::from(self.downstream.local.port());
            parts.headers.insert(X_FORWARDED_PORT, port);
        }
        let request_id = parts.headers.get(X_REQUEST_ID).cloned();
        normalize_host(cfg, &mut authority, self.downstream.local.port());
        let raw_path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let path = match cfg.path.apply(raw_path) {
            Normalized::Continue(None) => raw_path.to_string(),
            Normalized::Continue(Some(p)) => p,
            Normalized::Reject => {
                hcm.stats.downstream_rq_failed_path_normalization.inc();
                return Err((request_id, local(end, LocalReply::bad_path())));
            }
            Normalized::Redirect(p) => {
                hcm.stats
                    .downstream_rq_redirected_with_normalized_path
                    .inc();
                let mut reply = LocalReply::bad_path();
                reply.status = StatusCode::TEMPORARY_REDIRECT;
                let mut ready = local(end, reply);
                if let Ok(v) = HeaderValue::from_str(&p) {
                    ready.headers.insert(LOCATION, v);
                }
                return Err((request_id, ready));
            }
        };
        let scheme = parts
            .headers
            .get(X_FORWARDED_PROTO)
            .cloned()
            .unwrap_or(HeaderValue::from_static("http"));
        let p = Prepared {
            parts,
            authority,
            path,
            scheme,
            classified,
            upgrade,
            request_id,
        };
        if !hcm.request_keys.is_empty() {
            end.info.request_headers =
                Captured::capture(&hcm.request_keys, &p.view(&p.path, &p.parts.headers));
        }
        Ok(p)
    }

    /// Selects the route and runs the decoder filters before the router. A filter's local
    /// reply (RBAC's 403) or the lack of a route ends the stream here.
    #[allow(clippy::result_large_err)] // The error is the stream's final reply, made once.
    fn route<'t>(
        &'t self,
        p: &Prepared,
        table: &'t RouteTable,
        end: &mut StreamEnd,
    ) -> Result<(Matched<'t>, Option<&'t AlpnOverrides>), Ready> {
        let hcm: &Hcm = &self.hcm;
        let view = RequestView {
            method: &p.parts.method,
            scheme: p.scheme.to_str().unwrap_or("http"),
            authority: &p.authority,
            path: &p.path,
            headers: &p.parts.headers,
            tls: self.downstream.tls.as_deref(),
            internal: p.classified.internal,
        };
        let selected = table.select(&view, lb::random());
        let mut alpn = None;
        for f in &hcm.config.filters {
            match f {
                HttpFilter::Rbac(authz) => {
                    let decision = authz.authorize(&AuthzRequest {
                        request: &view,
                        parts: &p.parts,
                        downstream: &self.downstream,
                        remote: p.classified.remote,
                    });
                    if let AuthzDecision::Deny { policy } = decision {
                        return Err(local(end, LocalReply::rbac_denied(policy.as_deref())));
                    }
                }
                HttpFilter::Alpn(a) => alpn = Some(a),
                HttpFilter::Skipped(_) | HttpFilter::IstioStats | HttpFilter::PeerMetadata(_) => {}
                HttpFilter::Router { .. } => break,
            }
        }
        match selected {
            Selected::NoVirtualHost | Selected::NoRoute(_) => {
                hcm.stats.no_route.inc();
                Err(local(end, LocalReply::no_route()))
            }
            Selected::TlsRedirect(_) => {
                hcm.stats.rq_redirect.inc();
                let location = format!("https://{}{}", p.authority, p.path);
                Err(redirect(end, StatusCode::MOVED_PERMANENTLY, &location))
            }
            Selected::Route(vh, route) => Ok((Matched { table, vh, route }, alpn)),
        }
    }

    /// A `redirect` route's reply. Prefix and regex redirects rewrite the request path first,
    /// as Envoy does, so the access log shows both paths.
    fn redirect(
        &self,
        p: &Prepared,
        matched: Matched<'_>,
        r: &Redirect,
        end: &mut StreamEnd,
    ) -> Ready {
        let hcm: &Hcm = &self.hcm;
        hcm.stats.rq_redirect.inc();
        let path_match = &matched.route.matcher.path;
        let scheme = p.scheme.to_str().unwrap_or("http");
        let location = r.location(scheme, &p.authority, &p.path, path_match);
        if let Some(rewritten) = r.rewritten_path(&p.path, path_match)
            && !hcm.request_keys.is_empty()
        {
            let mut headers = p.parts.headers.clone();
            if let Ok(v) = HeaderValue::from_str(&p.path) {
                headers.insert(crate::http::headers::X_ENVOY_ORIGINAL_PATH, v);
            }
            end.info.request_headers =
                Captured::capture(&hcm.request_keys, &p.view(&rewritten, &headers));
        }
        let mut ready = redirect(end, r.status, &location);
        self.route_response_headers(end, &mut ready.headers, matched, r.status);
        ready
    }

    /// A `route` action: upgrades checked, then the router.
    async fn forward(
        &self,
        mut p: Prepared,
        body: Incoming,
        matched: Matched<'_>,
        action: &RouteAction,
        alpn: Option<&AlpnOverrides>,
        end: &mut StreamEnd,
    ) -> Ready {
        let hcm: &Hcm = &self.hcm;
        let cfg = &hcm.config;
        let on_upgrade = match &p.upgrade {
            Some(t) if !upgrade_allowed(cfg, action, t) => {
                hcm.stats.downstream_rq_ws_on_non_ws_route.inc();
                return local(end, LocalReply::upgrade_failed());
            }
            Some(_) => p.parts.extensions.remove::<OnUpgrade>(),
            None => None,
        };
        let idle = match action.idle_timeout {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => cfg.stream_idle_timeout,
        };
        let req = RouterRequest {
            method: p.parts.method,
            path: p.path,
            authority: p.authority,
            scheme: p.scheme,
            headers: p.parts.headers,
            protocol: end.info.protocol,
            internal: p.classified.internal,
        };
        let stream = router::Stream {
            matched,
            action,
            downstream: &self.downstream,
            alpn,
            info: &mut end.info,
            shared: &end.shared,
            request_keys: &hcm.request_keys,
            peer_metadata: hcm.peer_metadata.as_deref(),
            stream_idle_timeout: idle,
            request_timeout: cfg.request_timeout,
        };
        match hcm.router.forward(stream, req, body, on_upgrade).await {
            Outcome::Local(reply) => {
                if reply.details == "cluster_not_found" {
                    hcm.stats.no_cluster.inc();
                }
                // The router's own replies get the route's response headers.
                let status = reply.status;
                let mut ready = local(end, reply);
                self.route_response_headers(end, &mut ready.headers, matched, status);
                ready
            }
            Outcome::Upstream(f) => {
                end.info.details = "via_upstream".into();
                let (mut parts, inner) = f.response.into_parts();
                if let Some(mx) = &hcm.peer_metadata {
                    end.info.upstream_peer = mx.on_upstream_response(&mut parts.headers);
                }
                Ready {
                    status: parts.status,
                    headers: parts.headers,
                    kind: ResponseKind::Upstream {
                        inner,
                        pooled: f.pooled,
                        shared: end.shared.clone(),
                        deadline: f.deadline,
                    },
                    upstream: Some((f.cluster, f.slot, f.started)),
                    idle,
                }
            }
        }
    }

    fn route_response_headers(
        &self,
        end: &StreamEnd,
        headers: &mut HeaderMap,
        matched: Matched<'_>,
        status: StatusCode,
    ) {
        for level in matched.response_levels() {
            if level.is_empty() {
                continue;
            }
            let snapshot = headers.clone();
            let ctx = Context {
                info: &end.info,
                downstream: &self.downstream,
                request: Headers::Captured(&end.info.request_headers),
                response: Headers::Live(HeaderView {
                    status: Some(status),
                    ..HeaderView::headers(&snapshot)
                }),
            };
            level.apply(headers, Some(&ctx));
        }
    }
}

/// A local reply: status, `text/plain` body, details and flag recorded.
fn local(end: &mut StreamEnd, reply: LocalReply) -> Ready {
    end.info.details = reply.details;
    if let Some(f) = reply.flag {
        end.info.flags.set(f);
    }
    let mut headers = HeaderMap::new();
    let kind = if reply.body.is_empty() {
        ResponseKind::Full(None)
    } else {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        ResponseKind::Full(Some(reply.body))
    };
    Ready {
        status: reply.status,
        headers,
        kind,
        upstream: None,
        idle: None,
    }
}

fn redirect(end: &mut StreamEnd, status: StatusCode, location: &str) -> Ready {
    let mut ready = local(end, LocalReply::new(status, "", "direct_response", None));
    if let Ok(v) = HeaderValue::from_str(location) {
        ready.headers.insert(LOCATION, v);
    }
    ready
}

/// `:authority`: the URI's (HTTP/2, absolute-form HTTP/1) or the `host` header.
fn authority(parts: &http::request::Parts) -> Option<String> {
    if let Some(a) = parts.uri.authority() {
        return Some(a.as_str().to_string());
    }
    let host = parts.headers.get(HOST)?.to_str().ok()?;
    Some(host.to_string())
}

/// An HTTP/1.1 upgrade request's lower-cased `upgrade` type.
fn upgrade_type(headers: &HeaderMap, protocol: Protocol) -> Option<Box<str>> {
    if protocol == Protocol::Http2 {
        return None;
    }
    let wants = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !wants {
        return None;
    }
    let t = headers.get(http::header::UPGRADE)?.to_str().ok()?;
    Some(t.to_ascii_lowercase().into())
}

/// Whether an upgrade type is enabled: the HCM must list it; the route may override.
fn upgrade_allowed(cfg: &HcmConfig, action: &RouteAction, t: &str) -> bool {
    let Some((_, hcm_enabled)) = cfg.upgrades.iter().find(|(x, _)| &**x == t) else {
        return false;
    };
    action
        .upgrades
        .iter()
        .find(|(x, _)| &**x == t)
        .map_or(*hcm_enabled, |(_, e)| *e)
}

fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum()
}

fn normalize_host(cfg: &HcmConfig, authority: &mut String, listener_port: u16) {
    if cfg.strip_trailing_host_dot {
        let (host, port) = match port_start(authority) {
            Some(i) => authority.split_at(i),
            None => (authority.as_str(), ""),
        };
        if let Some(h) = host.strip_suffix('.') {
            *authority = format!("{h}{port}");
        }
    }
    if let Some(i) = port_start(authority) {
        let port = &authority[i + 1..];
        if cfg.strip_any_host_port
            || (cfg.strip_matching_host_port && port == listener_port.to_string())
        {
            authority.truncate(i);
        }
    }
}

/// An IMF-fixdate (`Mon, 23 Nov 2026 18:01:45 GMT`), as HTTP's `date` header has it.
fn http_date(t: std::time::SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let days = secs.div_euclid(86_400);
    let ((year, month, day), (h, m, sec)) = crate::proto::utc_parts(secs);
    format!(
        "{}, {day:02} {} {year} {h:02}:{m:02}:{sec:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1).clamp(0, 11) as usize],
    )
}
