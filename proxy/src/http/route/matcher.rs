//! Route matching: the path specifier (prefix, path, safe_regex, path_separated_prefix),
//! headers, query parameters, gRPC, runtime fractions and TLS context, with Envoy's rules.

use std::borrow::Cow;

use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher as HeaderMatcherProto, QueryParameterMatcher as QueryMatcherProto,
    RouteMatch as RouteMatchProto, header_matcher::HeaderMatchSpecifier,
    query_parameter_matcher::QueryParameterMatchSpecifier, route_match::PathSpecifier,
};
use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType;
use http::{HeaderMap, HeaderName, Method};

use crate::config::ConfigError;
use crate::conn::PeerTls;
use crate::matcher::StringMatcher;

/// The parts of a request that routing looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    /// `x-forwarded-proto` (the HCM always sets it).
    pub scheme: &'a str,
    pub authority: &'a str,
    /// `:path`, query included.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub tls: Option<&'a PeerTls>,
    /// `x-envoy-internal: true` was set by the HCM.
    pub internal: bool,
}

// === impl RequestView ===

impl<'a> RequestView<'a> {
    /// The path without query and fragment.
    pub fn path_only(&self) -> &'a str {
        strip_query(self.path)
    }

    /// A header's value, pseudo-headers included; several values are joined with `,`
    /// as Envoy does.
    pub fn header(&self, name: &HeaderSource) -> Option<Cow<'a, str>> {
        match name {
            HeaderSource::Method => Some(Cow::Borrowed(self.method.as_str())),
            HeaderSource::Authority => Some(Cow::Borrowed(self.authority)),
            HeaderSource::Path => Some(Cow::Borrowed(self.path)),
            HeaderSource::Scheme => Some(Cow::Borrowed(self.scheme)),
            HeaderSource::Header(n) => {
                let mut values = self.headers.get_all(n).iter();
                let first = values.next()?;
                let first = String::from_utf8_lossy(first.as_bytes());
                match values.next() {
                    None => Some(first),
                    Some(second) => {
                        let mut joined = first.into_owned();
                        for v in std::iter::once(second).chain(values) {
                            joined.push(',');
                            joined.push_str(&String::from_utf8_lossy(v.as_bytes()));
                        }
                        Some(Cow::Owned(joined))
                    }
                }
            }
        }
    }
}

/// The path without `?query` and `#fragment`.
pub fn strip_query(path: &str) -> &str {
    match path.find(['?', '#']) {
        Some(i) => &path[..i],
        None => path,
    }
}

/// Where a header matcher reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderSource {
    Method,
    Authority,
    Path,
    Scheme,
    Header(HeaderName),
}

// === impl HeaderSource ===

impl HeaderSource {
    pub fn parse(name: &str) -> Result<Self, ConfigError> {
        let lower = name.to_ascii_lowercase();
        Ok(match lower.as_str() {
            ":method" => Self::Method,
            ":authority" | "host" => Self::Authority,
            ":path" => Self::Path,
            ":scheme" => Self::Scheme,
            n => Self::Header(
                HeaderName::from_bytes(n.as_bytes())
                    .map_err(|_| ConfigError::new(format!("invalid header name {name:?}")))?,
            ),
        })
    }
}

/// How a route matches the path.
#[derive(Debug, Clone)]
pub enum PathMatch {
    Prefix(Box<str>),
    Exact(Box<str>),
    Regex(regex::Regex),
    /// A prefix that ends at a `/` boundary (or the end of the path).
    Separated(Box<str>),
}

#[derive(Debug, Clone)]
enum HeaderTest {
    /// `exact_match`; an empty value matches any value, as in Envoy.
    Exact(Box<str>),
    Regex(regex::Regex),
    Range(i64, i64),
    Present(bool),
    Prefix(Box<str>),
    Suffix(Box<str>),
    Contains(Box<str>),
    String(StringMatcher),
}

/// A compiled `HeaderMatcher`.
#[derive(Debug, Clone)]
pub struct HeaderMatcher {
    source: HeaderSource,
    test: HeaderTest,
    invert: bool,
    missing_as_empty: bool,
}

/// A compiled `QueryParameterMatcher`.
#[derive(Debug, Clone)]
struct QueryMatcher {
    name: Box<str>,
    /// `None`: the parameter must be present.
    test: Option<StringMatcher>,
    present: Option<bool>,
}

/// A compiled `RouteMatch`.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    pub path: PathMatch,
    ignore_case: bool,
    headers: Vec<HeaderMatcher>,
    query: Vec<QueryMatcher>,
    grpc: bool,
    /// `runtime_fraction`'s default: matches when `random % denominator < numerator`.
    fraction: Option<(u64, u64)>,
    tls_presented: Option<bool>,
    tls_validated: Option<bool>,
}

// === impl RouteMatch ===

impl RouteMatch {
    pub fn new(m: &RouteMatchProto) -> Result<Self, ConfigError> {
        let ignore_case = m.case_sensitive.as_ref().is_some_and(|c| !c.value);
        let path = match &m.path_specifier {
            Some(PathSpecifier::Prefix(p)) => PathMatch::Prefix(p.as_str().into()),
            Some(PathSpecifier::Path(p)) => PathMatch::Exact(p.as_str().into()),
            Some(PathSpecifier::SafeRegex(r)) => {
                PathMatch::Regex(full_regex(&r.regex).map_err(|e| e.at("safe_regex"))?)
            }
            Some(PathSpecifier::PathSeparatedPrefix(p)) => {
                if p.contains(['?', '#']) || p.ends_with('/') {
                    return Err(ConfigError::new(
                        "must not contain '?' or '#' and must not end with '/'",
                    )
                    .at("path_separated_prefix"));
                }
                PathMatch::Separated(p.as_str().into())
            }
            Some(PathSpecifier::ConnectMatcher(_)) => {
                return Err(
                    ConfigError::new("CONNECT routes are not supported").at("connect_matcher")
                );
            }
            Some(PathSpecifier::PathMatchPolicy(_)) => {
                return Err(ConfigError::new(
                    "path match policies (URI templates) are not supported",
                )
                .at("path_match_policy"));
            }
            None => return Err(ConfigError::new("Invalid route config: no path specifier")),
        };
        if !m.cookies.is_empty() {
            return Err(ConfigError::new("cookie matchers are not supported").at("cookies"));
        }
        if !m.dynamic_metadata.is_empty() {
            return Err(
                ConfigError::new("dynamic metadata matchers are not supported")
                    .at("dynamic_metadata"),
            );
        }
        if !m.filter_state.is_empty() {
            return Err(
                ConfigError::new("filter state matchers are not supported").at("filter_state")
            );
        }
        let headers = m
            .headers
            .iter()
            .enumerate()
            .map(|(i, h)| HeaderMatcher::new(h).map_err(|e| e.at(format!("headers[{i}]"))))
            .collect::<Result<_, _>>()?;
        let query = m
            .query_parameters
            .iter()
            .enumerate()
            .map(|(i, q)| QueryMatcher::new(q).map_err(|e| e.at(format!("query_parameters[{i}]"))))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            path,
            ignore_case,
            headers,
            query,
            grpc: m.grpc.is_some(),
            fraction: m.runtime_fraction.as_ref().map(fraction),
            tls_presented: m
                .tls_context
                .as_ref()
                .and_then(|t| t.presented.map(|b| b.value)),
            tls_validated: m
                .tls_context
                .as_ref()
                .and_then(|t| t.validated.map(|b| b.value)),
        })
    }

    /// Whether the request matches; `random` decides `runtime_fraction`.
    pub fn matches(&self, req: &RequestView<'_>, random: u64) -> bool {
        self.path_matches(req.path_only())
            && self.fraction.is_none_or(|(num, den)| random % den < num)
            && (!self.grpc || is_grpc(req.headers))
            && self.headers.iter().all(|h| h.matches(req))
            && (self.query.is_empty() || self.query_matches(req.path))
            && self.tls_matches(req.tls)
    }

    fn path_matches(&self, path: &str) -> bool {
        let starts = |p: &str| {
            path.len() >= p.len() && eq(&path.as_bytes()[..p.len()], p.as_bytes(), self.ignore_case)
        };
        match &self.path {
            PathMatch::Prefix(p) => starts(p),
            PathMatch::Exact(p) => path.len() == p.len() && starts(p),
            PathMatch::Regex(re) => re.is_match(path),
            PathMatch::Separated(p) => {
                starts(p) && (path.len() == p.len() || path.as_bytes()[p.len()] == b'/')
            }
        }
    }

    fn query_matches(&self, path: &str) -> bool {
        let query = path.split_once('?').map_or("", |(_, q)| q);
        let query = query.split_once('#').map_or(query, |(q, _)| q);
        self.query.iter().all(|m| {
            let value = query.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == &*m.name).then_some(v)
            });
            let Some(value) = value else { return false };
            if let Some(present) = m.present {
                return present;
            }
            m.test.as_ref().is_none_or(|t| t.matches(value))
        })
    }

    fn tls_matches(&self, tls: Option<&PeerTls>) -> bool {
        let has_cert = tls.is_some_and(|t| t.peer_certificate.is_some());
        self.tls_presented.is_none_or(|p| p == has_cert)
            && self.tls_validated.is_none_or(|v| v == has_cert)
    }
}

fn eq(a: &[u8], b: &[u8], ignore_case: bool) -> bool {
    if ignore_case {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct == "application/grpc"
                || ct.starts_with("application/grpc+")
                || ct.starts_with("application/grpc;")
        })
}

fn fraction(f: &RuntimeFractionalPercent) -> (u64, u64) {
    let d = f.default_value.unwrap_or_default();
    let den = match DenominatorType::try_from(d.denominator) {
        Ok(DenominatorType::TenThousand) => 10_000,
        Ok(DenominatorType::Million) => 1_000_000,
        _ => 100,
    };
    (u64::from(d.numerator).min(den), den)
}

/// A regex that must match the whole input (RE2 `FullMatch`).
pub fn full_regex(pattern: &str) -> Result<regex::Regex, ConfigError> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| ConfigError::new(format!("invalid regex {pattern:?}: {e}")))
}

// === impl HeaderMatcher ===

impl HeaderMatcher {
    pub fn new(h: &HeaderMatcherProto) -> Result<Self, ConfigError> {
        let source = HeaderSource::parse(&h.name).map_err(|e| e.at("name"))?;
        #[allow(deprecated)]
        let test = match &h.header_match_specifier {
            None => HeaderTest::Present(true),
            Some(HeaderMatchSpecifier::ExactMatch(v)) => HeaderTest::Exact(v.as_str().into()),
            Some(HeaderMatchSpecifier::SafeRegexMatch(r)) => {
                HeaderTest::Regex(full_regex(&r.regex).map_err(|e| e.at("safe_regex_match"))?)
            }
            Some(HeaderMatchSpecifier::RangeMatch(r)) => HeaderTest::Range(r.start, r.end),
            Some(HeaderMatchSpecifier::PresentMatch(p)) => HeaderTest::Present(*p),
            Some(HeaderMatchSpecifier::PrefixMatch(v)) => HeaderTest::Prefix(v.as_str().into()),
            Some(HeaderMatchSpecifier::SuffixMatch(v)) => HeaderTest::Suffix(v.as_str().into()),
            Some(HeaderMatchSpecifier::ContainsMatch(v)) => HeaderTest::Contains(v.as_str().into()),
            Some(HeaderMatchSpecifier::StringMatch(m)) => HeaderTest::String(
                StringMatcher::new(m)
                    .map_err(|e| ConfigError::new(e.to_string()).at("string_match"))?,
            ),
        };
        Ok(Self {
            source,
            test,
            invert: h.invert_match,
            missing_as_empty: h.treat_missing_header_as_empty,
        })
    }

    /// Envoy's `HeaderUtility::matchHeaders`.
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        let value = req.header(&self.source);
        let value = match value {
            Some(v) => v,
            None if self.missing_as_empty => Cow::Borrowed(""),
            None => {
                return match self.test {
                    HeaderTest::Present(p) => p == self.invert,
                    _ => false,
                };
            }
        };
        let matched = match &self.test {
            HeaderTest::Exact(v) => v.is_empty() || *value == **v,
            HeaderTest::Regex(re) => re.is_match(&value),
            HeaderTest::Range(start, end) => {
                value.parse::<i64>().is_ok_and(|n| n >= *start && n < *end)
            }
            HeaderTest::Present(p) => *p,
            HeaderTest::Prefix(p) => value.starts_with(&**p),
            HeaderTest::Suffix(s) => value.ends_with(&**s),
            HeaderTest::Contains(s) => value.contains(&**s),
            HeaderTest::String(m) => m.matches(&value),
        };
        matched != self.invert
    }
}

// === impl QueryMatcher ===

impl QueryMatcher {
    fn new(q: &QueryMatcherProto) -> Result<Self, ConfigError> {
        if q.name.is_empty() {
            return Err(ConfigError::new("name must not be empty").at("name"));
        }
        let (test, present) = match &q.query_parameter_match_specifier {
            None => (None, None),
            Some(QueryParameterMatchSpecifier::PresentMatch(p)) => (None, Some(*p)),
            Some(QueryParameterMatchSpecifier::StringMatch(m)) => (
                Some(
                    StringMatcher::new(m)
                        .map_err(|e| ConfigError::new(e.to_string()).at("string_match"))?,
                ),
                None,
            ),
        };
        Ok(Self {
            name: q.name.as_str().into(),
            test,
            present,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto_test_util::from_yaml;

    fn m(yaml: &str) -> RouteMatch {
        RouteMatch::new(&from_yaml::<RouteMatchProto>(yaml)).unwrap()
    }

    fn req<'a>(path: &'a str, headers: &'a HeaderMap) -> RequestView<'a> {
        RequestView {
            method: &Method::GET,
            scheme: "http",
            authority: "example.com",
            path,
            headers,
            tls: None,
            internal: false,
        }
    }

    fn hit(matcher: &RouteMatch, path: &str) -> bool {
        matcher.matches(&req(path, &HeaderMap::new()), 0)
    }

    #[test]
    fn path_specifiers() {
        let prefix = m("prefix: /api");
        assert!(hit(&prefix, "/api"));
        assert!(hit(&prefix, "/apix?q=1"));
        assert!(!hit(&prefix, "/API"));
        let exact = m("path: /api");
        assert!(hit(&exact, "/api?x=1"));
        assert!(!hit(&exact, "/api/"));
        let re = m("safe_regex: { regex: '/v[0-9]+/.*' }");
        assert!(hit(&re, "/v1/x?y"));
        assert!(!hit(&re, "/a/v1/x"), "regex must match the whole path");
        let sep = m("path_separated_prefix: /api");
        assert!(hit(&sep, "/api"));
        assert!(hit(&sep, "/api/x"));
        assert!(hit(&sep, "/api?x"));
        assert!(!hit(&sep, "/apix"));
    }

    #[test]
    fn case_insensitive_paths() {
        let prefix = m("{ prefix: /Api, case_sensitive: false }");
        assert!(hit(&prefix, "/aPI/x"));
        let exact = m("{ path: /Api, case_sensitive: false }");
        assert!(hit(&exact, "/API"));
        let sensitive = m("{ path: /Api, case_sensitive: true }");
        assert!(!hit(&sensitive, "/API"));
    }

    #[test]
    fn bad_path_separated_prefix_is_rejected() {
        let e = RouteMatch::new(&from_yaml::<RouteMatchProto>("path_separated_prefix: /a/"))
            .unwrap_err();
        assert!(e.to_string().contains("path_separated_prefix"), "{e}");
    }

    #[test]
    fn header_matchers() {
        let matcher = m(r#"
prefix: /
headers:
- { name: x-exact, exact_match: v1 }
- { name: x-any }
- { name: x-absent, present_match: false }
- { name: x-range, range_match: { start: 10, end: 20 } }
- { name: x-not, string_match: { prefix: bad }, invert_match: true }
- { name: ":method", string_match: { exact: GET } }
"#);
        let mut h = HeaderMap::new();
        h.insert("x-exact", "v1".parse().unwrap());
        h.insert("x-any", "".parse().unwrap());
        h.insert("x-range", "19".parse().unwrap());
        h.insert("x-not", "good".parse().unwrap());
        assert!(matcher.matches(&req("/", &h), 0));
        h.insert("x-range", "20".parse().unwrap());
        assert!(!matcher.matches(&req("/", &h), 0));
        h.insert("x-range", "10".parse().unwrap());
        h.insert("x-absent", "here".parse().unwrap());
        assert!(!matcher.matches(&req("/", &h), 0));
        h.remove("x-absent");
        h.insert("x-not", "badness".parse().unwrap());
        assert!(!matcher.matches(&req("/", &h), 0));
    }

    #[test]
    fn multiple_header_values_are_joined_with_commas() {
        let matcher = m("{ prefix: /, headers: [{ name: x-v, exact_match: 'a,b' }] }");
        let mut h = HeaderMap::new();
        h.append("x-v", "a".parse().unwrap());
        h.append("x-v", "b".parse().unwrap());
        assert!(matcher.matches(&req("/", &h), 0));
    }

    #[test]
    fn missing_headers_and_inversion() {
        let inverted =
            m("{ prefix: /, headers: [{ name: x-v, exact_match: a, invert_match: true }] }");
        assert!(
            !hit(&inverted, "/"),
            "a missing header does not match, even inverted"
        );
        let empty = m(
            "{ prefix: /, headers: [{ name: x-v, exact_match: '', treat_missing_header_as_empty: true }] }",
        );
        assert!(hit(&empty, "/"));
    }

    #[test]
    fn query_parameters() {
        let matcher = m(r#"
prefix: /
query_parameters:
- { name: debug, present_match: true }
- { name: user, string_match: { exact: alice } }
"#);
        assert!(hit(&matcher, "/x?debug&user=alice"));
        assert!(hit(&matcher, "/x?user=alice&debug=0"));
        assert!(!hit(&matcher, "/x?user=bob&debug"));
        assert!(!hit(&matcher, "/x?user=alice"));
        assert!(!hit(&matcher, "/x"));
    }

    #[test]
    fn grpc_and_runtime_fraction() {
        let grpc = m("{ prefix: /, grpc: {} }");
        let mut h = HeaderMap::new();
        assert!(!grpc.matches(&req("/", &h), 0));
        h.insert("content-type", "application/grpc+proto".parse().unwrap());
        assert!(grpc.matches(&req("/", &h), 0));
        let half = m("{ prefix: /, runtime_fraction: { default_value: { numerator: 50 } } }");
        assert!(half.matches(&req("/", &h), 49));
        assert!(!half.matches(&req("/", &h), 50));
        assert!(half.matches(&req("/", &h), 149));
    }

    #[test]
    fn unsupported_matchers_are_rejected() {
        for yaml in [
            "connect_matcher: {}",
            "{ prefix: /, dynamic_metadata: [{ filter: f, path: [{ key: k }], value: { present_match: true } }] }",
        ] {
            assert!(
                RouteMatch::new(&from_yaml::<RouteMatchProto>(yaml)).is_err(),
                "{yaml}"
            );
        }
    }
}
