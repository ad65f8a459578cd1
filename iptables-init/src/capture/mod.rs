//! Rule generation: a pure function from [`Config`] to the rules and host routing steps that
//! istio-iptables would program.
//!
//! The order of every rule matters (iptables evaluates top to bottom, and the restore input
//! is compared byte for byte with Istio's goldens), so this follows
//! `IptablesConfigurator.Run` in `tools/istio-iptables/pkg/capture/run.go` step by step.

mod dns;
mod host;

pub use host::HostStep;

use crate::builder::{Family, RuleSet, Table};
use crate::config::{Config, InboundPorts, IpRanges, OwnerGroups};

pub(crate) const ISTIO_INBOUND: &str = "ISTIO_INBOUND";
const ISTIO_REDIRECT: &str = "ISTIO_REDIRECT";
const ISTIO_IN_REDIRECT: &str = "ISTIO_IN_REDIRECT";
pub(crate) const ISTIO_OUTPUT: &str = "ISTIO_OUTPUT";
pub(crate) const ISTIO_OUTPUT_DNS: &str = "ISTIO_OUTPUT_DNS";
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
        let prerouting = format!("-m conntrack --ctstate INVALID -j {ISTIO_DROP}");
        b.rules.append(Table::Mangle, "PREROUTING", &prerouting);
        b.rules.append(Table::Mangle, ISTIO_DROP, "-j DROP");
    }
    b.base_chains();
    b.inbound();
    b.rules
        .append(Table::Nat, "OUTPUT", &format!("-j {ISTIO_OUTPUT}"));
    b.outbound_port_excludes();
    b.rules.append_versioned(Table::Nat, ISTIO_OUTPUT, |f| {
        let passthrough = match f {
            Family::V4 => "127.0.0.6/32",
            Family::V6 => "::6/128",
        };
        format!("-o lo -s {passthrough} -j RETURN")
    });
    b.proxy_owner_exemptions(redirect_dns);
    b.owner_groups();
    if redirect_dns {
        dns::capture(cfg, &mut b.rules);
    }
    let lo4 = b.loopback_v4.as_str();
    b.rules.append_versioned(Table::Nat, ISTIO_OUTPUT, |f| {
        format!("-d {} -j RETURN", loopback(lo4, f))
    });
    b.outbound_ip_excludes();
    for port in &cfg.outbound_ports_include {
        let rule = format!("-p tcp --dport {port} -j {ISTIO_REDIRECT}");
        b.rules.append(Table::Nat, ISTIO_OUTPUT, &rule);
    }
    b.outbound_ip_includes(Family::V4);
    b.outbound_ip_includes(Family::V6);
    if cfg.is_tproxy() {
        b.tproxy_marks();
    }

    Plan {
        rules: b.rules,
        host_steps: host::steps(cfg),
        warnings,
    }
}

/// The app's loopback destination range for a family (`ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR`
/// for IPv4).
fn loopback(v4: &str, family: Family) -> &str {
    match family {
        Family::V4 => v4,
        Family::V6 => "::1/128",
    }
}

/// The proxy's uids and gids as `--uid-owner`/`--gid-owner` matches, uids first.
fn proxy_owners(cfg: &Config) -> impl Iterator<Item = (&'static str, &String)> {
    let uids = cfg.proxy_uids.iter().map(|u| ("--uid-owner", u));
    uids.chain(cfg.proxy_gids.iter().map(|g| ("--gid-owner", g)))
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
        let mut tables = vec![Table::Nat];
        if self.cfg.is_tproxy() {
            tables.push(Table::Mangle);
        }
        for table in tables {
            for nic in &self.cfg.exclude_interfaces {
                let r = &mut self.rules;
                r.append(table, "PREROUTING", &format!("-i {nic} -j RETURN"));
                r.append(table, "OUTPUT", &format!("-o {nic} -j RETURN"));
            }
        }
    }

    /// `-k`: inbound traffic from these interfaces is not inbound capture (it may be
    /// outbound capture, see [`Self::outbound_ip_includes`]).
    fn kube_virt_interfaces_bypass(&mut self) {
        for nic in &self.cfg.kube_virt_interfaces {
            let rule = format!("-i {nic} -j RETURN");
            self.rules.insert(Table::Nat, "PREROUTING", 1, &rule);
        }
    }

    fn base_chains(&mut self) {
        let cfg = self.cfg;
        let r = &mut self.rules;
        let tunnel = cfg.inbound_tunnel_port;
        r.append(
            Table::Nat,
            ISTIO_INBOUND,
            &format!("-p tcp --dport {tunnel} -j RETURN"),
        );
        let out = cfg.proxy_port;
        r.append(
            Table::Nat,
            ISTIO_REDIRECT,
            &format!("-p tcp -j REDIRECT --to-ports {out}"),
        );
        let inb = cfg.inbound_capture_port;
        r.append(
            Table::Nat,
            ISTIO_IN_REDIRECT,
            &format!("-p tcp -j REDIRECT --to-ports {inb}"),
        );
    }

    /// `-b`/`-d`/`-m`: which inbound ports go to the inbound capture port, and how.
    fn inbound(&mut self) {
        let cfg = self.cfg;
        if cfg.inbound_ports_include == InboundPorts::None {
            return;
        }
        let mark = cfg.inbound_tproxy_mark;
        let r = &mut self.rules;
        let table = if cfg.is_tproxy() {
            r.append(
                Table::Mangle,
                ISTIO_DIVERT,
                &format!("-j MARK --set-mark {mark}"),
            );
            r.append(Table::Mangle, ISTIO_DIVERT, "-j ACCEPT");
            let lo4 = self.loopback_v4.as_str();
            let port = cfg.inbound_capture_port;
            r.append_versioned(Table::Mangle, ISTIO_TPROXY, |f| {
                format!(
                    "! -d {} -p tcp -j TPROXY --tproxy-mark {mark}/0xffffffff --on-port {port}",
                    loopback(lo4, f)
                )
            });
            Table::Mangle
        } else {
            Table::Nat
        };
        r.append(table, "PREROUTING", &format!("-p tcp -j {ISTIO_INBOUND}"));
        let established = "-m conntrack --ctstate RELATED,ESTABLISHED";
        match &cfg.inbound_ports_include {
            InboundPorts::None => {}
            InboundPorts::All => {
                for port in &cfg.inbound_ports_exclude {
                    r.append(
                        table,
                        ISTIO_INBOUND,
                        &format!("-p tcp --dport {port} -j RETURN"),
                    );
                }
                if cfg.is_tproxy() {
                    let divert = format!("-p tcp {established} -j {ISTIO_DIVERT}");
                    r.append(Table::Mangle, ISTIO_INBOUND, &divert);
                    r.append(
                        Table::Mangle,
                        ISTIO_INBOUND,
                        &format!("-p tcp -j {ISTIO_TPROXY}"),
                    );
                } else {
                    let redirect = format!("-p tcp -j {ISTIO_IN_REDIRECT}");
                    r.append(Table::Nat, ISTIO_INBOUND, &redirect);
                }
            }
            InboundPorts::List(ports) => {
                for port in ports {
                    if cfg.is_tproxy() {
                        let divert =
                            format!("-p tcp --dport {port} {established} -j {ISTIO_DIVERT}");
                        r.append(Table::Mangle, ISTIO_INBOUND, &divert);
                        let tproxy = format!("-p tcp --dport {port} -j {ISTIO_TPROXY}");
                        r.append(Table::Mangle, ISTIO_INBOUND, &tproxy);
                    } else {
                        let redirect = format!("-p tcp --dport {port} -j {ISTIO_IN_REDIRECT}");
                        r.append(Table::Nat, ISTIO_INBOUND, &redirect);
                    }
                }
            }
        }
    }

    /// `-o`: outbound ports never captured, TCP and UDP, before anything else.
    fn outbound_port_excludes(&mut self) {
        for port in &self.cfg.outbound_ports_exclude {
            for proto in ["tcp", "udp"] {
                let rule = format!("-p {proto} --dport {port} -j RETURN");
                self.rules.append(Table::Nat, ISTIO_OUTPUT, &rule);
            }
        }
    }

    /// `-u`/`-g`: the proxy's own traffic is never captured (no loops), except its calls to
    /// the pod's own service VIP, which go back through inbound.
    fn proxy_owner_exemptions(&mut self, redirect_dns: bool) {
        let cfg = self.cfg;
        let tunnel = cfg.inbound_tunnel_port;
        let keep_loopback = !cfg.outbound_ip_ranges_include.has_loopback();
        let lo4 = self.loopback_v4.as_str();
        let r = &mut self.rules;
        for (owner, id) in proxy_owners(cfg) {
            // Istio skips port 53 here only for uids, so that the agent's DNS proxy is not
            // sent through inbound.
            let ports = if redirect_dns && owner == "--uid-owner" {
                format!("-m multiport ! --dports 53,{tunnel}")
            } else {
                format!("! --dport {tunnel}")
            };
            r.append_versioned(Table::Nat, ISTIO_OUTPUT, |f| {
                let lo = loopback(lo4, f);
                format!(
                    "-o lo ! -d {lo} -p tcp {ports} -m owner {owner} {id} -j {ISTIO_IN_REDIRECT}"
                )
            });
            if keep_loopback {
                let not_dns = if redirect_dns {
                    " -p tcp ! --dport 53"
                } else {
                    ""
                };
                let rule = format!("-o lo{not_dns} -m owner ! {owner} {id} -j RETURN");
                r.append(Table::Nat, ISTIO_OUTPUT, &rule);
            }
            r.append(
                Table::Nat,
                ISTIO_OUTPUT,
                &format!("-m owner {owner} {id} -j RETURN"),
            );
        }
    }

    /// `ISTIO_OUTBOUND_OWNER_GROUPS[_EXCLUDE]`.
    fn owner_groups(&mut self) {
        match &self.cfg.owner_groups {
            OwnerGroups::AllExcept(groups) => {
                for group in groups {
                    let rule = format!("-m owner --gid-owner {group} -j RETURN");
                    self.rules.append(Table::Nat, ISTIO_OUTPUT, &rule);
                }
            }
            OwnerGroups::Only(groups) => {
                let mut rule = String::new();
                for group in groups {
                    rule.push_str(&format!("-m owner ! --gid-owner {group} "));
                }
                rule.push_str("-j RETURN");
                self.rules.append(Table::Nat, ISTIO_OUTPUT, &rule);
            }
        }
    }

    /// `-x`: destinations never captured.
    fn outbound_ip_excludes(&mut self) {
        let x = &self.cfg.outbound_ip_ranges_exclude;
        let nets = x.v4.iter().map(|n| (Family::V4, n.to_string()));
        for (family, net) in nets.chain(x.v6.iter().map(|n| (Family::V6, n.to_string()))) {
            let rule = format!("-d {net} -j RETURN");
            self.rules
                .append_for(family, Table::Nat, ISTIO_OUTPUT, &rule);
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
                &format!("-j {ISTIO_REDIRECT}"),
            );
            for nic in nics {
                let rule = format!("-i {nic} -j {ISTIO_REDIRECT}");
                r.insert_for(family, Table::Nat, "PREROUTING", 1, &rule);
            }
            return;
        }
        let cidrs: Vec<String> = match family {
            Family::V4 => v4.iter().map(ToString::to_string).collect(),
            Family::V6 => v6.iter().map(ToString::to_string).collect(),
        };
        for cidr in cidrs {
            for nic in nics {
                let rule = format!("-i {nic} -d {cidr} -j {ISTIO_REDIRECT}");
                r.insert_for(family, Table::Nat, "PREROUTING", 1, &rule);
            }
            let rule = format!("-d {cidr} -j {ISTIO_REDIRECT}");
            r.append_for(family, Table::Nat, ISTIO_OUTPUT, &rule);
        }
    }

    /// TPROXY bookkeeping: connection marks so replies find their way back, and loop guards
    /// so the proxy's own connections to the app are not captured again.
    fn tproxy_marks(&mut self) {
        let cfg = self.cfg;
        let mark = cfg.inbound_tproxy_mark;
        let lo4 = self.loopback_v4.as_str();
        let r = &mut self.rules;
        let save = format!("-p tcp -m mark --mark {mark} -j CONNMARK --save-mark");
        r.append(Table::Mangle, "PREROUTING", &save);
        let own = format!("-p tcp -o lo -m mark --mark {mark} -j RETURN");
        r.append(Table::Mangle, "OUTPUT", &own);
        for (owner, id) in proxy_owners(cfg) {
            r.append_versioned(Table::Mangle, "OUTPUT", |f| {
                let lo = loopback(lo4, f);
                format!("! -d {lo} -p tcp -o lo -m owner {owner} {id} -j MARK --set-mark {OUTBOUND_MARK}")
            });
        }
        let restore = format!("-p tcp -m connmark --mark {mark} -j CONNMARK --restore-mark");
        r.append(Table::Mangle, "OUTPUT", &restore);
        let marked = format!("-p tcp -m mark --mark {mark} -j RETURN");
        r.insert(Table::Mangle, ISTIO_INBOUND, 1, &marked);
        let passthrough_v4 = "-p tcp -s 127.0.0.6/32 -i lo -j RETURN";
        r.insert_for(Family::V4, Table::Mangle, ISTIO_INBOUND, 2, passthrough_v4);
        let passthrough_v6 = "-p tcp -s ::6/128 -i lo -j RETURN";
        r.insert_for(Family::V6, Table::Mangle, ISTIO_INBOUND, 2, passthrough_v6);
        let app_to_app = format!("-p tcp -i lo -m mark ! --mark {OUTBOUND_MARK} -j RETURN");
        r.insert(Table::Mangle, ISTIO_INBOUND, 3, &app_to_app);
    }
}
