#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `proxy` binary's command line, run as pilot-agent and users run it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PROXY: &str = env!("CARGO_BIN_EXE_proxy");

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/istio-bootstrap")
        .join(format!("{name}_golden.json"))
}

fn proxy(args: &[&str]) -> Output {
    Command::new(PROXY)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// pkg/envoy/proxy.go's argv for an injected sidecar, after `-c <file>`.
const PILOT_AGENT_FLAGS: &[&str] = &[
    "--drain-time-s",
    "45",
    "--drain-strategy",
    "immediate",
    "--local-address-ip-version",
    "v4",
    "--file-flush-interval-msec",
    "1000",
    "--disable-hot-restart",
    "--allow-unknown-static-fields",
    "-l",
    "warning",
    "--component-log-level",
    "misc:error",
    "--concurrency",
    "2",
];

#[test]
fn pilot_agent_argv_validates_the_istio_bootstrap() {
    let config = golden("default");
    let config = config.to_str().unwrap();
    let mut args = vec!["-c", config];
    args.extend(PILOT_AGENT_FLAGS);
    args.extend(["--mode", "validate"]);
    let out = proxy(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("configuration '{config}' OK\n"));
}

#[test]
fn serve_with_pilot_agent_flags_goes_live_and_exits_cleanly_on_quitquitquit() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bootstrap.yaml");
    let admin_path = dir.path().join("admin");
    std::fs::write(
        &config,
        "admin: { address: { socket_address: { address: 127.0.0.1, port_value: 0 } } }\n\
         static_resources:\n  clusters:\n  - name: c\n    connect_timeout: 1s\n",
    )
    .unwrap();
    let mut child = Command::new(PROXY)
        .arg("-c")
        .arg(&config)
        .args(PILOT_AGENT_FLAGS)
        .arg("--admin-address-path")
        .arg(&admin_path)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let admin = wait_for_admin(&admin_path);
    let (status, body) = wait_ready(admin);
    assert_eq!((status, body.as_str()), (200, "LIVE\n"));
    let (status, _) = e2e::http::request(admin, "POST", "/quitquitquit", &[], "").unwrap();
    assert_eq!(status, 200);
    let exit = child.wait().unwrap();
    assert!(exit.success(), "exit status {exit}");
}

fn wait_for_admin(path: &Path) -> std::net::SocketAddr {
    for _ in 0..200 {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(addr) = text.trim().parse()
        {
            return addr;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("the proxy never wrote its admin address");
}

fn wait_ready(admin: std::net::SocketAddr) -> (u16, String) {
    let mut last = (0, String::new());
    for _ in 0..200 {
        if let Ok(r) = e2e::http::get(admin, "/ready") {
            if r.0 == 200 {
                return r;
            }
            last = r;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    last
}

#[test]
fn bad_flags_and_values_exit_non_zero_naming_the_flag() {
    for (args, flag) in [
        (&["--concurrency", "abc"][..], "--concurrency"),
        (&["--drain-strategy", "slow"], "--drain-strategy"),
        (
            &["--local-address-ip-version", "v5"],
            "--local-address-ip-version",
        ),
        (&["--log-level", "loud"], "--log-level"),
        (&["--mode", "dry-run"], "--mode"),
        (&["--no-such-flag"], "--no-such-flag"),
        (
            &["--component-log-level", "nosuch:info"],
            "--component-log-level",
        ),
        (&["--restart-epoch", "2"], "--restart-epoch"),
    ] {
        let out = proxy(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn version_prints_envoys_format() {
    let out = proxy(&["--version"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    let line = stdout.trim();
    let (program, version) = line.split_once("  version: ").unwrap();
    assert!(program.ends_with("proxy"), "{line}");
    // <sha>/<version>/<status>/<build type>/<ssl>, as tools that parse Envoy's expect.
    let parts: Vec<&str> = version.split('/').collect();
    assert_eq!(parts.len(), 5, "{line}");
    assert!(parts[0].chars().all(|c| c.is_ascii_hexdigit()) && parts[0].len() == 40);
    assert_eq!(parts[1], env!("CARGO_PKG_VERSION"));
    assert!(["DEBUG", "RELEASE"].contains(&parts[3]));
}

#[test]
fn help_lists_envoys_flags() {
    let out = proxy(&["--help"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    for flag in [
        "--config-path",
        "--drain-strategy",
        "--allow-unknown-static-fields",
    ] {
        assert!(stdout.contains(flag), "{flag}");
    }
}

#[test]
fn validate_failure_names_the_field_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "static_resources:\n  clusters:\n  - name: a\n    connect_timeout: 5\n",
    )
    .unwrap();
    let out = proxy(&["--mode", "validate", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("static_resources.clusters[0].connect_timeout: invalid Duration 5"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error initializing configuration"),
        "{stderr}"
    );
}

#[test]
fn unknown_fields_are_named_in_one_warning_with_the_flag() {
    let out = proxy(&[
        "--mode",
        "validate",
        "--allow-unknown-static-fields",
        "--config-yaml",
        "node: {id: a, colour: blue}\nadmin: {bogus: 1}",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("[warning]")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("node.colour") && warnings[0].contains("admin.bogus"));
}

#[test]
fn log_path_and_log_format_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("proxy.log");
    let out = proxy(&[
        "--mode",
        "validate",
        "--config-yaml",
        "node: {id: a, nope: 1}",
        "--log-path",
        log.to_str().unwrap(),
        "--log-format",
        "%l|%n|%v",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.starts_with("error|config|error initializing configuration ''"),
        "{logged}"
    );
    assert!(logged.contains("node.nope"), "{logged}");
}

#[test]
fn log_level_off_silences_a_failing_validation_like_envoy() {
    let out = proxy(&[
        "--mode",
        "validate",
        "-l",
        "off",
        "--config-yaml",
        "bogus: 1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}
