#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Differential test: our HTTP connection manager against the real Envoy, given the same
//! HCM, route configuration and clusters, in front of the same echo upstreams. For a matrix
//! of requests (hosts, paths, headers, query parameters) over HTTP/1.1 and HTTP/2, both must
//! answer with the same status, from the same upstream, with the same response headers and
//! local reply bodies, and the upstream must see the same request (path, every header).
//! Two HCM flavours: a sidecar's (`use_remote_address: false`) and an edge proxy's.

mod http_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use http_support::*;
use proxy::http::HttpContext;
use proxy::stats::Store;

const ROUTES: &str = r#"
name: diff
validate_clusters: false
virtual_hosts:
- name: exact
  domains: ["exact.com", "exact.com:8080"]
  response_headers_to_add: [{ header: { key: x-vh, value: exact } }]
  routes: [{ match: { prefix: / }, route: { cluster: a } }]
- name: suffix-long
  domains: ["*.long.example.com"]
  response_headers_to_add: [{ header: { key: x-vh, value: suffix-long } }]
  routes: [{ match: { prefix: / }, route: { cluster: b } }]
- name: suffix
  domains: ["*.example.com"]
  response_headers_to_add: [{ header: { key: x-vh, value: suffix } }]
  routes: [{ match: { prefix: / }, route: { cluster: a } }]
- name: prefix
  domains: ["api.*"]
  response_headers_to_add: [{ header: { key: x-vh, value: prefix } }]
  routes: [{ match: { prefix: / }, route: { cluster: c } }]
- name: nr
  domains: ["nr.com"]
  routes: [{ match: { path: /only }, route: { cluster: a } }]
- name: default
  domains: ["*"]
  request_headers_to_add: [{ header: { key: x-vh-added, value: default } }]
  response_headers_to_add: [{ header: { key: x-vh, value: default } }]
  routes:
  - { match: { path: /exact }, route: { cluster: b } }
  - { match: { prefix: /CaseLess, case_sensitive: false }, route: { cluster: b } }
  - match: { safe_regex: { regex: "/re/[0-9]+" } }
    route: { cluster: b, regex_rewrite: { pattern: { regex: "^/re/([0-9]+)$" }, substitution: "/num/\\1" } }
  - { match: { path_separated_prefix: /sep }, route: { cluster: c } }
  - { match: { prefix: /hdr, headers: [{ name: x-version, string_match: { exact: v2 } }] }, route: { cluster: b } }
  - { match: { prefix: /hdr, headers: [{ name: x-version, present_match: true }] }, route: { cluster: c } }
  - { match: { prefix: /query, query_parameters: [{ name: debug, present_match: true }] }, route: { cluster: b } }
  - { match: { prefix: /query, query_parameters: [{ name: user, string_match: { prefix: al } }] }, route: { cluster: c } }
  - match: { prefix: /api/v1 }
    route: { cluster: b, prefix_rewrite: /v2, host_rewrite_literal: backend.internal }
    request_headers_to_add:
    - { header: { key: x-added, value: "1" } }
    - { header: { key: x-client, value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%" } }
    - { header: { key: x-overwrite, value: new }, append_action: OVERWRITE_IF_EXISTS_OR_ADD }
    - { header: { key: x-absent, value: added }, append_action: ADD_IF_ABSENT }
    request_headers_to_remove: [x-remove-me]
    response_headers_to_add: [{ header: { key: x-route, value: api } }]
    response_headers_to_remove: [x-upstream]
  - { match: { prefix: /redirect }, redirect: { path_redirect: /landed, response_code: TEMPORARY_REDIRECT } }
  - { match: { prefix: /moved }, redirect: { prefix_rewrite: /new, host_redirect: other.com, strip_query: true } }
  - { match: { prefix: /https }, redirect: { https_redirect: true } }
  - { match: { prefix: /direct }, direct_response: { status: 418, body: { inline_string: teapot } } }
  - { match: { prefix: /dead }, route: { cluster: dead } }
  - { match: { prefix: /empty }, route: { cluster: empty } }
  - { match: { prefix: /missing }, route: { cluster: missing } }
  - { match: { prefix: /slow }, route: { cluster: a, timeout: 0.25s } }
  - { match: { prefix: /retry }, route: { cluster: a, retry_policy: { retry_on: 5xx, num_retries: 1 } } }
  - { match: { prefix: /weighted }, route: { weighted_clusters: { clusters: [{ name: a, weight: 70 }, { name: b, weight: 30 }] } } }
  - { match: { prefix: / }, route: { cluster: a } }
"#;

/// What both proxies log for every stream (timings and addresses left out).
const LOG_FORMAT: &str = "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %UPSTREAM_CLUSTER% %BYTES_RECEIVED% %PROTOCOL% %REQ(:METHOD)% %REQ(:AUTHORITY)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %REQ(:PATH)% %ROUTE_NAME% %UPSTREAM_TRANSPORT_FAILURE_REASON%\\n";

/// The HCM of one flavour, with the route config inline, logging to `log`.
fn hcm(flavour: &str, log: &std::path::Path) -> String {
    let extra = match flavour {
        "sidecar" => "use_remote_address: false\nnormalize_path: true\nmerge_slashes: true",
        _ => {
            "use_remote_address: true\nnormalize_path: true\nforward_client_cert_details: SANITIZE_SET\nvia: 1.1 edge"
        }
    };
    let routes: String = ROUTES.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "stat_prefix: {flavour}\n{extra}\naccess_log:\n- name: envoy.access_loggers.file\n  typed_config: {{ '@type': type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: '{}', log_format: {{ text_format_source: {{ inline_string: \"{LOG_FORMAT}\" }} }} }}\nroute_config:\n{routes}http_filters:\n- name: envoy.filters.http.router\n  typed_config: {{ '@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}\n",
        log.display()
    )
}

fn cluster_yamls(a: SocketAddr, b: SocketAddr, c: SocketAddr, dead: SocketAddr) -> Vec<String> {
    vec![
        static_cluster("a", &[a], ""),
        static_cluster("b", &[b], ""),
        static_cluster("c", &[c], H2_OPTIONS),
        static_cluster("dead", &[dead], ""),
        "{ name: empty, type: STATIC, connect_timeout: 1s, load_assignment: { cluster_name: empty } }".to_string(),
    ]
}

fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines().map(|l| format!("{pad}{l}\n")).collect()
}

fn envoy_bootstrap(clusters: &[String], logs: &std::path::Path) -> String {
    let mut y = String::from(
        "admin:\n  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }\nstatic_resources:\n  listeners:\n",
    );
    for flavour in ["sidecar", "edge"] {
        y.push_str(&format!(
            "  - name: {flavour}\n    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}\n    filter_chains:\n    - filters:\n      - name: envoy.filters.network.http_connection_manager\n        typed_config:\n          '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n{}",
            indent(&hcm(flavour, &logs.join(format!("envoy-{flavour}.log"))), 10)
        ));
    }
    y.push_str("  clusters:\n");
    for c in clusters {
        let proto: envoy_types::pb::envoy::config::cluster::v3::Cluster = yaml(c);
        let json = proxy::proto::encode(&proto).unwrap();
        y.push_str(&format!("  - {json}\n"));
    }
    y
}

/// The listener ports Envoy bound, by listener name.
fn envoy_ports(admin: SocketAddr) -> BTreeMap<String, SocketAddr> {
    let (_, body) = e2e::http::get(admin, "/listeners?format=json").unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["listener_statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let sa = &l["local_address"]["socket_address"];
            let addr = format!(
                "{}:{}",
                sa["address"].as_str().unwrap(),
                sa["port_value"].as_u64().unwrap()
            );
            (
                l["name"].as_str().unwrap().to_string(),
                addr.parse().unwrap(),
            )
        })
        .collect()
}

/// One request of the matrix.
#[derive(Debug, Clone)]
struct Case {
    host: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
}

fn case(host: &'static str, path: &'static str) -> Case {
    Case {
        host,
        path,
        headers: Vec::new(),
    }
}

fn with(mut c: Case, headers: &[(&'static str, &'static str)]) -> Case {
    c.headers.extend_from_slice(headers);
    c
}

fn matrix() -> Vec<Case> {
    vec![
        case("exact.com", "/"),
        case("exact.com:8080", "/x"),
        case("EXACT.com", "/"),
        case("exact.com:9999", "/"),
        case("foo.long.example.com", "/"),
        case("foo.example.com", "/p"),
        case(".example.com", "/"),
        case("api.foo", "/q?x=1"),
        case("api.", "/"),
        case("other", "/"),
        case("nr.com", "/only"),
        case("nr.com", "/other"),
        case("svc", "/exact"),
        case("svc", "/exact/"),
        case("svc", "/exact?q=1"),
        case("svc", "/caseless/x"),
        case("svc", "/CASELESS"),
        case("svc", "/re/123"),
        case("svc", "/re/abc"),
        case("svc", "/sep"),
        case("svc", "/sep/x"),
        case("svc", "/sepx"),
        with(case("svc", "/hdr"), &[("x-version", "v2")]),
        with(case("svc", "/hdr"), &[("x-version", "v1")]),
        case("svc", "/hdr"),
        case("svc", "/query?debug"),
        case("svc", "/query?user=alice"),
        case("svc", "/query?user=bob"),
        with(
            case("svc", "/api/v1/users?id=7"),
            &[
                ("x-remove-me", "1"),
                ("x-overwrite", "old"),
                ("x-absent", "present"),
                ("x-forwarded-for", "10.1.1.1"),
            ],
        ),
        case("svc:80", "/redirect/a?b=1"),
        case("svc", "/moved/x?y=1"),
        case("svc:80", "/https/x"),
        case("svc", "/direct"),
        case("svc", "/dead"),
        case("svc", "/empty"),
        case("svc", "/missing"),
        case("svc", "/slow/1000"),
        case("svc", "/retry/status/503"),
        case("svc", "/a/../exact"),
        case("svc", "//exact"),
        case("svc", "/%65xact"),
        case("svc", "/a/./b//c"),
        case("svc", "/exact%2Fx"),
        case("svc", "/.//exact"),
        case("svc", "///exact"),
        case("svc", "/x/%2e%2e/exact"),
        case("svc", "/%7e/../exact?a=/../b"),
        case("svc", "/x/..;/exact"),
        case("svc", "/%41%42"),
        with(
            case("svc", "/headers"),
            &[
                ("x-envoy-retry-on", "5xx"),
                ("x-envoy-upstream-rq-timeout-ms", "5"),
                ("x-request-id", "keep-me"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-client-cert", "By=spiffe://a;URI=spiffe://b"),
                (
                    "traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                ),
                ("x-b3-traceid", "463ac35c9f6413ad"),
                ("te", "trailers"),
                ("keep-alive", "timeout=5"),
            ],
        ),
        with(
            case("svc", "/xff"),
            &[("x-forwarded-for", "1.2.3.4, 5.6.7.8")],
        ),
    ]
}

/// Which upstream answered, the path it saw, and every header it saw.
type UpstreamSaw = (String, String, Vec<(String, String)>);

/// What a response looked like, minus what legitimately differs (dates, timings, IDs).
#[derive(Debug, PartialEq)]
struct Observed {
    status: StatusCode,
    response_headers: Vec<(String, String)>,
    /// Local replies: the body. Proxied: which upstream, and what it saw.
    body: String,
    upstream: Option<UpstreamSaw>,
}

async fn observe(addr: SocketAddr, h2: bool, c: &Case) -> Observed {
    let mut client = if h2 {
        Client::h2(addr).await
    } else {
        Client::h1(addr).await
    };
    let mut b = Request::builder();
    b = if h2 {
        b.uri(format!("http://{}{}", c.host, c.path))
    } else {
        b.uri(c.path).header("host", c.host)
    };
    for (k, v) in &c.headers {
        if h2 && (*k == "keep-alive" || *k == "te" && *v != "trailers") {
            continue;
        }
        b = b.header(*k, *v);
    }
    let (status, headers, body) = client
        .request(b.body(Full::new(Bytes::new())).unwrap())
        .await;
    let mut response_headers: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "date" | "x-envoy-upstream-service-time" | "content-length" | "connection"
            )
        })
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
        .collect();
    response_headers.sort();
    let upstream = serde_json::from_slice::<Seen>(&body).ok().map(|s| {
        let mut seen: Vec<(String, String)> = s
            .headers
            .iter()
            .map(|(k, v)| {
                let v = match k.as_str() {
                    "x-request-id" if v.len() == 36 => "<uuid>".to_string(),
                    // A retry announces what is left of the timeout (timing-dependent; the
                    // last try is the one the upstream reports).
                    "x-envoy-expected-rq-timeout-ms" if c.path.starts_with("/retry") => {
                        "<remaining>".to_string()
                    }
                    _ => v.clone(),
                };
                (k.clone(), v)
            })
            .collect();
        seen.sort();
        (s.server, s.path, seen)
    });
    let body = if upstream.is_some() {
        String::new()
    } else {
        String::from_utf8_lossy(&body).into_owned()
    };
    Observed {
        status,
        response_headers,
        body,
        upstream,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_hcm_matches_envoy() {
    let Some(bin) = e2e::require_envoy("our_hcm_matches_envoy") else {
        return;
    };
    let a = Echo::start("a", false).await;
    let b = Echo::start("b", false).await;
    let c = Echo::start("c", true).await;
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let yamls = cluster_yamls(a.addr, b.addr, c.addr, dead);
    let logs = tempfile::tempdir().unwrap();
    let envoy = tokio::task::spawn_blocking({
        let boot = envoy_bootstrap(&yamls, logs.path());
        move || {
            e2e::EnvoyProcess::start(&bin, &boot, &["--file-flush-interval-msec", "20"]).unwrap()
        }
    })
    .await
    .unwrap();
    let envoy_admin = envoy.admin;
    let envoy_ports = tokio::task::spawn_blocking(move || envoy_ports(envoy_admin))
        .await
        .unwrap();
    let store = Store::new(None).unwrap();
    let cm = clusters(&store, &yamls);
    let ctx = HttpContext::new(cm, store);
    let mut mismatches = Vec::new();
    let mut compared = 0;
    for flavour in ["sidecar", "edge"] {
        let ours_log = logs.path().join(format!("ours-{flavour}.log"));
        let ours = Proxy::start(ctx.clone(), &hcm(flavour, &ours_log)).await;
        let theirs = envoy_ports[flavour];
        for h2 in [false, true] {
            for c in matrix() {
                let (want, got) = (
                    observe(theirs, h2, &c).await,
                    observe(ours.addr, h2, &c).await,
                );
                compared += 1;
                if want != got {
                    mismatches.push(format!(
                        "{flavour} {} {} {}{}\n  envoy: {want:?}\n  ours:  {got:?}",
                        if h2 { "h2" } else { "h1" },
                        c.host,
                        c.path,
                        if c.headers.is_empty() {
                            String::new()
                        } else {
                            format!(" {:?}", c.headers)
                        },
                    ));
                }
            }
        }
    }
    let mut log_lines = 0;
    for flavour in ["sidecar", "edge"] {
        let theirs = read_log(
            &logs.path().join(format!("envoy-{flavour}.log")),
            compared / 2,
        )
        .await;
        let ours = read_log(
            &logs.path().join(format!("ours-{flavour}.log")),
            compared / 2,
        )
        .await;
        for (t, o) in theirs.iter().zip(&ours) {
            log_lines += 1;
            if t != o {
                mismatches.push(format!("{flavour} access log\n  envoy: {t}\n  ours:  {o}"));
            }
        }
    }
    eprintln!(
        "compared {compared} request/response pairs and {log_lines} access log lines with Envoy; {} differ",
        mismatches.len()
    );
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    drop(envoy);
}

/// The access log's lines once it has `n` of them.
async fn read_log(path: &std::path::Path, n: usize) -> Vec<String> {
    for _ in 0..500 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{} has fewer than {n} lines", path.display());
}

/// Weighted splits: both proxies split 70/30 within a binomial bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_splits_match_envoy() {
    let Some(bin) = e2e::require_envoy("weighted_splits_match_envoy") else {
        return;
    };
    let a = Echo::start("a", false).await;
    let b = Echo::start("b", false).await;
    let c = Echo::start("c", true).await;
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let yamls = cluster_yamls(a.addr, b.addr, c.addr, dead);
    let logs = tempfile::tempdir().unwrap();
    let envoy = tokio::task::spawn_blocking({
        let boot = envoy_bootstrap(&yamls, logs.path());
        move || e2e::EnvoyProcess::start(&bin, &boot, &[]).unwrap()
    })
    .await
    .unwrap();
    let admin = envoy.admin;
    let theirs = tokio::task::spawn_blocking(move || envoy_ports(admin))
        .await
        .unwrap()["sidecar"];
    let store = Store::new(None).unwrap();
    let ours = Proxy::start(
        HttpContext::new(clusters(&store, &yamls), store),
        &hcm("sidecar", &logs.path().join("ours.log")),
    )
    .await;
    for addr in [theirs, ours.addr] {
        let mut client = Client::h1(addr).await;
        let n = 400;
        let mut to_a = 0;
        for _ in 0..n {
            let (status, headers, _) = client.request(get_h1("svc", "/weighted")).await;
            assert_eq!(status, StatusCode::OK);
            if headers["x-upstream"] == "a" {
                to_a += 1;
            }
        }
        // p = 0.7, n = 400: mean 280, sd ~9.2; 6 sd = 55.
        assert!((to_a as i64 - 280).abs() < 55, "{addr}: {to_a} of {n} to a");
    }
    drop(envoy);
}
