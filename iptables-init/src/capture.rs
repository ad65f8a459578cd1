//! Rule generation: a pure function from [`Config`] to the rules and host routing steps that
//! istio-iptables would program.
//!
//! The order of every rule matters (iptables evaluates top to bottom, and the restore input
//! is compared byte for byte with Istio's goldens), so this follows
//! `IptablesConfigurator.Run` in `tools/istio-iptables/pkg/capture/run.go` step by step.

use crate::args;
use crate::builder::{Family, RuleSet, Table};
use crate::config::{AGENT_DNS_PORT, Config, DnsServer, InboundPorts, IpRanges, OwnerGroups};

const ISTIO_INBOUND: &str = "ISTIO_INBOUND";
const ISTIO_REDIRECT: &str = "ISTIO_REDIRECT";
const ISTIO_IN_REDIRECT: &str = "ISTIO_IN_REDIRECT";
const ISTIO_OUTPUT: &str = "ISTIO_OUTPUT";
const ISTIO_OUTPUT_DNS: &str = "ISTIO_OUTPUT_DNS";
const ISTIO_DIVERT: &str = "ISTIO_DIVERT";
const ISTIO_TPROXY: &str = "ISTIO_TPROXY";
const ISTIO_DROP: &str = "ISTIO_DROP";

/// The mark Istio puts on the proxy's own outbound-to-app packets on `lo` in TPROXY mode.
const OUTBOUND_MARK: &str = "1338";

/// Everything istio-iptables would do to a pod's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub rules: RuleSet,
    /// Policy routing and addresses, applied after the rules.
    pub host_steps: Vec<HostStep>,
    /// Things a user should know, e.g. that DNS capture was requested but cannot happen.
    pub warnings: Vec<String>,
}

/// A change outside iptables that the capture needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostStep {
    /// `::6/128` on `lo`, the source address of inbound passthrough traffic for IPv6 (IPv4
    /// can use 127.0.0.6 because its loopback is a /8).
    Ipv6PassthroughAddress,
    /// `ip rule add fwmark <mark> lookup <table>`: TPROXY-marked packets use `table`.
    TproxyRule {
        family: Family,
        mark: u32,
        table: u32,
    },
    /// `ip route add local default dev lo table <table>`: deliver them locally.
    TproxyRoute { family: Family, table: u32 },
}

// === impl HostStep ===

impl HostStep {
    /// `ip` arguments that add this step.
    pub fn add_command(&self) -> Vec<String> {
        self.command("add")
    }

    /// `ip` arguments that remove this step.
    pub fn delete_command(&self) -> Vec<String> {
        self.command("del")
    }

    /// `ip` arguments that list what this step would add, for [`Self::is_present`].
    pub fn show_command(&self) -> Vec<String> {
        match self {
            Self::Ipv6PassthroughAddress => args!["-6", "addr", "show", "dev", "lo"],
            Self::TproxyRule {
                family,
                mark,
                table,
            } => {
                args![
                    family_flag(*family),
                    "rule",
                    "show",
                    "fwmark",
                    mark,
                    "lookup",
                    table
                ]
            }
            Self::TproxyRoute { family, table } => {
                args![family_flag(*family), "route", "show", "table", table]
            }
        }
    }

    /// Whether the output of [`Self::show_command`] shows this step already in place.
    pub fn is_present(&self, shown: &str) -> bool {
        match self {
            Self::Ipv6PassthroughAddress => shown.contains("inet6 ::6/128 "),
            Self::TproxyRule { .. } => !shown.trim().is_empty(),
            Self::TproxyRoute { .. } => {
                shown.lines().any(|l| l.starts_with("local default dev lo"))
            }
        }
    }

    fn command(&self, op: &str) -> Vec<String> {
        match self {
            Self::Ipv6PassthroughAddress => args!["-6", "addr", op, "::6/128", "dev", "lo"],
            Self::TproxyRule {
                family,
                mark,
                table,
            } => args![
                family_flag(*family),
                "rule",
                op,
                "fwmark",
                mark,
                "lookup",
                table
            ],
            Self::TproxyRoute { family, table } => {
                let default = match family {
                    Family::V4 => "0.0.0.0/0",
                    Family::V6 => "::/0",
                };
                args![
                    family_flag(*family),
                    "route",
                    op,
                    "local",
                    default,
                    "dev",
                    "lo",
                    "table",
                    table
                ]
            }
        }
    }
}

fn family_flag(family: Family) -> &'static str {
    match family {
        Family::V4 => "-4",
        Family::V6 => "-6",
    }
}

/// Computes the rules and host steps for `cfg`. Pure: reads nothing from the system.
pub fn plan(cfg: &Config) -> Plan {
    let mut b = Builder {
        cfg,
        rules: RuleSet::new(cfg.enable_ipv6),
        loopback_v4: cfg.host_ipv4_loopback_cidr.to_string(),
    };
    let mut warnings = Vec::new();
    let redirect_dns = cfg.dns_capture_enabled();
    if cfg.redirect_dns && !redirect_dns {
        warnings.push(
            "--redirect-dns is set, but --capture-all-dns is not and no DNS servers were found \
             in resolv.conf: DNS capture disabled"
                .to_string(),
        );
    }

    b.exclude_interfaces();
    b.kube_virt_interfaces_bypass();
    if cfg.drop_invalid {
        let r = &mut b.rules;
        r.append(
            Table::Mangle,
            "PREROUTING",
            args!["-m", "conntrack", "--ctstate", "INVALID", "-j", ISTIO_DROP],
        );
        r.append(Table::Mangle, ISTIO_DROP, args!["-j", "DROP"]);
    }
    b.base_chains();
    b.inbound();
    b.rules
        .append(Table::Nat, "OUTPUT", args!["-j", ISTIO_OUTPUT]);
    b.outbound_port_excludes();
    b.rules.append_versioned(Table::Nat, ISTIO_OUTPUT, |f| {
        let passthrough = match f {
            Family::V4 => "127.0.0.6/32",
            Family::V6 => "::6/128",
        };
        args!["-o", "lo", "-s", passthrough, "-j", "RETURN"]
    });
    b.proxy_owner_exemptions(redirect_dns);
    b.owner_groups();
    if redirect_dns {
        b.dns();
    }
    let loopback_v4 = b.loopback_v4.clone();
    b.rules.append_versioned(Table::Nat, ISTIO_OUTPUT, |f| {
        args!["-d", loopback(&loopback_v4, f), "-j", "RETURN"]
    });
    b.outbound_ip_excludes();
    for port in &cfg.outbound_ports_include {
        b.rules.append(
            Table::Nat,
            ISTIO_OUTPUT,
            args!["-p", "tcp", "--dport", port, "-j", ISTIO_REDIRECT],
        );
    }
    b.outbound_ip_includes(Family::V4);
    b.outbound_ip_includes(Family::V6);
    if cfg.is_tproxy() {
        b.tproxy_marks();
    }

    Plan {
        rules: b.rules,
        host_steps: host_steps(cfg),
        warnings,
    }
}

fn host_steps(cfg: &Config) -> Vec<HostStep> {
    let mut steps = Vec::new();
    if cfg.enable_ipv6 {
        steps.push(HostStep::Ipv6PassthroughAddress);
    }
    if cfg.is_tproxy() && cfg.inbound_ports_include != InboundPorts::None {
        let families: &[Family] = if cfg.enable_ipv6 {
            &Family::BOTH
        } else {
            &[Family::V4]
        };
        for &family in families {
            steps.push(HostStep::TproxyRule {
                family,
                mark: cfg.inbound_tproxy_mark,
                table: cfg.inbound_tproxy_route_table,
            });
        }
        for &family in families {
            steps.push(HostStep::TproxyRoute {
                family,
                table: cfg.inbound_tproxy_route_table,
            });
        }
    }
    steps
}

/// The app's loopback destination range for a family (`ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR`
/// for IPv4).
fn loopback(v4: &str, family: Family) -> &str {
    match family {
        Family::V4 => v4,
        Family::V6 => "::1/128",
    }
}

struct Builder<'a> {
    cfg: &'a Config,
    rules: RuleSet,
    loopback_v4: String,
}

// === impl Builder ===

impl Builder<'_> {
    /// `-c`: traffic on these interfaces is never captured, in either direction.
    fn exclude_interfaces(&mut self) {
        let nics = &self.cfg.exclude_interfaces;
        let mut tables = vec![Table::Nat];
        if self.cfg.is_tproxy() {
            tables.push(Table::Mangle);
        }
        for table in tables {
            for nic in nics {
                self.rules
                    .append(table, "PREROUTING", args!["-i", nic, "-j", "RETURN"]);
                self.rules
                    .append(table, "OUTPUT", args!["-o", nic, "-j", "RETURN"]);
            }
        }
    }

    /// `-k`: inbound traffic from these interfaces is not inbound capture (it may be
    /// outbound capture, see [`Self::outbound_ip_includes`]).
    fn kube_virt_interfaces_bypass(&mut self) {
        for nic in &self.cfg.kube_virt_interfaces {
            self.rules.insert(
                Table::Nat,
                "PREROUTING",
                1,
                args!["-i", nic, "-j", "RETURN"],
            );
        }
    }

    fn base_chains(&mut self) {
        let cfg = self.cfg;
        let r = &mut self.rules;
        r.append(
            Table::Nat,
            ISTIO_INBOUND,
            args![
                "-p",
                "tcp",
                "--dport",
                cfg.inbound_tunnel_port,
                "-j",
                "RETURN"
            ],
        );
        r.append(
            Table::Nat,
            ISTIO_REDIRECT,
            args!["-p", "tcp", "-j", "REDIRECT", "--to-ports", cfg.proxy_port],
        );
        r.append(
            Table::Nat,
            ISTIO_IN_REDIRECT,
            args![
                "-p",
                "tcp",
                "-j",
                "REDIRECT",
                "--to-ports",
                cfg.inbound_capture_port
            ],
        );
    }

    /// `-b`/`-d`/`-m`: which inbound ports go to the inbound capture port, and how.
    fn inbound(&mut self) {
        let cfg = self.cfg;
        if cfg.inbound_ports_include == InboundPorts::None {
            return;
        }
        let mark = cfg.inbound_tproxy_mark.to_string();
        let table = if cfg.is_tproxy() {
            let loopback_v4 = self.loopback_v4.clone();
            let r = &mut self.rules;
            r.append(
                Table::Mangle,
                ISTIO_DIVERT,
                args!["-j", "MARK", "--set-mark", mark],
            );
            r.append(Table::Mangle, ISTIO_DIVERT, args!["-j", "ACCEPT"]);
            r.append_versioned(Table::Mangle, ISTIO_TPROXY, |f| {
                let lo = loopback(&loopback_v4, f);
                args![
                    "!",
                    "-d",
                    lo,
                    "-p",
                    "tcp",
                    "-j",
                    "TPROXY",
                    "--tproxy-mark",
                    format!("{mark}/0xffffffff"),
                    "--on-port",
                    cfg.inbound_capture_port
                ]
            });
            Table::Mangle
        } else {
            Table::Nat
        };
        let r = &mut self.rules;
        r.append(table, "PREROUTING", args!["-p", "tcp", "-j", ISTIO_INBOUND]);
        let established = ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"];
        match &cfg.inbound_ports_include {
            InboundPorts::None => {}
            InboundPorts::All => {
                for port in &cfg.inbound_ports_exclude {
                    r.append(
                        table,
                        ISTIO_INBOUND,
                        args!["-p", "tcp", "--dport", port, "-j", "RETURN"],
                    );
                }
                if cfg.is_tproxy() {
                    let mut divert = args!["-p", "tcp"];
                    divert.extend(established.iter().map(|s| s.to_string()));
                    divert.extend(args!["-j", ISTIO_DIVERT]);
                    r.append(Table::Mangle, ISTIO_INBOUND, divert);
                    r.append(
                        Table::Mangle,
                        ISTIO_INBOUND,
                        args!["-p", "tcp", "-j", ISTIO_TPROXY],
                    );
                } else {
                    r.append(
                        Table::Nat,
                        ISTIO_INBOUND,
                        args!["-p", "tcp", "-j", ISTIO_IN_REDIRECT],
                    );
                }
            }
            InboundPorts::List(ports) => {
                for port in ports {
                    if cfg.is_tproxy() {
                        let mut divert = args!["-p", "tcp", "--dport", port];
                        divert.extend(established.iter().map(|s| s.to_string()));
                        divert.extend(args!["-j", ISTIO_DIVERT]);
                        r.append(Table::Mangle, ISTIO_INBOUND, divert);
                        r.append(
                            Table::Mangle,
                            ISTIO_INBOUND,
                            args!["-p", "tcp", "--dport", port, "-j", ISTIO_TPROXY],
                        );
                    } else {
                        r.append(
                            Table::Nat,
                            ISTIO_INBOUND,
                            args!["-p", "tcp", "--dport", port, "-j", ISTIO_IN_REDIRECT],
                        );
                    }
                }
            }
        }
    }

    /// `-o`: outbound ports never captured, TCP and UDP, before anything else.
    fn outbound_port_excludes(&mut self) {
        for port in &self.cfg.outbound_ports_exclude {
            for proto in ["tcp", "udp"] {
                self.rules.append(
                    Table::Nat,
                    ISTIO_OUTPUT,
                    args!["-p", proto, "--dport", port, "-j", "RETURN"],
                );
            }
        }
    }

    /// `-u`/`-g`: the proxy's own traffic is never captured (no loops), except its calls to
    /// the pod's own service VIP, which go back through inbound.
    fn proxy_owner_exemptions(&mut self, redirect_dns: bool) {
        let cfg = self.cfg;
        let tunnel = cfg.inbound_tunnel_port.to_string();
        let keep_loopback = !cfg.outbound_ip_ranges_include.has_loopback();
        let owners = cfg
            .proxy_uids
            .iter()
            .map(|u| ("--uid-owner", u))
            .chain(cfg.proxy_gids.iter().map(|g| ("--gid-owner", g)));
        for (flag, owner) in owners {
            let is_uid = flag == "--uid-owner";
            let loopback_v4 = self.loopback_v4.clone();
            self.rules.append_versioned(Table::Nat, ISTIO_OUTPUT, |f| {
                let lo = loopback(&loopback_v4, f);
                let mut a = args!["-o", "lo", "!", "-d", lo, "-p", "tcp"];
                // Istio skips port 53 here only for uids, so that the agent's DNS proxy
                // is not sent through inbound.
                if redirect_dns && is_uid {
                    a.extend(args![
                        "-m",
                        "multiport",
                        "!",
                        "--dports",
                        format!("53,{tunnel}")
                    ]);
                } else {
                    a.extend(args!["!", "--dport", tunnel]);
                }
                a.extend(args!["-m", "owner", flag, owner, "-j", ISTIO_IN_REDIRECT]);
                a
            });
            if keep_loopback {
                let mut a = args!["-o", "lo"];
                if redirect_dns {
                    a.extend(args!["-p", "tcp", "!", "--dport", "53"]);
                }
                a.extend(args!["-m", "owner", "!", flag, owner, "-j", "RETURN"]);
                self.rules.append(Table::Nat, ISTIO_OUTPUT, a);
            }
            self.rules.append(
                Table::Nat,
                ISTIO_OUTPUT,
                args!["-m", "owner", flag, owner, "-j", "RETURN"],
            );
        }
    }

    /// `ISTIO_OUTBOUND_OWNER_GROUPS[_EXCLUDE]`.
    fn owner_groups(&mut self) {
        match &self.cfg.owner_groups {
            OwnerGroups::AllExcept(groups) => {
                for group in groups {
                    self.rules.append(
                        Table::Nat,
                        ISTIO_OUTPUT,
                        args!["-m", "owner", "--gid-owner", group, "-j", "RETURN"],
                    );
                }
            }
            OwnerGroups::Only(groups) => {
                let mut a = Vec::new();
                for group in groups {
                    a.extend(args!["-m", "owner", "!", "--gid-owner", group]);
                }
                a.extend(args!["-j", "RETURN"]);
                self.rules.append(Table::Nat, ISTIO_OUTPUT, a);
            }
        }
    }

    /// `--redirect-dns`: DNS to the agent on 15053, with conntrack zones that keep the
    /// app<->agent and agent<->upstream UDP flows apart.
    fn dns(&mut self) {
        let cfg = self.cfg;
        let all = cfg.capture_all_dns;
        let (v4, v6) = (&cfg.dns_servers_v4, &cfg.dns_servers_v6);
        let dns_port = AGENT_DNS_PORT;
        let r = &mut self.rules;
        let per_server = |family: Family| -> (&[DnsServer], &str) {
            match family {
                Family::V4 => (v4, "/32"),
                Family::V6 => (v6, "/128"),
            }
        };

        r.append(Table::Raw, "OUTPUT", args!["-j", ISTIO_OUTPUT_DNS]);
        for family in Family::BOTH {
            if all || !per_server(family).0.is_empty() {
                r.append_for(
                    family,
                    Table::Nat,
                    ISTIO_OUTPUT,
                    args!["-j", ISTIO_OUTPUT_DNS],
                );
            }
        }
        // Istio writes `--to-ports` for TCP and `--to-port` for UDP; both mean the same.
        for (proto, to_ports) in [("tcp", "--to-ports"), ("udp", "--to-port")] {
            if all {
                r.append(
                    Table::Nat,
                    ISTIO_OUTPUT_DNS,
                    args![
                        "-p", proto, "--dport", "53", "-j", "REDIRECT", to_ports, dns_port
                    ],
                );
                continue;
            }
            for family in Family::BOTH {
                let (servers, mask) = per_server(family);
                for s in servers {
                    r.append_for(
                        family,
                        Table::Nat,
                        ISTIO_OUTPUT_DNS,
                        args![
                            "-p",
                            proto,
                            "--dport",
                            "53",
                            "-d",
                            format!("{}{mask}", s.text),
                            "-j",
                            "REDIRECT",
                            to_ports,
                            dns_port
                        ],
                    );
                }
            }
        }

        let owners = cfg
            .proxy_uids
            .iter()
            .map(|u| ("--uid-owner", u))
            .chain(cfg.proxy_gids.iter().map(|g| ("--gid-owner", g)));
        for (flag, owner) in owners {
            r.append(
                Table::Raw,
                ISTIO_OUTPUT_DNS,
                args![
                    "-p", "udp", "--dport", "53", "-m", "owner", flag, owner, "-j", "CT", "--zone",
                    "1"
                ],
            );
            r.append(
                Table::Raw,
                ISTIO_OUTPUT_DNS,
                args![
                    "-p", "udp", "--sport", dns_port, "-m", "owner", flag, owner, "-j", "CT",
                    "--zone", "2"
                ],
            );
        }
        if all {
            r.append(Table::Raw, "PREROUTING", args!["-j", ISTIO_INBOUND]);
            r.append(
                Table::Raw,
                ISTIO_OUTPUT_DNS,
                args!["-p", "udp", "--dport", "53", "-j", "CT", "--zone", "2"],
            );
            r.append(
                Table::Raw,
                ISTIO_INBOUND,
                args!["-p", "udp", "--sport", "53", "-j", "CT", "--zone", "1"],
            );
            return;
        }
        for family in Family::BOTH {
            let (servers, mask) = per_server(family);
            if !servers.is_empty() {
                r.append_for(family, Table::Raw, "PREROUTING", args!["-j", ISTIO_INBOUND]);
            }
            for s in servers {
                let addr = format!("{}{mask}", s.text);
                r.append_for(
                    family,
                    Table::Raw,
                    ISTIO_OUTPUT_DNS,
                    args![
                        "-p", "udp", "--dport", "53", "-d", addr, "-j", "CT", "--zone", "2"
                    ],
                );
                r.append_for(
                    family,
                    Table::Raw,
                    ISTIO_INBOUND,
                    args![
                        "-p", "udp", "--sport", "53", "-s", addr, "-j", "CT", "--zone", "1"
                    ],
                );
            }
        }
    }

    /// `-x`: destinations never captured.
    fn outbound_ip_excludes(&mut self) {
        let x = &self.cfg.outbound_ip_ranges_exclude;
        for net in &x.v4 {
            self.rules.append_for(
                Family::V4,
                Table::Nat,
                ISTIO_OUTPUT,
                args!["-d", net, "-j", "RETURN"],
            );
        }
        for net in &x.v6 {
            self.rules.append_for(
                Family::V6,
                Table::Nat,
                ISTIO_OUTPUT,
                args!["-d", net, "-j", "RETURN"],
            );
        }
    }

    /// `-i` (and `-k`): destinations sent to the outbound capture port.
    fn outbound_ip_includes(&mut self, family: Family) {
        let IpRanges { wildcard, v4, v6 } = &self.cfg.outbound_ip_ranges_include;
        let nics = &self.cfg.kube_virt_interfaces;
        let r = &mut self.rules;
        if *wildcard {
            r.append_for(
                family,
                Table::Nat,
                ISTIO_OUTPUT,
                args!["-j", ISTIO_REDIRECT],
            );
            for nic in nics {
                r.insert_for(
                    family,
                    Table::Nat,
                    "PREROUTING",
                    1,
                    args!["-i", nic, "-j", ISTIO_REDIRECT],
                );
            }
            return;
        }
        let cidrs: Vec<String> = match family {
            Family::V4 => v4.iter().map(ToString::to_string).collect(),
            Family::V6 => v6.iter().map(ToString::to_string).collect(),
        };
        for cidr in cidrs {
            for nic in nics {
                r.insert_for(
                    family,
                    Table::Nat,
                    "PREROUTING",
                    1,
                    args!["-i", nic, "-d", cidr, "-j", ISTIO_REDIRECT],
                );
            }
            r.append_for(
                family,
                Table::Nat,
                ISTIO_OUTPUT,
                args!["-d", cidr, "-j", ISTIO_REDIRECT],
            );
        }
    }

    /// TPROXY bookkeeping: connection marks so replies find their way back, and loop guards
    /// so the proxy's own connections to the app are not captured again.
    fn tproxy_marks(&mut self) {
        let cfg = self.cfg;
        let mark = cfg.inbound_tproxy_mark.to_string();
        let loopback_v4 = self.loopback_v4.clone();
        let r = &mut self.rules;
        r.append(
            Table::Mangle,
            "PREROUTING",
            args![
                "-p",
                "tcp",
                "-m",
                "mark",
                "--mark",
                mark,
                "-j",
                "CONNMARK",
                "--save-mark"
            ],
        );
        r.append(
            Table::Mangle,
            "OUTPUT",
            args![
                "-p", "tcp", "-o", "lo", "-m", "mark", "--mark", mark, "-j", "RETURN"
            ],
        );
        let owners = cfg
            .proxy_uids
            .iter()
            .map(|u| ("--uid-owner", u))
            .chain(cfg.proxy_gids.iter().map(|g| ("--gid-owner", g)));
        for (flag, owner) in owners {
            r.append_versioned(Table::Mangle, "OUTPUT", |f| {
                let lo = loopback(&loopback_v4, f);
                args![
                    "!",
                    "-d",
                    lo,
                    "-p",
                    "tcp",
                    "-o",
                    "lo",
                    "-m",
                    "owner",
                    flag,
                    owner,
                    "-j",
                    "MARK",
                    "--set-mark",
                    OUTBOUND_MARK
                ]
            });
        }
        r.append(
            Table::Mangle,
            "OUTPUT",
            args![
                "-p",
                "tcp",
                "-m",
                "connmark",
                "--mark",
                mark,
                "-j",
                "CONNMARK",
                "--restore-mark"
            ],
        );
        r.insert(
            Table::Mangle,
            ISTIO_INBOUND,
            1,
            args!["-p", "tcp", "-m", "mark", "--mark", mark, "-j", "RETURN"],
        );
        r.insert_for(
            Family::V4,
            Table::Mangle,
            ISTIO_INBOUND,
            2,
            args![
                "-p",
                "tcp",
                "-s",
                "127.0.0.6/32",
                "-i",
                "lo",
                "-j",
                "RETURN"
            ],
        );
        r.insert_for(
            Family::V6,
            Table::Mangle,
            ISTIO_INBOUND,
            2,
            args!["-p", "tcp", "-s", "::6/128", "-i", "lo", "-j", "RETURN"],
        );
        r.insert(
            Table::Mangle,
            ISTIO_INBOUND,
            3,
            args![
                "-p",
                "tcp",
                "-i",
                "lo",
                "-m",
                "mark",
                "!",
                "--mark",
                OUTBOUND_MARK,
                "-j",
                "RETURN"
            ],
        );
    }
}
