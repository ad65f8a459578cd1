//! Changes outside iptables that the capture needs: TPROXY policy routing and the IPv6
//! inbound-passthrough address (`tools/common/tproxy/run_linux.go` in Istio). Expressed as
//! `ip` commands so they can be printed, checked and undone.

use crate::builder::Family;
use crate::config::{Config, InboundPorts};

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

/// The host steps for a configuration, in the order Istio applies them.
pub(super) fn steps(cfg: &Config) -> Vec<HostStep> {
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
        let (mark, table) = (cfg.inbound_tproxy_mark, cfg.inbound_tproxy_route_table);
        for &family in families {
            steps.push(HostStep::TproxyRule {
                family,
                mark,
                table,
            });
        }
        for &family in families {
            steps.push(HostStep::TproxyRoute { family, table });
        }
    }
    steps
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
        split(&match self {
            Self::Ipv6PassthroughAddress => "-6 addr show dev lo".to_string(),
            Self::TproxyRule {
                family,
                mark,
                table,
            } => {
                format!("{} rule show fwmark {mark} lookup {table}", flag(*family))
            }
            Self::TproxyRoute { family, table } => {
                format!("{} route show table {table}", flag(*family))
            }
        })
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
        split(&match self {
            Self::Ipv6PassthroughAddress => format!("-6 addr {op} ::6/128 dev lo"),
            Self::TproxyRule {
                family,
                mark,
                table,
            } => {
                format!("{} rule {op} fwmark {mark} lookup {table}", flag(*family))
            }
            Self::TproxyRoute { family, table } => {
                let default = match family {
                    Family::V4 => "0.0.0.0/0",
                    Family::V6 => "::/0",
                };
                format!(
                    "{} route {op} local {default} dev lo table {table}",
                    flag(*family)
                )
            }
        })
    }
}

fn flag(family: Family) -> &'static str {
    match family {
        Family::V4 => "-4",
        Family::V6 => "-6",
    }
}

fn split(line: &str) -> Vec<String> {
    line.split_whitespace().map(String::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tproxy_routes_for_both_families() {
        let cfg = Config {
            inbound_interception_mode: crate::config::InterceptionMode::Tproxy,
            inbound_ports_include: InboundPorts::All,
            enable_ipv6: true,
            ..Config::default()
        };
        let cmds: Vec<String> = steps(&cfg)
            .iter()
            .map(|s| s.add_command().join(" "))
            .collect();
        assert_eq!(
            cmds,
            [
                "-6 addr add ::6/128 dev lo",
                "-4 rule add fwmark 1337 lookup 133",
                "-6 rule add fwmark 1337 lookup 133",
                "-4 route add local 0.0.0.0/0 dev lo table 133",
                "-6 route add local ::/0 dev lo table 133",
            ]
        );
    }

    #[test]
    fn no_routes_without_tproxy_inbound_capture() {
        let cfg = Config {
            inbound_interception_mode: crate::config::InterceptionMode::Tproxy,
            ..Config::default()
        };
        assert!(steps(&cfg).is_empty());
    }
}
