//! `config.route.v3.HeaderMatcher` as RBAC's `header` permission and principal use it, with
//! Envoy's semantics: repeated headers are joined with `,`, an absent header matches only
//! `present_match: false` (or anything inverted from `present_match: true`) unless
//! `treat_missing_header_as_empty` is set, and `invert_match` flips the result otherwise.

use envoy_types::pb::envoy::config::route::v3::HeaderMatcher as HeaderMatcherProto;
use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier as Spec;

use super::error::RbacError;
use super::input::{HeaderKey, Input, Values};
use crate::matcher::StringMatcher;

/// Repeated header values up to this many bytes are joined on the stack; longer ones (rare)
/// are joined on the heap.
const JOIN_ON_STACK: usize = 1024;

/// A compiled header matcher.
#[derive(Debug, Clone)]
pub(crate) struct HeaderMatcher {
    key: HeaderKey,
    kind: Kind,
    invert: bool,
    treat_missing_as_empty: bool,
}

#[derive(Debug, Clone)]
enum Kind {
    /// The deprecated `exact_match`: an empty value matches any value.
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    String(StringMatcher),
    /// `[start, end)`.
    Range {
        start: i64,
        end: i64,
    },
    Present(bool),
}

// === impl HeaderMatcher ===

impl HeaderMatcher {
    #[allow(deprecated)]
    pub(crate) fn new(proto: &HeaderMatcherProto) -> Result<Self, RbacError> {
        if proto.name.is_empty() {
            return Err(RbacError::Empty("name"));
        }
        let non_empty = |v: &String, what| {
            if v.is_empty() {
                Err(RbacError::Empty(what))
            } else {
                Ok(v.clone())
            }
        };
        let kind = match &proto.header_match_specifier {
            // No specifier: the header must be present.
            None => Kind::Present(true),
            Some(Spec::ExactMatch(v)) => Kind::Exact(v.clone()),
            Some(Spec::SafeRegexMatch(re)) => Kind::String(StringMatcher::regex(&re.regex)?),
            Some(Spec::RangeMatch(r)) => Kind::Range {
                start: r.start,
                end: r.end,
            },
            Some(Spec::PresentMatch(p)) => Kind::Present(*p),
            Some(Spec::PrefixMatch(v)) => Kind::Prefix(non_empty(v, "prefix_match")?),
            Some(Spec::SuffixMatch(v)) => Kind::Suffix(non_empty(v, "suffix_match")?),
            Some(Spec::ContainsMatch(v)) => Kind::Contains(non_empty(v, "contains_match")?),
            Some(Spec::StringMatch(m)) => Kind::String(StringMatcher::new(m)?),
        };
        Ok(Self {
            key: HeaderKey::new(&proto.name),
            kind,
            invert: proto.invert_match,
            treat_missing_as_empty: proto.treat_missing_header_as_empty,
        })
    }

    pub(crate) fn matches(&self, input: &Input<'_>) -> bool {
        match input.header(&self.key) {
            Values::Absent if self.treat_missing_as_empty => self.value_matches(b""),
            Values::Absent => match self.kind {
                // Absent: only "not present" matches, or "present" inverted.
                Kind::Present(present) => present == self.invert,
                _ => false,
            },
            Values::One(v) => self.value_matches(v),
            Values::All(all) => {
                let mut values = all.iter();
                match (values.next(), values.next()) {
                    (Some(v), None) => self.value_matches(v.as_bytes()),
                    _ => with_joined(
                        || all.iter().map(|v| v.as_bytes()),
                        |v| self.value_matches(v),
                    ),
                }
            }
        }
    }

    fn value_matches(&self, value: &[u8]) -> bool {
        let matched = match &self.kind {
            Kind::Exact(v) => v.is_empty() || value == v.as_bytes(),
            Kind::Prefix(v) => value.starts_with(v.as_bytes()),
            Kind::Suffix(v) => value.ends_with(v.as_bytes()),
            Kind::Contains(v) => value.windows(v.len()).any(|w| w == v.as_bytes()),
            Kind::String(m) => m.matches_bytes(value),
            Kind::Range { start, end } => parse_i64(value).is_some_and(|n| *start <= n && n < *end),
            Kind::Present(present) => *present,
        };
        matched != self.invert
    }
}

/// Calls `f` with the values joined by `,`, as Envoy matches a repeated header.
fn with_joined<'v, I: Iterator<Item = &'v [u8]>>(
    values: impl Fn() -> I,
    f: impl FnOnce(&[u8]) -> bool,
) -> bool {
    let len = values()
        .map(|v| v.len() + 1)
        .sum::<usize>()
        .saturating_sub(1);
    let join = |out: &mut dyn FnMut(&[u8])| {
        for (i, v) in values().enumerate() {
            if i > 0 {
                out(b",");
            }
            out(v);
        }
    };
    if len <= JOIN_ON_STACK {
        let mut buf = [0u8; JOIN_ON_STACK];
        let mut at = 0;
        join(&mut |part| {
            buf[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        });
        f(&buf[..at])
    } else {
        let mut buf = Vec::with_capacity(len);
        join(&mut |part| buf.extend_from_slice(part));
        f(&buf)
    }
}

/// `absl::SimpleAtoi` for `int64`: optional surrounding ASCII whitespace, an optional sign,
/// decimal digits, no overflow.
fn parse_i64(value: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(value).ok()?;
    let s = s.trim_matches(|c: char| c.is_ascii_whitespace());
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_atoi() {
        assert_eq!(parse_i64(b"42"), Some(42));
        assert_eq!(parse_i64(b" -7 "), Some(-7));
        assert_eq!(parse_i64(b"+3"), Some(3));
        assert_eq!(parse_i64(b"3.0"), None);
        assert_eq!(parse_i64(b""), None);
        assert_eq!(parse_i64(b"-"), None);
        assert_eq!(parse_i64(b"99999999999999999999"), None);
    }

    #[test]
    fn joined_on_stack_and_heap() {
        let parts: [&[u8]; 3] = [b"a", b"b", b"c"];
        assert!(with_joined(|| parts.iter().copied(), |v| v == b"a,b,c"));
        let long = vec![b'x'; JOIN_ON_STACK];
        let parts: [&[u8]; 2] = [&long, b"y"];
        assert!(with_joined(
            || parts.iter().copied(),
            |v| { v.len() == JOIN_ON_STACK + 2 && v.ends_with(b",y") }
        ));
    }
}
