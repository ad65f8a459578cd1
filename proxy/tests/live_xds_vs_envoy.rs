#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Live listener updates over ADS, run against the `proxy` binary and the real Envoy with the
//! same control plane script: a changed listener drains its old filter chain (an open
//! connection keeps going) while new connections take the new one; a bad listener is NACKed
//! and the previous one keeps serving; a removed listener stops accepting while its open
//! connections finish.

mod xds_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use proxy::proto::{Format, UnknownFields, decode};
use xds_client::{Resource, ResourceType};
use xds_support::{ControlPlane, bootstrap};

const PROXY: &str = env!("CARGO_BIN_EXE_proxy");

// --- upstreams ------------------------------------------------------------------------------

/// An upstream that greets each connection with `tag\n`, then echoes.
fn tagged_echo(tag: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut stream = stream;
                if stream.write_all(format!("{tag}\n").as_bytes()).is_err() {
                    return;
                }
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    if stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = stream.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

/// A client connection and the upstream tag it was greeted with.
struct Client {
    reader: BufReader<TcpStream>,
    tag: String,
}

// === impl Client ===

impl Client {
    fn connect(port: u16) -> std::io::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut reader = BufReader::new(stream);
        let mut tag = String::new();
        reader.read_line(&mut tag)?;
        if tag.is_empty() {
            return Err(std::io::Error::other("closed without a greeting"));
        }
        Ok(Self {
            reader,
            tag: tag.trim().to_string(),
        })
    }

    /// Whether the connection still carries bytes both ways.
    fn still_works(&mut self) -> bool {
        let probe = b"probe\n";
        if self.reader.get_mut().write_all(probe).is_err() {
            return false;
        }
        let mut line = String::new();
        self.reader.read_line(&mut line).is_ok() && line == "probe\n"
    }
}

/// Connects until the greeting is `tag` (a listener update reaches the workers shortly after
/// the ACK), or gives up after a few seconds and reports what it saw last.
fn connect_until(port: u16, tag: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let seen = match Client::connect(port) {
            Ok(c) => c.tag,
            Err(_) => "refused".to_string(),
        };
        if seen == tag || Instant::now() > deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// --- resources ------------------------------------------------------------------------------

fn cluster(name: &str, port: u16) -> Resource {
    let yaml = format!(
        "name: {name}\ntype: STATIC\nconnect_timeout: 1s\nload_assignment:\n  cluster_name: {name}\n  \
         endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]\n"
    );
    decode::<Cluster>(&yaml, Format::Yaml, UnknownFields::Reject)
        .unwrap()
        .message
        .into()
}

/// Listener `l` on `port` whose chains all proxy to `cluster` (two identical chains make it
/// invalid).
fn listener(port: u16, cluster: &str, chains: usize) -> Resource {
    let chain = format!(
        "- name: main\n  filters:\n  - name: envoy.filters.network.tcp_proxy\n    typed_config:\n      \
         \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n      \
         stat_prefix: l\n      cluster: {cluster}\n"
    );
    let yaml = format!(
        "name: l\naddress: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}\nfilter_chains:\n{}",
        chain.repeat(chains)
    );
    decode::<Listener>(&yaml, Format::Yaml, UnknownFields::Reject)
        .unwrap()
        .message
        .into()
}

// --- the scenario ---------------------------------------------------------------------------

/// Runs the scenario against one binary; returns what a user would observe, step by step.
async fn scenario(binary: &Path, a: u16, b: u16) -> (Vec<String>, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cp = ControlPlane::start(vec![
        (
            ResourceType::Cluster,
            vec![cluster("a", a), cluster("b", b)],
        ),
        (ResourceType::Listener, vec![listener(port, "a", 1)]),
    ])
    .await;
    let yaml = bootstrap(cp.port());
    let bin = binary.to_path_buf();
    let proxy = tokio::task::spawn_blocking(move || {
        e2e::ProxyProcess::start(&bin, &yaml, &["--drain-time-s", "30"])
    })
    .await
    .unwrap()
    .unwrap();
    let mut seen = Vec::new();
    let mut note = |s: String| seen.push(s);

    let result = tokio::task::block_in_place(|| {
        note(format!("first connection: {}", connect_until(port, "a")));
        Client::connect(port)
    });
    let mut first = result.unwrap();

    let v2 = cp
        .push(ResourceType::Listener, "2", vec![listener(port, "b", 1)])
        .await;
    note(format!("listener to b: {v2:?}"));
    tokio::task::block_in_place(|| {
        note(format!("new connection: {}", connect_until(port, "b")));
        note(format!(
            "first connection still works: {} (greeted by {})",
            first.still_works(),
            first.tag
        ));
    });
    let mut second = tokio::task::block_in_place(|| Client::connect(port)).unwrap();

    let bad = cp
        .push(
            ResourceType::Listener,
            "bad-3",
            vec![listener(port, "a", 2)],
        )
        .await;
    note(format!("duplicate chains: NACK {}", bad.is_err()));
    if let Err(detail) = &bad {
        eprintln!("{}: NACK detail: {detail}", binary.display());
    }
    tokio::task::block_in_place(|| {
        note(format!("after the NACK: {}", connect_until(port, "b")));
    });

    let removed = cp.push(ResourceType::Listener, "4", vec![]).await;
    note(format!("listener removed: {removed:?}"));
    tokio::task::block_in_place(|| {
        note(format!("after removal: {}", connect_until(port, "refused")));
        note(format!(
            "second connection still works: {}",
            second.still_works()
        ));
    });
    let detail = bad.err().unwrap_or_default();
    drop(proxy);
    (seen, detail)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_updates_nacks_and_removal_behave_like_envoy() {
    let Some(envoy) = e2e::require_envoy("listener_updates_nacks_and_removal_behave_like_envoy")
    else {
        return;
    };
    let (a, b) = (tagged_echo("a"), tagged_echo("b"));
    let (envoy_seen, _) = scenario(&envoy, a, b).await;
    let (our_seen, our_detail) = scenario(Path::new(PROXY), a, b).await;
    assert_eq!(our_seen, envoy_seen, "ours (left) vs Envoy (right)");
    assert_eq!(
        our_seen,
        [
            "first connection: a",
            "listener to b: Ok(())",
            "new connection: b",
            "first connection still works: true (greeted by a)",
            "duplicate chains: NACK true",
            "after the NACK: b",
            "listener removed: Ok(())",
            "after removal: refused",
            "second connection still works: true",
        ]
    );
    assert!(
        our_detail.contains("l") && our_detail.contains("filter chain"),
        "the NACK should name the listener and the problem: {our_detail}"
    );
}
