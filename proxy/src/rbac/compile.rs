//! `config.rbac.v3` permissions and principals compiled to [`Rule`]s. Every field is either
//! implemented or refused with an error naming it; Envoy's proto validation rules (required
//! oneofs, non-empty sets, `any: true`, port bounds) are checked here too.

use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Principal, permission::Rule as P, principal::Identifier as I,
};
use envoy_types::pb::envoy::config::route::v3::HeaderMatcher as HeaderMatcherProto;
use envoy_types::pb::envoy::r#type::matcher::v3::{PathMatcher, path_matcher};
use envoy_types::pb::envoy::r#type::v3::Int32Range;

use super::cidr::Cidr;
use super::error::{RbacError, at};
use super::header::HeaderMatcher;
use super::metadata::MetadataMatcher;
use super::rule::Rule;
use super::uri_template;
use crate::config::{ConfigError, Context};
use crate::matcher::StringMatcher;

/// Whether `header` rules are allowed: the network filter refuses them, as Envoy's does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Headers {
    Allowed,
    Refused,
}

/// A list of permissions (`and_rules`, `or_rules`, a policy's `permissions`), which must
/// not be empty.
pub(crate) fn permissions(
    list: &[Permission],
    headers: Headers,
) -> Result<Box<[Rule]>, ConfigError> {
    if list.is_empty() {
        return Err(RbacError::Empty("the list of permissions").into());
    }
    list.iter()
        .enumerate()
        .map(|(i, p)| permission(p, headers).at(format!("[{i}]")))
        .collect()
}

/// A list of principals (`and_ids`, `or_ids`, a policy's `principals`), which must not be
/// empty.
pub(crate) fn principals(list: &[Principal], headers: Headers) -> Result<Box<[Rule]>, ConfigError> {
    if list.is_empty() {
        return Err(RbacError::Empty("the list of principals").into());
    }
    list.iter()
        .enumerate()
        .map(|(i, p)| principal(p, headers).at(format!("[{i}]")))
        .collect()
}

#[allow(deprecated)]
fn permission(p: &Permission, headers: Headers) -> Result<Rule, ConfigError> {
    let Some(rule) = &p.rule else {
        return Err(RbacError::Unset("a permission rule").into());
    };
    Ok(match rule {
        P::AndRules(set) => Rule::And(permissions(&set.rules, headers).at("and_rules.rules")?),
        P::OrRules(set) => Rule::Or(permissions(&set.rules, headers).at("or_rules.rules")?),
        P::Any(true) => Rule::Any,
        P::Any(false) => return Err(at(RbacError::AnyFalse, "any")),
        P::Header(h) => header(h, headers)?,
        P::UrlPath(m) => Rule::UrlPath(path(m).at("url_path")?),
        P::DestinationIp(c) => Rule::DestinationIp(cidr(c, "destination_ip")?),
        P::DestinationPort(port) => Rule::DestinationPort(
            u16::try_from(*port).map_err(|_| at(RbacError::Port(*port), "destination_port"))?,
        ),
        P::DestinationPortRange(r) => port_range(r).map_err(|e| at(e, "destination_port_range"))?,
        P::Metadata(m) => Rule::Metadata(MetadataMatcher::new(m).map_err(|e| at(e, "metadata"))?),
        P::NotRule(inner) => Rule::Not(Box::new(permission(inner, headers).at("not_rule")?)),
        P::RequestedServerName(m) => Rule::RequestedServerName(
            StringMatcher::new(m).map_err(|e| at(e.into(), "requested_server_name"))?,
        ),
        P::UriTemplate(t) => {
            Rule::UriTemplate(uri_template::compile(t).map_err(|e| at(e, "uri_template"))?)
        }
        P::Matcher(_) => return Err(unsupported("matcher", "permission matcher extensions")),
        P::SourcedMetadata(_) => {
            return Err(unsupported(
                "sourced_metadata",
                "sourced_metadata (route metadata)",
            ));
        }
    })
}

#[allow(deprecated)]
fn principal(p: &Principal, headers: Headers) -> Result<Rule, ConfigError> {
    let Some(id) = &p.identifier else {
        return Err(RbacError::Unset("a principal identifier").into());
    };
    Ok(match id {
        I::AndIds(set) => Rule::And(principals(&set.ids, headers).at("and_ids.ids")?),
        I::OrIds(set) => Rule::Or(principals(&set.ids, headers).at("or_ids.ids")?),
        I::Any(true) => Rule::Any,
        I::Any(false) => return Err(at(RbacError::AnyFalse, "any")),
        I::Authenticated(a) => Rule::Authenticated(
            a.principal_name
                .as_ref()
                .map(StringMatcher::new)
                .transpose()
                .map_err(|e| at(e.into(), "principal_name"))
                .at("authenticated")?,
        ),
        // The connection's remote address; with no PROXY protocol that is the peer.
        I::SourceIp(c) => Rule::DirectRemoteIp(cidr(c, "source_ip")?),
        I::DirectRemoteIp(c) => Rule::DirectRemoteIp(cidr(c, "direct_remote_ip")?),
        I::RemoteIp(c) => Rule::RemoteIp(cidr(c, "remote_ip")?),
        I::Header(h) => header(h, headers)?,
        I::UrlPath(m) => Rule::UrlPath(path(m).at("url_path")?),
        I::Metadata(m) => Rule::Metadata(MetadataMatcher::new(m).map_err(|e| at(e, "metadata"))?),
        I::NotId(inner) => Rule::Not(Box::new(principal(inner, headers).at("not_id")?)),
        I::FilterState(_) => {
            return Err(unsupported(
                "filter_state",
                "filter_state principals (waypoint identity)",
            ));
        }
        I::SourcedMetadata(_) => {
            return Err(unsupported(
                "sourced_metadata",
                "sourced_metadata (route metadata)",
            ));
        }
        I::Custom(_) => return Err(unsupported("custom", "custom principal extensions")),
    })
}

fn header(h: &HeaderMatcherProto, headers: Headers) -> Result<Rule, ConfigError> {
    if headers == Headers::Refused {
        return Err(at(RbacError::NetworkHeader, "header"));
    }
    Ok(Rule::Header(
        HeaderMatcher::new(h).map_err(|e| at(e, "header"))?,
    ))
}

fn path(m: &PathMatcher) -> Result<StringMatcher, ConfigError> {
    match &m.rule {
        Some(path_matcher::Rule::Path(s)) => {
            StringMatcher::new(s).map_err(|e| at(e.into(), "path"))
        }
        None => Err(RbacError::Unset("path").into()),
    }
}

fn cidr(
    c: &envoy_types::pb::envoy::config::core::v3::CidrRange,
    field: &str,
) -> Result<Cidr, ConfigError> {
    Cidr::new(c).map_err(|e| at(e, field))
}

/// Envoy's `PortRangeMatcher` bounds: `0 <= start < end <= 65536`.
fn port_range(r: &Int32Range) -> Result<Rule, RbacError> {
    if !(0..=65536).contains(&r.start) {
        return Err(RbacError::RangeStart(r.start));
    }
    if !(0..=65536).contains(&r.end) {
        return Err(RbacError::RangeEnd(r.end));
    }
    if r.start >= r.end {
        return Err(RbacError::RangeOrder {
            start: r.start.into(),
            end: r.end.into(),
        });
    }
    Ok(Rule::DestinationPortRange {
        start: r.start.unsigned_abs(),
        end: r.end.unsigned_abs(),
    })
}

fn unsupported(field: &str, what: &'static str) -> ConfigError {
    at(RbacError::Unsupported(what), field)
}
