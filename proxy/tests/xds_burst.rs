#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A burst of xDS updates while traffic flows, against the `proxy` binary and the real Envoy
//! with the same scripted ADS control plane: 50 LDS, CDS, RDS and EDS pushes in quick
//! succession while clients send steady HTTP requests and TCP round trips. No request may
//! fail, every update must be ACKed, and the last one must be what serves.

mod xds_support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use proxy::proto::{Format, UnknownFields, decode};
use xds_client::{Resource, ResourceType};
use xds_support::{ControlPlane, bootstrap};

const PROXY: &str = env!("CARGO_BIN_EXE_proxy");
const UPDATES: usize = 50;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An HTTP/1.1 backend answering every request with `200` and its name in the body.
fn http_backend(name: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while let Ok(n @ 1..) = s.read(&mut buf) {
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}",
                            name.len()
                        );
                        if s.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

/// A TCP echo backend.
fn echo_backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = s.read(&mut buf) {
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

fn yaml<T: prost::Message + prost::Name + Default + Into<Resource>>(text: &str) -> Resource {
    decode::<T>(text, Format::Yaml, UnknownFields::Reject)
        .unwrap_or_else(|e| panic!("{e}: {text}"))
        .message
        .into()
}

/// The EDS cluster `web` (its connect timeout varies per update) and the static `echo`.
fn clusters(n: usize, echo: u16) -> Vec<Resource> {
    vec![
        yaml::<Cluster>(&format!(
            "name: web\ntype: EDS\nconnect_timeout: {}s\neds_cluster_config: {{eds_config: {{ads: {{}}, resource_api_version: V3}}}}\n",
            1 + n % 5
        )),
        yaml::<Cluster>(&format!(
            "name: echo\ntype: STATIC\nconnect_timeout: 1s\nload_assignment: {{cluster_name: echo, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {echo}}}}}}}}}]}}]}}\n"
        )),
    ]
}

/// `web`'s endpoint: one of the two HTTP backends.
fn endpoints(backend: u16) -> Vec<Resource> {
    vec![yaml::<ClusterLoadAssignment>(&format!(
        "cluster_name: web\nendpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {backend}}}}}}}}}]}}]\n"
    ))]
}

/// Route config `web-routes`: everything to `web`, tagging responses with `x-version`.
fn routes(version: &str) -> Vec<Resource> {
    vec![yaml::<RouteConfiguration>(&format!(
        "name: web-routes\nvirtual_hosts: [{{name: v, domains: ['*'], routes: [{{match: {{prefix: /}}, route: {{cluster: web}}}}], response_headers_to_add: [{{header: {{key: x-version, value: '{version}'}}}}]}}]\n"
    ))]
}

/// The HTTP listener (routes over RDS; its stat prefix varies per update) and the TCP one.
fn listeners(n: usize, http: u16, tcp: u16) -> Vec<Resource> {
    vec![
        yaml::<Listener>(&format!(
            "name: http\naddress: {{socket_address: {{address: 127.0.0.1, port_value: {http}}}}}\n\
             filter_chains:\n- filters:\n  - name: envoy.filters.network.http_connection_manager\n    typed_config:\n      \
             '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n      \
             stat_prefix: web{}\n      rds: {{route_config_name: web-routes, config_source: {{ads: {{}}, resource_api_version: V3}}}}\n      \
             http_filters: [{{name: envoy.filters.http.router, typed_config: {{'@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}]\n",
            n % 3
        )),
        yaml::<Listener>(&format!(
            "name: tcp\naddress: {{socket_address: {{address: 127.0.0.1, port_value: {tcp}}}}}\n\
             filter_chains:\n- filters:\n  - name: envoy.filters.network.tcp_proxy\n    typed_config:\n      \
             '@type': type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n      \
             stat_prefix: tcp{}\n      cluster: echo\n",
            n % 3
        )),
    ]
}

/// Steady clients until stopped: HTTP requests on keep-alive connections, and TCP round
/// trips on a new connection each.
struct Traffic {
    stop: Arc<AtomicBool>,
    counts: Arc<[AtomicUsize; 5]>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

const HTTP_OK: usize = 0;
const HTTP_FAILED: usize = 1;
/// A reused keep-alive connection the proxy had closed (drained) before any byte of the
/// response: the request was never processed, and clients retry it on a new connection.
const HTTP_RETRIED: usize = 2;
const TCP_OK: usize = 3;
const TCP_FAILED: usize = 4;

/// One request on `conn` (a new connection when `None`); whether it got a 200, whether
/// any response byte came, and whether the connection may be reused.
fn http_request(conn: &mut Option<TcpStream>, port: u16) -> (bool, bool) {
    if conn.is_none() {
        *conn = TcpStream::connect(("127.0.0.1", port)).ok();
        if let Some(s) = conn.as_ref() {
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        }
    }
    let Some(s) = conn.as_mut() else {
        return (false, false);
    };
    if s.write_all(b"GET / HTTP/1.1\r\nhost: web\r\n\r\n").is_err() {
        *conn = None;
        return (false, false);
    }
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => {
                let any = !head.is_empty();
                *conn = None;
                return (false, any);
            }
        }
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    let ok = s.read_exact(&mut body).is_ok() && head.starts_with("http/1.1 200");
    if !ok || head.contains("connection: close") {
        *conn = None;
    }
    (ok, true)
}

impl Traffic {
    fn start(http: u16, tcp: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let counts: Arc<[AtomicUsize; 5]> = Arc::new(Default::default());
        let (st, c) = (stop.clone(), counts.clone());
        let http_thread = std::thread::spawn(move || {
            let mut conn: Option<TcpStream> = None;
            while !st.load(Ordering::Relaxed) {
                let reused = conn.is_some();
                let (ok, answered) = http_request(&mut conn, http);
                let outcome = match (ok, answered, reused) {
                    (true, _, _) => HTTP_OK,
                    (false, false, true) => {
                        // Retried once on a new connection, as HTTP clients do.
                        c[HTTP_RETRIED].fetch_add(1, Ordering::Relaxed);
                        if http_request(&mut conn, http).0 {
                            HTTP_OK
                        } else {
                            HTTP_FAILED
                        }
                    }
                    _ => HTTP_FAILED,
                };
                c[outcome].fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let (st, c) = (stop.clone(), counts.clone());
        let tcp_thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let ok = TcpStream::connect(("127.0.0.1", tcp)).is_ok_and(|mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    let mut back = [0u8; 4];
                    let ok = s.write_all(b"ping").is_ok()
                        && s.read_exact(&mut back).is_ok()
                        && &back == b"ping";
                    let _ = s.shutdown(Shutdown::Both);
                    ok
                });
                let outcome = if ok { TCP_OK } else { TCP_FAILED };
                c[outcome].fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self {
            stop,
            counts,
            threads: vec![http_thread, tcp_thread],
        }
    }

    fn finish(self) -> [usize; 5] {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed))
    }
}

/// Which backend answers, and the `x-version` it carries.
fn served_by(port: u16) -> Option<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n")
        .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let version = head
        .lines()
        .find_map(|l| l.strip_prefix("x-version: "))?
        .to_string();
    Some((body.to_string(), version))
}

/// The `version_info` of each dynamic listener, cluster and route config in
/// `/config_dump`, as (type, name, version).
fn dumped_versions(admin: std::net::SocketAddr) -> Vec<(String, String, String)> {
    let (_, text) = e2e::http::get(admin, "/config_dump").unwrap();
    let dump: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    let list = |v: &serde_json::Value| v.as_array().cloned().unwrap_or_default();
    for config in dump["configs"].as_array().into_iter().flatten() {
        let kind = config["@type"].as_str().unwrap_or("");
        let kind = kind.rsplit('.').next().unwrap_or("").to_string();
        let items: Vec<(serde_json::Value, serde_json::Value)> = match kind.as_str() {
            "ListenersConfigDump" => list(&config["dynamic_listeners"])
                .into_iter()
                .map(|l| (l["name"].clone(), l["active_state"]["version_info"].clone()))
                .collect(),
            "ClustersConfigDump" => list(&config["dynamic_active_clusters"])
                .into_iter()
                .map(|c| (c["cluster"]["name"].clone(), c["version_info"].clone()))
                .collect(),
            "RoutesConfigDump" => list(&config["dynamic_route_configs"])
                .into_iter()
                .map(|r| (r["route_config"]["name"].clone(), r["version_info"].clone()))
                .collect(),
            _ => continue,
        };
        for (name, version) in items {
            out.push((
                kind.clone(),
                name.as_str().unwrap_or("").to_string(),
                version.as_str().unwrap_or("").to_string(),
            ));
        }
    }
    out.sort();
    out
}

/// What one binary did under the burst.
#[derive(Debug)]
struct Observed {
    verdicts: Vec<Result<(), String>>,
    traffic: [usize; 5],
    served: Option<(String, String)>,
    versions: Vec<(String, String, String)>,
}

async fn burst(binary: &Path) -> Observed {
    let (a, b, echo) = (http_backend("a"), http_backend("b"), echo_backend());
    let (http, tcp) = (free_port(), free_port());
    let mut cp = ControlPlane::start(vec![
        (ResourceType::Cluster, clusters(0, echo)),
        (ResourceType::ClusterLoadAssignment, endpoints(a)),
        (ResourceType::Listener, listeners(0, http, tcp)),
        (ResourceType::RouteConfiguration, routes("1")),
    ])
    .await;
    let yaml = bootstrap(cp.port());
    let bin = binary.to_path_buf();
    let proxy = tokio::task::spawn_blocking(move || {
        e2e::ProxyProcess::start(&bin, &yaml, &["--drain-time-s", "5"])
    })
    .await
    .unwrap()
    .unwrap();
    // Both listeners serve before the burst starts.
    let ready = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while served_by(http).is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        served_by(http)
    })
    .await
    .unwrap();
    assert_eq!(
        ready,
        Some(("a".to_string(), "1".to_string())),
        "{}",
        binary.display()
    );
    let traffic = Traffic::start(http, tcp);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut verdicts = Vec::new();
    let mut backend = a;
    for n in 2..UPDATES + 2 {
        let version = n.to_string();
        let verdict = match n % 4 {
            0 => {
                // A changed EDS cluster warms until its endpoints come again: the control
                // plane sends them right after (the cluster's update is the one counted).
                cp.push_all(vec![
                    (ResourceType::Cluster, &version, clusters(n, echo)),
                    (
                        ResourceType::ClusterLoadAssignment,
                        &version,
                        endpoints(backend),
                    ),
                ])
                .await
                .into_iter()
                .find(Result::is_err)
                .unwrap_or(Ok(()))
            }
            1 => {
                backend = if n % 8 == 1 { b } else { a };
                cp.push(
                    ResourceType::ClusterLoadAssignment,
                    &version,
                    endpoints(backend),
                )
                .await
            }
            2 => {
                cp.push(ResourceType::Listener, &version, listeners(n, http, tcp))
                    .await
            }
            _ => {
                cp.push(ResourceType::RouteConfiguration, &version, routes(&version))
                    .await
            }
        };
        verdicts.push(verdict);
    }
    // Traffic goes on a little after the last update, then stops.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let traffic = tokio::task::spawn_blocking(move || traffic.finish())
        .await
        .unwrap();
    let admin = proxy.admin;
    let (served, versions) = tokio::task::spawn_blocking(move || {
        // The last updates reach the workers shortly after their ACKs.
        let want = Some(("b".to_string(), "51".to_string()));
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut served = served_by(http);
        while served != want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            served = served_by(http);
        }
        (served, dumped_versions(admin))
    })
    .await
    .unwrap();
    drop(proxy);
    Observed {
        verdicts,
        traffic,
        served,
        versions,
    }
}

fn binaries() -> Vec<PathBuf> {
    let mut bins = vec![PathBuf::from(PROXY)];
    bins.extend(e2e::require_envoy("xds burst (envoy)"));
    bins
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_xds_updates_under_traffic_fails_no_request() {
    for bin in binaries() {
        let seen = burst(&bin).await;
        let [http_ok, http_failed, http_retried, tcp_ok, tcp_failed] = seen.traffic;
        println!(
            "{}: {} updates, {} NACKed; HTTP {http_ok} ok / {http_failed} failed \
             ({http_retried} retried on a new connection after a drain close); \
             TCP {tcp_ok} ok / {tcp_failed} failed; final {:?}; versions {:?}",
            bin.display(),
            seen.verdicts.len(),
            seen.verdicts.iter().filter(|v| v.is_err()).count(),
            seen.served,
            seen.versions
        );
        assert!(
            seen.verdicts.iter().all(Result::is_ok),
            "{}: {:?}",
            bin.display(),
            seen.verdicts
        );
        assert_eq!(seen.verdicts.len(), UPDATES);
        assert_eq!(
            (http_failed, tcp_failed),
            (0, 0),
            "{}: failed requests",
            bin.display()
        );
        // A drained keep-alive connection is closed after a response saying so, never
        // while idle, where a request already on its way would be lost.
        assert_eq!(
            http_retried,
            0,
            "{}: requests met a connection closed under them",
            bin.display()
        );
        assert!(
            http_ok > 20 && tcp_ok > 20,
            "{}: too little traffic",
            bin.display()
        );
        // The last of each: CDS 48, EDS 49 (backend b), LDS 50, RDS 51.
        assert_eq!(
            seen.served,
            Some(("b".to_string(), "51".to_string())),
            "{}",
            bin.display()
        );
        // Envoy 1.40 keeps reporting the listeners' first version_info ("1") after the
        // ACKed LDS updates here (not yet understood), so only ours is held to "50".
        let listener_want = if bin == Path::new(PROXY) { "50" } else { "1" };
        for (kind, name, want) in [
            ("ClustersConfigDump", "web", "48"),
            ("ListenersConfigDump", "http", listener_want),
            ("RoutesConfigDump", "web-routes", "51"),
        ] {
            let got = seen
                .versions
                .iter()
                .find(|(k, n, _)| k == kind && n == name)
                .map(|(_, _, v)| v.as_str());
            assert_eq!(got, Some(want), "{}: {kind} {name}", bin.display());
        }
    }
}
