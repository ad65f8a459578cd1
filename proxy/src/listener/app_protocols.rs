//! The application protocols a connection asks for: the ALPN list of a TLS ClientHello
//! (borrowed in its wire format, so nothing is copied), or the one protocol the HTTP
//! inspector recognised.

use super::reader::Reader;

/// A validated ALPN `ProtocolNameList`, borrowed from the ClientHello.
///
/// Envoy's TLS inspector takes the list only when it is well formed (a `u16`-prefixed list
/// of at least two bytes, every name `u8`-prefixed and non-empty, nothing after it); a
/// malformed list is ignored as if absent, and the TLS stack reports it later.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AlpnList<'a> {
    /// The names, each `u8`-length-prefixed, without the list's own length.
    names: &'a [u8],
}

/// The application protocols a filter chain is matched against, most preferred first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AppProtocols<'a> {
    /// Nothing detected (no ALPN, or plaintext that is not HTTP).
    #[default]
    None,
    /// The ALPN list of a TLS ClientHello.
    Alpn(AlpnList<'a>),
    /// Protocols named by some other inspector, such as `["http/1.1"]`.
    Names(&'a [&'a str]),
}

/// Iterates over [`AppProtocols`] as byte strings.
#[derive(Clone, Debug)]
pub enum AppProtocolsIter<'a> {
    /// Nothing left.
    Empty,
    /// Walking an ALPN list.
    Alpn(AlpnIter<'a>),
    /// Walking a list of names.
    Names(std::slice::Iter<'a, &'a str>),
}

/// Iterates over the names of an [`AlpnList`].
#[derive(Clone, Debug)]
pub struct AlpnIter<'a> {
    rest: Reader<'a>,
}

// === impl AlpnList ===

impl<'a> AlpnList<'a> {
    /// Validates the body of an ALPN extension as Envoy's TLS inspector does; `None` when it
    /// would ignore it.
    pub fn parse(extension_body: &'a [u8]) -> Option<Self> {
        let mut body = Reader::new(extension_body);
        let list = body.u16_prefixed()?;
        if !body.is_empty() || list.rest().len() < 2 {
            return None;
        }
        let mut names = list;
        while !names.is_empty() {
            let name = names.u8_prefixed()?;
            if name.is_empty() {
                return None;
            }
        }
        Some(Self { names: list.rest() })
    }

    /// The protocol names, most preferred first.
    pub fn iter(&self) -> AlpnIter<'a> {
        AlpnIter {
            rest: Reader::new(self.names),
        }
    }
}

impl std::fmt::Debug for AlpnList<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(String::from_utf8_lossy))
            .finish()
    }
}

// === impl AlpnIter ===

impl<'a> Iterator for AlpnIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        self.rest.u8_prefixed().map(|name| name.rest())
    }
}

// === impl AppProtocols ===

impl<'a> AppProtocols<'a> {
    /// The protocols, most preferred first.
    pub fn iter(&self) -> AppProtocolsIter<'a> {
        match *self {
            Self::None => AppProtocolsIter::Empty,
            Self::Alpn(list) => AppProtocolsIter::Alpn(list.iter()),
            Self::Names(names) => AppProtocolsIter::Names(names.iter()),
        }
    }

    /// Whether no protocol was detected.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

// === impl AppProtocolsIter ===

impl<'a> Iterator for AppProtocolsIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        match self {
            Self::Empty => None,
            Self::Alpn(iter) => iter.next(),
            Self::Names(iter) => iter.next().map(|name| name.as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(names: &[&[u8]]) -> Vec<u8> {
        let body: Vec<u8> = names
            .iter()
            .flat_map(|n| std::iter::once(n.len() as u8).chain(n.iter().copied()))
            .collect();
        let mut ext = (body.len() as u16).to_be_bytes().to_vec();
        ext.extend(body);
        ext
    }

    #[test]
    fn parses_a_well_formed_list_in_client_order() {
        let ext = list(&[b"istio-peer-exchange", b"istio"]);
        let alpn = AlpnList::parse(&ext).unwrap();
        let names: Vec<&[u8]> = alpn.iter().collect();
        assert_eq!(names, vec![&b"istio-peer-exchange"[..], &b"istio"[..]]);
        assert_eq!(format!("{alpn:?}"), r#"["istio-peer-exchange", "istio"]"#);
    }

    #[test]
    fn ignores_malformed_lists_like_envoy() {
        // An empty name, a name running past the end, trailing bytes, an empty list, a
        // truncated length: Envoy leaves the protocols unset for each of them.
        assert!(AlpnList::parse(&list(&[b"h2", b""])).is_none());
        assert!(AlpnList::parse(&[0, 3, 2, b'h', b'2', 5]).is_none());
        let mut trailing = list(&[b"h2"]);
        trailing.push(0);
        assert!(AlpnList::parse(&trailing).is_none());
        assert!(AlpnList::parse(&[0, 0]).is_none());
        assert!(AlpnList::parse(&[0]).is_none());
    }

    #[test]
    fn app_protocols_iterate_alpn_or_names() {
        let ext = list(&[b"h2", b"http/1.1"]);
        let alpn = AppProtocols::Alpn(AlpnList::parse(&ext).unwrap());
        assert_eq!(alpn.iter().count(), 2);
        let names = AppProtocols::Names(&["http/1.1"]);
        assert_eq!(names.iter().collect::<Vec<_>>(), vec![&b"http/1.1"[..]]);
        assert!(AppProtocols::None.is_empty());
        assert!(!names.is_empty());
    }
}
