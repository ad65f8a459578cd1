//! Envoy's `type.matcher.v3.StringMatcher`, compiled once at config time and matched without
//! allocating. Shared by the stats matcher, RBAC, routes and SAN verification.

use envoy_types::pb::envoy::r#type::matcher::v3::{
    ListStringMatcher, StringMatcher as StringMatcherProto, string_matcher::MatchPattern,
};

/// Why a matcher could not be built. The text is what a NACK or bootstrap error reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatcherError {
    #[error("string matcher has no match pattern")]
    Empty,
    #[error("string matcher {0} must not be empty (use safe_regex to match anything)")]
    EmptyPattern(&'static str),
    #[error("invalid safe_regex {regex:?}: {reason}")]
    Regex { regex: String, reason: String },
    #[error("custom string matchers are not supported")]
    Custom,
}

/// A compiled string matcher.
#[derive(Debug, Clone)]
pub enum StringMatcher {
    Exact {
        value: String,
        ignore_case: bool,
    },
    Prefix {
        value: String,
        ignore_case: bool,
    },
    Suffix {
        value: String,
        ignore_case: bool,
    },
    Contains {
        value: String,
        ignore_case: bool,
    },
    /// Matches the whole input (RE2 `FullMatch`), as Envoy's `safe_regex`.
    Regex(regex::Regex),
}

// === impl StringMatcher ===

impl StringMatcher {
    /// Compiles a `StringMatcher` proto.
    pub fn new(proto: &StringMatcherProto) -> Result<Self, MatcherError> {
        let ignore_case = proto.ignore_case;
        let non_empty = |value: &str, what: &'static str| {
            if value.is_empty() {
                Err(MatcherError::EmptyPattern(what))
            } else {
                Ok(value.to_string())
            }
        };
        match proto.match_pattern.as_ref().ok_or(MatcherError::Empty)? {
            MatchPattern::Exact(v) => Ok(Self::Exact {
                value: v.clone(),
                ignore_case,
            }),
            MatchPattern::Prefix(v) => Ok(Self::Prefix {
                value: non_empty(v, "prefix")?,
                ignore_case,
            }),
            MatchPattern::Suffix(v) => Ok(Self::Suffix {
                value: non_empty(v, "suffix")?,
                ignore_case,
            }),
            MatchPattern::Contains(v) => Ok(Self::Contains {
                value: non_empty(v, "contains")?,
                ignore_case,
            }),
            MatchPattern::SafeRegex(re) => Self::regex(&re.regex),
            MatchPattern::Custom(_) => Err(MatcherError::Custom),
        }
    }

    /// A full-match regex, as `safe_regex` is.
    pub fn regex(pattern: &str) -> Result<Self, MatcherError> {
        regex::Regex::new(&format!("^(?:{pattern})$"))
            .map(Self::Regex)
            .map_err(|e| MatcherError::Regex {
                regex: pattern.to_string(),
                reason: e.to_string(),
            })
    }

    /// Whether `input` matches.
    pub fn matches(&self, input: &str) -> bool {
        let input_b = input.as_bytes();
        match self {
            Self::Exact { value, ignore_case } => {
                if *ignore_case {
                    input.eq_ignore_ascii_case(value)
                } else {
                    input == value
                }
            }
            Self::Prefix { value, ignore_case } => {
                let v = value.as_bytes();
                input_b.len() >= v.len() && eq(&input_b[..v.len()], v, *ignore_case)
            }
            Self::Suffix { value, ignore_case } => {
                let v = value.as_bytes();
                input_b.len() >= v.len() && eq(&input_b[input_b.len() - v.len()..], v, *ignore_case)
            }
            Self::Contains { value, ignore_case } => {
                let v = value.as_bytes();
                input_b.windows(v.len()).any(|w| eq(w, v, *ignore_case))
            }
            Self::Regex(re) => re.is_match(input),
        }
    }

    /// Whether raw bytes (an HTTP header value) match. Bytes that are not UTF-8 are read
    /// with U+FFFD in their place for `safe_regex`, as RE2 reads them; the other patterns
    /// compare bytes and allocate nothing.
    pub fn matches_bytes(&self, input: &[u8]) -> bool {
        match self {
            Self::Regex(re) => re.is_match(&String::from_utf8_lossy(input)),
            Self::Exact { value, ignore_case } => eq(input, value.as_bytes(), *ignore_case),
            Self::Prefix { value, ignore_case } => {
                let v = value.as_bytes();
                input.len() >= v.len() && eq(&input[..v.len()], v, *ignore_case)
            }
            Self::Suffix { value, ignore_case } => {
                let v = value.as_bytes();
                input.len() >= v.len() && eq(&input[input.len() - v.len()..], v, *ignore_case)
            }
            Self::Contains { value, ignore_case } => {
                let v = value.as_bytes();
                input.windows(v.len()).any(|w| eq(w, v, *ignore_case))
            }
        }
    }
}

fn eq(a: &[u8], b: &[u8], ignore_case: bool) -> bool {
    if ignore_case {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// Any of several matchers (`ListStringMatcher`).
#[derive(Debug, Clone, Default)]
pub struct StringMatchers(Vec<StringMatcher>);

// === impl StringMatchers ===

impl StringMatchers {
    pub fn new(list: &ListStringMatcher) -> Result<Self, MatcherError> {
        list.patterns
            .iter()
            .map(StringMatcher::new)
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn matches_any(&self, input: &str) -> bool {
        self.0.iter().any(|m| m.matches(input))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher;

    fn m(pattern: MatchPattern, ignore_case: bool) -> StringMatcher {
        StringMatcher::new(&StringMatcherProto {
            ignore_case,
            match_pattern: Some(pattern),
        })
        .unwrap()
    }

    #[test]
    fn patterns_match_like_envoy() {
        assert!(m(MatchPattern::Exact("abc".into()), false).matches("abc"));
        assert!(!m(MatchPattern::Exact("abc".into()), false).matches("ABC"));
        assert!(m(MatchPattern::Exact("abc".into()), true).matches("ABC"));
        assert!(m(MatchPattern::Prefix("spiffe://".into()), false).matches("spiffe://x"));
        assert!(m(MatchPattern::Suffix(".com".into()), true).matches("EXAMPLE.COM"));
        assert!(m(MatchPattern::Contains("/ns/".into()), false).matches("a/ns/b"));
        assert!(!m(MatchPattern::Contains("/ns/".into()), false).matches("a/n"));
        let re = m(
            MatchPattern::SafeRegex(RegexMatcher {
                regex: ".*/ns/default/.*".into(),
                engine_type: None,
            }),
            false,
        );
        assert!(re.matches("spiffe://cluster.local/ns/default/sa/x"));
        assert!(!re.matches("spiffe://cluster.local/ns/other/sa/x"));
        // Full match, not search.
        let re = StringMatcher::regex("b").unwrap();
        assert!(!re.matches("abc"));
    }

    #[test]
    fn bytes_match_like_strings() {
        let exact = m(MatchPattern::Exact("GET".into()), true);
        assert!(exact.matches_bytes(b"get"));
        assert!(!exact.matches_bytes(b"gets"));
        assert!(m(MatchPattern::Prefix("ab".into()), false).matches_bytes(b"abc\xff"));
        assert!(m(MatchPattern::Suffix("C".into()), true).matches_bytes(b"\xffabc"));
        assert!(m(MatchPattern::Contains("b".into()), false).matches_bytes(b"abc"));
        // Invalid UTF-8 still reaches the regex, as U+FFFD.
        let re = StringMatcher::regex("admin.*").unwrap();
        assert!(re.matches_bytes(b"admin\xff"));
        assert!(!re.matches_bytes(b"user\xff"));
    }

    #[test]
    fn invalid_matchers_are_rejected() {
        let err = StringMatcher::new(&StringMatcherProto {
            ignore_case: false,
            match_pattern: Some(MatchPattern::Prefix(String::new())),
        })
        .unwrap_err();
        assert_eq!(err, MatcherError::EmptyPattern("prefix"));
        assert!(matches!(
            StringMatcher::regex("(unclosed"),
            Err(MatcherError::Regex { .. })
        ));
        assert_eq!(
            StringMatcher::new(&StringMatcherProto::default()).unwrap_err(),
            MatcherError::Empty
        );
    }
}
