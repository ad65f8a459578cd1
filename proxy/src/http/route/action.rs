//! What a matched route does: forward to a cluster (one, weighted, or named by a header)
//! with rewrites and timeouts, redirect, or answer directly.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, RedirectAction, RouteAction as RouteActionProto, WeightedCluster,
    redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier},
    route_action::{ClusterNotFoundResponseCode, ClusterSpecifier, HostRewriteSpecifier},
    weighted_cluster::cluster_weight,
};
use http::{HeaderName, HeaderValue, StatusCode};

use super::matcher::{PathMatch, full_regex, strip_query};
use crate::config::{ConfigError, Context, duration};
use crate::http::mutation::HeaderMutations;
use crate::http::retry::RetryPolicy;

/// Envoy's default route timeout.
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// Which cluster a route forwards to.
#[derive(Debug, Clone)]
pub enum ClusterSpec {
    Name(Arc<str>),
    /// The cluster named by a request header (503/NC when absent).
    Header(HeaderName),
    Weighted(WeightedClusters),
}

/// `weighted_clusters`: one of several clusters, chosen by weight per request.
#[derive(Debug, Clone)]
pub struct WeightedClusters {
    pub entries: Vec<WeightedEntry>,
    pub total: u64,
}

/// One cluster of a weighted split, with its own header changes.
#[derive(Debug, Clone)]
pub struct WeightedEntry {
    pub name: Arc<str>,
    pub weight: u64,
    pub request_headers: HeaderMutations,
    pub response_headers: HeaderMutations,
    pub host_rewrite: Option<HeaderValue>,
}

/// How the path is rewritten before forwarding.
#[derive(Debug, Clone)]
pub enum PathRewrite {
    None,
    /// Replaces the matched prefix (or the whole path for regex routes).
    Prefix(Box<str>),
    /// Replaces every match in the path (query kept).
    Regex(regex::Regex, Box<str>),
}

/// How the `:authority` is rewritten before forwarding.
#[derive(Debug, Clone)]
pub enum HostRewrite {
    None,
    Literal(HeaderValue),
    /// The upstream host's hostname (STRICT_DNS / LOGICAL_DNS endpoints).
    Auto,
    Header(HeaderName),
}

/// `route`: forward upstream.
#[derive(Debug, Clone)]
pub struct RouteAction {
    pub cluster: ClusterSpec,
    pub not_found_status: StatusCode,
    pub path_rewrite: PathRewrite,
    pub host_rewrite: HostRewrite,
    pub append_x_forwarded_host: bool,
    /// `None`: no timeout (`0s`).
    pub timeout: Option<Duration>,
    /// Overrides the HCM's `stream_idle_timeout` for this route (`0s` disables it).
    pub idle_timeout: Option<Duration>,
    /// The route's policy, else the virtual host's.
    pub retry: Option<Arc<RetryPolicy>>,
    /// `upgrade_configs` overrides: lower-cased type and whether it is enabled.
    pub upgrades: Vec<(Box<str>, bool)>,
    /// `grpc_timeout_header_max` (or the older `max_grpc_timeout`): when set, a `grpc-timeout`
    /// header sets the timeout, capped by this unless it is zero.
    pub grpc_timeout_max: Option<Duration>,
}

/// The path part of a redirect.
#[derive(Debug, Clone)]
pub enum RedirectPath {
    Keep,
    Path(Box<str>),
    Prefix(Box<str>),
    Regex(regex::Regex, Box<str>),
}

/// `redirect`.
#[derive(Debug, Clone)]
pub struct Redirect {
    pub scheme: Option<Box<str>>,
    pub host: Option<Box<str>>,
    pub port: Option<u16>,
    pub path: RedirectPath,
    pub status: StatusCode,
    pub strip_query: bool,
}

/// `direct_response`.
#[derive(Debug, Clone)]
pub struct DirectResponse {
    pub status: StatusCode,
    pub body: Option<Bytes>,
}

/// What a route does.
#[derive(Debug, Clone)]
pub enum Action {
    Forward(Box<RouteAction>),
    Redirect(Redirect),
    Direct(DirectResponse),
}

// === impl RouteAction ===

impl RouteAction {
    pub fn new(
        a: &RouteActionProto,
        vhost_retry: Option<&Arc<RetryPolicy>>,
    ) -> Result<Self, ConfigError> {
        reject_unsupported(a)?;
        let cluster = match &a.cluster_specifier {
            Some(ClusterSpecifier::Cluster(c)) if !c.is_empty() => {
                ClusterSpec::Name(c.as_str().into())
            }
            Some(ClusterSpecifier::ClusterHeader(h)) if !h.is_empty() => ClusterSpec::Header(
                HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).map_err(|_| {
                    ConfigError::new(format!("invalid header name {h:?}")).at("cluster_header")
                })?,
            ),
            Some(ClusterSpecifier::WeightedClusters(w)) => {
                ClusterSpec::Weighted(weighted(w).at("weighted_clusters")?)
            }
            Some(ClusterSpecifier::ClusterSpecifierPlugin(_))
            | Some(ClusterSpecifier::InlineClusterSpecifierPlugin(_)) => {
                return Err(ConfigError::new(
                    "cluster specifier plugins are not supported",
                ));
            }
            _ => {
                return Err(ConfigError::new(
                    "a cluster, cluster_header or weighted_clusters is required",
                ));
            }
        };
        let not_found_status =
            match ClusterNotFoundResponseCode::try_from(a.cluster_not_found_response_code) {
                Ok(ClusterNotFoundResponseCode::NotFound) => StatusCode::NOT_FOUND,
                Ok(ClusterNotFoundResponseCode::InternalServerError) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
        let path_rewrite = match (&a.prefix_rewrite, &a.regex_rewrite) {
            (p, Some(_)) if !p.is_empty() => {
                return Err(ConfigError::new(
                    "Specify only one of prefix_rewrite, regex_rewrite or path_rewrite_policy",
                ));
            }
            (p, None) if !p.is_empty() => PathRewrite::Prefix(p.as_str().into()),
            (_, Some(r)) => {
                let pattern = r.pattern.as_ref().map_or("", |p| p.regex.as_str());
                PathRewrite::Regex(
                    regex::Regex::new(pattern).map_err(|e| {
                        ConfigError::new(format!("invalid regex {pattern:?}: {e}"))
                            .at("regex_rewrite")
                    })?,
                    substitution(&r.substitution).into(),
                )
            }
            _ => PathRewrite::None,
        };
        let host_rewrite = match &a.host_rewrite_specifier {
            None => HostRewrite::None,
            Some(HostRewriteSpecifier::HostRewriteLiteral(h)) => {
                HostRewrite::Literal(HeaderValue::from_str(h).map_err(|_| {
                    ConfigError::new(format!("invalid host {h:?}")).at("host_rewrite_literal")
                })?)
            }
            Some(HostRewriteSpecifier::AutoHostRewrite(b)) if b.value => HostRewrite::Auto,
            Some(HostRewriteSpecifier::AutoHostRewrite(_)) => HostRewrite::None,
            Some(HostRewriteSpecifier::HostRewriteHeader(h)) => HostRewrite::Header(
                HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).map_err(|_| {
                    ConfigError::new(format!("invalid header {h:?}")).at("host_rewrite_header")
                })?,
            ),
            Some(_) => {
                return Err(ConfigError::new("only host_rewrite_literal, auto_host_rewrite and host_rewrite_header are supported")
                    .at("host_rewrite_specifier"));
            }
        };
        let timeout = match &a.timeout {
            None => Some(DEFAULT_ROUTE_TIMEOUT),
            Some(t) => Some(duration(t).at("timeout")?).filter(|d| !d.is_zero()),
        };
        let opt = |d: Option<&envoy_types::pb::google::protobuf::Duration>, field: &str| {
            d.map(duration).transpose().at(field.to_string())
        };
        let msd = a.max_stream_duration.as_ref();
        let stream_max = opt(
            msd.and_then(|m| m.max_stream_duration.as_ref()),
            "max_stream_duration.max_stream_duration",
        )?;
        if stream_max.is_some_and(|d| !d.is_zero()) {
            return Err(
                ConfigError::new("a non-zero max_stream_duration is not supported")
                    .at("max_stream_duration.max_stream_duration"),
            );
        }
        if msd.is_some_and(|m| m.grpc_timeout_header_offset.is_some()) {
            return Err(
                ConfigError::new("grpc_timeout_header_offset is not supported")
                    .at("max_stream_duration.grpc_timeout_header_offset"),
            );
        }
        #[allow(deprecated)]
        let grpc_timeout_max = match opt(
            msd.and_then(|m| m.grpc_timeout_header_max.as_ref()),
            "max_stream_duration.grpc_timeout_header_max",
        )? {
            Some(d) => Some(d),
            None => opt(a.max_grpc_timeout.as_ref(), "max_grpc_timeout")?,
        };
        let retry = match &a.retry_policy {
            Some(p) => Some(Arc::new(RetryPolicy::new(p).at("retry_policy")?)),
            None => vhost_retry.cloned(),
        };
        let mut upgrades = Vec::new();
        for (i, u) in a.upgrade_configs.iter().enumerate() {
            if u.connect_config.is_some() {
                return Err(ConfigError::new("CONNECT upgrades are not supported")
                    .at(format!("upgrade_configs[{i}]")));
            }
            let t: Box<str> = u.upgrade_type.to_ascii_lowercase().into();
            if upgrades.iter().any(|(x, _): &(Box<str>, bool)| *x == t) {
                return Err(ConfigError::new(format!(
                    "Duplicate upgrade {}",
                    u.upgrade_type
                )));
            }
            upgrades.push((t, u.enabled.is_none_or(|e| e.value)));
        }
        Ok(Self {
            cluster,
            not_found_status,
            path_rewrite,
            host_rewrite,
            append_x_forwarded_host: a.append_x_forwarded_host,
            timeout,
            idle_timeout: opt(a.idle_timeout.as_ref(), "idle_timeout")?,
            retry,
            upgrades,
            grpc_timeout_max,
        })
    }

    /// The clusters this route may send to (for `validate_clusters`).
    pub fn cluster_names(&self) -> Vec<&str> {
        match &self.cluster {
            ClusterSpec::Name(n) => vec![n],
            ClusterSpec::Header(_) => Vec::new(),
            ClusterSpec::Weighted(w) => w.entries.iter().map(|e| &*e.name).collect(),
        }
    }
}

#[allow(deprecated)]
fn reject_unsupported(a: &RouteActionProto) -> Result<(), ConfigError> {
    let bad = |field: &str, what: &str| {
        Err(ConfigError::new(format!("{what} is not supported")).at(field))
    };
    if a.metadata_match.is_some() {
        return bad("metadata_match", "subset load balancing");
    }
    if !a.request_mirror_policies.is_empty() {
        return bad("request_mirror_policies", "request mirroring");
    }
    if a.hedge_policy.is_some() {
        return bad("hedge_policy", "request hedging");
    }
    if a.internal_redirect_policy.is_some() || a.internal_redirect_action != 0 {
        return bad("internal_redirect_policy", "internal redirects");
    }
    if a.cors.is_some() {
        return bad("cors", "CORS");
    }
    if a.path_rewrite_policy.is_some() || !a.path_rewrite.is_empty() {
        return bad("path_rewrite_policy", "path rewrite policies");
    }
    if a.retry_policy_typed_config.is_some() {
        return bad("retry_policy_typed_config", "typed retry policies");
    }
    if a.early_data_policy.is_some() {
        return bad("early_data_policy", "early data policies");
    }
    Ok(())
}

/// RE2 substitutions use `\1`; the regex crate uses `${1}`.
fn substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some(d)) if d.is_ascii_digit() => {
                out.push_str(&format!("${{{d}}}"));
                chars.next();
            }
            ('\\', Some('\\')) => {
                out.push('\\');
                chars.next();
            }
            ('$', _) => out.push_str("$$"),
            _ => out.push(c),
        }
    }
    out
}

fn weighted(w: &WeightedCluster) -> Result<WeightedClusters, ConfigError> {
    if w.random_value_specifier.is_some() {
        return Err(ConfigError::new("random_value_specifier is not supported"));
    }
    let mut entries = Vec::with_capacity(w.clusters.len());
    for (i, c) in w.clusters.iter().enumerate() {
        let at = |e: ConfigError| e.at(format!("clusters[{i}]"));
        if c.name.is_empty() {
            return Err(at(ConfigError::new(
                "a cluster name is required (cluster_header is not supported)",
            )));
        }
        if c.metadata_match.is_some() {
            return Err(at(ConfigError::new(
                "subset load balancing is not supported",
            )
            .at("metadata_match")));
        }
        crate::http::route::config::check_per_filter(&c.typed_per_filter_config).map_err(at)?;
        let host_rewrite = match &c.host_rewrite_specifier {
            Some(cluster_weight::HostRewriteSpecifier::HostRewriteLiteral(h)) => Some(
                HeaderValue::from_str(h)
                    .map_err(|_| at(ConfigError::new(format!("invalid host {h:?}"))))?,
            ),
            None => None,
        };
        entries.push(WeightedEntry {
            name: c.name.as_str().into(),
            weight: u64::from(c.weight.map_or(0, |w| w.value)),
            request_headers: HeaderMutations::new(
                &c.request_headers_to_add,
                &c.request_headers_to_remove,
            )
            .map_err(|e| at(e.at("request")))?,
            response_headers: HeaderMutations::new(
                &c.response_headers_to_add,
                &c.response_headers_to_remove,
            )
            .map_err(|e| at(e.at("response")))?,
            host_rewrite,
        });
    }
    #[allow(deprecated)]
    let total: u64 = entries.iter().map(|e| e.weight).sum();
    if total == 0 {
        return Err(ConfigError::new(
            "Sum of weights in the weighted_cluster must be greater than 0",
        ));
    }
    #[allow(deprecated)]
    if let Some(t) = w.total_weight
        && u64::from(t.value) != total
    {
        return Err(ConfigError::new(format!(
            "Sum of weights in the weighted_cluster should add up to {}",
            t.value
        )));
    }
    Ok(WeightedClusters { entries, total })
}

// === impl WeightedClusters ===

impl WeightedClusters {
    /// The entry for a random value, proportionally to weight.
    pub fn pick(&self, random: u64) -> &WeightedEntry {
        let mut r = random % self.total;
        for e in &self.entries {
            if r < e.weight {
                return e;
            }
            r -= e.weight;
        }
        // Unreachable: the weights sum to `total`.
        &self.entries[self.entries.len() - 1]
    }
}

// === impl PathRewrite ===

impl PathRewrite {
    /// The rewritten `:path`, or `None` when nothing changes. `path_match` is the route's
    /// path specifier (the prefix to replace).
    pub fn apply(&self, path: &str, path_match: &PathMatch) -> Option<String> {
        match self {
            PathRewrite::None => None,
            PathRewrite::Prefix(new) => {
                let matched_len = match path_match {
                    PathMatch::Prefix(p) | PathMatch::Exact(p) | PathMatch::Separated(p) => p.len(),
                    PathMatch::Regex(_) => strip_query(path).len(),
                };
                let rest = path.get(matched_len..)?;
                Some(format!("{new}{rest}"))
            }
            PathRewrite::Regex(re, sub) => {
                let only = strip_query(path);
                let replaced = re.replace_all(only, &**sub);
                if replaced.is_empty() {
                    return None;
                }
                Some(format!("{replaced}{}", &path[only.len()..]))
            }
        }
    }
}

// === impl Redirect ===

impl Redirect {
    pub fn new(r: &RedirectAction) -> Result<Self, ConfigError> {
        let scheme = match &r.scheme_rewrite_specifier {
            Some(SchemeRewriteSpecifier::HttpsRedirect(true)) => Some("https".into()),
            Some(SchemeRewriteSpecifier::SchemeRedirect(s)) if !s.is_empty() => {
                Some(s.to_ascii_lowercase().into())
            }
            _ => None,
        };
        let path = match &r.path_rewrite_specifier {
            None => RedirectPath::Keep,
            Some(PathRewriteSpecifier::PathRedirect(p)) if p.is_empty() => RedirectPath::Keep,
            Some(PathRewriteSpecifier::PathRedirect(p)) => RedirectPath::Path(p.as_str().into()),
            Some(PathRewriteSpecifier::PrefixRewrite(p)) => RedirectPath::Prefix(p.as_str().into()),
            Some(PathRewriteSpecifier::RegexRewrite(rr)) => {
                let pattern = rr.pattern.as_ref().map_or("", |p| p.regex.as_str());
                RedirectPath::Regex(
                    regex::Regex::new(pattern).map_err(|e| {
                        ConfigError::new(format!("invalid regex {pattern:?}: {e}"))
                            .at("regex_rewrite")
                    })?,
                    substitution(&rr.substitution).into(),
                )
            }
            Some(PathRewriteSpecifier::PathRewrite(_)) => {
                return Err(
                    ConfigError::new("path_rewrite formatters are not supported")
                        .at("path_rewrite"),
                );
            }
        };
        let status = match RedirectResponseCode::try_from(r.response_code) {
            Ok(RedirectResponseCode::Found) => StatusCode::FOUND,
            Ok(RedirectResponseCode::SeeOther) => StatusCode::SEE_OTHER,
            Ok(RedirectResponseCode::TemporaryRedirect) => StatusCode::TEMPORARY_REDIRECT,
            Ok(RedirectResponseCode::PermanentRedirect) => StatusCode::PERMANENT_REDIRECT,
            _ => StatusCode::MOVED_PERMANENTLY,
        };
        Ok(Self {
            scheme,
            host: Some(r.host_redirect.as_str())
                .filter(|h| !h.is_empty())
                .map(Box::from),
            port: u16::try_from(r.port_redirect).ok().filter(|p| *p != 0),
            path,
            status,
            strip_query: r.strip_query,
        })
    }

    /// For prefix and regex redirects, the rewritten request path (Envoy rewrites the
    /// request's `:path` before building the location, so access logs show it).
    pub fn rewritten_path(&self, path: &str, path_match: &PathMatch) -> Option<String> {
        let rewrite = match &self.path {
            RedirectPath::Prefix(p) => PathRewrite::Prefix(p.clone()),
            RedirectPath::Regex(re, s) => PathRewrite::Regex(re.clone(), s.clone()),
            _ => return None,
        };
        rewrite.apply(path, path_match)
    }

    /// The `location` for a request (Envoy's `Http::Utility::newUri`). `scheme` is the
    /// request's `x-forwarded-proto`.
    pub fn location(
        &self,
        scheme: &str,
        authority: &str,
        path: &str,
        path_match: &PathMatch,
    ) -> String {
        let final_scheme = self.scheme.as_deref().unwrap_or(scheme);
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        let host = match &self.host {
            Some(h) => h,
            None => process_host(authority, scheme, final_scheme, self.port.is_some()),
        };
        let query_at = path.find('?');
        let mut final_path = match &self.path {
            RedirectPath::Keep => path.to_string(),
            RedirectPath::Path(p) if p.contains('?') => p.to_string(),
            RedirectPath::Path(p) => match query_at {
                Some(q) => format!("{p}{}", &path[q..]),
                None => p.to_string(),
            },
            RedirectPath::Prefix(_) | RedirectPath::Regex(..) => {
                let rewrite = match &self.path {
                    RedirectPath::Prefix(p) => PathRewrite::Prefix(p.clone()),
                    RedirectPath::Regex(re, s) => PathRewrite::Regex(re.clone(), s.clone()),
                    _ => PathRewrite::None,
                };
                rewrite
                    .apply(path, path_match)
                    .unwrap_or_else(|| path.to_string())
            }
        };
        if !final_path.starts_with('/') {
            final_path.insert(0, '/');
        }
        let path_has_query = matches!(&self.path, RedirectPath::Path(p) if p.contains('?'));
        if self.strip_query
            && !path_has_query
            && let Some(q) = final_path.find('?')
        {
            final_path.truncate(q);
        }
        format!("{final_scheme}://{host}{port}{final_path}")
    }
}

/// Where `:port` starts in a host, IPv6 literals understood.
pub fn port_start(host: &str) -> Option<usize> {
    if host.starts_with('[') {
        return host.rfind("]:").map(|i| i + 1);
    }
    let i = host.rfind(':')?;
    host[i + 1..]
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then_some(i)
}

/// Envoy's `processRequestHost`: drops a default port that would be wrong after a scheme
/// change (`:80` when going to https, `:443` when going to http).
fn process_host<'a>(
    host: &'a str,
    request_scheme: &str,
    new_scheme: &str,
    new_port: bool,
) -> &'a str {
    let Some(i) = port_start(host) else {
        return host;
    };
    let port = &host[i..];
    let mut remove = new_port;
    if new_scheme != request_scheme {
        remove |= (request_scheme == "https" && port == ":443")
            || (request_scheme == "http" && port == ":80");
    }
    if remove { &host[..i] } else { host }
}

// === impl DirectResponse ===

impl DirectResponse {
    pub fn new(d: &DirectResponseAction, max_body: usize) -> Result<Self, ConfigError> {
        let status = u16::try_from(d.status)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .filter(|s| (200..600).contains(&s.as_u16()))
            .ok_or_else(|| ConfigError::new(format!("invalid status {}", d.status)).at("status"))?;
        if d.body_format.is_some() {
            return Err(ConfigError::new("body_format is not supported").at("body_format"));
        }
        let body = d
            .body
            .as_ref()
            .map(|b| data_source(b, max_body))
            .transpose()
            .at("body")?;
        Ok(Self { status, body })
    }
}

/// Reads a `DataSource` (inline, file or environment variable) at config time.
pub fn data_source(d: &DataSource, max: usize) -> Result<Bytes, ConfigError> {
    let data = match &d.specifier {
        Some(Specifier::InlineString(s)) => Bytes::from(s.clone()),
        Some(Specifier::InlineBytes(b)) => Bytes::from(b.clone()),
        Some(Specifier::Filename(f)) => Bytes::from(
            std::fs::read(f).map_err(|e| ConfigError::new(format!("cannot read {f:?}: {e}")))?,
        ),
        Some(Specifier::EnvironmentVariable(v)) => Bytes::from(
            std::env::var(v)
                .map_err(|_| ConfigError::new(format!("environment variable {v:?} is not set")))?,
        ),
        None => Bytes::new(),
    };
    if data.len() > max {
        return Err(ConfigError::new(format!(
            "response body size is {} bytes; maximum is {max}",
            data.len()
        )));
    }
    Ok(data)
}

/// The `safe_regex` of a path (used by tests and the bench).
pub fn regex(pattern: &str) -> Result<regex::Regex, ConfigError> {
    full_regex(pattern)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto_test_util::from_yaml;

    fn action(yaml: &str) -> RouteAction {
        RouteAction::new(&from_yaml::<RouteActionProto>(yaml), None).unwrap()
    }

    fn redirect(yaml: &str) -> Redirect {
        Redirect::new(&from_yaml::<RedirectAction>(yaml)).unwrap()
    }

    #[test]
    fn defaults() {
        let a = action("cluster: c");
        assert_eq!(a.timeout, Some(DEFAULT_ROUTE_TIMEOUT));
        assert_eq!(a.not_found_status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(a.retry.is_none());
        let b = action(
            "{ cluster: c, timeout: 0s, max_stream_duration: { grpc_timeout_header_max: 0s } }",
        );
        assert_eq!(b.timeout, None);
        assert_eq!(b.grpc_timeout_max, Some(Duration::ZERO));
    }

    #[test]
    fn prefix_and_regex_rewrites() {
        let prefix = PathMatch::Prefix("/api/v1".into());
        let a = action("{ cluster: c, prefix_rewrite: /v2 }");
        assert_eq!(
            a.path_rewrite.apply("/api/v1/users?x=1", &prefix).unwrap(),
            "/v2/users?x=1"
        );
        let root = action("{ cluster: c, prefix_rewrite: / }");
        assert_eq!(root.path_rewrite.apply("/api/v1", &prefix).unwrap(), "/");
        let re = action(
            "{ cluster: c, regex_rewrite: { pattern: { regex: '^/service/([^/]+)(/.*)$' }, substitution: '\\2/instance/\\1' } }",
        );
        assert_eq!(
            re.path_rewrite
                .apply("/service/foo/v1/api?q", &prefix)
                .unwrap(),
            "/v1/api/instance/foo?q"
        );
    }

    #[test]
    fn weighted_picks_by_weight() {
        let a = action(
            "{ weighted_clusters: { clusters: [{ name: v1, weight: 75 }, { name: v2, weight: 25 }] } }",
        );
        let ClusterSpec::Weighted(w) = &a.cluster else {
            panic!()
        };
        assert_eq!(&*w.pick(0).name, "v1");
        assert_eq!(&*w.pick(74).name, "v1");
        assert_eq!(&*w.pick(75).name, "v2");
        assert_eq!(&*w.pick(199).name, "v2");
        assert!(
            RouteAction::new(
                &from_yaml::<RouteActionProto>(
                    "{ weighted_clusters: { clusters: [{ name: v1, weight: 0 }] } }"
                ),
                None
            )
            .is_err()
        );
    }

    #[test]
    fn redirects_like_envoy() {
        let any = PathMatch::Prefix("/".into());
        let r = redirect("path_redirect: /new");
        assert_eq!(
            r.location("http", "localhost:28080", "/redir/a?b=1", &any),
            "http://localhost:28080/new?b=1"
        );
        assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
        let https = redirect("https_redirect: true");
        assert_eq!(
            https.location("http", "example.com:80", "/x", &any),
            "https://example.com/x"
        );
        assert_eq!(
            https.location("http", "example.com", "/x?y", &any),
            "https://example.com/x?y"
        );
        let host = redirect(
            "{ host_redirect: other.com, port_redirect: 8443, response_code: FOUND, strip_query: true }",
        );
        assert_eq!(
            host.location("http", "a.com:80", "/p?q=1", &any),
            "http://other.com:8443/p"
        );
        assert_eq!(host.status, StatusCode::FOUND);
        let prefix = redirect("prefix_rewrite: /v2");
        assert_eq!(
            prefix.location("http", "a", "/api/x", &PathMatch::Prefix("/api".into())),
            "http://a/v2/x"
        );
    }

    #[test]
    fn direct_response_body_limits() {
        let d = DirectResponse::new(
            &from_yaml("{ status: 200, body: { inline_string: hello } }"),
            4096,
        )
        .unwrap();
        assert_eq!(d.body.unwrap(), "hello");
        let e = DirectResponse::new(
            &from_yaml("{ status: 200, body: { inline_string: hello } }"),
            3,
        )
        .unwrap_err();
        assert!(e.to_string().contains("maximum is 3"), "{e}");
        assert!(DirectResponse::new(&from_yaml("{ status: 99 }"), 10).is_err());
    }

    #[test]
    fn unsupported_actions_are_rejected() {
        for yaml in [
            "{ cluster: c, request_mirror_policies: [{ cluster: m }] }",
            "{ cluster: c, metadata_match: { filter_metadata: { envoy.lb: { v: { string_value: x } } } } }",
            "{ cluster: c, hedge_policy: { hedge_on_per_try_timeout: true } }",
            "{ cluster_specifier_plugin: p }",
        ] {
            assert!(
                RouteAction::new(&from_yaml::<RouteActionProto>(yaml), None).is_err(),
                "{yaml}"
            );
        }
    }
}
