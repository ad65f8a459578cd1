//! Facts istio-iptables reads from the machine rather than from flags: whether the pod has
//! IPv6, the nameservers in resolv.conf, the proxy user's uid. Behind a trait so that rule
//! generation can be tested hermetically.

use std::net::IpAddr;

use crate::config::DnsServer;

/// Where istio-iptables reads nameservers from.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// What the host tells us.
pub trait System {
    /// The pod's first usable address family, as Istio's `getLocalIP`: the first address
    /// that is neither loopback nor link-local decides; with `dual_stack`, any IPv6 address
    /// makes it IPv6. Returns `Ok(true)` for IPv6.
    fn pod_is_ipv6(&self, dual_stack: bool) -> Result<bool, String>;

    /// The nameservers from resolv.conf.
    fn nameservers(&self) -> Result<Vec<DnsServer>, String>;

    /// The uid of a user, if it exists.
    fn uid_of(&self, user: &str) -> Option<u32>;
}

/// The real machine.
#[derive(Debug, Default, Clone, Copy)]
pub struct Host;

// === impl Host ===

impl System for Host {
    fn pod_is_ipv6(&self, dual_stack: bool) -> Result<bool, String> {
        let addrs = nix::ifaddrs::getifaddrs()
            .map_err(|e| format!("cannot list network interface addresses: {e}"))?;
        let ips = addrs.filter_map(|ifa| {
            let sa = ifa.address?;
            if let Some(v4) = sa.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                sa.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        });
        pick_pod_family(ips, dual_stack)
    }

    fn nameservers(&self) -> Result<Vec<DnsServer>, String> {
        let text = std::fs::read_to_string(RESOLV_CONF)
            .map_err(|e| format!("failed to load {RESOLV_CONF}: {e}"))?;
        Ok(parse_resolv_conf(&text))
    }

    fn uid_of(&self, user: &str) -> Option<u32> {
        nix::unistd::User::from_name(user)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
    }
}

/// Istio's `getLocalIP` decision over a list of interface addresses.
pub fn pick_pod_family(
    ips: impl IntoIterator<Item = IpAddr>,
    dual_stack: bool,
) -> Result<bool, String> {
    let mut first: Option<bool> = None;
    for ip in ips {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let usable = match ip {
            IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local(),
            IpAddr::V6(v6) => {
                let link_local_multicast = v6.is_multicast() && (v6.segments()[0] & 0x000f) == 2;
                !(v6.is_loopback() || v6.is_unicast_link_local() || link_local_multicast)
            }
        };
        if !usable {
            continue;
        }
        let is_v6 = ip.is_ipv6();
        if !dual_stack || is_v6 {
            return Ok(is_v6);
        }
        first.get_or_insert(is_v6);
    }
    first.ok_or_else(|| {
        "no valid local IP address found (the pod has no non-loopback, non-link-local address)"
            .to_string()
    })
}

/// The `nameserver` lines of a resolv.conf. Entries that are not plain IP addresses (a
/// link-local address with a zone, say) cannot be written into an iptables rule and are
/// skipped.
pub fn parse_resolv_conf(text: &str) -> Vec<DnsServer> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("nameserver"), Some(addr)) => addr.parse().ok(),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn first_usable_address_decides_the_family() {
        let v4_first = ips(&["127.0.0.1", "::1", "fe80::1", "10.0.0.5", "fd00::5"]);
        assert_eq!(pick_pod_family(v4_first.clone(), false), Ok(false));
        assert_eq!(
            pick_pod_family(v4_first, true),
            Ok(true),
            "dual stack: any IPv6 counts"
        );
        assert_eq!(pick_pod_family(ips(&["::1", "fd00::5"]), false), Ok(true));
        assert_eq!(pick_pod_family(ips(&["10.0.0.5"]), true), Ok(false));
        assert!(pick_pod_family(ips(&["127.0.0.1", "169.254.1.1"]), false).is_err());
    }

    #[test]
    fn resolv_conf_nameservers_kept_verbatim() {
        let servers = parse_resolv_conf(
            "# comment\nsearch default.svc.cluster.local\nnameserver 10.96.0.10\n\
             nameserver ::127.0.0.53\nnameserver fe80::1%eth0\noptions ndots:5\n",
        );
        let texts: Vec<&str> = servers.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts, ["10.96.0.10", "::127.0.0.53"]);
    }
}
