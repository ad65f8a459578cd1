//! Compiling `FilterChainMatch` protos into the build tree, with Envoy's config-time checks.
//!
//! Envoy inserts every chain once per combination of its repeated criteria (each
//! destination range x server name x application protocol x direct source range x source
//! range x source port) into a tree with one level per criterion; a combination that lands
//! on an occupied leaf is a config error. We do the same, in `BTreeMap`s, then freeze the
//! tree into lookup tables (see `tree`).

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use envoy_types::pb::envoy::config::listener::v3::FilterChainMatch;
use envoy_types::pb::envoy::config::listener::v3::filter_chain_match::ConnectionSourceType;

use super::cidr::{Cidr, CidrError, IpKey};

/// Why a listener's filter chains were rejected; the text is what a NACK or a bootstrap error
/// says, and names the chain.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterChainMatchError {
    /// Neither filter chains nor a default chain.
    #[error("no filter chains specified: add a filter chain or a default_filter_chain")]
    NoFilterChains,
    /// A port outside 1-65535 (Envoy's proto constraint).
    #[error("filter chain {chain}: {field} {value} is not a port; use 1-65535")]
    InvalidPort {
        chain: ChainName,
        field: &'static str,
        value: u32,
    },
    /// A `source_type` that is not one of the enum's values.
    #[error(
        "filter chain {chain}: source_type {value} is not ANY (0), SAME_IP_OR_LOOPBACK (1) or EXTERNAL (2)"
    )]
    InvalidSourceType { chain: ChainName, value: i32 },
    /// A CIDR range that does not parse.
    #[error("filter chain {chain}: {field} entry {address:?}: {reason}")]
    InvalidCidr {
        chain: ChainName,
        field: &'static str,
        address: String,
        reason: CidrError,
    },
    /// `address_suffix` or `suffix_len`, which Envoy rejects as unimplemented.
    #[error(
        "filter chain {chain} sets address_suffix or suffix_len, which Envoy does not implement; remove them"
    )]
    UnimplementedFields { chain: ChainName },
    /// Two chains with identical `filter_chain_match` messages.
    #[error(
        "filter chain {chain} has the same matching rules defined as {other}; give each chain a distinct filter_chain_match"
    )]
    SameMatch { chain: ChainName, other: ChainName },
    /// A server name with a `*` that is not a leading `*.`.
    #[error(
        "filter chain {chain}: partial wildcards are not supported in server_names ({name:?}); use an exact name or a leading \"*.\""
    )]
    PartialWildcard { chain: ChainName, name: String },
    /// One chain lists a value twice (say, the same server name), which Envoy rejects as an
    /// overlap with itself.
    #[error(
        "filter chain {chain} matches {overlap} twice (a repeated value in one of its lists); remove the duplicate"
    )]
    RepeatedValue { chain: ChainName, overlap: String },
    /// Two chains that both claim some connections.
    #[error(
        "filter chains {other} and {chain} have overlapping matching rules: both match {overlap}; make one of them more specific"
    )]
    Overlapping {
        chain: ChainName,
        other: ChainName,
        overlap: String,
    },
}

/// A filter chain in an error message: its `name`, or its position when unnamed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainName {
    /// Position in the listener's `filter_chains`.
    pub index: usize,
    /// The chain's `name` (may be empty).
    pub name: String,
}

/// `source_type` as a tree key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum SourceType {
    Any,
    Local,
    External,
}

pub(super) type PortLevel = BTreeMap<u16, usize>;
pub(super) type SourceIpLevel = BTreeMap<IpKey, PortLevel>;
pub(super) type SourceTypeLevel = BTreeMap<SourceType, SourceIpLevel>;
pub(super) type DirectLevel = BTreeMap<IpKey, SourceTypeLevel>;
/// Keyed by protocol; the empty key is "any".
pub(super) type AlpnLevel = BTreeMap<Box<[u8]>, DirectLevel>;
pub(super) type TransportLevel = BTreeMap<Box<[u8]>, AlpnLevel>;
/// Keyed by exact name, or by `.suffix` for `*.suffix`; the empty key is "any".
pub(super) type NameLevel = BTreeMap<Box<[u8]>, TransportLevel>;
pub(super) type IpLevel = BTreeMap<IpKey, NameLevel>;
/// Keyed by destination port; 0 is "any".
pub(super) type Tree = BTreeMap<u16, IpLevel>;

/// One chain's criteria, validated and normalised; empty lists became "any".
#[derive(Debug)]
pub(super) struct Criteria {
    destination_port: u16,
    destination_ips: Vec<IpKey>,
    server_names: Vec<Box<[u8]>>,
    transport_protocol: Box<[u8]>,
    application_protocols: Vec<Box<[u8]>>,
    direct_source_ips: Vec<IpKey>,
    source_type: SourceType,
    source_ips: Vec<IpKey>,
    source_ports: Vec<u16>,
}

/// One leaf of the tree: a single value per criterion.
#[derive(Clone, Copy, Debug)]
struct Path<'c> {
    destination_port: u16,
    destination_ip: IpKey,
    server_name: &'c [u8],
    transport_protocol: &'c [u8],
    application_protocol: &'c [u8],
    direct_source_ip: IpKey,
    source_type: SourceType,
    source_ip: IpKey,
    source_port: u16,
}

// === impl ChainName ===

impl std::fmt::Display for ChainName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.name.is_empty() {
            write!(f, "#{} (unnamed)", self.index)
        } else {
            write!(f, "'{}'", self.name)
        }
    }
}

// === impl Criteria ===

impl Criteria {
    /// Validates a chain's match and normalises it: Envoy's proto constraints, its
    /// unimplemented fields, CIDR parsing, lower-cased server names and the partial-wildcard
    /// rule. (The duplicate check sits between the unimplemented-fields check and the CIDR
    /// parsing in Envoy; the caller does it with [`Criteria::check_proto`] first.)
    pub(super) fn new(
        chain: &ChainName,
        m: &FilterChainMatch,
    ) -> Result<Self, FilterChainMatchError> {
        let destination_port = m.destination_port.map_or(0, |p| p.value);
        let server_names = m
            .server_names
            .iter()
            .map(|name| server_name_key(chain, name))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            destination_port: u16::try_from(destination_port).unwrap_or(0),
            destination_ips: ip_keys(chain, "prefix_ranges", &m.prefix_ranges)?,
            server_names: or_any(server_names),
            transport_protocol: m.transport_protocol.as_bytes().into(),
            application_protocols: or_any(
                m.application_protocols
                    .iter()
                    .map(|p| p.as_bytes().into())
                    .collect(),
            ),
            direct_source_ips: ip_keys(
                chain,
                "direct_source_prefix_ranges",
                &m.direct_source_prefix_ranges,
            )?,
            source_type: source_type(chain, m.source_type)?,
            source_ips: ip_keys(chain, "source_prefix_ranges", &m.source_prefix_ranges)?,
            source_ports: if m.source_ports.is_empty() {
                vec![0]
            } else {
                m.source_ports
                    .iter()
                    .map(|&p| u16::try_from(p).unwrap_or(0))
                    .collect()
            },
        })
    }

    /// The checks Envoy makes before comparing chains: proto constraints (ports, enum
    /// values, CIDR lengths) and the unimplemented suffix fields.
    pub(super) fn check_proto(
        chain: &ChainName,
        m: &FilterChainMatch,
    ) -> Result<(), FilterChainMatchError> {
        if let Some(port) = m.destination_port {
            check_port(chain, "destination_port", port.value)?;
        }
        for &port in &m.source_ports {
            check_port(chain, "source_ports", port)?;
        }
        source_type(chain, m.source_type)?;
        for (field, ranges) in [
            ("prefix_ranges", &m.prefix_ranges),
            (
                "direct_source_prefix_ranges",
                &m.direct_source_prefix_ranges,
            ),
            ("source_prefix_ranges", &m.source_prefix_ranges),
        ] {
            for range in ranges {
                match Cidr::from_proto(range) {
                    Err(reason @ (CidrError::EmptyAddress | CidrError::PrefixTooLong(_))) => {
                        return Err(FilterChainMatchError::InvalidCidr {
                            chain: chain.clone(),
                            field,
                            address: range.address_prefix.clone(),
                            reason,
                        });
                    }
                    // Malformed addresses are reported later, in Envoy's order.
                    Err(CidrError::MalformedAddress(_)) | Ok(_) => {}
                }
            }
        }
        if !m.address_suffix.is_empty() || m.suffix_len.is_some() {
            return Err(FilterChainMatchError::UnimplementedFields {
                chain: chain.clone(),
            });
        }
        Ok(())
    }

    /// Inserts every combination of the criteria; on a collision returns the index of the
    /// chain already there and a description of the overlap.
    pub(super) fn insert(&self, tree: &mut Tree, chain: usize) -> Result<(), (usize, String)> {
        for &destination_ip in &self.destination_ips {
            for server_name in &self.server_names {
                for application_protocol in &self.application_protocols {
                    for &direct_source_ip in &self.direct_source_ips {
                        for &source_ip in &self.source_ips {
                            for &source_port in &self.source_ports {
                                let path = Path {
                                    destination_port: self.destination_port,
                                    destination_ip,
                                    server_name,
                                    transport_protocol: &self.transport_protocol,
                                    application_protocol,
                                    direct_source_ip,
                                    source_type: self.source_type,
                                    source_ip,
                                    source_port,
                                };
                                path.insert(tree, chain)
                                    .map_err(|other| (other, path.describe()))?;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether the chain needs the TLS inspector's results, with Envoy's rule for adding
    /// the inspector on its own: transport `tls`, or no transport but server names or
    /// application protocols.
    pub(super) fn needs_tls_inspector(m: &FilterChainMatch) -> bool {
        m.transport_protocol == "tls"
            || (m.transport_protocol.is_empty()
                && (!m.server_names.is_empty() || !m.application_protocols.is_empty()))
    }

    /// Whether the chain matches a protocol only the HTTP inspector reports (`http/1.0`,
    /// `http/1.1`, `h2c`) on a connection that may be plaintext.
    pub(super) fn needs_http_inspector(m: &FilterChainMatch) -> bool {
        m.transport_protocol != "tls"
            && m.application_protocols
                .iter()
                .any(|p| matches!(p.as_str(), "http/1.0" | "http/1.1" | "h2c"))
    }
}

fn or_any<T: Default>(v: Vec<T>) -> Vec<T> {
    if v.is_empty() { vec![T::default()] } else { v }
}

fn check_port(
    chain: &ChainName,
    field: &'static str,
    value: u32,
) -> Result<(), FilterChainMatchError> {
    if (1..=65535).contains(&value) {
        Ok(())
    } else {
        Err(FilterChainMatchError::InvalidPort {
            chain: chain.clone(),
            field,
            value,
        })
    }
}

fn source_type(chain: &ChainName, value: i32) -> Result<SourceType, FilterChainMatchError> {
    match ConnectionSourceType::try_from(value) {
        Ok(ConnectionSourceType::Any) => Ok(SourceType::Any),
        Ok(ConnectionSourceType::SameIpOrLoopback) => Ok(SourceType::Local),
        Ok(ConnectionSourceType::External) => Ok(SourceType::External),
        Err(_) => Err(FilterChainMatchError::InvalidSourceType {
            chain: chain.clone(),
            value,
        }),
    }
}

fn ip_keys(
    chain: &ChainName,
    field: &'static str,
    ranges: &[envoy_types::pb::envoy::config::core::v3::CidrRange],
) -> Result<Vec<IpKey>, FilterChainMatchError> {
    let keys = ranges
        .iter()
        .map(|range| {
            Cidr::from_proto(range).map(IpKey::Range).map_err(|reason| {
                FilterChainMatchError::InvalidCidr {
                    chain: chain.clone(),
                    field,
                    address: range.address_prefix.clone(),
                    reason,
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(if keys.is_empty() {
        vec![IpKey::Any]
    } else {
        keys
    })
}

/// `www.example.com` stays as is, `*.example.com` becomes `.example.com`, both lower-cased;
/// any other `*` is rejected.
fn server_name_key(chain: &ChainName, name: &str) -> Result<Box<[u8]>, FilterChainMatchError> {
    let lower = name.to_ascii_lowercase();
    if let Some(suffix) = lower.strip_prefix('*')
        && suffix.starts_with('.')
    {
        return Ok(suffix.as_bytes().into());
    }
    if lower.contains('*') {
        return Err(FilterChainMatchError::PartialWildcard {
            chain: chain.clone(),
            name: name.into(),
        });
    }
    Ok(lower.into_bytes().into_boxed_slice())
}

// === impl Path ===

impl Path<'_> {
    fn insert(&self, tree: &mut Tree, chain: usize) -> Result<(), usize> {
        let leaf = tree
            .entry(self.destination_port)
            .or_default()
            .entry(self.destination_ip)
            .or_default()
            .entry(self.server_name.into())
            .or_default()
            .entry(self.transport_protocol.into())
            .or_default()
            .entry(self.application_protocol.into())
            .or_default()
            .entry(self.direct_source_ip)
            .or_default()
            .entry(self.source_type)
            .or_default()
            .entry(self.source_ip)
            .or_default()
            .entry(self.source_port);
        match leaf {
            Entry::Vacant(e) => {
                e.insert(chain);
                Ok(())
            }
            Entry::Occupied(e) => Err(*e.get()),
        }
    }

    /// The criteria of this leaf that are not "any", for an overlap error.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.destination_port != 0 {
            parts.push(format!("destination_port {}", self.destination_port));
        }
        if let IpKey::Range(c) = self.destination_ip {
            parts.push(format!("destination {c}"));
        }
        if !self.server_name.is_empty() {
            let name = String::from_utf8_lossy(self.server_name);
            let wildcard = if name.starts_with('.') { "*" } else { "" };
            parts.push(format!("server name \"{wildcard}{name}\""));
        }
        if !self.transport_protocol.is_empty() {
            let t = String::from_utf8_lossy(self.transport_protocol);
            parts.push(format!("transport_protocol \"{t}\""));
        }
        if !self.application_protocol.is_empty() {
            let p = String::from_utf8_lossy(self.application_protocol);
            parts.push(format!("application protocol \"{p}\""));
        }
        if let IpKey::Range(c) = self.direct_source_ip {
            parts.push(format!("direct source {c}"));
        }
        match self.source_type {
            SourceType::Any => {}
            SourceType::Local => parts.push("source_type SAME_IP_OR_LOOPBACK".into()),
            SourceType::External => parts.push("source_type EXTERNAL".into()),
        }
        if let IpKey::Range(c) = self.source_ip {
            parts.push(format!("source {c}"));
        }
        if self.source_port != 0 {
            parts.push(format!("source port {}", self.source_port));
        }
        if parts.is_empty() {
            "every connection".into()
        } else {
            parts.join(", ")
        }
    }
}
