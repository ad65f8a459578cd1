//! One stream through the connection manager: header checks and rewriting, path
//! normalization, routing, the filter chain, the router, and the response's final headers.
//! Every stream ends in [`StreamEnd`], which settles stats and writes access logs (also
//! when the client goes away early).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::header::{CONNECTION, CONTENT_TYPE, HOST, LOCATION, SERVER};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tokio::time::Instant;

use super::config::{HcmConfig, ServerHeader};
use super::{Conn, Hcm};
use crate::http::body::{ResponseBody, ResponseKind, StreamShared};
use crate::http::filter::{AuthzDecision, AuthzRequest, HttpFilter};
use crate::http::format::{Context, Headers};
use crate::http::headers::{X_FORWARDED_PROTO, X_REQUEST_ID};
use crate::http::local_reply::LocalReply;
use crate::http::path::Normalized;
use crate::http::pool::{ClusterHttp, RequestSlot};
use crate::http::route::action::port_start;
use crate::http::route::{Action, Matched, RequestView, RouteAction, Selected};
use crate::http::router::{self, Outcome, RouterRequest};
use crate::http::stream_info::{Captured, HeaderView, Protocol, ResponseFlag, StreamInfo};
use crate::upstream::lb;

const X_FORWARDED_PORT: http::HeaderName = http::HeaderName::from_static("x-forwarded-port");

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

    /// The upstream reset the stream after the response started.
    pub fn upstream_reset(&mut self) {
        self.info
            .flags
            .set(ResponseFlag::UpstreamConnectionTermination);
        self.conn
            .hcm
            .stats
            .rq_reset_after_downstream_response_started
            .inc();
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
        if !self.complete && !self.head {
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
        self.conn.stream_ended();
    }
}

/// A response ready to go downstream.
#[derive(Debug)]
struct Ready {
    status: StatusCode,
    headers: HeaderMap,
    kind: ResponseKind,
    upstream: Option<(Arc<ClusterHttp>, RequestSlot, Instant)>,
}

// === impl Conn ===

impl Conn {
    /// Serves one request.
    pub(super) async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<ResponseBody> {
        let protocol = Protocol::from_version(req.version());
        self.count_request(protocol);
        self.active.fetch_add(1, Ordering::AcqRel);
        let mut end = StreamEnd {
            conn: self.clone(),
            info: StreamInfo::new(protocol, self.downstream.peer),
            shared: Arc::new(StreamShared::default()),
            upstream: None,
            complete: false,
            sent: 0,
            head: req.method() == http::Method::HEAD,
        };
        let (request_id, ready) = self.process(req, &mut end).await;
        self.respond(ready, request_id, end)
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
        end.info.response_code = Some(status.as_u16());
        if !self.hcm.response_keys.is_empty() {
            let view = HeaderView {
                status: Some(status),
                ..HeaderView::headers(&headers)
            };
            end.info.response_headers = Captured::capture(&self.hcm.response_keys, &view);
        }
        end.upstream = upstream;
        let idle = match &kind {
            ResponseKind::Upstream { .. } => cfg.stream_idle_timeout,
            ResponseKind::Full(_) => None,
        };
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
        let cfg = &hcm.config;
        let (mut parts, body) = req.into_parts();
        let upgrade = upgrade_type(&parts.headers, end.info.protocol);
        let Some(mut authority) = authority(&parts) else {
            return (
                None,
                local(
                    end,
                    LocalReply::new(StatusCode::BAD_REQUEST, "", "missing_host_header", None),
                ),
            );
        };
        parts.headers.remove(HOST);
        if header_bytes(&parts.headers) + authority.len() > cfg.max_request_headers_bytes {
            return (None, local(end, LocalReply::headers_too_large()));
        }
        let classified =
            cfg.headers
                .mutate(&mut parts.headers, &self.downstream, upgrade.is_some());
        end.info.remote = classified.remote;
        if cfg.append_x_forwarded_port && !parts.headers.contains_key(X_FORWARDED_PORT) {
            parts.headers.insert(
                X_FORWARDED_PORT,
                HeaderValue::from(self.downstream.local.port()),
            );
        }
        let request_id = parts.headers.get(X_REQUEST_ID).cloned();
        normalize_host(cfg, &mut authority, self.downstream.local.port());
        let raw_path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let path = match cfg.path.apply(raw_path) {
            Normalized::Continue(None) => raw_path.to_string(),
            Normalized::Continue(Some(p)) => p,
            Normalized::Reject => {
                hcm.stats.downstream_rq_failed_path_normalization.inc();
                return (request_id, local(end, LocalReply::bad_path()));
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
                return (request_id, ready);
            }
        };
        let scheme = parts
            .headers
            .get(X_FORWARDED_PROTO)
            .cloned()
            .unwrap_or(HeaderValue::from_static("http"));
        if !hcm.request_keys.is_empty() {
            let view = HeaderView {
                method: Some(&parts.method),
                path: Some(&path),
                authority: Some(&authority),
                scheme: scheme.to_str().ok(),
                status: None,
                headers: &parts.headers,
            };
            end.info.request_headers = Captured::capture(&hcm.request_keys, &view);
        }
        let Some(table) = cfg.routes.current() else {
            hcm.stats.no_route.inc();
            return (request_id, local(end, LocalReply::no_route()));
        };
        let view = RequestView {
            method: &parts.method,
            scheme: scheme.to_str().unwrap_or("http"),
            authority: &authority,
            path: &path,
            headers: &parts.headers,
            tls: self.downstream.tls.as_deref(),
            internal: classified.internal,
        };
        let selected = table.select(&view, lb::random());
        let mut alpn = None;
        for f in &cfg.filters {
            match f {
                HttpFilter::Rbac(authz) => {
                    let decision = authz.authorize(&AuthzRequest {
                        request: &view,
                        downstream: &self.downstream,
                        remote: classified.remote,
                    });
                    if let AuthzDecision::Deny { policy } = decision {
                        return (
                            request_id,
                            local(end, LocalReply::rbac_denied(policy.as_deref())),
                        );
                    }
                }
                HttpFilter::Alpn(a) => alpn = Some(a),
                HttpFilter::Skipped(_) => {}
                HttpFilter::Router { .. } => break,
            }
        }
        let (vh, route) = match selected {
            Selected::NoVirtualHost | Selected::NoRoute(_) => {
                hcm.stats.no_route.inc();
                return (request_id, local(end, LocalReply::no_route()));
            }
            Selected::TlsRedirect(_) => {
                hcm.stats.rq_redirect.inc();
                let location = format!("https://{authority}{path}");
                return (
                    request_id,
                    redirect(end, StatusCode::MOVED_PERMANENTLY, &location),
                );
            }
            Selected::Route(vh, route) => (vh, route),
        };
        end.info.route_name = route.name.clone();
        let action = match &route.action {
            Action::Direct(d) => {
                hcm.stats.rq_direct_response.inc();
                let mut ready = local(
                    end,
                    LocalReply {
                        status: d.status,
                        body: d.body.clone().unwrap_or_default(),
                        details: "direct_response".into(),
                        flag: None,
                    },
                );
                self.route_response_headers(end, &mut ready.headers, &table, vh, route, d.status);
                return (request_id, ready);
            }
            Action::Redirect(r) => {
                hcm.stats.rq_redirect.inc();
                let location = r.location(view.scheme, &authority, &path, &route.matcher.path);
                if let Some(rewritten) = r.rewritten_path(&path, &route.matcher.path)
                    && !hcm.request_keys.is_empty()
                {
                    let mut headers = parts.headers.clone();
                    if let Ok(v) = HeaderValue::from_str(&path) {
                        headers.insert(crate::http::headers::X_ENVOY_ORIGINAL_PATH, v);
                    }
                    let view = HeaderView {
                        method: Some(&parts.method),
                        path: Some(&rewritten),
                        authority: Some(&authority),
                        scheme: scheme.to_str().ok(),
                        status: None,
                        headers: &headers,
                    };
                    end.info.request_headers = Captured::capture(&hcm.request_keys, &view);
                }
                let mut ready = redirect(end, r.status, &location);
                self.route_response_headers(end, &mut ready.headers, &table, vh, route, r.status);
                return (request_id, ready);
            }
            Action::Forward(a) => a,
        };
        let on_upgrade = match &upgrade {
            Some(t) if !upgrade_allowed(cfg, action, t) => {
                hcm.stats.downstream_rq_ws_on_non_ws_route.inc();
                return (request_id, local(end, LocalReply::upgrade_failed()));
            }
            Some(_) => parts.extensions.remove::<OnUpgrade>(),
            None => None,
        };
        let req = RouterRequest {
            method: parts.method,
            path,
            authority,
            scheme,
            headers: parts.headers,
            protocol: end.info.protocol,
            internal: classified.internal,
        };
        let stream = router::Stream {
            matched: Matched {
                table: &table,
                vh,
                route,
            },
            action,
            downstream: &self.downstream,
            alpn,
            info: &mut end.info,
            shared: &end.shared,
            request_keys: &hcm.request_keys,
            stream_idle_timeout: cfg.stream_idle_timeout,
        };
        match hcm.router.forward(stream, req, body, on_upgrade).await {
            Outcome::Local(reply) => {
                if reply.details == "cluster_not_found" {
                    hcm.stats.no_cluster.inc();
                }
                // The router's own replies get the route's response headers.
                let status = reply.status;
                let mut ready = local(end, reply);
                self.route_response_headers(end, &mut ready.headers, &table, vh, route, status);
                (request_id, ready)
            }
            Outcome::Upstream(f) => {
                end.info.details = "via_upstream".into();
                let (parts, inner) = f.response.into_parts();
                let ready = Ready {
                    status: parts.status,
                    headers: parts.headers,
                    kind: ResponseKind::Upstream {
                        inner,
                        pooled: f.pooled,
                        shared: end.shared.clone(),
                    },
                    upstream: Some((f.cluster, f.slot, f.started)),
                };
                (request_id, ready)
            }
        }
    }

    fn route_response_headers(
        &self,
        end: &StreamEnd,
        headers: &mut HeaderMap,
        table: &crate::http::route::RouteTable,
        vh: &crate::http::route::VirtualHost,
        route: &crate::http::route::Route,
        status: StatusCode,
    ) {
        for level in table.response_levels(vh, route) {
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
