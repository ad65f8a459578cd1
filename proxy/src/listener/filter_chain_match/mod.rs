//! Envoy's filter chain selection (`FilterChainMatch`), compiled once per listener config.
//!
//! The criteria apply in Envoy's order, each narrowing the candidates to the most specific
//! value that matches, with no backtracking:
//!
//! 1. `destination_port`: the exact port, else chains without one;
//! 2. `prefix_ranges` on the local (original destination) address: longest prefix, else
//!    chains without ranges;
//! 3. `server_names`: exact, then `*.` wildcards from the longest suffix down, else chains
//!    without names;
//! 4. `transport_protocol` (`tls` / `raw_buffer`): exact, else chains without one;
//! 5. `application_protocols`: the first of the connection's protocols some chain lists,
//!    else chains without any;
//! 6. `direct_source_prefix_ranges` on the direct peer address;
//! 7. `source_type`: `SAME_IP_OR_LOOPBACK` / `EXTERNAL` when a chain asks, else `ANY`;
//! 8. `source_prefix_ranges` on the peer address;
//! 9. `source_ports`: exact, else chains without ports.
//!
//! When nothing matches, the default filter chain (if any) is used; a listener without one
//! closes the connection. Selection is a handful of table lookups and allocates nothing.

mod build;
mod cidr;
mod tables;
mod tree;

use std::net::SocketAddr;

use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch};

use super::app_protocols::AppProtocols;

pub use build::{ChainName, FilterChainMatchError};
pub use cidr::{CidrError, canonical as canonical_ip};

/// The compiled filter chains of one listener, each carrying a `T` (the built chain).
#[derive(Debug)]
pub struct FilterChainMatcher<T> {
    chains: Vec<T>,
    default_chain: Option<T>,
    tree: tree::Ports,
    needs_tls_inspector: bool,
    needs_http_inspector: bool,
}

/// One filter chain to compile: its name (for errors), its match, and its payload.
#[derive(Debug)]
pub struct ChainSpec<'c, T> {
    /// The chain's `name`; may be empty.
    pub name: &'c str,
    /// The chain's `filter_chain_match`; `None` matches everything.
    pub filter_chain_match: Option<&'c FilterChainMatch>,
    /// What [`FilterChainMatcher::select`] returns for this chain.
    pub chain: T,
}

/// What the matcher needs to know about a connection. All borrowed; build one per
/// connection on the stack.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionInfo<'a> {
    /// The local address: the original destination when the listener recovers it.
    pub local: SocketAddr,
    /// The peer address (after a PROXY protocol header, if any).
    pub remote: SocketAddr,
    /// The address of the directly connected peer.
    pub direct_remote: SocketAddr,
    /// The SNI of a TLS ClientHello; matched case-insensitively.
    pub server_name: Option<&'a [u8]>,
    /// `tls` when the TLS inspector found a ClientHello, else `raw_buffer`.
    pub transport_protocol: TransportProtocol,
    /// The ALPN list of the ClientHello, or the protocol the HTTP inspector found.
    pub application_protocols: AppProtocols<'a>,
}

/// The transport protocol a listener filter detected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TransportProtocol {
    /// No TLS detected (Envoy's default).
    #[default]
    RawBuffer,
    /// A TLS ClientHello.
    Tls,
}

// === impl FilterChainMatcher ===

impl<T> FilterChainMatcher<T> {
    /// Compiles `chains` (in the listener's order) and the optional default chain, with
    /// Envoy's config-time checks; the error names the offending chain.
    pub fn new<'c>(
        chains: impl IntoIterator<Item = ChainSpec<'c, T>>,
        default_chain: Option<T>,
    ) -> Result<Self, FilterChainMatchError> {
        let everything = FilterChainMatch::default();
        let mut tree = build::Tree::new();
        let mut seen: Vec<(&FilterChainMatch, ChainName)> = Vec::new();
        let mut payloads = Vec::new();
        let mut needs_tls_inspector = false;
        let mut needs_http_inspector = false;
        for (index, spec) in chains.into_iter().enumerate() {
            let name = ChainName {
                index,
                name: spec.name.to_string(),
            };
            let m = spec.filter_chain_match.unwrap_or(&everything);
            build::Criteria::check_proto(&name, m)?;
            if let Some((_, other)) = seen.iter().find(|(prev, _)| *prev == m) {
                return Err(FilterChainMatchError::SameMatch {
                    chain: name,
                    other: other.clone(),
                });
            }
            let criteria = build::Criteria::new(&name, m)?;
            criteria
                .insert(&mut tree, index)
                .map_err(|(other, overlap)| match seen.get(other) {
                    Some((_, other)) => FilterChainMatchError::Overlapping {
                        chain: name.clone(),
                        other: other.clone(),
                        overlap,
                    },
                    None => FilterChainMatchError::RepeatedValue {
                        chain: name.clone(),
                        overlap,
                    },
                })?;
            needs_tls_inspector |= build::Criteria::needs_tls_inspector(m);
            needs_http_inspector |= build::Criteria::needs_http_inspector(m);
            seen.push((m, name));
            payloads.push(spec.chain);
        }
        if payloads.is_empty() && default_chain.is_none() {
            return Err(FilterChainMatchError::NoFilterChains);
        }
        Ok(Self {
            chains: payloads,
            default_chain,
            tree: tree::Ports::freeze(tree),
            needs_tls_inspector,
            needs_http_inspector,
        })
    }

    /// Compiles a listener's `filter_chains` and `default_filter_chain`, building each
    /// chain's payload with `build`.
    pub fn from_filter_chains(
        chains: &[FilterChain],
        default_chain: Option<&FilterChain>,
        mut build: impl FnMut(&FilterChain) -> T,
    ) -> Result<Self, FilterChainMatchError> {
        let specs: Vec<_> = chains
            .iter()
            .map(|fc| ChainSpec {
                name: &fc.name,
                filter_chain_match: fc.filter_chain_match.as_ref(),
                chain: build(fc),
            })
            .collect();
        let default_chain = default_chain.map(&mut build);
        Self::new(specs, default_chain)
    }

    /// The chain for a connection: the matching chain, else the default chain; `None`
    /// means Envoy would close the connection.
    pub fn select(&self, conn: &ConnectionInfo<'_>) -> Option<&T> {
        self.tree
            .select(conn)
            .and_then(|index| self.chains.get(index))
            .or(self.default_chain.as_ref())
    }

    /// Whether some chain matches on what the TLS inspector reports (SNI, `tls`, ALPN);
    /// Envoy's rule for adding the inspector itself.
    pub fn needs_tls_inspector(&self) -> bool {
        self.needs_tls_inspector
    }

    /// Whether some plaintext-capable chain matches `http/1.0`, `http/1.1` or `h2c`, which
    /// only the HTTP inspector reports.
    pub fn needs_http_inspector(&self) -> bool {
        self.needs_http_inspector
    }

    /// The compiled chains, in the listener's order.
    pub fn chains(&self) -> &[T] {
        &self.chains
    }

    /// The default chain, if any.
    pub fn default_chain(&self) -> Option<&T> {
        self.default_chain.as_ref()
    }
}

// === impl TransportProtocol ===

impl TransportProtocol {
    /// The name filter chains match on.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RawBuffer => "raw_buffer",
            Self::Tls => "tls",
        }
    }
}

#[cfg(test)]
mod tests;
