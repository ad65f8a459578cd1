//! CIDR ranges with Envoy's `CidrRange` semantics, and a longest-prefix-match table.
//!
//! Envoy normalises every range (host bits cleared; an IPv4 length above 32 is clamped to
//! 32) and looks addresses up in an LC-trie that returns the most specific range. An IPv4
//! address only matches IPv4 ranges and an IPv6 address only IPv6 ranges, so an
//! IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) matches `::ffff:10.0.0.0/104` and `::/0`,
//! not `10.0.0.0/8`; Envoy's accept path turns mapped addresses of dual-stack sockets into
//! IPv4 first (see [`canonical`]).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use envoy_types::pb::envoy::config::core::v3::CidrRange;

/// A normalised CIDR range: the address has its host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Cidr {
    addr: IpAddr,
    len: u8,
}

/// Why a `CidrRange` was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// `address_prefix` is empty.
    #[error("address_prefix is empty")]
    EmptyAddress,
    /// `address_prefix` is not an IPv4 or IPv6 address.
    #[error("malformed IP address {0:?}")]
    MalformedAddress(String),
    /// `prefix_len` is above the proto's limit.
    #[error("prefix_len {0} is above 128")]
    PrefixTooLong(u32),
}

/// A longest-prefix-match table from CIDR ranges to values.
///
/// Each family keeps one hash map per distinct prefix length, probed from the longest
/// length down, and the `/0` entry aside; lookups never allocate.
#[derive(Debug)]
pub(super) struct PrefixTable<V> {
    values: Vec<V>,
    v4: Family<u32>,
    v6: Family<u128>,
}

/// The key of one destination, direct-source or source range entry while building: a range,
/// or "no ranges configured", which Envoy expands to `0.0.0.0/0` and `::/0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum IpKey {
    Any,
    Range(Cidr),
}

#[derive(Debug)]
struct Family<K> {
    /// `(prefix length, masked address -> value index)`, longest length first; no `/0`.
    by_len: Vec<(u8, HashMap<K, usize, IntHash>)>,
    /// The `/0` entry.
    zero: Option<usize>,
}

/// A hasher for integer keys (FxHash's multiply-rotate); the keys are addresses from the
/// config, so there is nothing for an attacker to collide.
#[derive(Default)]
struct IntHasher(u64);

type IntHash = BuildHasherDefault<IntHasher>;

/// The address Envoy's accept path reports for a peer: an IPv4-mapped IPv6 address, as a
/// dual-stack socket returns it, becomes the IPv4 address.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

// === impl Cidr ===

impl Cidr {
    /// Parses and normalises a `CidrRange` as Envoy's `CidrRange::create` does.
    pub(super) fn from_proto(range: &CidrRange) -> Result<Self, CidrError> {
        let len = range.prefix_len.map_or(0, |l| l.value);
        if len > 128 {
            return Err(CidrError::PrefixTooLong(len));
        }
        if range.address_prefix.is_empty() {
            return Err(CidrError::EmptyAddress);
        }
        let addr: IpAddr = range
            .address_prefix
            .parse()
            .map_err(|_| CidrError::MalformedAddress(range.address_prefix.clone()))?;
        // Bounded by 128 above.
        let len = u8::try_from(len).unwrap_or(128);
        Ok(Self::new(addr, len))
    }

    pub(super) fn new(addr: IpAddr, len: u8) -> Self {
        match addr {
            IpAddr::V4(a) => {
                let len = len.min(32);
                let bits = u32::from(a) & mask32(len);
                Self {
                    addr: IpAddr::V4(Ipv4Addr::from(bits)),
                    len,
                }
            }
            IpAddr::V6(a) => {
                let len = len.min(128);
                let bits = u128::from(a) & mask128(len);
                Self {
                    addr: IpAddr::V6(Ipv6Addr::from(bits)),
                    len,
                }
            }
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

// === impl PrefixTable ===

impl<V> PrefixTable<V> {
    /// Builds the table. Envoy puts "no ranges" and an explicit `/0` of the same family into
    /// one trie node and then picks either, depending on pointer hashing; we pick the
    /// explicit range, so the choice is stable.
    pub(super) fn new(entries: Vec<(IpKey, V)>) -> Self {
        let mut table = Self {
            values: Vec::with_capacity(entries.len()),
            v4: Family::default(),
            v6: Family::default(),
        };
        let mut any = None;
        for (key, value) in entries {
            let index = table.values.len();
            table.values.push(value);
            match key {
                IpKey::Any => any = Some(index),
                IpKey::Range(Cidr {
                    addr: IpAddr::V4(a),
                    len,
                }) => table.v4.insert(u32::from(a), len, index),
                IpKey::Range(Cidr {
                    addr: IpAddr::V6(a),
                    len,
                }) => table.v6.insert(u128::from(a), len, index),
            }
        }
        if let Some(index) = any {
            table.v4.zero.get_or_insert(index);
            table.v6.zero.get_or_insert(index);
        }
        table
    }

    /// The value of the most specific range containing `addr`.
    pub(super) fn get(&self, addr: IpAddr) -> Option<&V> {
        let index = match addr {
            IpAddr::V4(a) => self.v4.get(u32::from(a), mask32),
            IpAddr::V6(a) => self.v6.get(u128::from(a), mask128),
        }?;
        self.values.get(index)
    }
}

// === impl Family ===

impl<K> Default for Family<K> {
    fn default() -> Self {
        Self {
            by_len: Vec::new(),
            zero: None,
        }
    }
}

impl<K: Copy + Eq + std::hash::Hash + std::ops::BitAnd<Output = K>> Family<K> {
    fn insert(&mut self, key: K, len: u8, index: usize) {
        if len == 0 {
            self.zero = Some(index);
            return;
        }
        let at = match self.by_len.binary_search_by(|(l, _)| len.cmp(l)) {
            Ok(at) => at,
            Err(at) => {
                self.by_len.insert(at, (len, HashMap::default()));
                at
            }
        };
        if let Some((_, map)) = self.by_len.get_mut(at) {
            map.insert(key, index);
        }
    }

    fn get(&self, key: K, mask: fn(u8) -> K) -> Option<usize> {
        self.by_len
            .iter()
            .find_map(|(len, map)| map.get(&(key & mask(*len))).copied())
            .or(self.zero)
    }
}

// === impl IntHasher ===

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u128(&mut self, n: u128) {
        // Truncation is the point: fold both halves in.
        self.write_u64(n as u64);
        self.write_u64((n >> 64) as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::UInt32Value;

    fn range(addr: &str, len: u32) -> CidrRange {
        CidrRange {
            address_prefix: addr.into(),
            prefix_len: Some(UInt32Value { value: len }),
        }
    }

    fn cidr(addr: &str, len: u32) -> IpKey {
        IpKey::Range(Cidr::from_proto(&range(addr, len)).unwrap())
    }

    #[test]
    fn normalises_like_envoy() {
        let c = Cidr::from_proto(&range("10.1.2.3", 8)).unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        // Envoy clamps an IPv4 length to 32 and accepts up to 128 (the proto's limit).
        let c = Cidr::from_proto(&range("10.1.2.3", 33)).unwrap();
        assert_eq!(c.to_string(), "10.1.2.3/32");
        let c = Cidr::from_proto(&range("2001:db8::1", 32)).unwrap();
        assert_eq!(c.to_string(), "2001:db8::/32");
        let unset = CidrRange {
            address_prefix: "10.1.2.3".into(),
            prefix_len: None,
        };
        assert_eq!(Cidr::from_proto(&unset).unwrap().to_string(), "0.0.0.0/0");
    }

    #[test]
    fn rejects_what_envoy_rejects() {
        assert_eq!(
            Cidr::from_proto(&range("10.0.0.300", 8)),
            Err(CidrError::MalformedAddress("10.0.0.300".into()))
        );
        assert_eq!(
            Cidr::from_proto(&range("::1", 129)),
            Err(CidrError::PrefixTooLong(129))
        );
        assert_eq!(
            Cidr::from_proto(&range("", 0)),
            Err(CidrError::EmptyAddress)
        );
    }

    #[test]
    fn longest_prefix_wins_within_a_family() {
        let table = PrefixTable::new(vec![
            (cidr("10.0.0.0", 8), "8"),
            (cidr("10.1.0.0", 16), "16"),
            (cidr("10.1.2.3", 32), "32"),
            (cidr("::", 0), "v6-any"),
        ]);
        let get = |a: &str| table.get(a.parse().unwrap()).copied();
        assert_eq!(get("10.1.2.3"), Some("32"));
        assert_eq!(get("10.1.9.9"), Some("16"));
        assert_eq!(get("10.9.9.9"), Some("8"));
        assert_eq!(get("11.0.0.1"), None, "no IPv4 catch-all");
        assert_eq!(get("2001:db8::1"), Some("v6-any"));
        // A mapped address stays IPv6 unless the caller canonicalises it.
        assert_eq!(get("::ffff:10.1.2.3"), Some("v6-any"));
        assert_eq!(
            table
                .get(canonical("::ffff:10.1.2.3".parse().unwrap()))
                .copied(),
            Some("32")
        );
    }

    #[test]
    fn no_ranges_matches_both_families_below_an_explicit_catch_all() {
        let table = PrefixTable::new(vec![(IpKey::Any, "any"), (cidr("0.0.0.0", 0), "v4-zero")]);
        assert_eq!(table.get("1.2.3.4".parse().unwrap()), Some(&"v4-zero"));
        assert_eq!(table.get("::1".parse().unwrap()), Some(&"any"));
    }
}
