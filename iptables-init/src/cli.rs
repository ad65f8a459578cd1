//! istio-iptables' command line: the same short and long flags, defaults and environment
//! variables, resolved into a validated [`Config`].
//!
//! Precedence is Istio's (cobra + viper): a flag given on the command line, even empty, wins;
//! then the environment variable named after the long flag (upper case, `-` as `_`), when
//! set and not empty; then an alias variable Istio also honours; then the default. Where Istio
//! would silently ignore a bad value, we stop with an error that names the flag or variable.

use std::str::FromStr;

use clap::Parser;

use crate::config::{
    self, Config, DnsServer, InboundPorts, IpRanges, OwnerGroups, parse_go_bool, parse_go_duration,
    parse_interface_list, parse_ipv4_loopback_cidr, parse_owner_list, parse_port, parse_port_list,
};
use crate::system::System;

/// The flags, exactly as istio-iptables spells them. Values stay strings here: resolution
/// against the environment and validation happen in [`resolve`].
#[derive(Debug, Default, Parser)]
#[command(
    name = "iptables-init",
    version,
    args_override_self = true,
    about = "Set up iptables rules for an Istio sidecar (drop-in for istio-iptables)",
    long_about = "Redirects a pod's TCP traffic to the sidecar proxy, exactly as Istio's \
                  istio-iptables (the istio-init container) does: same flags, same environment \
                  variables, same rules. Every flag can also be set by an environment variable \
                  named after it (e.g. --istio-inbound-ports as ISTIO_INBOUND_PORTS)."
)]
pub struct Flags {
    /// Port to which all outbound TCP traffic is redirected [default: 15001].
    #[arg(short = 'p', long = "envoy-port", value_name = "PORT")]
    pub envoy_port: Option<String>,
    /// Port to which all inbound TCP traffic is redirected [env: INBOUND_CAPTURE_PORT] [default: 15006].
    #[arg(short = 'z', long = "inbound-capture-port", value_name = "PORT")]
    pub inbound_capture_port: Option<String>,
    /// Istio tunnel (HBONE) port, never captured [env: INBOUND_TUNNEL_PORT] [default: 15008].
    #[arg(short = 'e', long = "inbound-tunnel-port", value_name = "PORT")]
    pub inbound_tunnel_port: Option<String>,
    /// UIDs whose traffic is not redirected, comma separated [env: PROXY_UID] [default: uid of $ENVOY_USER, else 1337].
    #[arg(short = 'u', long = "proxy-uid", value_name = "UIDS")]
    pub proxy_uid: Option<String>,
    /// GIDs whose traffic is not redirected [env: PROXY_GID] [default: same as -u].
    #[arg(short = 'g', long = "proxy-gid", value_name = "GIDS")]
    pub proxy_gid: Option<String>,
    /// Inbound interception mode: REDIRECT or TPROXY [env: ISTIO_INBOUND_INTERCEPTION_MODE].
    #[arg(
        short = 'm',
        long = "istio-inbound-interception-mode",
        value_name = "MODE"
    )]
    pub interception_mode: Option<String>,
    /// Inbound ports to redirect, comma separated, or '*' for all; empty disables inbound capture [env: ISTIO_INBOUND_PORTS].
    #[arg(short = 'b', long = "istio-inbound-ports", value_name = "PORTS")]
    pub inbound_ports: Option<String>,
    /// Inbound ports excluded from redirection; only with -b '*' [env: ISTIO_LOCAL_EXCLUDE_PORTS].
    #[arg(short = 'd', long = "istio-local-exclude-ports", value_name = "PORTS")]
    pub local_exclude_ports: Option<String>,
    /// Outbound destination CIDRs to redirect, or '*' for all; empty disables outbound capture [env: ISTIO_SERVICE_CIDR].
    #[arg(short = 'i', long = "istio-service-cidr", value_name = "CIDRS")]
    pub service_cidr: Option<String>,
    /// Outbound destination CIDRs never redirected [env: ISTIO_SERVICE_EXCLUDE_CIDR].
    #[arg(short = 'x', long = "istio-service-exclude-cidr", value_name = "CIDRS")]
    pub service_exclude_cidr: Option<String>,
    /// Outbound ports always redirected [env: ISTIO_OUTBOUND_PORTS].
    #[arg(short = 'q', long = "istio-outbound-ports", value_name = "PORTS")]
    pub outbound_ports: Option<String>,
    /// Outbound ports never redirected (TCP and UDP) [env: ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE].
    #[arg(
        short = 'o',
        long = "istio-local-outbound-ports-exclude",
        value_name = "PORTS"
    )]
    pub local_outbound_ports_exclude: Option<String>,
    /// Virtual interfaces whose inbound traffic is treated as outbound [env: KUBE_VIRT_INTERFACES].
    #[arg(short = 'k', long = "kube-virt-interfaces", value_name = "NICS")]
    pub kube_virt_interfaces: Option<String>,
    /// Interfaces never captured in either direction [env: ISTIO_EXCLUDE_INTERFACES].
    #[arg(short = 'c', long = "istio-exclude-interfaces", value_name = "NICS")]
    pub exclude_interfaces: Option<String>,
    /// TPROXY packet mark [env: ISTIO_INBOUND_TPROXY_MARK] [default: 1337].
    #[arg(short = 't', long = "istio-inbound-tproxy-mark", value_name = "MARK")]
    pub tproxy_mark: Option<String>,
    /// TPROXY policy routing table [env: ISTIO_INBOUND_TPROXY_ROUTE_TABLE] [default: 133].
    #[arg(
        short = 'r',
        long = "istio-inbound-tproxy-route-table",
        value_name = "TABLE"
    )]
    pub tproxy_route_table: Option<String>,
    /// Print the rules and commands; change nothing [env: DRY_RUN].
    #[arg(short = 'n', long = "dry-run", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub dry_run: Option<String>,
    /// Port the validation probe dials [env: IPTABLES_PROBE_PORT] [default: 15002].
    #[arg(long = "iptables-probe-port", value_name = "PORT")]
    pub iptables_probe_port: Option<String>,
    /// How long the validation probe waits [env: PROBE_TIMEOUT] [default: 5s].
    #[arg(long = "probe-timeout", value_name = "DURATION")]
    pub probe_timeout: Option<String>,
    /// Do not program any rules (the istio-validation container) [env: SKIP_RULE_APPLY].
    #[arg(long = "skip-rule-apply", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub skip_rule_apply: Option<String>,
    /// Check that redirection works; exit 126 if it does not [env: RUN_VALIDATION].
    #[arg(long = "run-validation", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub run_validation: Option<String>,
    /// Capture DNS (port 53) to the agent on 15053 [env: REDIRECT_DNS, ISTIO_META_DNS_CAPTURE].
    #[arg(long = "redirect-dns", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub redirect_dns: Option<String>,
    /// With --redirect-dns: capture all port-53 traffic, not only to resolv.conf servers [env: CAPTURE_ALL_DNS].
    #[arg(long = "capture-all-dns", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub capture_all_dns: Option<String>,
    /// Drop packets conntrack marks INVALID instead of resetting [env: DROP_INVALID, INVALID_DROP].
    #[arg(long = "drop-invalid", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub drop_invalid: Option<String>,
    /// Enable IPv4/IPv6 dual-stack redirection [env: DUAL_STACK, ISTIO_DUAL_STACK].
    #[arg(long = "dual-stack", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub dual_stack: Option<String>,
    /// Network namespace (a path such as /var/run/netns/pod) to apply the rules in [env: NETWORK_NAMESPACE].
    #[arg(long = "network-namespace", value_name = "PATH")]
    pub network_namespace: Option<String>,
    /// Run as the istio-cni plugin would; accepted for compatibility [env: CNI_MODE].
    #[arg(long = "cni-mode", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub cni_mode: Option<String>,
    /// Replace drifted Istio rules instead of leaving them [env: RECONCILE].
    #[arg(long = "reconcile", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub reconcile: Option<String>,
    /// Remove the rules and chains these flags would add, and nothing else [env: CLEANUP_ONLY].
    #[arg(long = "cleanup-only", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub cleanup_only: Option<String>,
    /// Apply even when the rules already look present [env: FORCE_APPLY].
    #[arg(long = "force-apply", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub force_apply: Option<String>,
    /// Program nftables natively (not supported: use iptables) [env: NATIVE_NFTABLES].
    #[arg(long = "native-nftables", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub native_nftables: Option<String>,
    /// Use this iptables flavor instead of detecting it: nft, legacy or iptables [env: FORCE_IPTABLES_BINARY].
    #[arg(long = "force-iptables-binary", value_name = "BINARY")]
    pub force_iptables_binary: Option<String>,

    /// Istio's logging flag, e.g. `default:info` or `default:debug`.
    #[arg(long = "log_output_level", value_name = "LEVELS")]
    pub log_output_level: Option<String>,
    /// Istio's logging flag; accepted for compatibility.
    #[arg(long = "log_as_json", num_args = 0..=1, require_equals = true, default_missing_value = "true", hide = true)]
    pub log_as_json: Option<String>,
    /// Istio's logging flag; accepted for compatibility.
    #[arg(long = "log_caller", hide = true)]
    pub log_caller: Option<String>,
    /// Istio's logging flag; accepted for compatibility.
    #[arg(long = "log_stacktrace_level", hide = true)]
    pub log_stacktrace_level: Option<String>,
    /// Istio's logging flag; accepted for compatibility.
    #[arg(long = "log_target", hide = true)]
    pub log_target: Option<String>,
}

/// A configuration value that could not be used, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {origin}: {reason}")]
pub struct ConfigError {
    /// `-b/--istio-inbound-ports`, or `environment variable ISTIO_INBOUND_PORTS`.
    pub origin: String,
    pub reason: String,
}

/// Where configuration values come from besides flags.
pub trait Env {
    /// The value of a variable; empty counts as unset, as in viper.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl<const N: usize> Env for [(&str, &str); N] {
    fn var(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, v)| *k == name && !v.is_empty())
            .map(|(_, v)| v.to_string())
    }
}

/// A flag's names. Its environment variable is the long name in upper case with `_` for
/// `-` (viper's AutomaticEnv), except `-p`, which Istio binds to no variable.
#[derive(Debug, Clone, Copy)]
struct Name {
    short: Option<char>,
    long: &'static str,
}

/// A flag with a short name.
const fn short(short: char, long: &'static str) -> Name {
    Name {
        short: Some(short),
        long,
    }
}

/// A flag with only a long name.
const fn long(long: &'static str) -> Name {
    Name { short: None, long }
}

// === impl Name ===

impl Name {
    fn env(self) -> Option<String> {
        (self.long != "envoy-port").then(|| self.long.to_uppercase().replace('-', "_"))
    }

    /// Another variable Istio reads as this flag's default.
    fn alias(self) -> Option<&'static str> {
        match self.long {
            "redirect-dns" => Some("ISTIO_META_DNS_CAPTURE"),
            "drop-invalid" => Some("INVALID_DROP"),
            "dual-stack" => Some("ISTIO_DUAL_STACK"),
            _ => None,
        }
    }

    fn display(self) -> String {
        match self.short {
            Some(s) => format!("-{s}/--{}", self.long),
            None => format!("--{}", self.long),
        }
    }
}

/// Looks values up in flags, then the environment.
struct Resolver<'a> {
    env: &'a dyn Env,
}

// === impl Resolver ===

impl Resolver<'_> {
    /// The raw value and a description of where it came from, for error messages.
    fn raw(&self, flag: &Option<String>, name: Name) -> Option<(String, String)> {
        if let Some(v) = flag {
            return Some((v.clone(), name.display()));
        }
        let vars = name.env().into_iter().chain(name.alias().map(String::from));
        for var in vars {
            if let Some(v) = self.env.var(&var) {
                return Some((
                    v,
                    format!("environment variable {var} (for {})", name.display()),
                ));
            }
        }
        None
    }

    /// The parsed value, or `default` when neither the flag nor its variables are set.
    fn get<T>(
        &self,
        flag: &Option<String>,
        name: Name,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.raw(flag, name) {
            None => Ok(default),
            Some((raw, origin)) => parse(&raw).map_err(|reason| invalid(origin, &raw, reason)),
        }
    }

    fn bool(&self, flag: &Option<String>, name: Name) -> Result<bool, ConfigError> {
        self.get(flag, name, false, parse_go_bool)
    }

    /// An environment-only knob.
    fn env_only(&self, var: &'static str) -> Option<(String, String)> {
        self.env
            .var(var)
            .map(|v| (v, format!("environment variable {var}")))
    }

    /// Ports the proxy listens on and the validation probe.
    fn ports(&self, f: &Flags, cfg: &mut Config) -> Result<(), ConfigError> {
        let d = Config::default();
        cfg.proxy_port = self.get(
            &f.envoy_port,
            short('p', "envoy-port"),
            d.proxy_port,
            parse_port,
        )?;
        let name = short('z', "inbound-capture-port");
        cfg.inbound_capture_port = self.get(
            &f.inbound_capture_port,
            name,
            d.inbound_capture_port,
            parse_port,
        )?;
        let name = short('e', "inbound-tunnel-port");
        cfg.inbound_tunnel_port = self.get(
            &f.inbound_tunnel_port,
            name,
            d.inbound_tunnel_port,
            parse_port,
        )?;
        let name = long("iptables-probe-port");
        cfg.iptables_probe_port = self.get(
            &f.iptables_probe_port,
            name,
            d.iptables_probe_port,
            parse_port,
        )?;
        let name = long("probe-timeout");
        cfg.probe_timeout = self.get(&f.probe_timeout, name, d.probe_timeout, parse_go_duration)?;
        Ok(())
    }

    /// What is captured: interception mode, ports, ranges, interfaces.
    fn scope(&self, f: &Flags, cfg: &mut Config) -> Result<(), ConfigError> {
        let d = Config::default();
        let name = short('m', "istio-inbound-interception-mode");
        cfg.inbound_interception_mode = self.get(
            &f.interception_mode,
            name,
            d.inbound_interception_mode,
            |s| s.trim().parse(),
        )?;
        let name = short('t', "istio-inbound-tproxy-mark");
        cfg.inbound_tproxy_mark =
            self.get(&f.tproxy_mark, name, d.inbound_tproxy_mark, parse_u32)?;
        let name = short('r', "istio-inbound-tproxy-route-table");
        cfg.inbound_tproxy_route_table = self.get(
            &f.tproxy_route_table,
            name,
            d.inbound_tproxy_route_table,
            parse_u32,
        )?;
        let name = short('b', "istio-inbound-ports");
        cfg.inbound_ports_include = self.get(
            &f.inbound_ports,
            name,
            InboundPorts::None,
            FromStr::from_str,
        )?;
        let name = short('d', "istio-local-exclude-ports");
        cfg.inbound_ports_exclude =
            self.get(&f.local_exclude_ports, name, Vec::new(), parse_port_list)?;
        let name = short('q', "istio-outbound-ports");
        cfg.outbound_ports_include =
            self.get(&f.outbound_ports, name, Vec::new(), parse_port_list)?;
        let name = short('o', "istio-local-outbound-ports-exclude");
        cfg.outbound_ports_exclude = self.get(
            &f.local_outbound_ports_exclude,
            name,
            Vec::new(),
            parse_port_list,
        )?;
        let name = short('i', "istio-service-cidr");
        cfg.outbound_ip_ranges_include = self.get(
            &f.service_cidr,
            name,
            IpRanges::default(),
            FromStr::from_str,
        )?;
        let name = short('x', "istio-service-exclude-cidr");
        cfg.outbound_ip_ranges_exclude = self.get(
            &f.service_exclude_cidr,
            name,
            IpRanges::default(),
            parse_exclude_ranges,
        )?;
        let name = short('k', "kube-virt-interfaces");
        cfg.kube_virt_interfaces = self.get(
            &f.kube_virt_interfaces,
            name,
            Vec::new(),
            parse_interface_list,
        )?;
        let name = short('c', "istio-exclude-interfaces");
        cfg.exclude_interfaces = self.get(
            &f.exclude_interfaces,
            name,
            Vec::new(),
            parse_interface_list,
        )?;
        Ok(())
    }

    /// Boolean switches and how to run.
    fn switches(&self, f: &Flags, cfg: &mut Config) -> Result<(), ConfigError> {
        cfg.dry_run = self.bool(&f.dry_run, short('n', "dry-run"))?;
        cfg.skip_rule_apply = self.bool(&f.skip_rule_apply, long("skip-rule-apply"))?;
        cfg.run_validation = self.bool(&f.run_validation, long("run-validation"))?;
        cfg.redirect_dns = self.bool(&f.redirect_dns, long("redirect-dns"))?;
        cfg.capture_all_dns = self.bool(&f.capture_all_dns, long("capture-all-dns"))?;
        cfg.drop_invalid = self.bool(&f.drop_invalid, long("drop-invalid"))?;
        cfg.dual_stack = self.bool(&f.dual_stack, long("dual-stack"))?;
        cfg.reconcile = self.bool(&f.reconcile, long("reconcile"))?;
        cfg.cleanup_only = self.bool(&f.cleanup_only, long("cleanup-only"))?;
        cfg.force_apply = self.bool(&f.force_apply, long("force-apply"))?;
        // Accepted for compatibility; the iptables lock tricks it enables are not needed.
        self.bool(&f.cni_mode, long("cni-mode"))?;
        let name = long("force-iptables-binary");
        cfg.force_iptables_binary = self.get(&f.force_iptables_binary, name, None, |s| {
            let s = s.trim();
            if s.is_empty() {
                Ok(None)
            } else {
                s.parse().map(Some)
            }
        })?;
        let name = long("network-namespace");
        cfg.network_namespace = self.get(&f.network_namespace, name, None, |s| {
            Ok((!s.trim().is_empty()).then(|| s.trim().to_string()))
        })?;
        Ok(())
    }

    /// Whose traffic is exempt (`-u`, `-g`) or captured (owner groups), and the loopback
    /// range of the app.
    fn owners(&self, f: &Flags, cfg: &mut Config, sys: &dyn System) -> Result<(), ConfigError> {
        // -u defaults to $ENVOY_USER's uid (istio-proxy), else 1337; -g defaults to -u.
        cfg.proxy_uids = match self.raw(&f.proxy_uid, short('u', "proxy-uid")) {
            Some((raw, origin)) if !raw.trim().is_empty() => owners(&raw, origin)?,
            _ => {
                let user = self
                    .env
                    .var("ENVOY_USER")
                    .unwrap_or_else(|| "istio-proxy".into());
                let uid = sys.uid_of(&user).map(|u| u.to_string());
                vec![uid.unwrap_or_else(|| config::DEFAULT_PROXY_UID.to_string())]
            }
        };
        cfg.proxy_gids = match self.raw(&f.proxy_gid, short('g', "proxy-gid")) {
            Some((raw, origin)) if !raw.trim().is_empty() => owners(&raw, origin)?,
            _ => cfg.proxy_uids.clone(),
        };
        cfg.owner_groups = owner_groups(
            self.env_only("ISTIO_OUTBOUND_OWNER_GROUPS"),
            self.env_only("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE"),
        )?;
        if let Some((raw, origin)) = self.env_only("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR") {
            cfg.host_ipv4_loopback_cidr =
                parse_ipv4_loopback_cidr(&raw).map_err(|reason| invalid(origin, &raw, reason))?;
        }
        Ok(())
    }
}

/// Resolves flags, environment and host facts into a validated configuration.
pub fn resolve(flags: &Flags, env: &dyn Env, sys: &dyn System) -> Result<Config, ConfigError> {
    let r = Resolver { env };
    if r.bool(&flags.native_nftables, long("native-nftables"))? {
        return Err(ConfigError {
            origin: "--native-nftables".to_string(),
            reason: "native nftables rules are not supported by this implementation; \
                     omit the flag to program the same capture with iptables (nft backend)"
                .to_string(),
        });
    }
    let mut cfg = Config::default();
    r.ports(flags, &mut cfg)?;
    r.scope(flags, &mut cfg)?;
    r.switches(flags, &mut cfg)?;
    r.owners(flags, &mut cfg, sys)?;
    host_facts(&mut cfg, sys)?;
    Ok(cfg)
}

/// What Istio reads from the machine: the pod's IP family and, for DNS capture, resolv.conf.
fn host_facts(cfg: &mut Config, sys: &dyn System) -> Result<(), ConfigError> {
    cfg.enable_ipv6 = sys
        .pod_is_ipv6(cfg.dual_stack)
        .map_err(|reason| ConfigError {
            origin: "pod addresses (IPv6 detection)".to_string(),
            reason,
        })?;
    if cfg.redirect_dns && !cfg.capture_all_dns {
        let servers = sys.nameservers().map_err(|reason| ConfigError {
            origin: "DNS servers for --redirect-dns".to_string(),
            reason,
        })?;
        let (v6, v4): (Vec<DnsServer>, Vec<DnsServer>) =
            servers.into_iter().partition(|s| s.addr.is_ipv6());
        cfg.dns_servers_v4 = v4;
        cfg.dns_servers_v6 = v6;
    }
    Ok(())
}

fn invalid(origin: String, raw: &str, reason: String) -> ConfigError {
    ConfigError {
        origin: format!("{origin} {raw:?}"),
        reason,
    }
}

fn parse_u32(s: &str) -> Result<u32, String> {
    s.trim()
        .parse::<u32>()
        .map_err(|_| format!("{s:?} is not a non-negative integer"))
}

fn parse_exclude_ranges(s: &str) -> Result<IpRanges, String> {
    let ranges: IpRanges = s.parse()?;
    if ranges.wildcard {
        return Err("'*' is not allowed here; to capture no outbound traffic, \
                    set -i/--istio-service-cidr to \"\" instead"
            .to_string());
    }
    Ok(ranges)
}

fn owners(raw: &str, origin: String) -> Result<Vec<String>, ConfigError> {
    parse_owner_list(raw).map_err(|reason| invalid(origin, raw, reason))
}

/// Istio's `ParseInterceptFilter` plus its validation: `*` (the default) means every group
/// except the exclude list; anything else is an explicit list of at most 64 groups.
fn owner_groups(
    include: Option<(String, String)>,
    exclude: Option<(String, String)>,
) -> Result<OwnerGroups, ConfigError> {
    let include_raw = include.as_ref().map_or("*", |(v, _)| v.as_str()).trim();
    if include_raw == "*" {
        let excluded = match exclude {
            Some((raw, origin)) => owners(&raw, origin)?,
            None => Vec::new(),
        };
        return Ok(OwnerGroups::AllExcept(excluded));
    }
    let (raw, origin) = include.unwrap_or_default();
    let groups = owners(&raw, origin.clone())?;
    if groups.len() > config::MAX_OWNER_GROUPS_INCLUDE {
        return Err(ConfigError {
            origin,
            reason: format!(
                "at most {} owner groups can be captured, got {}",
                config::MAX_OWNER_GROUPS_INCLUDE,
                groups.len()
            ),
        });
    }
    Ok(OwnerGroups::Only(groups))
}

/// Parses the command line. A leading `istio-iptables` word is dropped, so the args of
/// Istio's injected `istio-init` container (`istio-iptables -p 15001 ...`) work unchanged.
pub fn parse_args<I, T>(args: I) -> Result<Flags, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let mut args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    if args.get(1).is_some_and(|a| a == "istio-iptables") {
        args.remove(1);
    }
    Flags::try_parse_from(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{InterceptionMode, PortSpec};

    /// A host with an IPv4 pod address, no `istio-proxy` user and one nameserver.
    struct FakeHost;

    impl System for FakeHost {
        fn pod_is_ipv6(&self, _dual_stack: bool) -> Result<bool, String> {
            Ok(false)
        }
        fn nameservers(&self) -> Result<Vec<DnsServer>, String> {
            Ok(vec!["10.96.0.10".parse().unwrap()])
        }
        fn uid_of(&self, user: &str) -> Option<u32> {
            (user == "envoy").then_some(101)
        }
    }

    fn resolve_with(args: &[&str], env: &dyn Env) -> Result<Config, ConfigError> {
        let mut argv = vec!["iptables-init"];
        argv.extend_from_slice(args);
        resolve(&parse_args(argv).unwrap(), env, &FakeHost)
    }

    #[test]
    fn injector_default_args_parse() {
        let cfg = resolve_with(
            &[
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
            ],
            &[],
        )
        .unwrap();
        assert_eq!(cfg.inbound_ports_include, InboundPorts::All);
        assert!(cfg.outbound_ip_ranges_include.wildcard);
        assert_eq!(cfg.proxy_gids, vec!["1337"]);
        assert_eq!(
            cfg.inbound_ports_exclude,
            vec![
                PortSpec::single(15090),
                PortSpec::single(15021),
                PortSpec::single(15020)
            ]
        );
    }

    #[test]
    fn flag_beats_env_and_empty_flag_still_wins() {
        let env = [
            ("ISTIO_INBOUND_PORTS", "80"),
            ("ISTIO_SERVICE_CIDR", "10.0.0.0/8"),
        ];
        let cfg = resolve_with(&["-b", ""], &env).unwrap();
        assert_eq!(cfg.inbound_ports_include, InboundPorts::None);
        assert_eq!(
            cfg.outbound_ip_ranges_include.v4.len(),
            1,
            "env used without a flag"
        );
    }

    #[test]
    fn env_aliases_and_env_only_knobs() {
        let env = [
            ("ISTIO_META_DNS_CAPTURE", "true"),
            ("INVALID_DROP", "1"),
            ("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "888,ftp"),
            ("ISTIO_INBOUND_INTERCEPTION_MODE", "TPROXY"),
            ("ENVOY_USER", "envoy"),
        ];
        let cfg = resolve_with(&[], &env).unwrap();
        assert!(cfg.redirect_dns && cfg.drop_invalid);
        assert_eq!(
            cfg.dns_servers_v4.len(),
            1,
            "resolv.conf read for DNS capture"
        );
        assert_eq!(
            cfg.owner_groups,
            OwnerGroups::AllExcept(vec!["888".into(), "ftp".into()])
        );
        assert_eq!(cfg.inbound_interception_mode, InterceptionMode::Tproxy);
        assert_eq!(cfg.proxy_uids, vec!["101"], "uid of $ENVOY_USER");
        let cfg = resolve_with(&["--redirect-dns=false"], &env).unwrap();
        assert!(!cfg.redirect_dns, "the flag beats the alias");
    }

    #[test]
    fn bad_values_name_their_origin() {
        let err = resolve_with(&["-x", "*"], &[]).unwrap_err();
        assert!(
            err.to_string().contains("-x/--istio-service-exclude-cidr"),
            "{err}"
        );
        let err = resolve_with(&["-b", "80,eighty"], &[]).unwrap_err();
        assert!(err.to_string().contains("\"eighty\""), "{err}");
        let err = resolve_with(&["-m", "SIDECAR"], &[]).unwrap_err();
        assert!(err.to_string().contains("SIDECAR"), "{err}");
        let err = resolve_with(&[], &[("ISTIO_SERVICE_CIDR", "10.0.0.0/33")]).unwrap_err();
        assert!(
            err.to_string()
                .contains("environment variable ISTIO_SERVICE_CIDR"),
            "{err}"
        );
        let err = resolve_with(&[], &[("DROP_INVALID", "maybe")]).unwrap_err();
        assert!(err.to_string().contains("DROP_INVALID"), "{err}");
        let err = resolve_with(&["--native-nftables"], &[]).unwrap_err();
        assert!(err.to_string().contains("not supported"), "{err}");
        let err =
            resolve_with(&[], &[("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", "10.0.0.0/8")]).unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
    }

    #[test]
    fn a_repeated_flag_takes_the_last_value_like_pflag() {
        let cfg = resolve_with(&["-u", "1337", "-u", "3,4"], &[]).unwrap();
        assert_eq!(cfg.proxy_uids, vec!["3", "4"]);
    }

    #[test]
    fn unknown_flags_are_rejected() {
        assert!(parse_args(["iptables-init", "--no-such-flag"]).is_err());
        assert!(parse_args(["iptables-init", "-Z", "1"]).is_err());
    }

    #[test]
    fn too_many_owner_groups() {
        let groups = (0..65).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        let env = [("ISTIO_OUTBOUND_OWNER_GROUPS", groups.as_str())];
        assert!(resolve_with(&[], &env).is_err());
    }
}
