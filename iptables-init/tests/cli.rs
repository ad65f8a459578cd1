//! The `iptables-init` binary's command line, without root: dry runs, help, exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_iptables-init");

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn dry_run_prints_the_restore_input_and_touches_nothing() {
    let out = run(
        &[
            "istio-iptables",
            "-n",
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
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("# iptables-restore --noflush\n* nat\n-N ISTIO_INBOUND\n"),
        "{text}"
    );
    for rule in [
        "-A PREROUTING -p tcp -j ISTIO_INBOUND",
        "-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN",
        "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
    ] {
        assert!(
            text.contains(&format!("{rule}\n")),
            "missing {rule}\n{text}"
        );
    }
}

#[test]
fn environment_variables_configure_like_flags() {
    let out = run(
        &["-n"],
        &[
            ("ISTIO_INBOUND_PORTS", "8080,9090"),
            ("ISTIO_SERVICE_CIDR", "10.96.0.0/12"),
            ("INVALID_DROP", "true"),
            ("ISTIO_OUTBOUND_OWNER_GROUPS", "java,202"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for rule in [
        "-A ISTIO_INBOUND -p tcp --dport 8080 -j ISTIO_IN_REDIRECT",
        "-A ISTIO_OUTPUT -d 10.96.0.0/12 -j ISTIO_REDIRECT",
        "-A ISTIO_DROP -j DROP",
        "-A ISTIO_OUTPUT -m owner ! --gid-owner java -m owner ! --gid-owner 202 -j RETURN",
    ] {
        assert!(text.contains(rule), "missing {rule}\n{text}");
    }
}

#[test]
fn help_lists_every_istio_iptables_flag() {
    let out = run(&["--help"], &[]);
    assert!(out.status.success());
    let help = stdout(&out);
    for flag in [
        "-p, --envoy-port",
        "-z, --inbound-capture-port",
        "-e, --inbound-tunnel-port",
        "-u, --proxy-uid",
        "-g, --proxy-gid",
        "-m, --istio-inbound-interception-mode",
        "-b, --istio-inbound-ports",
        "-d, --istio-local-exclude-ports",
        "-i, --istio-service-cidr",
        "-x, --istio-service-exclude-cidr",
        "-q, --istio-outbound-ports",
        "-o, --istio-local-outbound-ports-exclude",
        "-k, --kube-virt-interfaces",
        "-c, --istio-exclude-interfaces",
        "-t, --istio-inbound-tproxy-mark",
        "-r, --istio-inbound-tproxy-route-table",
        "-n, --dry-run",
        "--redirect-dns",
        "--capture-all-dns",
        "--drop-invalid",
        "--dual-stack",
        "--run-validation",
        "--iptables-probe-port",
        "--probe-timeout",
        "--skip-rule-apply",
        "--reconcile",
        "--cleanup-only",
        "--force-iptables-binary",
        "--network-namespace",
        "--cni-mode",
        "--force-apply",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn bad_input_exits_non_zero_with_a_message_naming_the_culprit() {
    for (args, env, code, needle) in [
        (
            vec!["-n", "-x", "*"],
            vec![],
            1,
            "-x/--istio-service-exclude-cidr",
        ),
        (
            vec!["-n", "-d", "15090,x"],
            vec![],
            1,
            "-d/--istio-local-exclude-ports",
        ),
        (vec!["-n", "-p", "0"], vec![], 1, "-p/--envoy-port"),
        (
            vec!["-n", "--probe-timeout", "5"],
            vec![],
            1,
            "--probe-timeout",
        ),
        (
            vec!["-n"],
            vec![("ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE", "a,b")],
            1,
            "ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE",
        ),
        (vec!["-n"], vec![("REDIRECT_DNS", "yes")], 1, "REDIRECT_DNS"),
        (vec!["-n", "-k", "eth0/1"], vec![], 1, "eth0/1"),
        (vec!["-n", "--bogus"], vec![], 2, "--bogus"),
        (vec!["-n", "--dry-run", "extra"], vec![], 2, "extra"),
    ] {
        let out = run(&args, &env);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?} {env:?}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
        assert!(
            stdout(&out).is_empty(),
            "nothing is printed as rules on error"
        );
    }
}
