//! Virtual host selection by `:authority`, exactly as Envoy's RouteMatcher: an exact match
//! (the whole value, port included) first, then suffix wildcards (`*.example.com`, longest
//! first), then prefix wildcards (`example.*`, longest first), then `*`. Case-insensitive.

use std::collections::HashMap;

use crate::config::ConfigError;

/// Domains to virtual host indices.
#[derive(Debug, Clone, Default)]
pub struct DomainIndex {
    exact: HashMap<Box<str>, usize>,
    /// (length of the part after `*`, that part -> vhost), longest first.
    suffixes: Vec<(usize, HashMap<Box<str>, usize>)>,
    /// (length of the part before `*`, that part -> vhost), longest first.
    prefixes: Vec<(usize, HashMap<Box<str>, usize>)>,
    default: Option<usize>,
    ignore_port: bool,
}

// === impl DomainIndex ===

impl DomainIndex {
    pub fn new(ignore_port: bool) -> Self {
        Self {
            ignore_port,
            ..Self::default()
        }
    }

    /// Adds a virtual host's domain. Duplicates are an error, as in Envoy.
    pub fn add(
        &mut self,
        domain: &str,
        vhost: usize,
        route_config: &str,
    ) -> Result<(), ConfigError> {
        let d = domain.to_ascii_lowercase();
        let duplicate = if d == "*" {
            if self.default.is_some() {
                return Err(ConfigError::new(format!(
                    "Only a single wildcard domain is permitted in route {route_config}"
                )));
            }
            self.default = Some(vhost);
            false
        } else if let Some(rest) = d.strip_prefix('*') {
            insert(&mut self.suffixes, rest, vhost)
        } else if let Some(rest) = d.strip_suffix('*') {
            insert(&mut self.prefixes, rest, vhost)
        } else {
            self.exact.insert(d.as_str().into(), vhost).is_some()
        };
        if duplicate {
            return Err(ConfigError::new(format!(
                "Only unique values for domains are permitted. Duplicate entry of domain {d} in route {route_config}"
            )));
        }
        Ok(())
    }

    /// The virtual host for an `:authority` value.
    pub fn find(&self, authority: &str) -> Option<usize> {
        if self.exact.is_empty() && self.suffixes.is_empty() && self.prefixes.is_empty() {
            return self.default;
        }
        let host = if self.ignore_port {
            match super::action::port_start(authority) {
                Some(i) => &authority[..i],
                None => authority,
            }
        } else {
            authority
        };
        // Lower-case without allocating in the common (already lower-case) case.
        let lowered;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = host.to_ascii_lowercase();
            lowered.as_str()
        } else {
            host
        };
        if let Some(v) = self.exact.get(host) {
            return Some(*v);
        }
        for (len, map) in &self.suffixes {
            // `*.foo.com` must not match `.foo.com`: the wildcard matches at least one byte.
            if *len >= host.len() {
                continue;
            }
            if let Some(v) = host.get(host.len() - len..).and_then(|s| map.get(s)) {
                return Some(*v);
            }
        }
        for (len, map) in &self.prefixes {
            if *len >= host.len() {
                continue;
            }
            if let Some(v) = host.get(..*len).and_then(|s| map.get(s)) {
                return Some(*v);
            }
        }
        self.default
    }
}

/// Inserts into the bucket for `part.len()`, keeping buckets longest first. Returns whether
/// the part was already there.
fn insert(buckets: &mut Vec<(usize, HashMap<Box<str>, usize>)>, part: &str, vhost: usize) -> bool {
    let len = part.len();
    let i = match buckets.binary_search_by(|(l, _)| len.cmp(l)) {
        Ok(i) => i,
        Err(i) => {
            buckets.insert(i, (len, HashMap::new()));
            i
        }
    };
    buckets[i].1.insert(part.into(), vhost).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(domains: &[(&str, usize)]) -> DomainIndex {
        let mut idx = DomainIndex::new(false);
        for (d, v) in domains {
            idx.add(d, *v, "rc").unwrap();
        }
        idx
    }

    #[test]
    fn precedence_exact_suffix_prefix_default() {
        let idx = index(&[
            ("api.example.com", 0),
            ("*.example.com", 1),
            ("*-bar.example.com", 2),
            ("api.*", 3),
            ("api.example.*", 4),
            ("*", 5),
        ]);
        assert_eq!(idx.find("api.example.com"), Some(0));
        assert_eq!(idx.find("API.Example.COM"), Some(0), "case-insensitive");
        assert_eq!(idx.find("www.example.com"), Some(1));
        assert_eq!(
            idx.find("foo-bar.example.com"),
            Some(2),
            "longest suffix wins"
        );
        assert_eq!(idx.find("api.example.org"), Some(4), "longest prefix wins");
        assert_eq!(idx.find("api.other"), Some(3));
        assert_eq!(
            idx.find("api.example.com:80"),
            Some(4),
            "the port is part of the host"
        );
        assert_eq!(idx.find("www.example.com:80"), Some(5));
        assert_eq!(idx.find("unknown"), Some(5));
    }

    #[test]
    fn host_and_port_entries_match_exactly() {
        let idx = index(&[("svc", 0), ("svc:9080", 1)]);
        assert_eq!(idx.find("svc"), Some(0));
        assert_eq!(idx.find("svc:9080"), Some(1));
        assert_eq!(idx.find("svc:80"), None);
    }

    #[test]
    fn wildcard_matches_at_least_one_character() {
        let idx = index(&[("*.foo.com", 0), ("foo.*", 1)]);
        assert_eq!(idx.find(".foo.com"), None);
        assert_eq!(idx.find("a.foo.com"), Some(0));
        assert_eq!(idx.find("foo."), None);
        assert_eq!(idx.find("foo.x"), Some(1));
    }

    #[test]
    fn only_default_skips_lookup() {
        let idx = index(&[("*", 7)]);
        assert_eq!(idx.find(""), Some(7));
    }

    #[test]
    fn ignore_port_in_host_matching() {
        let mut idx = DomainIndex::new(true);
        idx.add("svc", 0, "rc").unwrap();
        idx.add("[::1]", 1, "rc").unwrap();
        assert_eq!(idx.find("svc:8080"), Some(0));
        assert_eq!(idx.find("[::1]:80"), Some(1));
    }

    #[test]
    fn duplicates_are_rejected() {
        let mut idx = DomainIndex::new(false);
        idx.add("A.com", 0, "rc").unwrap();
        let e = idx.add("a.com", 1, "rc").unwrap_err();
        assert!(
            e.to_string()
                .contains("Duplicate entry of domain a.com in route rc"),
            "{e}"
        );
        idx.add("*", 0, "rc").unwrap();
        assert!(idx.add("*", 1, "rc").is_err());
        idx.add("*.x", 0, "rc").unwrap();
        assert!(idx.add("*.X", 1, "rc").is_err());
    }
}
