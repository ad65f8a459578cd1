//! iptables-init on the real kernel: each test makes a "pod" network namespace linked to a
//! "peer" namespace by a veth pair, runs the real binary inside the pod (as istio-init
//! would), and checks where real connections end up. Needs root; skipped otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::Output;

use e2e::{AddrServer, Netns, connect_as, connect_from, link, require_root};

const BIN: &str = env!("CARGO_BIN_EXE_iptables-init");

/// The injector's default `istio-init` arguments.
const INJECTOR_DEFAULT: &[&str] = &[
    "-p",
    "15001",
    "-z",
    "15006",
    "-u",
    "1337",
    "-m",
    "REDIRECT",
    "-i",
    "*",
    "-x",
    "",
    "-b",
    "*",
    "-d",
    "15090,15021,15020",
];

const APP_UID: u32 = 1000;
const PROXY_UID: u32 = 1337;

struct Env {
    pod: Netns,
    peer: Netns,
}

/// A pod (10.0.1.2, fd00:1::2) and a peer (10.0.1.1, fd00:1::1) on one link; the pod's
/// default routes point at the peer.
fn pod_and_peer() -> Env {
    let pod = Netns::new("pod").unwrap();
    let peer = Netns::new("peer").unwrap();
    link(
        &pod,
        "eth0",
        &["10.0.1.2/24", "fd00:1::2/64"],
        &peer,
        "eth0",
        &["10.0.1.1/24", "fd00:1::1/64"],
    )
    .unwrap();
    pod.ip(["route", "add", "default", "via", "10.0.1.1"])
        .unwrap();
    pod.ip(["-6", "route", "add", "default", "via", "fd00:1::1"])
        .unwrap();
    Env { pod, peer }
}

fn iptables_init(ns: &Netns, args: &[&str]) -> Output {
    ns.command(BIN).args(args).output().unwrap()
}

/// Runs iptables-init and requires success; returns its stderr (the log).
fn apply(ns: &Netns, args: &[&str]) -> String {
    let out = iptables_init(ns, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "iptables-init {args:?} failed: {stderr}"
    );
    stderr
}

fn with(base: &[&'static str], extra: &[&'static str]) -> Vec<&'static str> {
    base.iter().chain(extra).copied().collect()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The value of `key=` in a server reply.
fn field<'a>(reply: &'a str, key: &str) -> &'a str {
    reply
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in {reply:?}"))
}

fn label(reply: &str) -> &str {
    reply.split_whitespace().next().unwrap_or_default()
}

/// Everything a run can change: iptables and ip6tables rules, policy routing, `lo`
/// addresses. Counters and comments are dropped.
fn snapshot(ns: &Netns) -> String {
    let mut out = String::new();
    for cmd in ["iptables-save", "ip6tables-save"] {
        let text = ns.run(cmd, [] as [&str; 0]).unwrap();
        out.push_str(&format!("== {cmd}\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            // ":OUTPUT ACCEPT [3:120]" -> ":OUTPUT ACCEPT"
            let line = match line.find(" [") {
                Some(i) if line.starts_with(':') => &line[..i],
                _ => line,
            };
            out.push_str(line);
            out.push('\n');
        }
    }
    for args in [
        &["-4", "rule", "show"][..],
        &["-6", "rule", "show"],
        &["-4", "route", "show", "table", "all"],
        &["-6", "route", "show", "table", "all"],
        &["-6", "addr", "show", "dev", "lo"],
    ] {
        let text = ns.ip(args).unwrap_or_default();
        out.push_str(&format!("== ip {}\n", args.join(" ")));
        for line in text.lines().filter(|l| !l.contains("valid_lft")) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Rules a pod might already have before istio-init runs, in every table and family.
fn seed_user_rules(ns: &Netns) {
    for (tool, rules) in [
        (
            "iptables",
            &[
                "-t nat -A OUTPUT -d 10.9.9.9/32 -j RETURN",
                "-t mangle -A PREROUTING -i eth9 -j RETURN",
                "-t raw -A OUTPUT -p udp --dport 9999 -j RETURN",
                "-t filter -A INPUT -s 10.8.8.8/32 -j DROP",
            ][..],
        ),
        (
            "ip6tables",
            &[
                "-t nat -A OUTPUT -d fd00:9::9/128 -j RETURN",
                "-t mangle -A PREROUTING -i eth9 -j RETURN",
                "-t raw -A OUTPUT -p udp --dport 9999 -j RETURN",
                "-t filter -A INPUT -s fd00:8::8/128 -j DROP",
            ],
        ),
    ] {
        for rule in rules {
            ns.run(tool, rule.split(' ')).unwrap();
        }
    }
}

#[test]
fn redirect_mode_captures_outbound_and_inbound_on_ipv4_and_ipv6() {
    if !require_root("redirect_mode_captures_outbound_and_inbound_on_ipv4_and_ipv6") {
        return;
    }
    let env = pod_and_peer();
    apply(&env.pod, &with(INJECTOR_DEFAULT, &["--dual-stack"]));

    let all = |port: u16| {
        [
            addr(&format!("0.0.0.0:{port}")),
            addr(&format!("[::]:{port}")),
        ]
    };
    let _outbound = AddrServer::start(&env.pod, "outbound-listener", &all(15001), false).unwrap();
    let _inbound = AddrServer::start(&env.pod, "inbound-listener", &all(15006), false).unwrap();
    let app_ports: Vec<SocketAddr> = [15090, 15021, 15020]
        .iter()
        .map(|p| addr(&format!("0.0.0.0:{p}")))
        .collect();
    let _app = AddrServer::start(&env.pod, "app", &app_ports, false).unwrap();
    let _remote = AddrServer::start(&env.peer, "remote", &all(80), false).unwrap();

    // An app process connecting out lands on 15001, which recovers the real destination.
    for dest in ["10.0.1.1:80", "[fd00:1::1]:80"] {
        let reply = connect_as(&env.pod, APP_UID, addr(dest)).unwrap();
        assert_eq!(label(&reply), "outbound-listener", "{dest}: {reply}");
        assert_eq!(field(&reply, "orig"), dest, "{reply}");
    }
    // The proxy's own connections (uid 1337) are not captured: no loop.
    for dest in ["10.0.1.1:80", "[fd00:1::1]:80"] {
        let reply = connect_as(&env.pod, PROXY_UID, addr(dest)).unwrap();
        assert_eq!(label(&reply), "remote", "{dest}: {reply}");
    }
    // Inbound connections to any pod port land on 15006 with the original destination.
    for (dest, from) in [
        ("10.0.1.2:8080", "10.0.1.1"),
        ("[fd00:1::2]:8080", "fd00:1::1"),
    ] {
        let reply = connect_from(&env.peer, addr(dest)).unwrap();
        assert_eq!(label(&reply), "inbound-listener", "{dest}: {reply}");
        assert_eq!(field(&reply, "orig"), dest, "{reply}");
        let peer: SocketAddr = field(&reply, "peer").parse().unwrap();
        assert_eq!(peer.ip().to_string(), from);
    }
    // ... except the excluded ports (-d), which reach the app directly.
    for port in [15090, 15021, 15020] {
        let reply = connect_from(&env.peer, addr(&format!("10.0.1.2:{port}"))).unwrap();
        assert_eq!(label(&reply), "app", "port {port}: {reply}");
        assert_eq!(field(&reply, "local"), format!("10.0.1.2:{port}"));
    }
    // IPv6 inbound passthrough traffic is sourced from ::6, which is added to lo.
    assert!(
        env.pod
            .ip(["-6", "addr", "show", "dev", "lo"])
            .unwrap()
            .contains("::6/128")
    );
}

#[test]
fn tproxy_mode_delivers_inbound_with_original_source_and_destination() {
    if !require_root("tproxy_mode_delivers_inbound_with_original_source_and_destination") {
        return;
    }
    let env = pod_and_peer();
    let args = [
        "-p",
        "15001",
        "-z",
        "15006",
        "-u",
        "1337",
        "-m",
        "TPROXY",
        "-i",
        "*",
        "-x",
        "",
        "-b",
        "*",
        "-d",
        "15090,15021,15020",
        "--dual-stack",
    ];
    apply(&env.pod, &args);
    let listen = [addr("0.0.0.0:15006"), addr("[::]:15006")];
    let _inbound = AddrServer::start(&env.pod, "tproxy-listener", &listen, true).unwrap();

    for (dest, from) in [
        ("10.0.1.2:8080", "10.0.1.1"),
        ("[fd00:1::2]:9443", "fd00:1::1"),
    ] {
        let reply = connect_from(&env.peer, addr(dest)).unwrap();
        assert_eq!(label(&reply), "tproxy-listener", "{dest}: {reply}");
        // A transparent socket sees the real destination as its own address...
        assert_eq!(field(&reply, "local"), dest, "{reply}");
        // ... and the real client as its peer.
        let peer: SocketAddr = field(&reply, "peer").parse().unwrap();
        assert_eq!(peer.ip().to_string(), from, "{reply}");
    }
    let rules = env.pod.ip(["-4", "rule", "show"]).unwrap();
    assert!(rules.contains("fwmark 0x539 lookup 133"), "{rules}");
    let routes = env.pod.ip(["-6", "route", "show", "table", "133"]).unwrap();
    assert!(routes.contains("local default dev lo"), "{routes}");
}

/// Receives one UDP datagram inside `ns` and returns who sent it.
fn udp_receiver(ns: &Netns, bind: &str) -> std::thread::JoinHandle<std::io::Result<String>> {
    let bind = addr(bind);
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = ns.spawn(move || {
        let socket = std::net::UdpSocket::bind(bind)?;
        socket.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        let _ = tx.send(());
        let mut buf = [0u8; 512];
        let (n, from) = socket.recv_from(&mut buf)?;
        Ok(format!(
            "{} from={from}",
            String::from_utf8_lossy(&buf[..n])
        ))
    });
    rx.recv().unwrap();
    handle
}

/// Sends one UDP datagram from inside `ns` as `uid`.
fn send_udp_as(ns: &Netns, uid: u32, to: &str, payload: &str) {
    let to = addr(to);
    let script = format!("printf %s {payload} > /dev/udp/{}/{}", to.ip(), to.port());
    let out = ns
        .enter(move || {
            use std::os::unix::process::CommandExt;
            std::process::Command::new("bash")
                .args(["-c", &script])
                .uid(uid)
                .gid(uid)
                .output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dns_capture_sends_app_queries_to_the_agent_and_lets_the_proxy_through() {
    if !require_root("dns_capture_sends_app_queries_to_the_agent_and_lets_the_proxy_through") {
        return;
    }
    let env = pod_and_peer();
    // The pod's resolver is the peer; iptables-init reads it from resolv.conf.
    env.pod.set_resolv_conf("nameserver 10.0.1.1\n").unwrap();
    apply(&env.pod, &with(INJECTOR_DEFAULT, &["--redirect-dns"]));

    // An app's UDP query to the resolver reaches the agent's DNS proxy on 15053.
    let agent = udp_receiver(&env.pod, "127.0.0.1:15053");
    send_udp_as(&env.pod, APP_UID, "10.0.1.1:53", "app-query");
    let got = agent.join().unwrap().unwrap();
    assert!(got.starts_with("app-query from=10.0.1.2:"), "{got}");

    // The agent itself (proxy uid) reaches the real resolver.
    let resolver = udp_receiver(&env.peer, "10.0.1.1:53");
    send_udp_as(&env.pod, PROXY_UID, "10.0.1.1:53", "agent-query");
    let got = resolver.join().unwrap().unwrap();
    assert!(got.starts_with("agent-query from=10.0.1.2:"), "{got}");

    // DNS over TCP is captured too.
    let _agent_tcp =
        AddrServer::start(&env.pod, "agent-dns", &[addr("127.0.0.1:15053")], false).unwrap();
    let reply = connect_as(&env.pod, APP_UID, addr("10.0.1.1:53")).unwrap();
    assert_eq!(label(&reply), "agent-dns", "{reply}");
    assert_eq!(field(&reply, "orig"), "10.0.1.1:53");
}

#[test]
fn reapplying_changes_nothing_and_cleanup_restores_the_exact_previous_state() {
    if !require_root("reapplying_changes_nothing_and_cleanup_restores_the_exact_previous_state") {
        return;
    }
    let env = pod_and_peer();
    seed_user_rules(&env.pod);
    let before = snapshot(&env.pod);

    // Every table in both families, plus policy routing and the ::6 address.
    let args = [
        "-p",
        "15001",
        "-z",
        "15006",
        "-u",
        "1337",
        "-m",
        "TPROXY",
        "-i",
        "*",
        "-x",
        "192.168.0.0/16,fd00:5::/64",
        "-b",
        "*",
        "-d",
        "15090,15021,15020",
        "-o",
        "5432",
        "--redirect-dns",
        "--capture-all-dns",
        "--drop-invalid",
        "--dual-stack",
    ];
    apply(&env.pod, &args);
    let applied = snapshot(&env.pod);
    assert_ne!(applied, before);
    for needle in [
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
        "-A ISTIO_TPROXY ! -d ::1/128 -p tcp -j TPROXY",
        "-j CT --zone 2",
        "-A ISTIO_DROP -j DROP",
        "fwmark 0x539 lookup 133",
        "inet6 ::6/128",
    ] {
        assert!(applied.contains(needle), "missing {needle:?} in\n{applied}");
    }

    let log = apply(&env.pod, &args);
    assert!(log.contains("already in place"), "{log}");
    assert_eq!(snapshot(&env.pod), applied, "re-applying changed something");

    apply(&env.pod, &with(&args, &["--cleanup-only"]));
    assert_eq!(
        snapshot(&env.pod),
        before,
        "cleanup did not restore the state from before"
    );
}

#[test]
fn cleanup_in_a_fresh_namespace_leaves_nothing_not_even_empty_tables() {
    if !require_root("cleanup_in_a_fresh_namespace_leaves_nothing_not_even_empty_tables") {
        return;
    }
    let env = pod_and_peer();
    let before = snapshot(&env.pod);
    apply(
        &env.pod,
        &with(INJECTOR_DEFAULT, &["--dual-stack", "--drop-invalid"]),
    );
    assert_ne!(snapshot(&env.pod), before);
    apply(
        &env.pod,
        &with(
            INJECTOR_DEFAULT,
            &["--dual-stack", "--drop-invalid", "--cleanup-only"],
        ),
    );
    assert_eq!(snapshot(&env.pod), before);
}

#[test]
fn legacy_iptables_backend_works_the_same() {
    if !require_root("legacy_iptables_backend_works_the_same") {
        return;
    }
    let env = pod_and_peer();
    // Legacy tables cannot be removed, so give every table a user rule first; then the
    // state after cleanup must be exactly the state before.
    for rule in [
        "-t nat -A OUTPUT -d 10.9.9.9/32 -j RETURN",
        "-t filter -A INPUT -s 10.8.8.8/32 -j DROP",
    ] {
        env.pod.run("iptables-legacy", rule.split(' ')).unwrap();
    }
    let legacy_save = |ns: &Netns| ns.run("iptables-legacy-save", [] as [&str; 0]).unwrap();
    let strip = |s: String| {
        s.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(" [").next().unwrap_or(l).to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let before = strip(legacy_save(&env.pod));
    // Rules already exist in legacy, so detection picks legacy without being told.
    let log = apply(&env.pod, INJECTOR_DEFAULT);
    assert!(log.contains("iptables-legacy"), "{log}");
    assert!(legacy_save(&env.pod).contains("-A ISTIO_OUTPUT -j ISTIO_REDIRECT"));
    assert!(
        !env.pod
            .run("iptables-nft-save", [] as [&str; 0])
            .unwrap()
            .contains("ISTIO")
    );

    let _outbound = AddrServer::start(
        &env.pod,
        "outbound-listener",
        &[addr("0.0.0.0:15001")],
        false,
    )
    .unwrap();
    let reply = connect_as(&env.pod, APP_UID, addr("10.0.1.1:80")).unwrap();
    assert_eq!(field(&reply, "orig"), "10.0.1.1:80", "{reply}");

    let log = apply(&env.pod, INJECTOR_DEFAULT);
    assert!(log.contains("already in place"), "{log}");
    apply(&env.pod, &with(INJECTOR_DEFAULT, &["--cleanup-only"]));
    assert_eq!(strip(legacy_save(&env.pod)), before);
}

#[test]
fn drifted_rules_need_reconcile_and_reconcile_repairs_them() {
    if !require_root("drifted_rules_need_reconcile_and_reconcile_repairs_them") {
        return;
    }
    let env = pod_and_peer();
    apply(&env.pod, INJECTOR_DEFAULT);
    let good = snapshot(&env.pod);

    // Someone deletes the rule that sends outbound traffic to the proxy.
    env.pod
        .run(
            "iptables",
            ["-t", "nat", "-D", "ISTIO_OUTPUT", "-j", "ISTIO_REDIRECT"],
        )
        .unwrap();
    let drifted = snapshot(&env.pod);

    // Without --reconcile the run fails (the chains exist), rolls back, and says what to do.
    let out = iptables_init(&env.pod, INJECTOR_DEFAULT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--reconcile"), "{stderr}");
    assert!(stderr.contains("rolled back"), "{stderr}");
    assert_eq!(
        snapshot(&env.pod),
        drifted,
        "a failed run must leave things as they were"
    );

    let log = apply(&env.pod, &with(INJECTOR_DEFAULT, &["--reconcile"]));
    assert!(log.contains("drifted"), "{log}");
    assert_eq!(
        snapshot(&env.pod),
        good,
        "reconcile did not restore the rules"
    );
    // The temporary DROP guardrails are gone again.
    let filter = env.pod.run("iptables-save", ["-t", "filter"]).unwrap();
    assert!(!filter.contains("-j DROP"), "{filter}");
}

#[test]
fn a_failed_restore_rolls_back_tables_already_committed() {
    if !require_root("a_failed_restore_rolls_back_tables_already_committed") {
        return;
    }
    let env = pod_and_peer();
    // A leftover empty ISTIO_OUTPUT chain in nat: iptables-restore commits the mangle table
    // (TPROXY rules) and then fails on `-N ISTIO_OUTPUT` in nat.
    env.pod
        .run("iptables", ["-t", "nat", "-N", "ISTIO_OUTPUT"])
        .unwrap();
    let before = snapshot(&env.pod);
    let args = [
        "-p", "15001", "-z", "15006", "-u", "1337", "-m", "TPROXY", "-i", "*", "-b", "*",
    ];
    let out = iptables_init(&env.pod, &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("rolled back"), "{stderr}");
    // The mangle rules that were committed are gone; the user's chain is still there.
    assert_eq!(snapshot(&env.pod), before);
}

#[test]
fn an_ipv6_failure_rolls_back_the_ipv4_rules() {
    if !require_root("an_ipv6_failure_rolls_back_the_ipv4_rules") {
        return;
    }
    let env = pod_and_peer();
    env.pod
        .run("ip6tables", ["-t", "nat", "-N", "ISTIO_INBOUND"])
        .unwrap();
    let before = snapshot(&env.pod);
    let out = iptables_init(&env.pod, &with(INJECTOR_DEFAULT, &["--dual-stack"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("IPv6"), "{stderr}");
    assert_eq!(snapshot(&env.pod), before, "IPv4 rules were left behind");
}

#[test]
fn validation_probe_passes_with_rules_and_exits_126_without() {
    if !require_root("validation_probe_passes_with_rules_and_exits_126_without") {
        return;
    }
    let env = pod_and_peer();
    // The istio-validation container runs as the proxy uid, after rules exist.
    let validate = |ns: &Netns, timeout: &'static str| {
        let args = [
            "--run-validation",
            "--skip-rule-apply",
            "--probe-timeout",
            timeout,
        ];
        ns.enter(move || {
            use std::os::unix::process::CommandExt;
            std::process::Command::new(BIN)
                .args(args)
                .uid(PROXY_UID)
                .gid(PROXY_UID)
                .output()
        })
        .unwrap()
    };

    let out = validate(&env.pod, "1s");
    assert_eq!(
        out.status.code(),
        Some(126),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("iptables validation failed"));

    apply(&env.pod, INJECTOR_DEFAULT);
    let out = validate(&env.pod, "10s");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_input_fails_clearly_and_touches_nothing() {
    if !require_root("bad_input_fails_clearly_and_touches_nothing") {
        return;
    }
    let env = pod_and_peer();
    let before = snapshot(&env.pod);
    for (args, code, needle) in [
        (vec!["-x", "*"], 1, "-x/--istio-service-exclude-cidr"),
        (vec!["-b", "80,http"], 1, "\"http\""),
        (vec!["-i", "10.0.0.0/33"], 1, "10.0.0.0/33"),
        (vec!["-m", "BOGUS"], 1, "BOGUS"),
        (vec!["--no-such-flag"], 2, "--no-such-flag"),
        (
            vec!["-b", "*", "--force-iptables-binary", "iptables-foo"],
            1,
            "iptables-foo",
        ),
    ] {
        let out = iptables_init(&env.pod, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    // With no iptables binary at all, the run stops before changing anything.
    let out = env
        .pod
        .command("env")
        .arg("PATH=/nonexistent")
        .arg(BIN)
        .args(INJECTOR_DEFAULT)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no iptables binary found"), "{stderr}");
    assert_eq!(snapshot(&env.pod), before);
}
