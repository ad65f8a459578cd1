//! The compiled form of RBAC permissions and principals: one tree of plain enums, evaluated
//! by walking it. Nothing here allocates.

use super::cidr::Cidr;
use super::header::HeaderMatcher;
use super::input::Input;
use super::metadata::MetadataMatcher;
use crate::matcher::StringMatcher;

/// A permission or principal.
#[derive(Debug, Clone)]
pub(crate) enum Rule {
    Any,
    /// All must match (an empty set matches).
    And(Box<[Rule]>),
    /// One must match (an empty set does not).
    Or(Box<[Rule]>),
    Not(Box<Rule>),
    Header(HeaderMatcher),
    /// `url_path`: the path without query and fragment.
    UrlPath(StringMatcher),
    /// `uri_template`: a compiled path template.
    UriTemplate(regex::Regex),
    DestinationIp(Cidr),
    DestinationPort(u16),
    /// `[start, end)`.
    DestinationPortRange {
        start: u32,
        end: u32,
    },
    /// The SNI; a connection without one is the empty string.
    RequestedServerName(StringMatcher),
    Metadata(MetadataMatcher),
    /// A TLS connection, and with a matcher a peer certificate name that matches it.
    Authenticated(Option<StringMatcher>),
    /// `direct_remote_ip` and the deprecated `source_ip`: the connected peer.
    DirectRemoteIp(Cidr),
    /// `remote_ip`: the connection manager's idea of the client (`x-forwarded-for`).
    RemoteIp(Cidr),
}

// === impl Rule ===

impl Rule {
    pub(crate) fn matches(&self, input: &Input<'_>) -> bool {
        let ds = input.downstream();
        match self {
            Self::Any => true,
            Self::And(rules) => rules.iter().all(|r| r.matches(input)),
            Self::Or(rules) => rules.iter().any(|r| r.matches(input)),
            Self::Not(rule) => !rule.matches(input),
            Self::Header(h) => h.matches(input),
            Self::UrlPath(m) => input.url_path().is_some_and(|p| m.matches(p)),
            Self::UriTemplate(re) => {
                let path = input.url_path().unwrap_or("");
                re.is_match(path)
            }
            Self::DestinationIp(c) => c.contains(ds.local.ip()),
            Self::DestinationPort(p) => ds.local.port() == *p,
            Self::DestinationPortRange { start, end } => {
                let p = u32::from(ds.local.port());
                *start <= p && p < *end
            }
            Self::RequestedServerName(m) => {
                m.matches(ds.requested_server_name.as_deref().unwrap_or(""))
            }
            Self::Metadata(m) => m.matches(input),
            Self::Authenticated(m) => authenticated(m.as_ref(), input),
            Self::DirectRemoteIp(c) => c.contains(input.peer_ip()),
            Self::RemoteIp(c) => c.contains(input.remote_ip()),
        }
    }
}

/// Envoy's `authenticated`: any TLS connection matches an empty matcher; otherwise every URI
/// SAN, then every DNS SAN, then the subject of the verified peer certificate is tried.
/// Identity comes only from the certificate, never from a header.
fn authenticated(matcher: Option<&StringMatcher>, input: &Input<'_>) -> bool {
    let Some(tls) = input.downstream().tls.as_deref() else {
        return false;
    };
    let Some(matcher) = matcher else {
        return true;
    };
    match &tls.peer_certificate {
        Some(cert) => {
            cert.uri_sans.iter().any(|s| matcher.matches(s))
                || cert.dns_sans.iter().any(|s| matcher.matches(s))
                || matcher.matches(&cert.subject)
        }
        None => matcher.matches(""),
    }
}
