//! `config.core.v3.CidrRange` for RBAC's IP matchers.

use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use ipnet::IpNet;

use super::error::RbacError;

/// A compiled CIDR range. As in Envoy, a prefix longer than the address is clamped (a /40 on
/// an IPv4 address is a /32), a missing prefix_len is /0, and an address only matches a
/// range of its own family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr(IpNet);

// === impl Cidr ===

impl Cidr {
    pub(crate) fn new(range: &CidrRange) -> Result<Self, RbacError> {
        let addr: IpAddr = range
            .address_prefix
            .parse()
            .map_err(|_| RbacError::Address(range.address_prefix.clone()))?;
        let len = range.prefix_len.as_ref().map_or(0, |l| l.value);
        if len > 128 {
            return Err(RbacError::PrefixLen(len));
        }
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = len.min(max) as u8;
        IpNet::new(addr, len)
            .map(|net| Self(net.trunc()))
            .map_err(|_| RbacError::Address(range.address_prefix.clone()))
    }

    /// Whether `ip` is in the range. An IPv4-mapped IPv6 address (a v4 client on a dual-stack
    /// socket) is taken as the IPv4 address, as Envoy reports such peers.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::UInt32Value;

    fn cidr(addr: &str, len: Option<u32>) -> Result<Cidr, RbacError> {
        Cidr::new(&CidrRange {
            address_prefix: addr.into(),
            prefix_len: len.map(|value| UInt32Value { value }),
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_ranges() {
        let c = cidr("192.168.10.7", Some(24)).unwrap();
        assert!(c.contains(ip("192.168.10.200")));
        assert!(!c.contains(ip("192.168.11.1")));
        let host = cidr("10.0.0.1", Some(32)).unwrap();
        assert!(host.contains(ip("10.0.0.1")));
        assert!(!host.contains(ip("10.0.0.2")));
        // Clamped to /32, as Envoy does.
        assert!(cidr("10.0.0.1", Some(64)).unwrap().contains(ip("10.0.0.1")));
        // No prefix_len: /0, every address of the family.
        assert!(cidr("1.2.3.4", None).unwrap().contains(ip("200.0.0.1")));
    }

    #[test]
    fn ipv6_ranges_and_families() {
        let c = cidr("2001:db8::", Some(32)).unwrap();
        assert!(c.contains(ip("2001:db8:1::5")));
        assert!(!c.contains(ip("2001:db9::1")));
        assert!(
            !c.contains(ip("10.0.0.1")),
            "families never match each other"
        );
        let all_v4 = cidr("0.0.0.0", Some(0)).unwrap();
        assert!(!all_v4.contains(ip("::1")));
        // A v4-mapped peer is matched as IPv4.
        assert!(all_v4.contains(ip("::ffff:10.1.2.3")));
        assert!(
            cidr("10.1.0.0", Some(16))
                .unwrap()
                .contains(ip("::ffff:10.1.2.3"))
        );
    }

    #[test]
    fn bad_ranges_are_rejected() {
        assert_eq!(
            cidr("10.0.0", Some(8)).unwrap_err().to_string(),
            "malformed IP address: \"10.0.0\""
        );
        assert_eq!(
            cidr("::1", Some(129)).unwrap_err().to_string(),
            "prefix_len 129 is out of range (at most 128)"
        );
    }
}
