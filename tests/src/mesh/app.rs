//! The pods' application: an httpbin-like HTTP echo that answers with the request it saw
//! (method, path, headers including `x-forwarded-client-cert`, peer address) as JSON, and a
//! line-based TCP echo. Both say which workload answered.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

use crate::netns::Netns;

/// The servers of one pod; stopped on drop.
#[derive(Debug)]
pub struct App {
    tasks: Vec<AbortHandle>,
}

// === impl App ===

impl App {
    /// Starts the HTTP echo on `http_ports` and the TCP echo on `tcp_ports`, listening on
    /// every address inside `ns`, answering as `workload`.
    pub fn start(
        rt: &tokio::runtime::Handle,
        ns: &Netns,
        workload: &str,
        http_ports: &[u16],
        tcp_ports: &[u16],
    ) -> std::io::Result<Self> {
        let mut tasks = Vec::new();
        let ports = http_ports
            .iter()
            .map(|p| (*p, true))
            .chain(tcp_ports.iter().map(|p| (*p, false)));
        for (port, http) in ports {
            let std = ns.enter(move || {
                let l = StdListener::bind(SocketAddr::from(([0, 0, 0, 0], port)))?;
                l.set_nonblocking(true)?;
                Ok(l)
            })?;
            let _rt = rt.enter();
            let listener = TcpListener::from_std(std)?;
            let name = workload.to_string();
            let task = if http {
                rt.spawn(serve_http(listener, name))
            } else {
                rt.spawn(serve_tcp(listener, name))
            };
            tasks.push(task.abort_handle());
        }
        Ok(Self { tasks })
    }
}

impl Drop for App {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn serve_http(listener: TcpListener, workload: String) {
    let mut conns = tokio::task::JoinSet::new();
    while let Ok((stream, peer)) = listener.accept().await {
        let local = stream.local_addr().ok();
        let workload = workload.clone();
        conns.spawn(async move {
            let service = service_fn(move |req| echo(req, workload.clone(), peer, local));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        while conns.try_join_next().is_some() {}
    }
}

async fn echo(
    req: hyper::Request<hyper::body::Incoming>,
    workload: String,
    peer: SocketAddr,
    local: Option<SocketAddr>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let mut headers = Map::new();
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(Value::String(v)) => {
                v.push_str(", ");
                v.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_string(), Value::String(value));
            }
        }
    }
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let answer = json!({
        "workload": workload,
        "method": method,
        "path": path,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
        "peer": peer.to_string(),
        "local": local.map(|l| l.to_string()),
    });
    let mut resp = hyper::Response::new(Full::new(Bytes::from(answer.to_string())));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// Answers each line with `<workload> <peer address> <line>`.
async fn serve_tcp(listener: TcpListener, workload: String) {
    let mut conns = tokio::task::JoinSet::new();
    while let Ok((stream, peer)) = listener.accept().await {
        let workload = workload.clone();
        conns.spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if w.write_all(format!("{workload} {peer} {line}\n").as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        while conns.try_join_next().is_some() {}
    }
}
