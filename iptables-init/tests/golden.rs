//! Conformance with istio-iptables: for each of Istio's own golden files (copied verbatim
//! into `tests/golden/`, see README.txt there), the same flags must produce byte-identical
//! `iptables-restore` input for IPv4 and IPv6: same tables, chains, rules and order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use iptables_init::builder::Family;
use iptables_init::capture::plan;
use iptables_init::cli::{Env, parse_args, resolve};
use iptables_init::config::DnsServer;
use iptables_init::system::System;

/// What Istio's tests stub out of the system: IPv6 detection and resolv.conf.
struct Stub {
    ipv6: bool,
    nameservers: &'static [&'static str],
}

impl System for Stub {
    fn pod_is_ipv6(&self, _dual_stack: bool) -> Result<bool, String> {
        Ok(self.ipv6)
    }
    fn nameservers(&self) -> Result<Vec<DnsServer>, String> {
        self.nameservers.iter().map(|s| s.parse()).collect()
    }
    fn uid_of(&self, _user: &str) -> Option<u32> {
        None
    }
}

struct NoEnv;

impl Env for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

/// The restore input our flags produce: the IPv4 block, then the IPv6 block.
fn generate(args: &[&str], sys: &Stub) -> String {
    let mut argv = vec!["iptables-init"];
    argv.extend_from_slice(args);
    let cfg = resolve(&parse_args(argv).unwrap(), &NoEnv, sys).unwrap();
    let p = plan(&cfg);
    p.rules.restore_input(Family::V4) + &p.rules.restore_input(Family::V6)
}

/// A golden file without istio's `iptables-save` probe lines: the restore input alone.
fn golden(case: &str) -> String {
    let path = format!("{}/tests/golden/{case}.golden", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|l| *l != "iptables-save" && *l != "ip6tables-save")
        .map(|l| format!("{l}\n"))
        .collect()
}

fn check(case: &str, args: &[&str], sys: Stub) {
    let ours = generate(args, &sys);
    let want = golden(case);
    if ours != want {
        let diff: Vec<String> = diff_lines(&want, &ours);
        panic!(
            "{case}: our rules differ from Istio's golden\n--- golden\n+++ ours\n{}",
            diff.join("\n")
        );
    }
}

/// A minimal line diff for readable failures.
fn diff_lines(a: &str, b: &str) -> Vec<String> {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut out = Vec::new();
    for i in 0..a.len().max(b.len()) {
        match (a.get(i), b.get(i)) {
            (Some(x), Some(y)) if x == y => out.push(format!("  {x}")),
            (x, y) => {
                if let Some(x) = x {
                    out.push(format!("- {x}"));
                }
                if let Some(y) = y {
                    out.push(format!("+ {y}"));
                }
            }
        }
    }
    out
}

const V4: Stub = Stub {
    ipv6: false,
    nameservers: &[],
};

/// Istio's base test config: `-p 15001 -z 15006 -e 15008 -u 1337 -g 1337 -t 1337 -r 133`.
const BASE: &[&str] = &[
    "-p", "15001", "-z", "15006", "-e", "15008", "-u", "1337", "-g", "1337", "-t", "1337", "-r",
    "133",
];

fn with_base(extra: &[&'static str]) -> Vec<&'static str> {
    BASE.iter().chain(extra).copied().collect()
}

#[test]
fn empty() {
    check("empty", &with_base(&[]), V4);
}

#[test]
fn inbound_ports_wildcard() {
    check("inbound-ports-wildcard", &with_base(&["-b", "*"]), V4);
}

#[test]
fn kube_virt_interfaces() {
    check(
        "kube-virt-interfaces",
        &with_base(&["-k", "eth1,eth2", "-i", "*"]),
        V4,
    );
}

#[test]
fn cni_basic() {
    let args = [
        "-p",
        "15001",
        "-z",
        "15006",
        "-u",
        "1337",
        "-g",
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
        "15020,15021,15090",
        "-o",
        "15020",
    ];
    check("cni-basic", &args, V4);
}

#[test]
fn tproxy() {
    let args = with_base(&[
        "-m",
        "TPROXY",
        "-b",
        "*",
        "-x",
        "1.1.0.0/16",
        "-i",
        "9.9.0.0/16",
        "-n",
        "--redirect-dns",
        "-c",
        "not-istio-nic",
    ]);
    let sys = Stub {
        ipv6: true,
        nameservers: &["127.0.0.53"],
    };
    check("tproxy", &args, sys);
}

#[test]
fn inbound_ports_wildcard_tproxy() {
    check(
        "inbound-ports-wildcard-tproxy",
        &with_base(&["-b", "*", "-m", "TPROXY"]),
        V4,
    );
}

#[test]
fn ipv6_uid_gid() {
    let args = with_base(&[
        "-b",
        "4000,5000",
        "-d",
        "6000,7000",
        "-k",
        "eth0,eth1",
        "-g",
        "1,2",
        "-u",
        "3,4",
        "-x",
        "2001:db8::/32",
        "-i",
        "2001:db8::/32",
    ]);
    let sys = Stub {
        ipv6: true,
        nameservers: &[],
    };
    check("ipv6-uid-gid", &args, sys);
}

#[test]
fn ip_range() {
    let args = with_base(&[
        "-x",
        "1.1.0.0/16",
        "-i",
        "9.9.0.0/16",
        "-n",
        "--redirect-dns",
        "-g",
        "1,2",
        "-u",
        "3,4",
    ]);
    let sys = Stub {
        ipv6: false,
        nameservers: &["127.0.0.53"],
    };
    check("ip-range", &args, sys);
}

#[test]
fn dns_uid_gid() {
    let args = with_base(&["--redirect-dns", "-g", "1,2", "-u", "3,4"]);
    let sys = Stub {
        ipv6: true,
        nameservers: &["127.0.0.53", "::127.0.0.53"],
    };
    check("dns-uid-gid", &args, sys);
}

#[test]
fn drop_invalid() {
    check("drop-invalid", &with_base(&["--drop-invalid"]), V4);
}

/// The injector's default `istio-init` args produce the cni-basic rules, minus the CNI-only
/// `-o 15020` exclusion and with the `-d` ports in the order given.
#[test]
fn injector_default_matches_cni_basic_without_cni_extras() {
    let args = [
        "istio-iptables",
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
        "--log_output_level=default:info",
    ];
    let want = golden("cni-basic")
        .lines()
        .filter(|l| !l.starts_with("-A ISTIO_OUTPUT -p tcp --dport 15020"))
        .filter(|l| !l.starts_with("-A ISTIO_OUTPUT -p udp --dport 15020"))
        .map(|l| match l {
            "-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN" => {
                "-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN"
            }
            "-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN" => {
                "-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN"
            }
            other => other,
        })
        .map(|l| format!("{l}\n"))
        .collect::<String>();
    assert_eq!(generate(&args, &V4), want);
}

/// Every golden case is covered by a test above.
#[test]
fn every_golden_has_a_test() {
    let source = include_str!("golden.rs");
    let dir = format!("{}/tests/golden", env!("CARGO_MANIFEST_DIR"));
    let mut cases = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if let Some(case) = name.strip_suffix(".golden") {
            cases += 1;
            assert!(
                source.contains(&format!("check(\"{case}\""))
                    || source.contains(&format!("\"{case}\",")),
                "golden {case} has no test"
            );
        }
    }
    assert_eq!(cases, 10);
}
