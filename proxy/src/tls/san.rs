//! Subject alternative name matchers: `match_typed_subject_alt_names`, and the deprecated
//! `match_subject_alt_names` that Istio still sends (a StringMatcher tried against every SAN
//! of type DNS, URI, email and IP, as Envoy converts it).

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, SubjectAltNameMatcher, subject_alt_name_matcher::SanType,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    StringMatcher as StringMatcherProto, string_matcher::MatchPattern,
};

use super::cert::Leaf;
use crate::config::{ConfigError, Context};
use crate::matcher::StringMatcher;

/// The SAN types a matcher applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanKind {
    Dns,
    Uri,
    Email,
    Ip,
}

/// One SAN matcher.
#[derive(Debug, Clone)]
pub struct SanMatcher {
    pub kind: SanKind,
    pub matcher: StringMatcher,
    /// For DNS exact matches: the value, so a wildcard SAN in the certificate can match it.
    dns_exact: Option<String>,
}

/// All SAN matchers of a validation context; a certificate passes if any matches.
#[derive(Debug, Clone, Default)]
pub struct SanMatchers(Vec<SanMatcher>);

// === impl SanMatcher ===

impl SanMatcher {
    fn new(kind: SanKind, proto: &StringMatcherProto) -> Result<Self, ConfigError> {
        let matcher = StringMatcher::new(proto).map_err(|e| ConfigError::new(e.to_string()))?;
        let dns_exact = match (&proto.match_pattern, kind) {
            (Some(MatchPattern::Exact(v)), SanKind::Dns) if !proto.ignore_case => Some(v.clone()),
            _ => None,
        };
        Ok(Self {
            kind,
            matcher,
            dns_exact,
        })
    }

    /// Whether any SAN of this matcher's type matches.
    pub fn matches(&self, leaf: &Leaf) -> bool {
        let sans = match self.kind {
            SanKind::Dns => &leaf.dns_sans,
            SanKind::Uri => &leaf.uri_sans,
            SanKind::Email => &leaf.email_sans,
            SanKind::Ip => &leaf.ip_sans,
        };
        sans.iter().any(|san| match &self.dns_exact {
            Some(name) => dns_name_match(name, san),
            None => self.matcher.matches(san),
        })
    }
}

// === impl SanMatchers ===

impl SanMatchers {
    /// Compiles the typed and the deprecated SAN matchers of a validation context.
    pub fn new(ctx: &CertificateValidationContext) -> Result<Self, ConfigError> {
        let mut out = Vec::new();
        for (i, m) in ctx.match_typed_subject_alt_names.iter().enumerate() {
            out.push(typed(m).at(format!("match_typed_subject_alt_names[{i}]"))?);
        }
        #[allow(deprecated)]
        for (i, m) in ctx.match_subject_alt_names.iter().enumerate() {
            for kind in [SanKind::Dns, SanKind::Uri, SanKind::Email, SanKind::Ip] {
                out.push(SanMatcher::new(kind, m).at(format!("match_subject_alt_names[{i}]"))?);
            }
        }
        Ok(Self(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the certificate passes: no matchers, or any matcher matches.
    pub fn allows(&self, leaf: &Leaf) -> bool {
        self.0.is_empty() || self.0.iter().any(|m| m.matches(leaf))
    }
}

fn typed(m: &SubjectAltNameMatcher) -> Result<SanMatcher, ConfigError> {
    let kind = match SanType::try_from(m.san_type) {
        Ok(SanType::Dns) => SanKind::Dns,
        Ok(SanType::Uri) => SanKind::Uri,
        Ok(SanType::Email) => SanKind::Email,
        Ok(SanType::IpAddress) => SanKind::Ip,
        Ok(SanType::OtherName) => {
            return Err(ConfigError::new("OTHER_NAME SAN matching is not supported").at("san_type"));
        }
        Ok(SanType::Unspecified) | Err(_) => {
            return Err(
                ConfigError::new("san_type must be one of DNS, URI, EMAIL, IP_ADDRESS")
                    .at("san_type"),
            );
        }
    };
    let proto = m
        .matcher
        .as_ref()
        .ok_or_else(|| ConfigError::new("is required").at("matcher"))?;
    SanMatcher::new(kind, proto).at("matcher")
}

/// Envoy's `dnsNameMatch`: `name` equals the SAN, or the SAN is `*.rest` and `name` is one
/// more label in front of `rest`.
pub fn dns_name_match(name: &str, san: &str) -> bool {
    if name.eq_ignore_ascii_case(san) {
        return true;
    }
    let Some(suffix) = san.strip_prefix("*.") else {
        return false;
    };
    match name.split_once('.') {
        Some((label, rest)) => !label.is_empty() && rest.eq_ignore_ascii_case(suffix),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(yaml: &str) -> CertificateValidationContext {
        crate::proto_test_util::from_yaml(yaml)
    }

    fn leaf(uris: &[&str], dns: &[&str]) -> Leaf {
        Leaf {
            uri_sans: uris.iter().map(|s| s.to_string()).collect(),
            dns_sans: dns.iter().map(|s| s.to_string()).collect(),
            ip_sans: vec!["10.0.0.1".into()],
            email_sans: vec!["ops@example.com".into()],
            ..Leaf::default()
        }
    }

    #[test]
    fn istio_exact_and_prefix_matchers() {
        let client = SanMatchers::new(&ctx(
            "match_subject_alt_names: [{exact: spiffe://cluster.local/ns/default/sa/bookinfo-productpage}, {exact: spiffe://cluster.local/ns/default/sa/default}]",
        ))
        .unwrap();
        assert!(client.allows(&leaf(
            &["spiffe://cluster.local/ns/default/sa/default"],
            &[]
        )));
        assert!(!client.allows(&leaf(&["spiffe://cluster.local/ns/other/sa/default"], &[])));
        assert!(!client.allows(&leaf(&[], &[])));
        let server = SanMatchers::new(&ctx(
            "match_subject_alt_names: [{prefix: \"spiffe://cluster.local/\"}]",
        ))
        .unwrap();
        assert!(server.allows(&leaf(&["spiffe://cluster.local/ns/a/sa/b"], &[])));
        assert!(!server.allows(&leaf(&["spiffe://evil.local/ns/a/sa/b"], &[])));
    }

    #[test]
    fn typed_matchers_look_only_at_their_type() {
        let m = SanMatchers::new(&ctx(
            "match_typed_subject_alt_names:\n- {san_type: URI, matcher: {suffix: /sa/web}}\n- {san_type: DNS, matcher: {exact: api.example.com}}\n- {san_type: IP_ADDRESS, matcher: {exact: 10.0.0.9}}\n- {san_type: EMAIL, matcher: {safe_regex: {regex: \"admin@.*\"}}}",
        ))
        .unwrap();
        assert!(m.allows(&leaf(&["spiffe://td/ns/x/sa/web"], &[])));
        // A DNS SAN with the URI's value does not count as the URI.
        assert!(!m.allows(&leaf(&[], &["spiffe://td/ns/x/sa/web"])));
        // Wildcard certificates match DNS exact matchers, for one label only.
        assert!(m.allows(&leaf(&[], &["*.example.com"])));
        assert!(!m.allows(&leaf(&[], &["*.com"])));
        let regex = SanMatchers::new(&ctx(
            "match_typed_subject_alt_names: [{san_type: URI, matcher: {safe_regex: {regex: \"spiffe://cluster\\\\.local/ns/[a-z]+/sa/.*\"}}}]",
        ))
        .unwrap();
        assert!(regex.allows(&leaf(&["spiffe://cluster.local/ns/foo/sa/bar"], &[])));
        assert!(!regex.allows(&leaf(&["spiffe://cluster.local/ns/Foo/sa/bar"], &[])));
    }

    #[test]
    fn bad_matchers_name_the_field() {
        let err = |y: &str| SanMatchers::new(&ctx(y)).unwrap_err().to_string();
        assert_eq!(
            err("match_typed_subject_alt_names: [{san_type: OTHER_NAME, matcher: {exact: x}}]"),
            "match_typed_subject_alt_names[0].san_type: OTHER_NAME SAN matching is not supported"
        );
        assert!(
            err("match_typed_subject_alt_names: [{san_type: URI}]")
                .contains("match_typed_subject_alt_names[0].matcher: is required")
        );
        assert!(
            err("match_subject_alt_names: [{safe_regex: {regex: \"(\"}}]")
                .starts_with("match_subject_alt_names[0]: invalid safe_regex")
        );
    }

    #[test]
    fn wildcard_dns() {
        assert!(dns_name_match("a.b.com", "*.b.com"));
        assert!(!dns_name_match("x.a.b.com", "*.b.com"));
        assert!(!dns_name_match("b.com", "*.b.com"));
        assert!(dns_name_match("B.com", "b.COM"));
    }
}
