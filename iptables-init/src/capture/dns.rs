//! `--redirect-dns`: DNS to the Istio agent's DNS proxy on 15053, with conntrack zones that
//! keep the app<->agent and agent<->upstream UDP flows apart (`SetupDNSRedir` and
//! `addDNSConntrackZones` in istio-iptables).

use super::{ISTIO_INBOUND, ISTIO_OUTPUT, ISTIO_OUTPUT_DNS, proxy_owners};
use crate::builder::{Family, RuleSet, Table};
use crate::config::{AGENT_DNS_PORT, Config, DnsServer};

/// Adds the DNS capture rules. Only called when DNS capture is enabled.
pub(super) fn capture(cfg: &Config, r: &mut RuleSet) {
    let all = cfg.capture_all_dns;
    let servers = |family: Family| -> (&[DnsServer], &str) {
        match family {
            Family::V4 => (&cfg.dns_servers_v4, "32"),
            Family::V6 => (&cfg.dns_servers_v6, "128"),
        }
    };

    r.append(Table::Raw, "OUTPUT", &format!("-j {ISTIO_OUTPUT_DNS}"));
    for family in Family::BOTH {
        if all || !servers(family).0.is_empty() {
            let jump = format!("-j {ISTIO_OUTPUT_DNS}");
            r.append_for(family, Table::Nat, ISTIO_OUTPUT, &jump);
        }
    }
    // Istio writes `--to-ports` for TCP and `--to-port` for UDP; both mean the same.
    for (proto, to_ports) in [("tcp", "--to-ports"), ("udp", "--to-port")] {
        let redirect = format!("-j REDIRECT {to_ports} {AGENT_DNS_PORT}");
        if all {
            let rule = format!("-p {proto} --dport 53 {redirect}");
            r.append(Table::Nat, ISTIO_OUTPUT_DNS, &rule);
            continue;
        }
        for family in Family::BOTH {
            let (list, mask) = servers(family);
            for s in list {
                let rule = format!("-p {proto} --dport 53 -d {}/{mask} {redirect}", s.text);
                r.append_for(family, Table::Nat, ISTIO_OUTPUT_DNS, &rule);
            }
        }
    }

    // Zone 1: the agent and upstream resolvers. Zone 2: apps and the agent.
    for (owner, id) in proxy_owners(cfg) {
        let upstream = format!("-p udp --dport 53 -m owner {owner} {id} -j CT --zone 1");
        r.append(Table::Raw, ISTIO_OUTPUT_DNS, &upstream);
        let reply = format!("-p udp --sport {AGENT_DNS_PORT} -m owner {owner} {id} -j CT --zone 2");
        r.append(Table::Raw, ISTIO_OUTPUT_DNS, &reply);
    }
    if all {
        r.append(Table::Raw, "PREROUTING", &format!("-j {ISTIO_INBOUND}"));
        r.append(
            Table::Raw,
            ISTIO_OUTPUT_DNS,
            "-p udp --dport 53 -j CT --zone 2",
        );
        r.append(
            Table::Raw,
            ISTIO_INBOUND,
            "-p udp --sport 53 -j CT --zone 1",
        );
        return;
    }
    for family in Family::BOTH {
        let (list, mask) = servers(family);
        if !list.is_empty() {
            let jump = format!("-j {ISTIO_INBOUND}");
            r.append_for(family, Table::Raw, "PREROUTING", &jump);
        }
        for s in list {
            let to_server = format!("-p udp --dport 53 -d {}/{mask} -j CT --zone 2", s.text);
            r.append_for(family, Table::Raw, ISTIO_OUTPUT_DNS, &to_server);
            let from_server = format!("-p udp --sport 53 -s {}/{mask} -j CT --zone 1", s.text);
            r.append_for(family, Table::Raw, ISTIO_INBOUND, &from_server);
        }
    }
}
