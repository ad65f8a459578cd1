//! Lookup tables for the exact-match levels of the filter chain tree: ports and names
//! (server names, transport and application protocols).

use std::collections::HashMap;

/// Above this many entries a name table hashes; below it a linear scan is faster (the
/// transport and ALPN levels usually hold one to five names).
const LINEAR_MAX: usize = 8;

/// Byte-string keys to values.
#[derive(Debug)]
pub(super) enum NameTable<V> {
    Linear(Vec<(Box<[u8]>, V)>),
    Hashed(HashMap<Box<[u8]>, V>),
}

/// Ports to values, sorted for binary search.
#[derive(Debug)]
pub(super) struct PortTable<V> {
    entries: Vec<(u16, V)>,
}

// === impl NameTable ===

impl<V> NameTable<V> {
    pub(super) fn new(entries: Vec<(Box<[u8]>, V)>) -> Self {
        if entries.len() <= LINEAR_MAX {
            Self::Linear(entries)
        } else {
            Self::Hashed(entries.into_iter().collect())
        }
    }

    pub(super) fn get(&self, key: &[u8]) -> Option<&V> {
        match self {
            Self::Linear(entries) => entries.iter().find(|(k, _)| **k == *key).map(|(_, v)| v),
            Self::Hashed(map) => map.get(key),
        }
    }
}

// === impl PortTable ===

impl<V> PortTable<V> {
    /// `entries` may come in any order; duplicates keep the last.
    pub(super) fn new(mut entries: Vec<(u16, V)>) -> Self {
        entries.sort_by_key(|(port, _)| *port);
        entries.dedup_by_key(|(port, _)| *port);
        Self { entries }
    }

    pub(super) fn get(&self, port: u16) -> Option<&V> {
        self.entries
            .binary_search_by_key(&port, |(p, _)| *p)
            .ok()
            .and_then(|at| self.entries.get(at))
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Box<[u8]> {
        s.as_bytes().into()
    }

    #[test]
    fn name_tables_find_exact_keys_small_and_large() {
        let small = NameTable::new(vec![(key("tls"), 1), (key("raw_buffer"), 2)]);
        assert!(matches!(small, NameTable::Linear(_)));
        assert_eq!(small.get(b"raw_buffer"), Some(&2));
        assert_eq!(small.get(b"TLS"), None, "keys are exact bytes");

        let large = NameTable::new((0..20).map(|i| (key(&format!("h{i}")), i)).collect());
        assert!(matches!(large, NameTable::Hashed(_)));
        assert_eq!(large.get(b"h17"), Some(&17));
        assert_eq!(large.get(b"h20"), None);
    }

    #[test]
    fn port_tables_find_exact_ports() {
        let t = PortTable::new(vec![(9080, "a"), (80, "b"), (15006, "c")]);
        assert_eq!(t.get(80), Some(&"b"));
        assert_eq!(t.get(15006), Some(&"c"));
        assert_eq!(t.get(81), None);
    }
}
