//! Test harness for the HTTP connection manager: echo upstreams that report what they
//! received, a proxy serving our HCM over loopback TCP, and hyper clients.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::Cluster as ClusterProto;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager as HcmProto;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy::config::cluster::ClusterConfig;
use proxy::conn::{Downstream, PeerTls};
use proxy::http::{HttpConnectionManager, HttpContext};
use proxy::io::{DownstreamIo, Prefixed};
use proxy::proto::{Format, UnknownFields, decode};
use proxy::stats::Store;
use proxy::upstream::ClusterManager;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub fn yaml<T: prost::Message + prost::Name + Default>(text: &str) -> T {
    decode::<T>(text, Format::Yaml, UnknownFields::Reject)
        .unwrap_or_else(|e| panic!("{e}"))
        .message
}

/// What the echo upstream saw.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Seen {
    pub server: String,
    pub method: String,
    pub path: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An upstream that answers every request with what it saw (JSON), and:
/// `.../status/<code>` answers with that status; `/slow/<ms>` waits first (`/slow-once/<ms>`
/// only on the server's first request); `/flaky/<n>` fails
/// with 503 until it has seen n requests; `/echo` streams the request body back;
/// `/ws` upgrades and echoes bytes.
pub struct Echo {
    pub addr: SocketAddr,
    pub name: String,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Echo {
    pub async fn start(name: &str, h2: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (c, r, s, n) = (
            connections.clone(),
            requests.clone(),
            stop.clone(),
            name.to_string(),
        );
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => return },
                    _ = s.cancelled() => return,
                };
                c.fetch_add(1, Ordering::SeqCst);
                let (r, n) = (r.clone(), n.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (r, n) = (r.clone(), n.clone());
                        async move { Ok::<_, Infallible>(echo(req, &n, &r).await) }
                    });
                    let io = TokioIo::new(stream);
                    if h2 {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, svc)
                            .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .with_upgrades()
                            .await;
                    }
                });
            }
        });
        Self {
            addr,
            name: name.to_string(),
            connections,
            requests,
            stop,
        }
    }
}

type EchoBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

fn full(b: Bytes) -> EchoBody {
    Full::new(b).map_err(|n: Infallible| match n {}).boxed()
}

async fn echo(
    mut req: Request<Incoming>,
    name: &str,
    requests: &AtomicUsize,
) -> Response<EchoBody> {
    let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
    let path = req.uri().path().to_string();
    if path == "/ws" {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                while let Ok(k) = io.read(&mut buf).await {
                    if k == 0 || io.write_all(&buf[..k]).await.is_err() {
                        break;
                    }
                }
            }
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(full(Bytes::new()))
            .unwrap();
    }
    if path == "/echo" {
        return Response::builder()
            .header("x-upstream", name)
            .body(req.into_body().boxed())
            .unwrap();
    }
    let mut status = StatusCode::OK;
    if let Some(ms) = after(&path, "/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
    }
    if let Some(ms) = path.strip_prefix("/slow-once/")
        && n == 1
    {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
    }
    if let Some(code) = after(&path, "/status/") {
        status = StatusCode::from_u16(code.parse().unwrap()).unwrap();
    }
    if let Some(k) = path.strip_prefix("/flaky/")
        && n <= k.parse::<usize>().unwrap()
    {
        status = StatusCode::SERVICE_UNAVAILABLE;
    }
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let version = format!("{:?}", req.version());
    let method = req.method().to_string();
    let full_path = req
        .uri()
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let seen = serde_json::json!({
        "server": name, "method": method, "path": full_path, "version": version,
        "headers": headers, "body_len": body.len(),
    });
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-upstream", name)
        .body(full(Bytes::from(seen.to_string())))
        .unwrap()
}

/// The path segment after a marker anywhere in the path (`/retry/status/503` -> `503`).
fn after<'a>(path: &'a str, marker: &str) -> Option<&'a str> {
    let rest = &path[path.find(marker)? + marker.len()..];
    Some(rest.split('/').next().unwrap_or(rest))
}

/// A cluster manager with STATIC clusters.
pub fn clusters(store: &Store, clusters_yaml: &[String]) -> Arc<ClusterManager> {
    let cm = ClusterManager::new(store.clone());
    let configs = clusters_yaml
        .iter()
        .map(|y| ClusterConfig::from_proto(&yaml::<ClusterProto>(y)).unwrap())
        .collect();
    cm.add_static(configs).unwrap();
    cm
}

/// A STATIC cluster to addresses; `extra` is more YAML for the cluster.
pub fn static_cluster(name: &str, addrs: &[SocketAddr], extra: &str) -> String {
    let eps: Vec<String> = addrs
        .iter()
        .map(|a| {
            format!(
                "{{ endpoint: {{ address: {{ socket_address: {{ address: '{}', port_value: {} }} }} }} }}",
                a.ip(),
                a.port()
            )
        })
        .collect();
    format!(
        "name: {name}\ntype: STATIC\nconnect_timeout: 1s\nload_assignment: {{ cluster_name: {name}, endpoints: [{{ lb_endpoints: [{}] }}] }}\n{extra}",
        eps.join(", ")
    )
}

pub const H2_OPTIONS: &str = "typed_extension_protocol_options: { envoy.extensions.upstreams.http.v3.HttpProtocolOptions: { '@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: { http2_protocol_options: {} } } }";

/// Our proxy: an HCM served on a loopback listener.
pub struct Proxy {
    pub addr: SocketAddr,
    pub hcm: HttpConnectionManager,
    pub ctx: HttpContext,
    pub drain: CancellationToken,
    stop: CancellationToken,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Proxy {
    pub async fn start(ctx: HttpContext, hcm_yaml: &str) -> Self {
        let hcm = HttpConnectionManager::new(&yaml::<HcmProto>(hcm_yaml), &ctx).unwrap();
        Self::serve(ctx, hcm).await
    }

    pub async fn serve(ctx: HttpContext, hcm: HttpConnectionManager) -> Self {
        Self::serve_as(ctx, hcm, None).await
    }

    /// Serves connections as if TLS had been terminated with this result (peer certificate
    /// included), for what RBAC and XFCC read.
    pub async fn serve_as(
        ctx: HttpContext,
        hcm: HttpConnectionManager,
        tls: Option<Arc<PeerTls>>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let drain = CancellationToken::new();
        let stop = CancellationToken::new();
        let (h, d, s, tls) = (hcm.clone(), drain.clone(), stop.clone(), tls);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => return },
                    _ = s.cancelled() => return,
                };
                let ds = Downstream {
                    local: stream.local_addr().unwrap(),
                    peer,
                    listener: Arc::from("test"),
                    direction: Default::default(),
                    filter_chain: Arc::from("chain"),
                    requested_server_name: None,
                    tls: tls.clone(),
                    original_src_mark: None,
                };
                let (h, d) = (h.clone(), d.clone());
                tokio::spawn(async move {
                    h.serve(
                        DownstreamIo::Raw(Prefixed::new(Bytes::new(), stream)),
                        ds,
                        d,
                    )
                    .await;
                });
            }
        });
        Self {
            addr,
            hcm,
            ctx,
            drain,
            stop,
        }
    }

    pub fn stat(&self, name: &str) -> u64 {
        self.ctx.store.value(name).unwrap_or(0)
    }
}

/// An HTTP/1.1 or h2c (prior knowledge) client connection.
pub enum Client {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Client {
    pub async fn h1(addr: SocketAddr) -> Self {
        let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
        let (tx, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        Self::H1(tx)
    }

    pub async fn h2(addr: SocketAddr) -> Self {
        let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
        let (tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        Self::H2(tx)
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> hyper::Result<Response<Incoming>> {
        match self {
            Self::H1(tx) => {
                tx.ready().await?;
                tx.send_request(req).await
            }
            Self::H2(tx) => tx.send_request(req).await,
        }
    }

    /// GET `path` with `host`; returns status, headers and body.
    pub async fn get(&mut self, host: &str, path: &str) -> (StatusCode, http::HeaderMap, Bytes) {
        self.request(get(host, path)).await
    }

    pub async fn request(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> (StatusCode, http::HeaderMap, Bytes) {
        let resp = self.send(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        (
            parts.status,
            parts.headers,
            body.collect().await.unwrap().to_bytes(),
        )
    }
}

/// A GET in the form the client's protocol wants (h2 needs an absolute URI).
pub fn get(host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(format!("http://{host}{path}"))
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Same, for an HTTP/1.1 client (origin-form target, Host header).
pub fn get_h1(host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

pub fn seen(body: &Bytes) -> Seen {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

/// A streamed request body fed from a channel.
pub type FrameResult = Result<Frame<Bytes>, Infallible>;
pub type ChannelBody = StreamBody<tokio_stream::wrappers::ReceiverStream<FrameResult>>;

pub fn channel_body() -> (tokio::sync::mpsc::Sender<FrameResult>, ChannelBody) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    (
        tx,
        StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
}

/// An HCM with an inline route config holding `routes` (YAML list items, indented by four)
/// and `extra` HCM fields.
pub fn hcm(routes: &str, extra: &str) -> String {
    hcm_with(routes, extra, true)
}

/// Same, choosing `validate_clusters`.
pub fn hcm_with(routes: &str, extra: &str, validate: bool) -> String {
    format!(
        "stat_prefix: test\nroute_config:\n  name: rc\n  validate_clusters: {validate}\n  virtual_hosts:\n  - name: vh\n    domains: ['*']\n    routes:\n{routes}\nhttp_filters:\n- name: envoy.filters.http.router\n  typed_config: {{ '@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}\n{extra}"
    )
}
