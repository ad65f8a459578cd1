#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Our HTTP connection manager over real loopback TCP: hyper clients (HTTP/1.1 and h2c) in
//! front, echo upstreams (HTTP/1.1 and h2c) behind. Protocol translation, headers, streaming,
//! connection reuse and multiplexing, RDS, RBAC.

mod http_support;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use http_support::*;
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use proxy::http::{AuthzDecision, AuthzRequest, HttpAuthorizer, HttpContext, RbacFactory};
use proxy::stats::Store;

async fn setup(clusters_yaml: &[String], hcm_yaml: &str) -> Proxy {
    let store = Store::new(None).unwrap();
    let cm = clusters(&store, clusters_yaml);
    Proxy::start(HttpContext::new(cm, store), hcm_yaml).await
}

const ALL_TO_BACKEND: &str = "    - { match: { prefix: / }, route: { cluster: backend } }";

#[tokio::test]
async fn http1_request_reaches_upstream_with_envoy_headers() {
    let up = Echo::start("a", false).await;
    let proxy = setup(
        &[static_cluster("backend", &[up.addr], "")],
        &hcm(ALL_TO_BACKEND, ""),
    )
    .await;
    let mut c = Client::h1(proxy.addr).await;
    let (status, headers, body) = c
        .request(
            Request::builder()
                .uri("/p?q=1")
                .header("host", "svc.local:8080")
                .header("connection", "keep-alive")
                .header("x-envoy-retry-on", "5xx")
                .header(
                    "traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                )
                .header("x-b3-traceid", "463ac35c9f6413ad")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["server"], "envoy");
    assert!(headers.contains_key("x-envoy-upstream-service-time"));
    let s = seen(&body);
    assert_eq!(s.version, "HTTP/1.1");
    assert_eq!(s.path, "/p?q=1");
    assert_eq!(s.header("host"), Some("svc.local:8080"));
    assert_eq!(s.header("x-forwarded-proto"), Some("http"));
    assert_eq!(s.header("x-envoy-expected-rq-timeout-ms"), Some("15000"));
    assert_eq!(s.header("x-request-id").map(str::len), Some(36));
    assert_eq!(
        s.header("x-envoy-retry-on"),
        None,
        "x-envoy-* from external clients are stripped"
    );
    assert_eq!(
        s.header("connection"),
        None,
        "hop-by-hop headers are not forwarded"
    );
    assert_eq!(
        s.header("traceparent"),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        "tracing headers pass through untouched"
    );
    assert_eq!(s.header("x-b3-traceid"), Some("463ac35c9f6413ad"));
    assert_eq!(proxy.stat("http.test.downstream_rq_2xx"), 1);
    assert_eq!(proxy.stat("cluster.backend.upstream_rq_200"), 1);
}

#[tokio::test]
async fn http1_downstream_to_http2_upstream() {
    let up = Echo::start("h2", true).await;
    let proxy = setup(
        &[static_cluster("backend", &[up.addr], H2_OPTIONS)],
        &hcm(ALL_TO_BACKEND, ""),
    )
    .await;
    let mut c = Client::h1(proxy.addr).await;
    let (status, _, body) = c.request(get_h1("svc:80", "/x")).await;
    assert_eq!(status, StatusCode::OK);
    let s = seen(&body);
    assert_eq!(s.version, "HTTP/2.0");
    assert_eq!(
        s.header("host"),
        None,
        "HTTP/2 carries the authority as :authority"
    );
    assert_eq!(proxy.stat("cluster.backend.upstream_cx_http2_total"), 1);
}

#[tokio::test]
async fn http2_downstream_to_http1_upstream() {
    let up = Echo::start("h1", false).await;
    let proxy = setup(
        &[static_cluster("backend", &[up.addr], "")],
        &hcm(ALL_TO_BACKEND, ""),
    )
    .await;
    let mut c = Client::h2(proxy.addr).await;
    let (status, headers, body) = c.get("svc:80", "/y").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-upstream"], "h1");
    let s = seen(&body);
    assert_eq!(s.version, "HTTP/1.1");
    assert_eq!(s.header("host"), Some("svc:80"), ":authority becomes Host");
    assert_eq!(proxy.stat("http.test.downstream_rq_http2_total"), 1);
}

#[tokio::test]
async fn use_downstream_protocol_follows_the_client() {
    let up = Echo::start("h2", true).await;
    let opts = "typed_extension_protocol_options: { envoy.extensions.upstreams.http.v3.HttpProtocolOptions: { '@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, use_downstream_protocol_config: { http2_protocol_options: {} } } }";
    let proxy = setup(
        &[static_cluster("backend", &[up.addr], opts)],
        &hcm(ALL_TO_BACKEND, ""),
    )
    .await;
    let mut c = Client::h2(proxy.addr).await;
    let (_, _, body) = c.get("svc", "/").await;
    assert_eq!(seen(&body).version, "HTTP/2.0");
}

#[tokio::test]
async fn keep_alive_connections_are_reused() {
    let up = Echo::start("a", false).await;
    let proxy = setup(
        &[static_cluster("backend", &[up.addr], "")],
        &hcm(ALL_TO_BACKEND, ""),
    )
    .await;
    for _ in 0..2 {
        let mut c = Client::h1(proxy.addr).await;
        for i in 0..5 {
            let (status, _, _) = c.request(get_h1("svc", &format!("/{i}"))).await;
            assert_eq!(status, StatusCode::OK);
        }
    }
    assert_eq!(up.requests.load(Ordering::SeqCst), 10);
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        1,
        "one upstream connection serves all ten"
    );
    assert_eq!(proxy.stat("cluster.backend.upstream_cx_http1_total"), 1);
}

#[tokio::test]
async fn max_requests_per_connection_opens_new_connections() {
    let up = Echo::start("a", false).await;
    let extra = "max_requests_per_connection: 2";
    let proxy = setup(
        &[static_cluster("backend", &[up.addr], extra)],
        &hcm(ALL_TO_BACKEND, ""),
    )
    .await;
    let mut c = Client::h1(proxy.addr).await;
    for _ in 0..4 {
        c.request(get_h1("svc", "/")).await;
    }
    assert_eq!(up.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn http2_streams_share_one_upstream_connection() {
    let up = Echo::start("h2", true).await;
    let proxy = setup(
        &[static_cluster("backend", &[up.addr], H2_OPTIONS)],
        &hcm(ALL_TO_BACKEND, ""),
    )
    .await;
    let Client::H2(tx) = Client::h2(proxy.addr).await else {
        unreachable!()
    };
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let resp = tx
                .send_request(get("svc", &format!("/slow/{}", 20 + i)))
                .await
                .unwrap();
            resp.status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        1,
        "HTTP/2 multiplexes"
    );
    assert_eq!(up.requests.load(Ordering::SeqCst), 20);
}

#[tokio::test]
async fn bodies_stream_both_ways_without_buffering() {
    let up = Echo::start("a", false).await;
    let proxy = setup(
        &[static_cluster("backend", &[up.addr], "")],
        &hcm(ALL_TO_BACKEND, ""),
    )
    .await;
    let io = TokioIo::new(tokio::net::TcpStream::connect(proxy.addr).await.unwrap());
    let (mut tx, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let (chunks, body) = channel_body();
    let req = Request::builder()
        .method("POST")
        .uri("/echo")
        .header("host", "svc")
        .body(body)
        .unwrap();
    let resp = tokio::spawn(async move { tx.send_request(req).await.unwrap() });
    // Each chunk comes back through the proxy before the next is sent: neither direction
    // waits for a whole body.
    chunks
        .send(Ok(Frame::data(Bytes::from_static(b"first "))))
        .await
        .unwrap();
    let mut body = resp.await.unwrap().into_body();
    let got = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(got, "first ");
    let big = Bytes::from(vec![b'x'; 256 * 1024]);
    chunks.send(Ok(Frame::data(big.clone()))).await.unwrap();
    drop(chunks);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest.len(), big.len());
    assert!(rest.iter().all(|b| *b == b'x'));
}

#[tokio::test]
async fn rds_routes_appear_when_the_route_config_arrives() {
    let up = Echo::start("a", false).await;
    let store = Store::new(None).unwrap();
    let cm = clusters(&store, &[static_cluster("backend", &[up.addr], "")]);
    let ctx = HttpContext::new(cm, store);
    let proxy = Proxy::start(
        ctx.clone(),
        "stat_prefix: rds\nrds: { route_config_name: '80', config_source: { ads: {} } }\nhttp_filters: [{ name: envoy.filters.http.router, typed_config: { '@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } }]",
    )
    .await;
    assert_eq!(ctx.rds.names(), ["80"]);
    let mut c = Client::h1(proxy.addr).await;
    let (status, _, _) = c.request(get_h1("svc", "/")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no routes before RDS");
    ctx.rds
        .update(&[yaml(
            "{ name: '80', virtual_hosts: [{ name: v, domains: ['*'], routes: [{ match: { prefix: / }, route: { cluster: backend } }] }] }",
        )])
        .unwrap();
    let (status, _, _) = c.request(get_h1("svc", "/")).await;
    assert_eq!(status, StatusCode::OK);
}

#[derive(Debug)]
struct DenyPath;

impl HttpAuthorizer for DenyPath {
    fn authorize(&self, req: &AuthzRequest<'_>) -> AuthzDecision {
        if req.request.path.starts_with("/deny") {
            AuthzDecision::Deny {
                policy: Some("ns[default]-policy[deny]-rule[0]".into()),
            }
        } else {
            AuthzDecision::Allow
        }
    }
}

#[derive(Debug)]
struct Factory;

impl RbacFactory for Factory {
    fn http_filter(
        &self,
        _: &envoy_types::pb::google::protobuf::Any,
        _: &str,
    ) -> Result<Arc<dyn HttpAuthorizer>, proxy::config::ConfigError> {
        Ok(Arc::new(DenyPath))
    }
}

#[tokio::test]
async fn rbac_slot_denies_with_envoy_reply() {
    let up = Echo::start("a", false).await;
    let store = Store::new(None).unwrap();
    let cm = clusters(&store, &[static_cluster("backend", &[up.addr], "")]);
    let mut ctx = HttpContext::new(cm, store);
    ctx.rbac = Some(Arc::new(Factory));
    let hcm_yaml = "stat_prefix: test\nroute_config: { virtual_hosts: [{ name: v, domains: ['*'], routes: [{ match: { prefix: / }, route: { cluster: backend } }] }] }\nhttp_filters:\n- { name: envoy.filters.http.rbac, typed_config: { '@type': type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC } }\n- { name: envoy.filters.http.router, typed_config: { '@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } }";
    let proxy = Proxy::start(ctx, hcm_yaml).await;
    let mut c = Client::h1(proxy.addr).await;
    let (status, headers, body) = c.request(get_h1("svc", "/deny/x")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body, "RBAC: access denied");
    assert_eq!(headers["content-type"], "text/plain");
    let (status, _, _) = c.request(get_h1("svc", "/ok")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        up.requests.load(Ordering::SeqCst),
        1,
        "the denied request never went upstream"
    );
}

/// The real RBAC engine in the HCM: Istio's ALLOW policy on the peer's SPIFFE identity,
/// read from the connection's verified certificate, with Envoy's stats and 403.
#[tokio::test]
async fn rbac_engine_decides_on_the_peer_principal_and_request() {
    let up = Echo::start("a", false).await;
    let store = Store::new(None).unwrap();
    let cm = clusters(&store, &[static_cluster("backend", &[up.addr], "")]);
    let mut ctx = HttpContext::new(cm, store.clone());
    ctx.rbac = Some(proxy::rbac::HttpRbacFactory::new(store));
    let hcm_yaml = r#"stat_prefix: inbound
route_config: { virtual_hosts: [{ name: v, domains: ['*'], routes: [{ match: { prefix: / }, route: { cluster: backend } }] }] }
http_filters:
- name: envoy.filters.http.rbac
  typed_config:
    '@type': type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
    rules:
      policies:
        ns[default]-policy[sleep]-rule[0]:
          permissions: [{ and_rules: { rules: [{ or_rules: { rules: [{ header: { name: ':method', string_match: { exact: GET } } }] } }] } }]
          principals: [{ and_ids: { ids: [{ or_ids: { ids: [{ authenticated: { principal_name: { exact: spiffe://cluster.local/ns/default/sa/sleep } } }] } }] } }]
- { name: envoy.filters.http.router, typed_config: { '@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } }
"#;
    let hcm = proxy::http::HttpConnectionManager::new(&yaml(hcm_yaml), &ctx).unwrap();
    let peer = |uri: &str| {
        Some(Arc::new(proxy::conn::PeerTls {
            peer_certificate: Some(proxy::conn::PeerCertificate {
                uri_sans: vec![uri.to_string()],
                ..Default::default()
            }),
            ..Default::default()
        }))
    };
    let sleep = Proxy::serve_as(
        ctx.clone(),
        hcm.clone(),
        peer("spiffe://cluster.local/ns/default/sa/sleep"),
    )
    .await;
    let other = Proxy::serve_as(ctx, hcm, peer("spiffe://cluster.local/ns/default/sa/other")).await;
    let mut c = Client::h1(sleep.addr).await;
    assert_eq!(c.request(get_h1("svc", "/")).await.0, StatusCode::OK);
    let post = Request::post("/")
        .header("host", "svc")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, body) = c.request(post).await;
    assert_eq!(
        (status, &body[..]),
        (StatusCode::FORBIDDEN, &b"RBAC: access denied"[..])
    );
    let mut c = Client::h1(other.addr).await;
    let (status, _, body) = c.request(get_h1("svc", "/")).await;
    assert_eq!(
        (status, &body[..]),
        (StatusCode::FORBIDDEN, &b"RBAC: access denied"[..])
    );
    assert_eq!(sleep.stat("http.inbound.rbac.allowed"), 1);
    assert_eq!(sleep.stat("http.inbound.rbac.denied"), 2);
    assert_eq!(up.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn direct_responses_redirects_and_header_changes() {
    let up = Echo::start("a", false).await;
    let routes = r#"    - match: { prefix: /direct }
      direct_response: { status: 200, body: { inline_string: hello } }
      response_headers_to_add: [{ header: { key: x-route, value: direct } }]
    - { match: { prefix: /old }, redirect: { prefix_rewrite: /new, response_code: FOUND } }
    - match: { prefix: /api/v1 }
      route: { cluster: backend, prefix_rewrite: /v2, host_rewrite_literal: api.internal }
      request_headers_to_add:
      - { header: { key: x-client, value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%" } }
      request_headers_to_remove: [x-secret]
      response_headers_to_remove: [x-upstream]"#;
    let proxy = setup(
        &[static_cluster("backend", &[up.addr], "")],
        &hcm(routes, ""),
    )
    .await;
    let mut c = Client::h1(proxy.addr).await;
    let (status, headers, body) = c.request(get_h1("svc", "/direct")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello"[..]));
    assert_eq!(headers["x-route"], "direct");
    assert_eq!(headers["content-type"], "text/plain");
    let (status, headers, _) = c.request(get_h1("svc:80", "/old/x?q")).await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(headers["location"], "http://svc:80/new/x?q");
    let mut req = get_h1("svc", "/api/v1/users?id=7");
    req.headers_mut().insert("x-secret", "s".parse().unwrap());
    let (status, headers, body) = c.request(req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!headers.contains_key("x-upstream"));
    let s = seen(&body);
    assert_eq!(s.path, "/v2/users?id=7");
    assert_eq!(s.header("host"), Some("api.internal"));
    assert_eq!(
        s.header("x-envoy-original-path"),
        Some("/api/v1/users?id=7")
    );
    assert_eq!(s.header("x-client"), Some("127.0.0.1"));
    assert_eq!(s.header("x-secret"), None);
}

#[tokio::test]
async fn weighted_clusters_split_within_a_binomial_bound() {
    let v1 = Echo::start("v1", false).await;
    let v2 = Echo::start("v2", false).await;
    let routes = "    - { match: { prefix: / }, route: { weighted_clusters: { clusters: [{ name: v1, weight: 80 }, { name: v2, weight: 20 }] } } }";
    let proxy = setup(
        &[
            static_cluster("v1", &[v1.addr], ""),
            static_cluster("v2", &[v2.addr], ""),
        ],
        &hcm(routes, ""),
    )
    .await;
    let mut c = Client::h1(proxy.addr).await;
    let n = 1000;
    let mut v1_hits = 0;
    for _ in 0..n {
        let (status, headers, _) = c.request(get_h1("svc", "/")).await;
        assert_eq!(status, StatusCode::OK);
        if headers["x-upstream"] == "v1" {
            v1_hits += 1;
        }
    }
    // p = 0.8, n = 1000: mean 800, sd ~12.6; 6 sd = 76.
    assert!((v1_hits as i64 - 800).abs() < 76, "v1 got {v1_hits} of {n}");
}
