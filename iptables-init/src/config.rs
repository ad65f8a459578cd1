//! The capture configuration: what `istio-iptables` calls `Config`, as plain typed values.
//!
//! Every value here has been validated. Parsing from flags and environment lives in
//! [`crate::cli`]; this module only holds the model and the value parsers, so that the rule
//! generation in [`crate::capture`] never has to re-check anything.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Istio's default proxy uid/gid, used when `-u` is empty and `$ENVOY_USER` does not exist.
pub const DEFAULT_PROXY_UID: &str = "1337";

/// The port the Istio agent's DNS proxy listens on.
pub const AGENT_DNS_PORT: u16 = 15053;

/// Istio limits the number of included owner groups, since they become one rule.
pub const MAX_OWNER_GROUPS_INCLUDE: usize = 64;

/// How inbound connections are handed to the proxy (`-m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InterceptionMode {
    /// nat `REDIRECT` to the inbound capture port; the original destination is read with
    /// `SO_ORIGINAL_DST`. Istio's default (an empty `-m` behaves the same).
    #[default]
    Redirect,
    /// mangle `TPROXY` to the inbound capture port with policy routing; the proxy's listener
    /// is transparent and sees the original source and destination.
    Tproxy,
}

// === impl InterceptionMode ===

impl FromStr for InterceptionMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "REDIRECT" => Ok(Self::Redirect),
            "TPROXY" => Ok(Self::Tproxy),
            other => Err(format!(
                "unknown interception mode {other:?}: expected \"REDIRECT\" or \"TPROXY\""
            )),
        }
    }
}

/// A port or an inclusive port range, written as iptables' `--dport` takes it (`80`, `8000:8100`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortSpec {
    start: u16,
    end: u16,
}

// === impl PortSpec ===

impl PortSpec {
    /// A single port.
    pub fn single(port: u16) -> Self {
        Self {
            start: port,
            end: port,
        }
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}:{}", self.start, self.end)
        }
    }
}

impl FromStr for PortSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            None => parse_port(s).map(Self::single),
            Some((a, b)) => {
                let (start, end) = (parse_port(a)?, parse_port(b)?);
                if start > end {
                    return Err(format!("port range {s:?} is reversed"));
                }
                Ok(Self { start, end })
            }
        }
    }
}

/// Parses one TCP/UDP port number, 1 to 65535.
pub fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{s:?} is not a port number (1-65535)")),
        Ok(p) => Ok(p),
    }
}

/// Splits a comma-separated list the way Istio does, dropping empty items.
pub fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|item| !item.is_empty())
}

/// Parses a comma-separated list of ports or port ranges.
pub fn parse_port_list(s: &str) -> Result<Vec<PortSpec>, String> {
    split_list(s).map(PortSpec::from_str).collect()
}

/// Which inbound ports are captured (`-b`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum InboundPorts {
    /// `-b ""`: inbound traffic is not captured at all (Istio's default).
    #[default]
    None,
    /// `-b '*'`: every port, minus `-d`.
    All,
    /// An explicit list.
    List(Vec<PortSpec>),
}

// === impl InboundPorts ===

impl FromStr for InboundPorts {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "" => Ok(Self::None),
            "*" => Ok(Self::All),
            list => {
                let ports = parse_port_list(list)?;
                if ports.is_empty() {
                    Ok(Self::None)
                } else {
                    Ok(Self::List(ports))
                }
            }
        }
    }
}

/// A set of outbound destination ranges (`-i`, `-x`), split per IP family as Istio does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IpRanges {
    /// `*`: every destination.
    pub wildcard: bool,
    pub v4: Vec<Ipv4Net>,
    pub v6: Vec<Ipv6Net>,
}

// === impl IpRanges ===

impl IpRanges {
    /// Whether an explicit range sits in loopback space, in which case Istio keeps
    /// redirecting the app's loopback traffic (no `-o lo ... RETURN`).
    pub fn has_loopback(&self) -> bool {
        self.v4.iter().any(|n| n.addr().is_loopback())
            || self.v6.iter().any(|n| n.addr().is_loopback())
    }
}

impl FromStr for IpRanges {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "*" {
            return Ok(Self {
                wildcard: true,
                ..Self::default()
            });
        }
        let mut ranges = Self::default();
        for item in split_list(s) {
            match item.parse::<IpNet>() {
                Ok(IpNet::V4(net)) => ranges.v4.push(net),
                Ok(IpNet::V6(net)) => ranges.v6.push(net),
                Err(_) if item == "*" => {
                    return Err("'*' cannot be combined with other ranges".to_string());
                }
                Err(_) => {
                    return Err(format!(
                        "{item:?} is not a CIDR range (expected e.g. 10.0.0.0/8 or 2001:db8::/32)"
                    ));
                }
            }
        }
        Ok(ranges)
    }
}

/// Whose outgoing traffic is captured, by owner group (env `ISTIO_OUTBOUND_OWNER_GROUPS[_EXCLUDE]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerGroups {
    /// Every group except these (names or GIDs).
    AllExcept(Vec<String>),
    /// Only these groups (names or GIDs).
    Only(Vec<String>),
}

impl Default for OwnerGroups {
    fn default() -> Self {
        Self::AllExcept(Vec::new())
    }
}

/// A user or group as `-m owner --uid-owner/--gid-owner` takes it: a number or a name.
pub fn parse_owner(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '$'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a user/group name or numeric id"))
    }
}

/// Parses a comma-separated list of users or groups.
pub fn parse_owner_list(s: &str) -> Result<Vec<String>, String> {
    split_list(s).map(parse_owner).collect()
}

/// A network interface name as iptables `-i`/`-o` takes it.
pub fn parse_interface(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() < 16
        && s.chars()
            .all(|c| c.is_ascii_graphic() && c != '/' && c != ',');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a network interface name"))
    }
}

/// Parses a comma-separated list of interfaces.
pub fn parse_interface_list(s: &str) -> Result<Vec<String>, String> {
    split_list(s).map(parse_interface).collect()
}

/// Validates `ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR` as Istio does: an IPv4 loopback CIDR with a
/// mask between 8 and 32.
pub fn parse_ipv4_loopback_cidr(s: &str) -> Result<Ipv4Net, String> {
    let net: Ipv4Net = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an IPv4 CIDR range"))?;
    if !net.addr().is_loopback() {
        return Err(format!(
            "{s:?} is not in the IPv4 loopback range 127.0.0.0/8"
        ));
    }
    if net.prefix_len() < 8 {
        return Err(format!("{s:?} must have a mask between 8 and 32"));
    }
    Ok(net)
}

/// Parses a Go `time.Duration` string (`5s`, `1m30s`, `250ms`), as Istio's flags take them.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("{s:?} is not a duration (expected e.g. 5s, 500ms or 1m30s)");
    let mut rest = s.trim();
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(err());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let (number, tail) = rest.split_at(digits);
        let value: f64 = number.parse().map_err(|_| err())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        total += Duration::try_from_secs_f64(value * scale).map_err(|_| err())?;
        rest = tail;
    }
    Ok(total)
}

/// Parses a boolean the way Go's `strconv.ParseBool` does (Istio's flags and env vars).
pub fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(format!(
            "{other:?} is not a boolean (expected true or false)"
        )),
    }
}

/// Which iptables implementation to drive (`--force-iptables-binary`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IptablesFlavor {
    /// `iptables-nft` and friends.
    Nft,
    /// `iptables-legacy` and friends.
    Legacy,
    /// Whatever plain `iptables` is on this system.
    Plain,
}

// === impl IptablesFlavor ===

impl FromStr for IptablesFlavor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "nft" | "iptables-nft" | "ip6tables-nft" => Ok(Self::Nft),
            "legacy" | "iptables-legacy" | "ip6tables-legacy" => Ok(Self::Legacy),
            "iptables" | "ip6tables" => Ok(Self::Plain),
            other => Err(format!(
                "unknown iptables binary {other:?}: expected \"nft\", \"legacy\" or \"iptables\""
            )),
        }
    }
}

/// A DNS server from resolv.conf. The text is kept as written, since Istio renders it verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsServer {
    pub addr: IpAddr,
    pub text: String,
}

// === impl DnsServer ===

impl FromStr for DnsServer {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let addr = text
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address"))?;
        Ok(Self {
            addr,
            text: text.to_string(),
        })
    }
}

/// The whole capture configuration. Field names follow Istio's `Config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `-p`: outbound traffic goes here (virtualOutbound).
    pub proxy_port: u16,
    /// `-z`: inbound traffic goes here (virtualInbound).
    pub inbound_capture_port: u16,
    /// `-e`: the HBONE tunnel port, never captured.
    pub inbound_tunnel_port: u16,
    /// `-u`: uids whose traffic is never captured (the proxy's).
    pub proxy_uids: Vec<String>,
    /// `-g`: gids whose traffic is never captured.
    pub proxy_gids: Vec<String>,
    /// `-m`.
    pub inbound_interception_mode: InterceptionMode,
    /// `-t`: the TPROXY mark.
    pub inbound_tproxy_mark: u32,
    /// `-r`: the TPROXY policy-routing table.
    pub inbound_tproxy_route_table: u32,
    /// `-b`.
    pub inbound_ports_include: InboundPorts,
    /// `-d`: only used with `-b '*'`.
    pub inbound_ports_exclude: Vec<PortSpec>,
    /// `-q`: outbound ports always redirected.
    pub outbound_ports_include: Vec<PortSpec>,
    /// `-o`: outbound ports never redirected (TCP and UDP).
    pub outbound_ports_exclude: Vec<PortSpec>,
    /// `-i`.
    pub outbound_ip_ranges_include: IpRanges,
    /// `-x` (never a wildcard).
    pub outbound_ip_ranges_exclude: IpRanges,
    /// `-k`: interfaces whose inbound traffic is treated as outbound.
    pub kube_virt_interfaces: Vec<String>,
    /// `-c`: interfaces never captured.
    pub exclude_interfaces: Vec<String>,
    /// `ISTIO_OUTBOUND_OWNER_GROUPS[_EXCLUDE]`.
    pub owner_groups: OwnerGroups,
    /// `ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR`.
    pub host_ipv4_loopback_cidr: Ipv4Net,
    /// `--redirect-dns`.
    pub redirect_dns: bool,
    /// `--capture-all-dns`.
    pub capture_all_dns: bool,
    /// `--drop-invalid`.
    pub drop_invalid: bool,
    /// `--dual-stack`.
    pub dual_stack: bool,
    /// Whether ip6tables rules are generated. Istio detects it from the pod's addresses.
    pub enable_ipv6: bool,
    /// Nameservers from resolv.conf, used when `--redirect-dns` without `--capture-all-dns`.
    pub dns_servers_v4: Vec<DnsServer>,
    pub dns_servers_v6: Vec<DnsServer>,
    /// `--iptables-probe-port`.
    pub iptables_probe_port: u16,
    /// `--probe-timeout`.
    pub probe_timeout: Duration,
    /// `-n`: print, touch nothing.
    pub dry_run: bool,
    /// `--skip-rule-apply`.
    pub skip_rule_apply: bool,
    /// `--run-validation`.
    pub run_validation: bool,
    /// `--reconcile`.
    pub reconcile: bool,
    /// `--cleanup-only`.
    pub cleanup_only: bool,
    /// `--force-apply`.
    pub force_apply: bool,
    /// `--force-iptables-binary`.
    pub force_iptables_binary: Option<IptablesFlavor>,
    /// `--network-namespace`: a netns path to enter before doing anything.
    pub network_namespace: Option<String>,
}

// === impl Config ===

impl Default for Config {
    /// Istio's `DefaultConfig()` (no capture at all until `-b`/`-i` say so).
    fn default() -> Self {
        Self {
            proxy_port: 15001,
            inbound_capture_port: 15006,
            inbound_tunnel_port: 15008,
            proxy_uids: vec![DEFAULT_PROXY_UID.to_string()],
            proxy_gids: vec![DEFAULT_PROXY_UID.to_string()],
            inbound_interception_mode: InterceptionMode::Redirect,
            inbound_tproxy_mark: 1337,
            inbound_tproxy_route_table: 133,
            inbound_ports_include: InboundPorts::None,
            inbound_ports_exclude: Vec::new(),
            outbound_ports_include: Vec::new(),
            outbound_ports_exclude: Vec::new(),
            outbound_ip_ranges_include: IpRanges::default(),
            outbound_ip_ranges_exclude: IpRanges::default(),
            kube_virt_interfaces: Vec::new(),
            exclude_interfaces: Vec::new(),
            owner_groups: OwnerGroups::default(),
            host_ipv4_loopback_cidr: Ipv4Net::new(Ipv4Addr::LOCALHOST, 32)
                .unwrap_or_else(|_| unreachable!("/32 is a valid IPv4 prefix")),
            redirect_dns: false,
            capture_all_dns: false,
            drop_invalid: false,
            dual_stack: false,
            enable_ipv6: false,
            dns_servers_v4: Vec::new(),
            dns_servers_v6: Vec::new(),
            iptables_probe_port: 15002,
            probe_timeout: Duration::from_secs(5),
            dry_run: false,
            skip_rule_apply: false,
            run_validation: false,
            reconcile: false,
            cleanup_only: false,
            force_apply: false,
            force_iptables_binary: None,
            network_namespace: None,
        }
    }
}

impl Config {
    /// Whether inbound capture uses TPROXY.
    pub fn is_tproxy(&self) -> bool {
        self.inbound_interception_mode == InterceptionMode::Tproxy
    }

    /// Whether DNS capture really happens. Istio turns it off, with a warning, when
    /// `--redirect-dns` is set but neither `--capture-all-dns` nor any nameserver is known.
    pub fn dns_capture_enabled(&self) -> bool {
        self.redirect_dns
            && (self.capture_all_dns
                || !self.dns_servers_v4.is_empty()
                || !self.dns_servers_v6.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs_parse_and_render_like_iptables() {
        assert_eq!(PortSpec::from_str("15090").unwrap().to_string(), "15090");
        assert_eq!(
            PortSpec::from_str("8000:8100").unwrap().to_string(),
            "8000:8100"
        );
        for bad in ["0", "65536", "abc", "80:70", "-1", ""] {
            assert!(PortSpec::from_str(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn inbound_ports_wildcard_empty_and_list() {
        assert_eq!("".parse::<InboundPorts>().unwrap(), InboundPorts::None);
        assert_eq!("*".parse::<InboundPorts>().unwrap(), InboundPorts::All);
        assert_eq!(
            "4000, 5000,".parse::<InboundPorts>().unwrap(),
            InboundPorts::List(vec![PortSpec::single(4000), PortSpec::single(5000)])
        );
        let err = "4000,http".parse::<InboundPorts>().unwrap_err();
        assert!(err.contains("\"http\""), "{err}");
    }

    #[test]
    fn ip_ranges_split_by_family_and_reject_garbage() {
        let r: IpRanges = "10.0.0.0/8,2001:db8::/32,127.1.2.3/32".parse().unwrap();
        assert_eq!(r.v4.len(), 2);
        assert_eq!(r.v6.len(), 1);
        assert!(r.has_loopback());
        assert!("*".parse::<IpRanges>().unwrap().wildcard);
        let err = "10.0.0.0/8,10.0.0.300/32".parse::<IpRanges>().unwrap_err();
        assert!(err.contains("10.0.0.300/32"), "{err}");
        assert!("10.0.0.0/8,*".parse::<IpRanges>().is_err());
        assert!(
            "10.0.0.1".parse::<IpRanges>().is_err(),
            "a bare IP is not a CIDR"
        );
    }

    #[test]
    fn loopback_cidr_is_validated_like_istio() {
        assert!(parse_ipv4_loopback_cidr("127.0.0.1/8").is_ok());
        assert!(parse_ipv4_loopback_cidr("10.0.0.1/32").is_err());
        assert!(parse_ipv4_loopback_cidr("127.0.0.1/4").is_err());
        assert!(parse_ipv4_loopback_cidr("::1/128").is_err());
    }

    #[test]
    fn go_durations_and_bools() {
        assert_eq!(parse_go_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_go_duration("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert!(parse_go_duration("5").is_err());
        assert!(parse_go_duration("fast").is_err());
        assert!(parse_go_bool("True").unwrap());
        assert!(!parse_go_bool("0").unwrap());
        assert!(parse_go_bool("yes").is_err());
    }

    #[test]
    fn interception_modes() {
        assert_eq!(
            "".parse::<InterceptionMode>(),
            Ok(InterceptionMode::Redirect)
        );
        assert_eq!(
            "TPROXY".parse::<InterceptionMode>(),
            Ok(InterceptionMode::Tproxy)
        );
        assert!("tproxy".parse::<InterceptionMode>().is_err());
        assert!("NONE".parse::<InterceptionMode>().is_err());
    }
}
