#![allow(clippy::unwrap_used, clippy::expect_used)]
//! tcp_proxy's access log in the `proxy` binary next to the real Envoy: the same bootstrap
//! (Envoy's default format and Istio's proxy format) and the same connections must write
//! the same lines, up to times, durations and the processes' own ports.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e::ProxyProcess;

const PROXY: &str = env!("CARGO_BIN_EXE_proxy");

/// Istio's default access log format (meshConfig.accessLogFormat unset).
const ISTIO_FORMAT: &str = r#"[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"#;

fn echo() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Setup {
    ports: [u16; 3],
    default_log: PathBuf,
    istio_log: PathBuf,
}

fn bootstrap(s: &Setup, echo: u16, refused: u16) -> String {
    let listener = |port: u16, name: &str, cluster: &str| {
        format!(
            r#"
  - name: {name}
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: {name}
          cluster: {cluster}
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {default}
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {istio}
              log_format: {{text_format_source: {{inline_string: "{fmt}"}}}}"#,
            default = s.default_log.display(),
            istio = s.istio_log.display(),
            fmt = ISTIO_FORMAT,
        )
    };
    let cluster = |name: &str, port: u16| {
        format!(
            r#"
  - name: {name}
    connect_timeout: 1s
    load_assignment:
      cluster_name: {name}
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]"#
        )
    };
    format!(
        "admin:\n  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}\nstatic_resources:\n  listeners:{}{}{}\n  clusters:{}{}\n",
        listener(s.ports[0], "good", "echo"),
        listener(s.ports[1], "dead", "dead"),
        listener(s.ports[2], "nowhere", "missing"),
        cluster("echo", echo),
        cluster("dead", refused),
    )
}

fn session(port: u16, payload: &[u8]) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(payload);
    let _ = s.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
}

/// The log's lines once `n` are written, with what legitimately differs masked: times,
/// durations, and ports chosen by the OS or the test.
fn lines(path: &Path, n: usize, ports: &[u16; 3]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= n || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let time = regex::Regex::new(r"^\[[^\]]+\]").unwrap();
    let mut out: Vec<String> = text
        .lines()
        .map(|l| {
            let mut l = time.replace(l, "[T]").into_owned();
            for (i, p) in ports.iter().enumerate() {
                l = l.replace(&format!(":{p} "), &format!(":LISTENER{i} "));
            }
            // Client and upstream-local ports are the OS's; the duration is the clock's.
            let fields: Vec<String> = l
                .split(' ')
                .map(|f| {
                    let ephemeral = f.starts_with("127.0.0.1:")
                        && f[10..].parse::<u32>().is_ok_and(|p| p >= 32768);
                    if ephemeral {
                        "127.0.0.1:EPHEMERAL".into()
                    } else {
                        f.to_string()
                    }
                })
                .collect();
            fields.join(" ")
        })
        .collect();
    out.sort();
    out
}

/// Masks the DURATION field (by its index among space-separated fields).
fn mask_duration(lines: Vec<String>, field: usize) -> Vec<String> {
    lines
        .into_iter()
        .map(|l| {
            let mut f: Vec<&str> = l.split(' ').collect();
            if let Some(d) = f.get_mut(field) {
                *d = "D";
            }
            f.join(" ")
        })
        .collect()
}

fn run(
    binary: &Path,
    echo_port: u16,
    refused: u16,
    dir: &Path,
    tag: &str,
) -> (Vec<String>, Vec<String>) {
    let setup = Setup {
        ports: [free_port(), free_port(), free_port()],
        default_log: dir.join(format!("{tag}-default.log")),
        istio_log: dir.join(format!("{tag}-istio.log")),
    };
    // Envoy flushes log files every 10 s by default.
    let _p = ProxyProcess::start(
        binary,
        &bootstrap(&setup, echo_port, refused),
        &["--file-flush-interval-msec", "100"],
    )
    .unwrap();
    session(setup.ports[0], b"hello");
    session(setup.ports[1], b"anyone?");
    session(setup.ports[2], b"lost");
    (
        mask_duration(lines(&setup.default_log, 3, &setup.ports), 8),
        mask_duration(lines(&setup.istio_log, 3, &setup.ports), 11),
    )
}

#[test]
fn tcp_access_log_lines_match_envoy() {
    let Some(envoy_bin) = e2e::require_envoy("tcp_access_log_lines_match_envoy") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let echo_port = echo();
    let refused = free_port();
    let envoy = run(&envoy_bin, echo_port, refused, dir.path(), "envoy");
    let ours = run(Path::new(PROXY), echo_port, refused, dir.path(), "ours");
    assert_eq!(envoy.0.len(), 3, "envoy default log: {:?}", envoy.0);
    assert_eq!(ours.0, envoy.0, "default format");
    assert_eq!(ours.1, envoy.1, "Istio's format");
}
