//! The example bootstraps in deploy/examples/, loaded the way a user would: `--mode validate`,
//! then a real run with real traffic, with the real Envoy and with our proxy.
//!
//! Each table below says which binary runs which check. Our proxy joins a check by adding
//! `Ours` to its row, once the feature the example needs has landed; nothing else changes.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use e2e::ProxyProcess;

use crate::common::{
    Binary, Mesh, TempDir, Unready, echo_server, eventually, free_port, install_sds, read, rewrite,
    round_trip, tls_exchange, validate,
};

use Binary::{Envoy, Ours};

/// `--mode validate`, per example and binary. Note that ours checks the bootstrap's
/// structure and types only; Envoy also builds every listener, cluster and secret.
const VALIDATE: &[(&str, &[Binary])] = &[
    ("tcp-proxy.yaml", &[Envoy, Ours]),
    ("mtls-client.yaml", &[Envoy, Ours]),
    ("mtls-server.yaml", &[Envoy, Ours]),
    ("vm-istio-agent.yaml", &[Envoy, Ours]),
];

/// tcp-proxy.yaml forwarding to an echo backend.
const RUN_TCP_PROXY: &[Binary] = &[Envoy, Ours];
/// mtls-client.yaml talking to mtls-server.yaml, RBAC allowing one identity.
const RUN_MTLS: &[Binary] = &[Envoy, Ours];
/// mtls-server.yaml serving a new certificate after the files are replaced.
const RUN_CERT_RELOAD: &[Binary] = &[Envoy, Ours];
/// vm-istio-agent.yaml with no agent listening, its 15090 and 15021 HTTP listeners included.
/// Ours waits for two listeners on port 0 (the test's free ports), which it refuses as
/// duplicate addresses where Envoy binds each to its own port; the real ports work (mesh suite).
const RUN_VM: &[Binary] = &[Envoy];
/// vm-istio-agent.yaml without those two HTTP listeners: the xDS-only part, which ours runs.
const RUN_VM_XDS_ONLY: &[Binary] = &[Envoy, Ours];

/// Where an example expects `/etc/certs` and `/etc/sidecar/sds`, made in a temp dir.
struct Host {
    _dir: TempDir,
    certs: String,
    sds: String,
}

// === impl Host ===

impl Host {
    /// A host with `sa`'s certificate installed in Istio's layout and the example SDS files.
    fn new(mesh: &Mesh, sa: &str) -> Self {
        let dir = TempDir::new(sa);
        let certs = dir.dir("etc/certs");
        let sds = dir.dir("etc/sidecar/sds");
        mesh.install(&mesh.identity(sa), &certs);
        install_sds(&certs, &sds);
        Self {
            _dir: dir,
            certs,
            sds,
        }
    }

    /// The example with its file paths pointing into this host.
    fn localize(&self, example: &str) -> String {
        let text = read(&format!("deploy/examples/{example}"));
        if text.contains("/etc/sidecar/sds") {
            rewrite(&text, &[("/etc/sidecar/sds", &self.sds)])
        } else {
            text
        }
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn start(binary: &Path, yaml: &str) -> ProxyProcess {
    ProxyProcess::start(binary, yaml, &[])
        .unwrap_or_else(|e| panic!("{} did not start: {e}\n{yaml}", binary.display()))
}

#[test]
fn every_example_has_a_row_in_the_test_tables() {
    let mut files: Vec<String> = std::fs::read_dir(crate::common::root().join("deploy/examples"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".json"))
        .collect();
    files.sort();
    let mut listed: Vec<String> = VALIDATE.iter().map(|(f, _)| f.to_string()).collect();
    listed.sort();
    assert_eq!(
        files, listed,
        "deploy/examples and the VALIDATE table differ"
    );
}

#[test]
fn examples_pass_validate_mode() {
    let mesh = Mesh::new();
    let host = Host::new(&mesh, "validate");
    let mut failures = Vec::new();
    for (example, binaries) in VALIDATE {
        let dir = TempDir::new("validate-example");
        let config = dir.path().join(example);
        std::fs::write(&config, host.localize(example)).unwrap();
        for binary in *binaries {
            let Some(path) = binary.path("examples_pass_validate_mode") else {
                continue;
            };
            if let Err(e) = validate(&path, &config, &[]) {
                failures.push(format!("{example} with {binary:?}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn tcp_proxy_example_forwards_to_its_backend() {
    let echo = echo_server();
    for binary in RUN_TCP_PROXY {
        let Some(path) = binary.path("tcp_proxy_example_forwards_to_its_backend") else {
            continue;
        };
        let port = free_port();
        let yaml = rewrite(
            &read("deploy/examples/tcp-proxy.yaml"),
            &[
                ("port_value: 15000", "port_value: 0"),
                ("port_value: 10000", &format!("port_value: {port}")),
                ("port_value: 8080", &format!("port_value: {echo}")),
            ],
        );
        let proxy = start(&path, &yaml);
        let payload = b"bytes through the tcp-proxy example".repeat(100);
        let reply = round_trip(loopback(port), &payload)
            .unwrap_or_else(|e| panic!("{binary:?}: {e}\n{}", proxy.log()));
        assert_eq!(reply, payload, "{binary:?} did not echo the payload back");
        let stats = proxy.stats().unwrap();
        assert_eq!(
            stats.get("tcp.tcp_ingress.downstream_cx_total"),
            Some(&1),
            "{binary:?}: one connection went through the listener"
        );
    }
}

/// Starts mtls-server.yaml for `sa` (its certificate in `host`), in front of `app`.
fn start_server(binary: &Path, host: &Host, port: u16, app: u16) -> ProxyProcess {
    let yaml = rewrite(
        &host.localize("mtls-server.yaml"),
        &[
            ("port_value: 15000", "port_value: 0"),
            ("port_value: 15443", &format!("port_value: {port}")),
            ("port_value: 8080", &format!("port_value: {app}")),
        ],
    );
    start(binary, &yaml)
}

/// Starts mtls-client.yaml listening on `port`, sending to the server sidecar at `server`.
fn start_client(binary: &Path, host: &Host, port: u16, server: u16) -> ProxyProcess {
    let yaml = rewrite(
        &host.localize("mtls-client.yaml"),
        &[
            ("port_value: 15000", "port_value: 0"),
            ("port_value: 15001", &format!("port_value: {port}")),
            (
                "address: server.mesh.internal, port_value: 15443",
                &format!("address: 127.0.0.1, port_value: {server}"),
            ),
        ],
    );
    start(binary, &yaml)
}

#[test]
fn mtls_examples_connect_and_rbac_admits_only_the_client_identity() {
    let app = echo_server();
    let mesh = Mesh::new();
    let server_host = Host::new(&mesh, "server");
    let client_host = Host::new(&mesh, "client");
    let impostor_host = Host::new(&mesh, "impostor");
    for binary in RUN_MTLS {
        let Some(path) = binary.path("mtls_examples_connect_and_rbac_admits_only_the_client")
        else {
            continue;
        };
        let (server_port, client_port) = (free_port(), free_port());
        let server = start_server(&path, &server_host, server_port, app);
        let client = start_client(&path, &client_host, client_port, server_port);

        // The app talks plaintext to its sidecar; the bytes cross mTLS and come back.
        let payload = b"through both sidecars".repeat(50);
        let reply = round_trip(loopback(client_port), &payload);
        assert_eq!(
            reply.as_deref().ok(),
            Some(&payload[..]),
            "{binary:?}: app -> client sidecar -> server sidecar -> app; {reply:?}\n\
             client log:\n{}\nserver log:\n{}",
            client.log(),
            server.log()
        );

        // Another identity of the same mesh completes the handshake, then RBAC closes it.
        let intruder = mesh.identity("intruder");
        let seen = tls_exchange(loopback(server_port), &intruder, b"let me in").unwrap();
        assert!(
            seen.reply.as_ref().is_ok_and(Vec::is_empty) || seen.reply.is_err(),
            "{binary:?}: RBAC let spiffe://cluster.local/ns/default/sa/intruder through: {:?}",
            seen.reply
        );
        // Plaintext never reaches the app.
        let plain = round_trip(loopback(server_port), b"plaintext");
        assert!(
            plain
                .as_ref()
                .map_or(true, |r| r.as_slice() != b"plaintext"),
            "{binary:?}: the server sidecar passed plaintext through"
        );
        let stats = server.stats().unwrap();
        assert_eq!(
            stats.get("tcp.rbac.allowed"),
            Some(&1),
            "{binary:?}: {stats:?}"
        );
        assert_eq!(
            stats.get("tcp.rbac.denied"),
            Some(&1),
            "{binary:?}: {stats:?}"
        );

        // A server with another identity (same CA) is refused by the client sidecar.
        let impostor_port = free_port();
        let _impostor = start_server(&path, &impostor_host, impostor_port, app);
        let client2_port = free_port();
        let client2 = start_client(&path, &client_host, client2_port, impostor_port);
        let reply = round_trip(loopback(client2_port), b"to the impostor");
        assert!(
            reply.as_ref().map_or(true, Vec::is_empty),
            "{binary:?}: the client sidecar talked to sa/impostor: {reply:?}"
        );
        let stats = client2.stats().unwrap();
        assert!(
            stats
                .get("cluster.server.ssl.fail_verify_san")
                .is_some_and(|n| *n >= 1),
            "{binary:?}: expected a SAN verification failure: {stats:?}"
        );
    }
}

#[test]
fn certificates_are_reloaded_when_the_files_are_replaced() {
    let app = echo_server();
    let mesh = Mesh::new();
    for binary in RUN_CERT_RELOAD {
        let Some(path) = binary.path("certificates_are_reloaded_when_the_files_are_replaced")
        else {
            continue;
        };
        let host = Host::new(&mesh, "rotating");
        let port = free_port();
        let server = start_server(&path, &host, port, app);
        let client = mesh.identity("client");
        let first = std::fs::read_to_string(format!("{}/cert-chain.pem", host.certs)).unwrap();

        let seen = tls_exchange(loopback(port), &client, b"before").unwrap();
        assert_eq!(seen.reply.as_deref().ok(), Some(&b"before"[..]));
        assert!(first.contains("BEGIN CERTIFICATE"));

        // Istio's agent rotates by writing each file and renaming it into place.
        let next = mesh.identity("rotating");
        mesh.install(&next, &host.certs);
        let served = eventually(Duration::from_secs(10), || {
            let seen = tls_exchange(loopback(port), &client, b"after").ok()?;
            (seen.served == next.der).then_some(seen)
        });
        let Some(seen) = served else {
            panic!(
                "{binary:?} still serves the old certificate 10s after the files were \
                 replaced; log:\n{}",
                server.log()
            );
        };
        assert_eq!(seen.reply.as_deref().ok(), Some(&b"after"[..]));
    }
}

/// What a user sees while the agent is absent: not ready, and still running.
fn assert_waits_for_the_agent(binary: Binary, yaml: &str) {
    let Some(path) = binary.path("vm_example_waits_for_the_agent") else {
        return;
    };
    // An empty working directory: ./etc/istio/proxy/XDS does not exist.
    let cwd = TempDir::new("vm");
    let config = cwd.path().join("envoy-rev.yaml");
    std::fs::write(&config, yaml).unwrap();
    let mut proxy = Unready::start(&path, &config, cwd.path(), &[]);
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            proxy.is_running(),
            "{binary:?} exited without its xDS server; log:\n{}",
            proxy.log()
        );
        let (status, body) = e2e::http::get(proxy.admin, "/ready").unwrap();
        assert_eq!(status, 503, "{binary:?} /ready: {body}");
        assert!(
            ["PRE_INITIALIZING", "INITIALIZING"].contains(&body.trim()),
            "{binary:?} /ready body: {body:?}"
        );
    }
}

#[test]
fn vm_example_stays_unready_and_running_without_the_agent() {
    let yaml = rewrite(
        &read("deploy/examples/vm-istio-agent.yaml"),
        &[
            ("port_value: 15000", "port_value: 0"),
            ("port_value: 15090", "port_value: 0"),
            ("port_value: 15021", "port_value: 0"),
        ],
    );
    for binary in RUN_VM {
        assert_waits_for_the_agent(*binary, &yaml);
    }
}

/// The VM example without its two HTTP listeners (15090, 15021), admin on port 0, as JSON.
pub(crate) fn vm_xds_only() -> String {
    let yaml = rewrite(
        &read("deploy/examples/vm-istio-agent.yaml"),
        &[("port_value: 15000", "port_value: 0")],
    );
    let mut bootstrap: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
    let listeners = bootstrap
        .pointer_mut("/static_resources/listeners")
        .and_then(serde_json::Value::as_array_mut)
        .expect("the VM example has static listeners");
    assert_eq!(listeners.len(), 2, "the 15090 and 15021 listeners");
    listeners.clear();
    serde_json::to_string_pretty(&bootstrap).unwrap()
}

#[test]
fn vm_example_xds_part_stays_unready_and_running_without_the_agent() {
    let json = vm_xds_only();
    for binary in RUN_VM_XDS_ONLY {
        assert_waits_for_the_agent(*binary, &json);
    }
}
