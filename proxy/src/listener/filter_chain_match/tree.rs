//! The frozen filter chain tree and Envoy's selection walk over it.
//!
//! Each level narrows the candidates to the most specific value that matches the connection
//! and never comes back: if the chosen branch has nothing for a later criterion, there is no
//! match, even when a less specific branch would have had one (Envoy's documented "no
//! backtracking"; e.g. a port-specific subtree that matches nothing does not fall back to
//! the port-less chains).

use std::net::IpAddr;

use super::ConnectionInfo;
use super::build::{self, SourceType};
use super::cidr::{IpKey, PrefixTable};
use super::tables::{NameTable, PortTable};

/// The longest server name a TLS ClientHello can carry (BoringSSL rejects longer ones).
const MAX_SERVER_NAME: usize = 255;

#[derive(Debug)]
pub(super) struct Ports {
    exact: PortTable<Ips>,
    any: Option<Ips>,
}

type Ips = PrefixTable<Names>;

#[derive(Debug)]
struct Names {
    /// Exact names and `.suffix` wildcard keys share one table, as in Envoy.
    names: NameTable<Transports>,
    any: Option<Transports>,
}

#[derive(Debug)]
struct Transports {
    exact: NameTable<Alpns>,
    any: Option<Alpns>,
}

#[derive(Debug)]
struct Alpns {
    exact: NameTable<DirectSources>,
    any: Option<DirectSources>,
}

type DirectSources = PrefixTable<SourceTypes>;

#[derive(Debug)]
struct SourceTypes {
    any: Option<SourceIps>,
    local: Option<SourceIps>,
    external: Option<SourceIps>,
}

type SourceIps = PrefixTable<SourcePorts>;

#[derive(Debug)]
struct SourcePorts {
    exact: PortTable<usize>,
    any: Option<usize>,
}

// === impl Ports ===

impl Ports {
    pub(super) fn freeze(tree: build::Tree) -> Self {
        let mut exact = Vec::new();
        let mut any = None;
        for (port, ips) in tree {
            let ips = freeze_ips(ips);
            if port == 0 {
                any = Some(ips);
            } else {
                exact.push((port, ips));
            }
        }
        Self {
            exact: PortTable::new(exact),
            any,
        }
    }

    /// The index of the selected chain, or `None` when no chain matches (the caller then
    /// uses the default chain).
    pub(super) fn select(&self, conn: &ConnectionInfo<'_>) -> Option<usize> {
        // A port-specific subtree decides alone, even when it matches nothing.
        let ips = match self.exact.get(conn.local.port()) {
            Some(ips) => ips,
            None => self.any.as_ref()?,
        };
        ips.get(conn.local.ip())?.select(conn)
    }
}

fn freeze_ips(ips: build::IpLevel) -> Ips {
    PrefixTable::new(
        ips.into_iter()
            .map(|(key, names)| (key, Names::freeze(names)))
            .collect(),
    )
}

/// Splits a level keyed by byte strings into the exact table and the empty ("any") key.
fn split_any<B, V>(
    level: std::collections::BTreeMap<Box<[u8]>, B>,
    f: fn(B) -> V,
) -> (NameTable<V>, Option<V>) {
    let mut exact = Vec::new();
    let mut any = None;
    for (key, value) in level {
        if key.is_empty() {
            any = Some(f(value));
        } else {
            exact.push((key, f(value)));
        }
    }
    (NameTable::new(exact), any)
}

// === impl Names ===

impl Names {
    fn freeze(level: build::NameLevel) -> Self {
        let (names, any) = split_any(level, Transports::freeze);
        Self { names, any }
    }

    fn select(&self, conn: &ConnectionInfo<'_>) -> Option<usize> {
        let sni = conn.server_name.unwrap_or_default();
        let mut stack = [0u8; MAX_SERVER_NAME];
        let owned;
        let name: &[u8] = if !sni.iter().any(u8::is_ascii_uppercase) {
            sni
        } else if let Some(buf) = stack.get_mut(..sni.len()) {
            buf.copy_from_slice(sni);
            buf.make_ascii_lowercase();
            buf
        } else {
            // Longer than any TLS server name; only a hand-built ConnectionInfo gets here.
            owned = sni.to_ascii_lowercase();
            &owned
        };
        self.lookup(name).or(self.any.as_ref())?.select(conn)
    }

    /// The exact name, else the longest `.suffix` wildcard (`www.a.com` tries `.a.com`, then
    /// `.com`; a final dot never starts a suffix).
    fn lookup(&self, name: &[u8]) -> Option<&Transports> {
        if name.is_empty() {
            return None;
        }
        if let Some(t) = self.names.get(name) {
            return Some(t);
        }
        let last = name.len() - 1;
        name.iter()
            .enumerate()
            .skip(1)
            .filter(|&(i, &b)| b == b'.' && i < last)
            .find_map(|(i, _)| name.get(i..).and_then(|suffix| self.names.get(suffix)))
    }
}

// === impl Transports ===

impl Transports {
    fn freeze(level: build::TransportLevel) -> Self {
        let (exact, any) = split_any(level, Alpns::freeze);
        Self { exact, any }
    }

    fn select(&self, conn: &ConnectionInfo<'_>) -> Option<usize> {
        self.exact
            .get(conn.transport_protocol.as_str().as_bytes())
            .or(self.any.as_ref())?
            .select(conn)
    }
}

// === impl Alpns ===

impl Alpns {
    fn freeze(level: build::AlpnLevel) -> Self {
        let (exact, any) = split_any(level, freeze_direct);
        Self { exact, any }
    }

    /// The first of the connection's protocols that some chain lists wins, in the
    /// connection's order of preference.
    fn select(&self, conn: &ConnectionInfo<'_>) -> Option<usize> {
        let direct = conn
            .application_protocols
            .iter()
            .find_map(|p| self.exact.get(p))
            .or(self.any.as_ref())?;
        direct.get(conn.direct_remote.ip())?.select(conn)
    }
}

fn freeze_direct(level: build::DirectLevel) -> DirectSources {
    PrefixTable::new(
        level
            .into_iter()
            .map(|(key, types)| (key, SourceTypes::freeze(types)))
            .collect(),
    )
}

// === impl SourceTypes ===

impl SourceTypes {
    fn freeze(level: build::SourceTypeLevel) -> Self {
        let mut types = Self {
            any: None,
            local: None,
            external: None,
        };
        for (ty, ips) in level {
            let ips = freeze_source_ips(ips);
            match ty {
                SourceType::Any => types.any = Some(ips),
                SourceType::Local => types.local = Some(ips),
                SourceType::External => types.external = Some(ips),
            }
        }
        types
    }

    /// LOCAL or EXTERNAL, when some chain asks for the connection's kind, beats ANY.
    fn select(&self, conn: &ConnectionInfo<'_>) -> Option<usize> {
        let specific = if self.local.is_none() && self.external.is_none() {
            None
        } else if is_same_ip_or_loopback(conn.remote.ip(), conn.local.ip()) {
            self.local.as_ref()
        } else {
            self.external.as_ref()
        };
        let ips = specific.or(self.any.as_ref())?;
        let ports = ips.get(conn.remote.ip())?;
        let port = conn.remote.port();
        ports.exact.get(port).copied().or(ports.any)
    }
}

fn freeze_source_ips(level: build::SourceIpLevel) -> SourceIps {
    PrefixTable::new(
        level
            .into_iter()
            .map(|(key, ports): (IpKey, build::PortLevel)| {
                let mut exact = Vec::new();
                let mut any = None;
                for (port, chain) in ports {
                    if port == 0 {
                        any = Some(chain);
                    } else {
                        exact.push((port, chain));
                    }
                }
                (
                    key,
                    SourcePorts {
                        exact: PortTable::new(exact),
                        any,
                    },
                )
            })
            .collect(),
    )
}

/// Envoy's "local" connection: the peer is exactly `127.0.0.1` or `::1` (not the rest of
/// `127.0.0.0/8`), or has the same IP as the local address.
pub(super) fn is_same_ip_or_loopback(remote: IpAddr, local: IpAddr) -> bool {
    match remote {
        IpAddr::V4(r) if r == std::net::Ipv4Addr::LOCALHOST => true,
        IpAddr::V6(r) if r == std::net::Ipv6Addr::LOCALHOST => true,
        _ => remote == local,
    }
}
