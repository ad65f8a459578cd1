#![allow(clippy::unwrap_used, clippy::expect_used)]
//! HTTP through listeners, with the `proxy` binary next to the real Envoy on the same
//! bootstrap or the same control-plane script: a static HCM listener (HTTP/1.1 and h2c)
//! with routes, a direct response and the RBAC filter; live RDS and LDS updates under an
//! open keep-alive connection, with NACKs that leave the old config serving; and Istio's
//! bootstrap listeners on 15090 (prometheus) and 15021 (health).

mod http_support;
mod xds_support;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use http::StatusCode;
use http_support::{Client, Echo, get, get_h1, seen};
use proxy::proto::{Format, UnknownFields, decode};
use xds_client::{Resource, ResourceType};
use xds_support::{ControlPlane, bootstrap};

const PROXY: &str = env!("CARGO_BIN_EXE_proxy");

const ROUTER: &str = "- name: envoy.filters.http.router\n  typed_config: { '@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }\n";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines().map(|l| format!("{pad}{l}\n")).collect()
}

fn start(binary: &Path, yaml: &str) -> e2e::ProxyProcess {
    e2e::ProxyProcess::start(binary, yaml, &[]).unwrap()
}

// --- a static HCM listener ------------------------------------------------------------------

/// The HCM: a virtual host with one path, a catch-all with a direct response and the echo
/// upstream, and a DENY RBAC filter on `/admin`.
const STATIC_HCM: &str = r#"stat_prefix: ingress
route_config:
  name: local
  virtual_hosts:
  - name: nr
    domains: [nr.example]
    routes: [{ match: { path: /only }, route: { cluster: echo } }]
  - name: all
    domains: ["*"]
    routes:
    - { match: { prefix: /direct }, direct_response: { status: 200, body: { inline_string: hi } } }
    - { match: { prefix: / }, route: { cluster: echo } }
http_filters:
- name: envoy.filters.http.rbac
  typed_config:
    '@type': type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
    rules:
      action: DENY
      policies:
        deny-admin:
          permissions: [{ url_path: { path: { prefix: /admin } } }]
          principals: [{ header: { name: x-user, string_match: { exact: mallory } } }]
"#;

fn static_bootstrap(port: u16, echo: SocketAddr) -> String {
    format!(
        "admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}}}\n\
         static_resources:\n  listeners:\n  - name: ingress\n    \
         address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}\n    \
         filter_chains:\n    - filters:\n      - name: envoy.filters.network.http_connection_manager\n        \
         typed_config:\n          '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n\
         {}{}  clusters:\n  - name: echo\n    connect_timeout: 1s\n    load_assignment:\n      cluster_name: echo\n      \
         endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {}}}}}}}}}]}}]\n",
        indent(STATIC_HCM, 10),
        indent(ROUTER, 10),
        echo.port()
    )
}

/// What a client and the upstream observed for one request.
#[derive(Debug, PartialEq)]
struct Observed {
    request: String,
    status: u16,
    /// Response headers, except those that vary by time.
    response_headers: BTreeMap<String, String>,
    /// The local reply's body, or the request head the upstream saw (path and headers; the
    /// request ID's value varies).
    body: String,
}

fn observe(
    request: String,
    status: StatusCode,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Observed {
    let response_headers = headers
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "date" | "x-envoy-upstream-service-time" | "content-length"
            )
        })
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_string()))
        .collect();
    let body = if headers.get("x-upstream").is_some() {
        let s = seen(&bytes::Bytes::copy_from_slice(body));
        let mut hs: Vec<String> = s
            .headers
            .iter()
            .map(|(k, v)| match k.as_str() {
                "x-request-id" => format!("{k}: <{} chars>", v.len()),
                _ => format!("{k}: {v}"),
            })
            .collect();
        hs.sort();
        format!("{} {} {} [{}]", s.method, s.path, s.version, hs.join(", "))
    } else {
        String::from_utf8_lossy(body).into_owned()
    };
    Observed {
        request,
        status: status.as_u16(),
        response_headers,
        body,
    }
}

/// (host, path, x-user)
const REQUESTS: &[(&str, &str, &str)] = &[
    ("svc", "/", ""),
    ("svc", "/direct", ""),
    ("svc", "/admin/secret", "mallory"),
    ("svc", "/admin/secret", "alice"),
    ("nr.example", "/other", ""),
    ("nr.example", "/only", ""),
    ("svc", "/status/503", ""),
];

async fn drive_static(port: u16) -> Vec<Observed> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut out = Vec::new();
    for h2 in [false, true] {
        let mut client = if h2 {
            Client::h2(addr).await
        } else {
            Client::h1(addr).await
        };
        for &(host, path, user) in REQUESTS {
            let mut req = if h2 {
                get(host, path)
            } else {
                get_h1(host, path)
            };
            if !user.is_empty() {
                req.headers_mut().insert("x-user", user.parse().unwrap());
            }
            let (status, headers, body) = client.request(req).await;
            let name = format!("{} {host}{path} {user}", if h2 { "h2c" } else { "h1" });
            out.push(observe(name, status, &headers, &body));
        }
    }
    out
}

/// The HTTP and cluster counters both processes must agree on.
const COUNTERS: &[&str] = &[
    "http.ingress.downstream_cx_total",
    "http.ingress.downstream_cx_http1_total",
    "http.ingress.downstream_cx_http2_total",
    "http.ingress.downstream_rq_total",
    "http.ingress.downstream_rq_http1_total",
    "http.ingress.downstream_rq_http2_total",
    "http.ingress.downstream_rq_2xx",
    "http.ingress.downstream_rq_4xx",
    "http.ingress.downstream_rq_5xx",
    "http.ingress.downstream_rq_completed",
    "http.ingress.no_route",
    "http.ingress.rbac.allowed",
    "http.ingress.rbac.denied",
    "cluster.echo.upstream_rq_total",
    "cluster.echo.upstream_rq_200",
    "cluster.echo.upstream_rq_503",
    "cluster.echo.upstream_rq_2xx",
    "cluster.echo.upstream_rq_5xx",
];

fn counters(p: &e2e::ProxyProcess) -> BTreeMap<String, Option<u64>> {
    let stats = p.stats().unwrap();
    COUNTERS
        .iter()
        .map(|n| (n.to_string(), stats.get(*n).copied()))
        .collect()
}

/// `/config_dump`'s config types in order, and the names of the static route configs.
fn dump_shape(p: &e2e::ProxyProcess) -> Vec<String> {
    let (_, body) = e2e::http::get(p.admin, "/config_dump").unwrap();
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut shape = Vec::new();
    for c in dump["configs"].as_array().unwrap() {
        shape.push(c["@type"].as_str().unwrap_or("?").to_string());
        for r in c["static_route_configs"].as_array().into_iter().flatten() {
            shape.push(format!("  static {}", r["route_config"]["name"]));
        }
    }
    shape
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_http_listener_matches_envoy() {
    let Some(envoy_bin) = e2e::require_envoy("static_http_listener_matches_envoy") else {
        return;
    };
    let echo = Echo::start("echo", false).await;
    let mut results = Vec::new();
    for bin in [envoy_bin, PROXY.into()] {
        let port = free_port();
        let yaml = static_bootstrap(port, echo.addr);
        let process = tokio::task::spawn_blocking(move || start(&bin, &yaml))
            .await
            .unwrap();
        let observed = drive_static(port).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (stats, shape) =
            tokio::task::block_in_place(|| (counters(&process), dump_shape(&process)));
        results.push((observed, stats, shape));
    }
    let (ours, envoy) = (results.pop().unwrap(), results.pop().unwrap());
    let mut differences = Vec::new();
    for (e, o) in envoy.0.iter().zip(&ours.0) {
        if e != o {
            differences.push(format!("{}\n  envoy: {e:?}\n  ours:  {o:?}", e.request));
        }
    }
    for (name, e) in &envoy.1 {
        let o = &ours.1[name];
        if e != o {
            differences.push(format!("{name}: envoy {e:?}, ours {o:?}"));
        }
    }
    if envoy.2 != ours.2 {
        differences.push(format!(
            "config_dump\n  envoy: {:?}\n  ours:  {:?}",
            envoy.2, ours.2
        ));
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    let denied = envoy.0.iter().find(|o| o.status == 403).unwrap();
    assert_eq!(denied.body, "RBAC: access denied");
    assert_eq!(envoy.1["http.ingress.rbac.denied"], Some(2));
}

// --- live LDS and RDS -------------------------------------------------------------------------

fn cluster(name: &str, addr: SocketAddr) -> Resource {
    let yaml = format!(
        "name: {name}\ntype: STATIC\nconnect_timeout: 1s\nload_assignment:\n  cluster_name: {name}\n  \
         endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {}}}}}}}}}]}}]\n",
        addr.port()
    );
    decode::<Cluster>(&yaml, Format::Yaml, UnknownFields::Reject)
        .unwrap()
        .message
        .into()
}

/// Listener `http` whose HCM takes route configuration `r` from RDS; with `bad`, an inline
/// route to an unknown cluster instead (which both must refuse).
fn http_listener(port: u16, stat_prefix: &str, bad: bool) -> Resource {
    rds_listener("http", port, stat_prefix, (!bad).then_some("r"))
}

/// Listener `name` whose HCM takes route configuration `route` from RDS; without one, an
/// inline route to an unknown cluster.
fn rds_listener(name: &str, port: u16, stat_prefix: &str, route: Option<&str>) -> Resource {
    rds_listener_waiting(name, port, stat_prefix, route, None)
}

/// [`rds_listener`] with the RDS config source's `initial_fetch_timeout`.
fn rds_listener_waiting(
    name: &str,
    port: u16,
    stat_prefix: &str,
    route: Option<&str>,
    initial_fetch_timeout: Option<&str>,
) -> Resource {
    let wait =
        initial_fetch_timeout.map_or(String::new(), |t| format!(", initial_fetch_timeout: {t}"));
    let routes = match route {
        None => "route_config: { name: inline, virtual_hosts: [{ name: v, domains: ['*'], routes: [{ match: { prefix: / }, route: { cluster: nope } }] }] }\n".to_string(),
        Some(r) => format!(
            "rds: {{ route_config_name: {r}, config_source: {{ ads: {{}}, resource_api_version: V3{wait} }} }}\n"
        ),
    };
    let hcm = format!("stat_prefix: {stat_prefix}\n{routes}http_filters:\n{ROUTER}");
    let yaml = format!(
        "name: {name}\naddress: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}\n\
         filter_chains:\n- filters:\n  - name: envoy.filters.network.http_connection_manager\n    \
         typed_config:\n      '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n{}",
        indent(&hcm, 6)
    );
    decode::<Listener>(&yaml, Format::Yaml, UnknownFields::Reject)
        .unwrap()
        .message
        .into()
}

/// Route configuration `r` to `cluster`; `None` makes a route without an action.
fn route_config(cluster: Option<&str>) -> Resource {
    named_route_config("r", cluster)
}

fn named_route_config(name: &str, cluster: Option<&str>) -> Resource {
    let action = match cluster {
        Some(c) => format!(", route: {{ cluster: {c} }}"),
        None => String::new(),
    };
    let yaml = format!(
        "name: {name}\nvirtual_hosts: [{{ name: v, domains: ['*'], routes: [{{ match: {{ prefix: / }}{action} }}] }}]\n"
    );
    decode::<RouteConfiguration>(&yaml, Format::Yaml, UnknownFields::Reject)
        .unwrap()
        .message
        .into()
}

/// Which upstream answers a request on `client` (or the status when none did).
async fn answered_by(client: &mut Client) -> String {
    let (status, headers, body) = client.request(get_h1("svc", "/")).await;
    match headers.get("x-upstream") {
        Some(_) => seen(&body).server,
        None => format!("status {status}"),
    }
}

/// Asks on `client` until `want` answers (updates reach workers shortly after the ACK).
async fn until(client: &mut Client, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = answered_by(client).await;
        if got == want || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a listener serves: "not serving" when the connection is refused or nothing
/// answers (Envoy may bind a warming listener's socket), else which upstream answered.
async fn probe(port: u16) -> String {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
            return "not serving".to_string();
        };
        s.set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        let _ = s.write_all(b"GET / HTTP/1.1\r\nhost: svc\r\nconnection: close\r\n\r\n");
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw).to_lowercase();
        match text.lines().find_map(|l| l.strip_prefix("x-upstream: ")) {
            Some(up) => format!("served by {}", up.trim()),
            None if text.is_empty() => "not serving".to_string(),
            None => format!("answered {:?}", text.lines().next().unwrap_or_default()),
        }
    })
    .await
    .unwrap()
}

async fn probe_until(port: u16, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = probe(port).await;
        if got == want || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The names of listeners with a `warming_state` in `/config_dump`.
fn warming_listeners(admin: SocketAddr) -> Vec<String> {
    let (_, body) = e2e::http::get(admin, "/config_dump").unwrap();
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| {
            c["dynamic_listeners"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|l| l.get("warming_state").is_some())
        .map(|l| l["name"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// What the idle kept connection sees once its filter chain drains. Envoy answers with
/// `connection: close` or has already closed it (its drain-close callbacks are spread over
/// the drain time); either way the client must reconnect, so both read "drained".
async fn drained(client: &mut Client) -> String {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let outcome = match client.send(get_h1("svc", "/")).await {
        Ok(resp)
            if resp
                .headers()
                .get("connection")
                .is_some_and(|v| v == "close") =>
        {
            "drained".to_string()
        }
        Ok(resp) => format!("still open ({})", resp.status()),
        Err(_) => "drained".to_string(),
    };
    format!("kept connection while draining: {outcome}")
}

/// The dynamic route configurations in `/config_dump`: (name, version).
fn dumped_routes(admin: SocketAddr) -> Vec<(String, String)> {
    let (_, body) = e2e::http::get(admin, "/config_dump").unwrap();
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    let routes = dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["@type"] == "type.googleapis.com/envoy.admin.v3.RoutesConfigDump")
        .cloned()
        .unwrap_or_default();
    routes["dynamic_route_configs"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["route_config"]["name"]
                            .as_str()
                            .unwrap_or("?")
                            .to_string(),
                        r["version_info"].as_str().unwrap_or("?").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Runs the RDS/LDS script against one binary; returns what a user would observe and the
/// NACK details.
async fn live_scenario(binary: &Path, a: &Echo, b: &Echo) -> (Vec<String>, Vec<String>) {
    let port = free_port();
    let mut cp = ControlPlane::start(vec![
        (
            ResourceType::Cluster,
            vec![cluster("a", a.addr), cluster("b", b.addr)],
        ),
        (
            ResourceType::Listener,
            vec![http_listener(port, "live", false)],
        ),
        (
            ResourceType::RouteConfiguration,
            vec![route_config(Some("a"))],
        ),
    ])
    .await;
    let yaml = bootstrap(cp.port());
    let bin = binary.to_path_buf();
    let proxy = tokio::task::spawn_blocking(move || {
        e2e::ProxyProcess::start(
            &bin,
            &yaml,
            &["--drain-strategy", "immediate", "--drain-time-s", "30"],
        )
        .unwrap()
    })
    .await
    .unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut seen = Vec::new();
    let mut nacks = Vec::new();
    let mut kept = Client::h1(addr).await;
    seen.push(format!("first request: {}", until(&mut kept, "a").await));

    let v2 = cp
        .push(
            ResourceType::RouteConfiguration,
            "2",
            vec![route_config(Some("b"))],
        )
        .await;
    seen.push(format!("routes to b: {v2:?}"));
    seen.push(format!("same connection: {}", until(&mut kept, "b").await));

    let bad = cp
        .push(
            ResourceType::RouteConfiguration,
            "bad-3",
            vec![route_config(None)],
        )
        .await;
    seen.push(format!("route without action: NACK {}", bad.is_err()));
    nacks.extend(bad.err());
    seen.push(format!("after the NACK: {}", answered_by(&mut kept).await));

    let bad = cp
        .push(
            ResourceType::Listener,
            "bad-4",
            vec![http_listener(port, "live", true)],
        )
        .await;
    seen.push(format!(
        "listener with unknown cluster: NACK {}",
        bad.is_err()
    ));
    nacks.extend(bad.err());
    let mut fresh = Client::h1(addr).await;
    seen.push(format!("new connection: {}", answered_by(&mut fresh).await));
    seen.push(format!("kept connection: {}", answered_by(&mut kept).await));
    let admin = proxy.admin;
    let routes = tokio::task::spawn_blocking(move || dumped_routes(admin))
        .await
        .unwrap();
    seen.push(format!("config_dump routes: {routes:?}"));

    let changed = cp
        .push(
            ResourceType::Listener,
            "5",
            vec![http_listener(port, "live2", false)],
        )
        .await;
    seen.push(format!("listener changed: {changed:?}"));
    seen.push(drained(&mut kept).await);
    let mut after = Client::h1(addr).await;
    seen.push(format!(
        "after the change: {}",
        answered_by(&mut after).await
    ));

    let port2 = free_port();
    let added = cp
        .push(
            ResourceType::Listener,
            "6",
            vec![
                http_listener(port, "live2", false),
                rds_listener("http2", port2, "other", Some("r2")),
            ],
        )
        .await;
    seen.push(format!("listener waiting for r2: {added:?}"));
    seen.push(format!("before r2: {}", probe(port2).await));
    let warming = tokio::task::spawn_blocking(move || warming_listeners(admin))
        .await
        .unwrap();
    seen.push(format!("warming in config_dump: {warming:?}"));
    let routes = cp
        .push(
            ResourceType::RouteConfiguration,
            "7",
            vec![route_config(Some("b")), named_route_config("r2", Some("a"))],
        )
        .await;
    seen.push(format!("r2 arrives: {routes:?}"));
    seen.push(format!(
        "after r2: {}",
        probe_until(port2, "served by a").await
    ));

    // Routes that never come: the RDS config source's initial_fetch_timeout decides how
    // long the listener warms (0: until they come).
    let (port3, port4) = (free_port(), free_port());
    let added = cp
        .push(
            ResourceType::Listener,
            "8",
            vec![
                http_listener(port, "live2", false),
                rds_listener("http2", port2, "other", Some("r2")),
                rds_listener_waiting("http3", port3, "three", Some("r3"), Some("1s")),
                rds_listener_waiting("http4", port4, "four", Some("r4"), Some("0s")),
            ],
        )
        .await;
    seen.push(format!("listeners waiting for r3 and r4: {added:?}"));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    seen.push(format!("r3 after its 1s timeout: {}", probe(port3).await));
    seen.push(format!("r4 with no timeout: {}", probe(port4).await));
    let warming = tokio::task::spawn_blocking(move || warming_listeners(admin))
        .await
        .unwrap();
    seen.push(format!("still warming: {warming:?}"));
    drop(proxy);
    (seen, nacks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rds_and_lds_updates_reach_live_connections_like_envoy() {
    let Some(envoy) = e2e::require_envoy("rds_and_lds_updates_reach_live_connections_like_envoy")
    else {
        return;
    };
    let (a, b) = (Echo::start("a", false).await, Echo::start("b", false).await);
    let (envoy_seen, _) = live_scenario(&envoy, &a, &b).await;
    let (our_seen, our_nacks) = live_scenario(Path::new(PROXY), &a, &b).await;
    assert_eq!(our_seen, envoy_seen, "ours (left) vs Envoy (right)");
    assert_eq!(
        our_seen,
        [
            "first request: a",
            "routes to b: Ok(())",
            "same connection: b",
            "route without action: NACK true",
            "after the NACK: b",
            "listener with unknown cluster: NACK true",
            "new connection: b",
            "kept connection: b",
            "config_dump routes: [(\"r\", \"2\")]",
            "listener changed: Ok(())",
            "kept connection while draining: drained",
            "after the change: b",
            "listener waiting for r2: Ok(())",
            "before r2: not serving",
            "warming in config_dump: [\"http2\"]",
            "r2 arrives: Ok(())",
            "after r2: served by a",
            "listeners waiting for r3 and r4: Ok(())",
            "r3 after its 1s timeout: answered \"http/1.1 404 not found\"",
            "r4 with no timeout: not serving",
            "still warming: [\"http4\"]",
        ]
    );
    assert!(
        our_nacks[0].contains("route \"r\""),
        "the RDS NACK names the route configuration: {}",
        our_nacks[0]
    );
    assert!(
        our_nacks[1].contains("listener \"http\"") && our_nacks[1].contains("nope"),
        "the LDS NACK names the listener and the cluster: {}",
        our_nacks[1]
    );
}

// --- Istio's bootstrap listeners --------------------------------------------------------------

/// Istio's default bootstrap golden, reduced to what the 15090 and 15021 listeners need:
/// those listeners (on 127.0.0.1 and the given ports), the `prometheus_stats` cluster at the
/// admin and the `agent` cluster at `agent`.
fn istio_bootstrap(admin: u16, prom: u16, health: u16, agent: u16) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/istio-bootstrap/default_golden.json");
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let sr = &golden["static_resources"];
    let mut listeners = sr["listeners"].as_array().unwrap().clone();
    for l in &mut listeners {
        let sa = &mut l["address"]["socket_address"];
        let port = match sa["port_value"].as_u64() {
            Some(15090) => prom,
            Some(15021) => health,
            other => panic!("unexpected listener port {other:?}"),
        };
        sa["address"] = "127.0.0.1".into();
        sa["port_value"] = port.into();
    }
    let mut clusters: Vec<serde_json::Value> = sr["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "prometheus_stats" || c["name"] == "agent")
        .cloned()
        .collect();
    for c in &mut clusters {
        let port = if c["name"] == "agent" { agent } else { admin };
        c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
            ["port_value"] = port.into();
    }
    serde_json::json!({
        "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": admin } } },
        "static_resources": { "listeners": listeners, "clusters": clusters },
    })
    .to_string()
}

async fn drive_istio(prom: u16, health: u16) -> Vec<String> {
    let mut out = Vec::new();
    let mut p = Client::h1(([127, 0, 0, 1], prom).into()).await;
    let (status, headers, body) = p.request(get_h1("pod", "/stats/prometheus")).await;
    let text = String::from_utf8_lossy(&body);
    out.push(format!(
        "15090 /stats/prometheus: {status} {:?} has server_live: {}",
        headers.get("content-type"),
        text.lines().any(|l| l.starts_with("envoy_server_live{} 1"))
    ));
    let (status, _, _) = p.request(get_h1("pod", "/other")).await;
    out.push(format!("15090 /other: {status}"));
    let mut h = Client::h1(([127, 0, 0, 1], health).into()).await;
    let (status, headers, body) = h.request(get_h1("pod", "/healthz/ready")).await;
    let upstream = headers
        .get("x-upstream")
        .map(|_| seen(&body).path)
        .unwrap_or_default();
    out.push(format!(
        "15021 /healthz/ready: {status} upstream saw {upstream}"
    ));
    let (status, _, _) = h.request(get_h1("pod", "/stats/prometheus")).await;
    out.push(format!("15021 /stats/prometheus: {status}"));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_prometheus_and_health_listeners_answer_like_envoy() {
    let Some(envoy) = e2e::require_envoy("istio_prometheus_and_health_listeners_answer_like_envoy")
    else {
        return;
    };
    let agent = Echo::start("agent", false).await;
    let mut results = Vec::new();
    for bin in [envoy, PROXY.into()] {
        let (admin, prom, health) = (free_port(), free_port(), free_port());
        let yaml = istio_bootstrap(admin, prom, health, agent.addr.port());
        let process = tokio::task::spawn_blocking(move || start(&bin, &yaml))
            .await
            .unwrap();
        results.push(drive_istio(prom, health).await);
        drop(process);
    }
    assert_eq!(results[1], results[0], "ours (left) vs Envoy (right)");
    assert_eq!(
        results[1][0],
        "15090 /stats/prometheus: 200 OK Some(\"text/plain; charset=UTF-8\") has server_live: true"
    );
}
