//! Envoy's admin API on the bootstrap's admin address: the endpoints pilot-agent, istioctl
//! and operators use, with Envoy's paths, methods, formats and status codes.
//!
//! Runs on the control runtime. Query strings are taken raw: pilot-agent sends regexes such
//! as `filter=^(cluster_manager\.cds|listener_manager\.lds)\.(update_success|update_rejected)$`
//! unencoded.

mod certs;
mod dump;
mod views;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::server::{Shared, State};
use crate::stats::Query;

/// Binds the admin listener and serves it in the background.
pub async fn start(shared: Arc<Shared>) -> Result<Option<SocketAddr>, String> {
    let Some(addr) = admin_address(&shared) else {
        tracing::info!("no admin address in the bootstrap; admin endpoints are off");
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot bind admin address {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("admin listener: {e}"))?;
    if let Some(path) = &shared.options.admin_address_path {
        std::fs::write(path, local.to_string())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    tracing::info!("admin address: {local}");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(handle(req, &shared).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(Some(local))
}

fn admin_address(shared: &Shared) -> Option<SocketAddr> {
    let addr = shared.bootstrap.admin.as_ref()?.address.as_ref()?;
    let Some(address::Address::SocketAddress(sa)) = &addr.address else {
        return None;
    };
    let port = match sa.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) => u16::try_from(p).ok()?,
        _ => 0,
    };
    Some(SocketAddr::new(sa.address.parse().ok()?, port))
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache, max-age=0")
        .header("x-content-type-options", "nosniff")
        .body(Full::new(body.into()))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    reply(status, "text/plain; charset=UTF-8", body)
}

fn json(value: &serde_json::Value) -> Reply {
    let body = serde_json::to_string_pretty(value).unwrap_or_default();
    reply(StatusCode::OK, "application/json", body + "\n")
}

/// Envoy answers a GET to a state-changing endpoint with 405.
fn post_only(method: &Method) -> Option<Reply> {
    (method != Method::POST).then(|| {
        text(
            StatusCode::METHOD_NOT_ALLOWED,
            "This endpoint requires POST\n",
        )
    })
}

async fn handle(req: Request<Incoming>, shared: &Arc<Shared>) -> Reply {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let _ = req.into_body().collect().await;
    let has = |key: &str| {
        query
            .split('&')
            .any(|p| p == key || p.starts_with(&format!("{key}=")))
    };
    match path.as_str() {
        "/" => text(StatusCode::OK, views::help()),
        "/ready" => {
            let state = shared.state.get();
            let status = if state == State::Live {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(status, format!("{}\n", state.name()))
        }
        "/server_info" => json(&views::server_info(shared)),
        "/stats" | "/stats/prometheus" => {
            let prometheus = path == "/stats/prometheus";
            match Query::parse(&query, prometheus) {
                Ok(q) => {
                    shared.state.uptime_secs();
                    let body = shared.store.render(&q);
                    let content_type = match q.format {
                        crate::stats::Format::Json => "application/json",
                        // Envoy 1.40 labels the Prometheus text format plain text too.
                        crate::stats::Format::Prometheus | crate::stats::Format::Text => {
                            "text/plain; charset=UTF-8"
                        }
                    };
                    reply(StatusCode::OK, content_type, body)
                }
                Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
            }
        }
        "/config_dump" => match dump::config_dump(shared, &query) {
            Ok(v) => json(&v),
            Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        },
        "/clusters" => {
            if query_value(&query, "format").as_deref() == Some("json") {
                json(&views::clusters_json(shared))
            } else {
                text(StatusCode::OK, views::clusters_text(shared))
            }
        }
        "/listeners" => {
            if query_value(&query, "format").as_deref() == Some("json") {
                json(&views::listeners_json(shared))
            } else {
                text(StatusCode::OK, views::listeners_text(shared))
            }
        }
        "/certs" => json(&certs::certs(shared)),
        "/memory" => json(&views::memory()),
        "/runtime" => json(&serde_json::json!({ "entries": {}, "layers": [] })),
        "/logging" => views::logging(shared, &method, &query),
        "/quitquitquit" => post_only(&method).unwrap_or_else(|| {
            shared.state.shutdown.cancel();
            text(StatusCode::OK, "OK\n")
        }),
        "/healthcheck/fail" => post_only(&method).unwrap_or_else(|| {
            shared.state.set_health_failed(true);
            text(StatusCode::OK, "OK\n")
        }),
        "/healthcheck/ok" => post_only(&method).unwrap_or_else(|| {
            shared.state.set_health_failed(false);
            text(StatusCode::OK, "OK\n")
        }),
        "/drain_listeners" => post_only(&method).unwrap_or_else(|| {
            shared
                .listeners
                .drain_listeners(has("inboundonly"), has("graceful"));
            text(StatusCode::OK, "OK\n")
        }),
        _ => text(
            StatusCode::NOT_FOUND,
            format!("invalid path. admin commands are:\n{}", views::help()),
        ),
    }
}

/// The value of `key=` in a raw query string.
fn query_value(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|p| p.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
        .map(String::from)
}
