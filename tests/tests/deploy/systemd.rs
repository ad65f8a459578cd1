//! deploy/systemd/: the units pass `systemd-analyze verify`, say what the docs promise
//! (dedicated user, restart on failure, no capabilities), and do what they say when their
//! commands run: the proxy unit's command line is accepted by Envoy and by ours, and the
//! iptables unit's start adds Istio's rules to a network namespace that its stop removes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use crate::common::{Binary, TempDir, read, validate, workspace_binary};

const PROXY_UNIT: &str = "deploy/systemd/sidecar-proxy.service";
const IPTABLES_UNIT: &str = "deploy/systemd/sidecar-iptables.service";

/// A unit file: section -> key -> values in order (a key may repeat).
type Unit = BTreeMap<String, BTreeMap<String, Vec<String>>>;

/// Reads a unit as systemd does for our purposes: `[Section]`, `Key=Value`, `#`/`;`
/// comments, trailing-backslash continuations.
fn parse_unit(text: &str) -> Unit {
    let mut unit = Unit::new();
    let mut section = String::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with(';'))
        {
            continue;
        }
        if let Some(body) = line.strip_suffix('\\') {
            pending.push_str(body);
            pending.push(' ');
            continue;
        }
        let line = format!("{pending}{line}");
        pending.clear();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a Key=Value line: {line:?}"));
        unit.entry(section.clone())
            .or_default()
            .entry(key.trim().to_string())
            .or_default()
            .push(value.trim().to_string());
    }
    unit
}

fn one<'a>(unit: &'a Unit, section: &str, key: &str) -> &'a str {
    match unit
        .get(section)
        .and_then(|s| s.get(key))
        .map(Vec::as_slice)
    {
        Some([value]) => value,
        other => panic!("[{section}] {key}: expected one value, found {other:?}"),
    }
}

fn all<'a>(unit: &'a Unit, section: &str, key: &str) -> &'a [String] {
    unit.get(section)
        .and_then(|s| s.get(key))
        .map_or(&[], Vec::as_slice)
}

#[test]
fn units_pass_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED units_pass_systemd_analyze_verify: systemd-analyze not installed");
        return;
    }
    // verify checks that ExecStart's program exists: point it at the binaries just built.
    let dir = TempDir::new("units");
    let mut files = Vec::new();
    for unit in [PROXY_UNIT, IPTABLES_UNIT] {
        let text = read(unit)
            .replace(
                "/usr/local/bin/proxy",
                &workspace_binary("proxy").display().to_string(),
            )
            .replace(
                "/usr/local/bin/iptables-init",
                &workspace_binary("iptables-init").display().to_string(),
            );
        let name = unit.rsplit('/').next().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        files.push(path);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&files)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Unknown keys and bad values are only warnings (exit 0): any line about our units fails.
    let about_ours: Vec<&str> = stderr.lines().filter(|l| l.contains("sidecar-")).collect();
    assert!(
        out.status.success() && about_ours.is_empty(),
        "systemd-analyze verify ({}):\n{stderr}",
        out.status
    );
}

#[test]
fn proxy_unit_runs_unprivileged_as_istio_proxy_and_restarts_on_failure() {
    let unit = parse_unit(&read(PROXY_UNIT));
    assert_eq!(one(&unit, "Service", "User"), "istio-proxy");
    assert_eq!(one(&unit, "Service", "Group"), "istio-proxy");
    assert_eq!(one(&unit, "Service", "Restart"), "on-failure");
    // Ports above 1024 and REDIRECT capture need no capability.
    assert_eq!(one(&unit, "Service", "CapabilityBoundingSet"), "");
    assert_eq!(one(&unit, "Service", "AmbientCapabilities"), "");
    assert_eq!(one(&unit, "Service", "NoNewPrivileges"), "yes");
    assert_eq!(one(&unit, "Service", "ProtectSystem"), "strict");
    assert_eq!(one(&unit, "Service", "WorkingDirectory"), "/");
    assert_eq!(one(&unit, "Service", "KillSignal"), "SIGTERM");
    // systemd must wait out the drain before it kills.
    let exec = one(&unit, "Service", "ExecStart");
    let args: Vec<&str> = exec.split_whitespace().collect();
    let drain: u32 = args
        .iter()
        .position(|a| *a == "--drain-time-s")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .expect("ExecStart sets --drain-time-s");
    let stop: u32 = one(&unit, "Service", "TimeoutStopSec")
        .parse()
        .expect("TimeoutStopSec in seconds");
    assert!(
        stop > drain,
        "TimeoutStopSec={stop} must exceed --drain-time-s {drain}"
    );
    let wants = one(&unit, "Unit", "Wants");
    assert!(wants.contains("sidecar-iptables.service"), "{wants}");
}

#[test]
fn iptables_unit_is_a_oneshot_whose_stop_cleans_up() {
    let unit = parse_unit(&read(IPTABLES_UNIT));
    assert_eq!(one(&unit, "Service", "Type"), "oneshot");
    assert_eq!(one(&unit, "Service", "RemainAfterExit"), "yes");
    let start = one(&unit, "Service", "ExecStart");
    let stop = one(&unit, "Service", "ExecStop");
    assert_eq!(format!("{start} --cleanup-only"), stop);
    assert_eq!(one(&unit, "Unit", "PartOf"), "sidecar-proxy.service");
    assert_eq!(
        one(&unit, "Service", "CapabilityBoundingSet"),
        "CAP_NET_ADMIN CAP_NET_RAW"
    );
}

#[test]
fn sysusers_creates_istio_proxy_with_uid_1337() {
    let text = read("deploy/systemd/sidecar.sysusers.conf");
    let line = text
        .lines()
        .find(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .expect("one user line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&fields[..3], ["u", "istio-proxy", "1337"], "{line}");
}

#[test]
fn proxy_unit_command_line_is_accepted_by_envoy_and_ours() {
    let unit = parse_unit(&read(PROXY_UNIT));
    let exec = one(&unit, "Service", "ExecStart");
    let mut args: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(args.remove(0), "/usr/local/bin/proxy");
    let c = args
        .iter()
        .position(|a| *a == "-c")
        .expect("ExecStart has -c");
    assert_eq!(args[c + 1], "/etc/sidecar/bootstrap.yaml");
    args.drain(c..c + 2);
    // `-l` is given by validate(); drop the unit's so the flag is not repeated.
    let l = args
        .iter()
        .position(|a| *a == "-l")
        .expect("ExecStart has -l");
    args.drain(l..l + 2);

    let dir = TempDir::new("unit-cmdline");
    let config = dir.path().join("bootstrap.yaml");
    std::fs::write(&config, read("deploy/examples/tcp-proxy.yaml")).unwrap();
    for binary in [Binary::Envoy, Binary::Ours] {
        let Some(path) = binary.path("proxy_unit_command_line_is_accepted_by_envoy_and_ours")
        else {
            continue;
        };
        if let Err(e) = validate(&path, &config, &args) {
            panic!("{binary:?} refused the unit's flags {args:?}: {e}");
        }
    }
}

/// `iptables-save` of every flavor inside the namespace.
fn saved_rules(ns: &e2e::Netns) -> String {
    let mut out = String::new();
    for save in ["iptables-nft-save", "iptables-legacy-save"] {
        if let Ok(text) = ns.run(save, std::iter::empty::<&str>()) {
            out.push_str(&text);
        }
    }
    out
}

/// Runs one of the unit's Exec lines inside `ns` with only the unit's environment, as
/// systemd would.
fn exec_like_systemd(ns: &e2e::Netns, unit: &Unit, line: &str, binary: &PathBuf) {
    let mut args = line.split_whitespace();
    assert_eq!(args.next(), Some("/usr/local/bin/iptables-init"));
    let mut cmd = ns.command(binary);
    cmd.args(args).env_clear().env(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    for assignment in all(unit, "Service", "Environment") {
        let (k, v) = assignment
            .split_once('=')
            .unwrap_or_else(|| panic!("Environment={assignment}"));
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{line} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn iptables_unit_start_captures_traffic_and_stop_removes_every_rule() {
    if !e2e::require_root("iptables_unit_start_captures_traffic_and_stop_removes_every_rule") {
        return;
    }
    let unit = parse_unit(&read(IPTABLES_UNIT));
    let binary = workspace_binary("iptables-init");
    // A host with one network interface (iptables-init reads its address to tell IPv4
    // from IPv6), linked to a peer.
    let ns = e2e::Netns::new("unit").unwrap();
    let peer = e2e::Netns::new("unit-peer").unwrap();
    e2e::link(
        &ns,
        "eth0",
        &["10.0.9.2/24"],
        &peer,
        "eth0",
        &["10.0.9.1/24"],
    )
    .unwrap();
    let before = saved_rules(&ns);

    exec_like_systemd(&ns, &unit, one(&unit, "Service", "ExecStart"), &binary);
    let applied = saved_rules(&ns);
    for rule in [
        "-A OUTPUT -j ISTIO_OUTPUT",
        "-A PREROUTING -p tcp -j ISTIO_INBOUND",
        // SSH stays reachable on a VM.
        "-A ISTIO_INBOUND -p tcp -m tcp --dport 22 -j RETURN",
        "-A ISTIO_INBOUND -p tcp -m tcp --dport 15090 -j RETURN",
        "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
        "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
    ] {
        assert!(applied.contains(rule), "missing {rule:?} in:\n{applied}");
    }
    // The proxy's own traffic is exempt (uid 1337 when the user does not exist here).
    assert!(applied.contains("--uid-owner"), "{applied}");

    exec_like_systemd(&ns, &unit, one(&unit, "Service", "ExecStop"), &binary);
    let cleaned = saved_rules(&ns);
    assert!(
        !cleaned.contains("ISTIO"),
        "ExecStop left Istio rules behind:\n{cleaned}"
    );
    let rules = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("-A"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(rules(&cleaned), rules(&before));
}

#[test]
fn unit_parser_reads_continuations_and_repeated_keys() {
    let unit = parse_unit(
        "# c\n[Service]\nEnvironment=A=1\nEnvironment=B=2\nExecStart=/bin/x \\\n  --flag y\n",
    );
    assert_eq!(all(&unit, "Service", "Environment"), ["A=1", "B=2"]);
    let exec: Vec<&str> = one(&unit, "Service", "ExecStart")
        .split_whitespace()
        .collect();
    assert_eq!(exec, ["/bin/x", "--flag", "y"]);
}
