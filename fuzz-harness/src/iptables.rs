//! iptables-init's command line and the rules it generates.

use iptables_init::builder::Family;
use iptables_init::capture::plan;
use iptables_init::cli::{Env, parse_args, resolve};
use iptables_init::config::DnsServer;
use iptables_init::system::System;

/// A pod with fixed name servers and an `istio-proxy` user; nothing is read from this
/// machine.
struct Stub {
    ipv6: bool,
}

impl System for Stub {
    fn pod_is_ipv6(&self, _dual_stack: bool) -> Result<bool, String> {
        Ok(self.ipv6)
    }
    fn nameservers(&self) -> Result<Vec<DnsServer>, String> {
        ["10.96.0.10", "fd00::10"]
            .iter()
            .map(|s| s.parse())
            .collect()
    }
    fn uid_of(&self, user: &str) -> Option<u32> {
        (user == "istio-proxy").then_some(1337)
    }
}

/// Environment variables from the input (the last value of a name wins; empty is unset).
struct Vars(Vec<(String, String)>);

impl Env for Vars {
    fn var(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .rev()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.clone())
    }
}

/// iptables-init's command line (istio-iptables' flags and env vars) and the rule
/// generation it drives: `cli::parse_args`, `cli::resolve`, `capture::plan`, then the
/// restore input, check and undo commands for IPv4 and IPv6.
///
/// Input: newline-separated words. Words of the form `ENV:NAME=value` set environment
/// variables (as the injected init container may), the rest are argv after the program
/// name. The first byte's low bit says whether the pod looks IPv6.
pub fn iptables_args(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let sys = Stub {
        ipv6: data.first().is_some_and(|b| b & 1 == 1),
    };
    let mut argv = vec!["iptables-init".to_string()];
    let mut env = Vars(Vec::new());
    for word in text.split('\n') {
        match word.strip_prefix("ENV:").and_then(|kv| kv.split_once('=')) {
            Some((k, v)) => env.0.push((k.to_string(), v.to_string())),
            None => argv.push(word.to_string()),
        }
    }
    let Ok(flags) = parse_args(argv) else {
        return;
    };
    let Ok(cfg) = resolve(&flags, &env, &sys) else {
        return;
    };
    let p = plan(&cfg);
    for family in [Family::V4, Family::V6] {
        std::hint::black_box(p.rules.restore_input(family));
        std::hint::black_box(p.rules.check_commands(family));
        std::hint::black_box(p.rules.undo_commands(family));
    }
}
