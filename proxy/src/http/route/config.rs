//! `RouteConfiguration` protos to route tables. Everything that could change where traffic
//! goes and that we do not implement is rejected here, naming the field.

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::route::v3::{
    Route as RouteProto, RouteConfiguration, VirtualHost as VirtualHostProto, route,
    virtual_host::TlsRequirementType,
};
use envoy_types::pb::google::protobuf::Any;
use http::HeaderName;

use super::action::{Action, DirectResponse, Redirect, RouteAction};
use super::domain::DomainIndex;
use super::matcher::RouteMatch;
use super::{RequireTls, Route, RouteTable, VirtualHost};
use crate::config::{ConfigError, Context, any, extension};
use crate::http::mutation::HeaderMutations;
use crate::http::retry::RetryPolicy;
use crate::upstream::ClusterManager;

const DEFAULT_MAX_DIRECT_RESPONSE_BODY: usize = 4096;
const ROUTE_FILTER_CONFIG: &str = "type.googleapis.com/envoy.config.route.v3.FilterConfig";

/// How cluster references are checked when a table is built.
#[derive(Debug, Clone, Copy)]
pub struct Validation<'a> {
    /// The clusters that exist now.
    pub clusters: Option<&'a ClusterManager>,
    /// Whether to check when the route config does not say (`validate_clusters`): true for
    /// inline route configs, false for RDS, as in Envoy.
    pub default: bool,
}

// === impl RouteTable ===

impl RouteTable {
    /// Compiles a route configuration. Errors name the route config, virtual host, route and
    /// field.
    pub fn new(rc: &RouteConfiguration, validation: Validation<'_>) -> Result<Self, ConfigError> {
        Self::convert(rc, validation).map_err(|e| e.at(format!("route_config {:?}", rc.name)))
    }

    fn convert(rc: &RouteConfiguration, validation: Validation<'_>) -> Result<Self, ConfigError> {
        reject_config_level(rc)?;
        let max_body = rc
            .max_direct_response_body_size_bytes
            .map_or(DEFAULT_MAX_DIRECT_RESPONSE_BODY, |v| v.value as usize);
        let validate = rc.validate_clusters.map_or(validation.default, |v| v.value);
        let mut domains = DomainIndex::new(rc.ignore_port_in_host_matching);
        let mut vhosts = Vec::with_capacity(rc.virtual_hosts.len());
        for (i, vh) in rc.virtual_hosts.iter().enumerate() {
            let at = |e: ConfigError| e.at(format!("virtual_hosts[{i}] ({:?})", vh.name));
            let compiled = virtual_host(vh, max_body).map_err(at)?;
            if validate && let Some(cm) = validation.clusters {
                check_clusters(&compiled, cm)?;
            }
            for d in &vh.domains {
                domains.add(d, i, &rc.name)?;
            }
            vhosts.push(compiled);
        }
        let internal_only_headers = rc
            .internal_only_headers
            .iter()
            .map(|h| {
                HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).map_err(|_| {
                    ConfigError::new(format!("invalid header {h:?}")).at("internal_only_headers")
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            name: rc.name.as_str().into(),
            domains,
            vhosts,
            internal_only_headers,
            request_headers: HeaderMutations::new(
                &rc.request_headers_to_add,
                &rc.request_headers_to_remove,
            )
            .at("request")?,
            response_headers: HeaderMutations::new(
                &rc.response_headers_to_add,
                &rc.response_headers_to_remove,
            )
            .at("response")?,
            most_specific_wins: rc.most_specific_header_mutations_wins,
        })
    }
}

fn check_clusters(vh: &VirtualHost, cm: &ClusterManager) -> Result<(), ConfigError> {
    for r in &vh.routes {
        if let Action::Forward(a) = &r.action {
            for name in a.cluster_names() {
                if cm.get(name).is_none() {
                    return Err(ConfigError::new(format!("route: unknown cluster '{name}'")));
                }
            }
        }
    }
    Ok(())
}

fn reject_config_level(rc: &RouteConfiguration) -> Result<(), ConfigError> {
    let bad = |field: &str, what: &str| {
        Err(ConfigError::new(format!("{what} is not supported")).at(field))
    };
    if rc.vhds.is_some() {
        return bad("vhds", "virtual host discovery (VHDS)");
    }
    if !rc.cluster_specifier_plugins.is_empty() {
        return bad("cluster_specifier_plugins", "cluster specifier plugins");
    }
    if !rc.request_mirror_policies.is_empty() {
        return bad("request_mirror_policies", "request mirroring");
    }
    if !rc.vhost_header.is_empty() {
        return bad("vhost_header", "selecting virtual hosts by another header");
    }
    if rc.ignore_path_parameters_in_path_matching {
        return bad(
            "ignore_path_parameters_in_path_matching",
            "ignoring path parameters",
        );
    }
    check_per_filter(&rc.typed_per_filter_config).at("typed_per_filter_config")?;
    Ok(())
}

/// `typed_per_filter_config`: per-route settings of the HTTP filters. Only settings of
/// telemetry-only filters are safe to ignore; anything else (fault injection, CORS, RBAC
/// overrides) would change how traffic is handled and is rejected.
pub fn check_per_filter(map: &HashMap<String, Any>) -> Result<(), ConfigError> {
    for (name, cfg) in map {
        let type_url = if cfg.type_url == ROUTE_FILTER_CONFIG {
            let fc: envoy_types::pb::envoy::config::route::v3::FilterConfig =
                any::decode(cfg).at(name)?;
            match fc.config {
                Some(inner) => any::effective_type_url(&inner)?,
                None => String::new(),
            }
        } else {
            any::effective_type_url(cfg)?
        };
        if !extension::is_telemetry_only(&type_url) {
            return Err(extension::unsupported(
                "per-route filter config",
                name,
                &type_url,
            ));
        }
    }
    Ok(())
}

#[allow(deprecated)]
fn virtual_host(vh: &VirtualHostProto, max_body: usize) -> Result<VirtualHost, ConfigError> {
    let bad = |field: &str, what: &str| {
        Err(ConfigError::new(format!("{what} is not supported")).at(field))
    };
    if vh.matcher.is_some() {
        return bad("matcher", "matcher trees");
    }
    if vh.cors.is_some() {
        return bad("cors", "CORS");
    }
    if vh.hedge_policy.is_some() {
        return bad("hedge_policy", "request hedging");
    }
    if !vh.request_mirror_policies.is_empty() {
        return bad("request_mirror_policies", "request mirroring");
    }
    if vh.retry_policy_typed_config.is_some() {
        return bad("retry_policy_typed_config", "typed retry policies");
    }
    if !vh.route_specifiers.is_empty() {
        return bad("route_specifiers", "route specifiers");
    }
    check_per_filter(&vh.typed_per_filter_config).at("typed_per_filter_config")?;
    let retry = vh
        .retry_policy
        .as_ref()
        .map(|p| RetryPolicy::new(p).map(Arc::new))
        .transpose()
        .at("retry_policy")?;
    let routes = vh
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            route(r, retry.as_ref(), max_body).map_err(|e| {
                let label = if r.name.is_empty() {
                    String::new()
                } else {
                    format!(" ({:?})", r.name)
                };
                e.at(format!("routes[{i}]{label}"))
            })
        })
        .collect::<Result<_, _>>()?;
    let require_tls = match TlsRequirementType::try_from(vh.require_tls) {
        Ok(TlsRequirementType::ExternalOnly) => RequireTls::ExternalOnly,
        Ok(TlsRequirementType::All) => RequireTls::All,
        _ => RequireTls::None,
    };
    Ok(VirtualHost {
        name: vh.name.as_str().into(),
        routes,
        require_tls,
        request_headers: HeaderMutations::new(
            &vh.request_headers_to_add,
            &vh.request_headers_to_remove,
        )
        .at("request")?,
        response_headers: HeaderMutations::new(
            &vh.response_headers_to_add,
            &vh.response_headers_to_remove,
        )
        .at("response")?,
        include_attempt_count_in_request: vh.include_request_attempt_count,
        include_attempt_count_in_response: vh.include_attempt_count_in_response,
    })
}

fn route(
    r: &RouteProto,
    vhost_retry: Option<&Arc<RetryPolicy>>,
    max_body: usize,
) -> Result<Route, ConfigError> {
    if !r.route_specifiers.is_empty() {
        return Err(ConfigError::new("route specifiers are not supported").at("route_specifiers"));
    }
    check_per_filter(&r.typed_per_filter_config).at("typed_per_filter_config")?;
    let matcher = r
        .r#match
        .as_ref()
        .ok_or_else(|| ConfigError::new("match is required"))
        .and_then(RouteMatch::new)
        .at("match")?;
    let action = match &r.action {
        Some(route::Action::Route(a)) => {
            Action::Forward(Box::new(RouteAction::new(a, vhost_retry).at("route")?))
        }
        Some(route::Action::Redirect(a)) => Action::Redirect(Redirect::new(a).at("redirect")?),
        Some(route::Action::DirectResponse(a)) => {
            Action::Direct(DirectResponse::new(a, max_body).at("direct_response")?)
        }
        Some(route::Action::FilterAction(_)) | Some(route::Action::NonForwardingAction(_)) => {
            return Err(ConfigError::new(
                "filter and non-forwarding actions are not supported",
            ));
        }
        None => {
            return Err(ConfigError::new(
                "an action (route, redirect or direct_response) is required",
            ));
        }
    };
    Ok(Route {
        name: Some(r.name.as_str())
            .filter(|n| !n.is_empty())
            .map(Arc::from),
        matcher,
        action,
        request_headers: HeaderMutations::new(
            &r.request_headers_to_add,
            &r.request_headers_to_remove,
        )
        .at("request")?,
        response_headers: HeaderMutations::new(
            &r.response_headers_to_add,
            &r.response_headers_to_remove,
        )
        .at("response")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::route::{RequestView, Selected};
    use crate::proto_test_util::from_yaml;
    use http::{HeaderMap, Method};

    const NO_CHECK: Validation<'static> = Validation {
        clusters: None,
        default: false,
    };

    fn table(yaml: &str) -> Result<RouteTable, ConfigError> {
        RouteTable::new(&from_yaml::<RouteConfiguration>(yaml), NO_CHECK)
    }

    fn select<'a>(t: &'a RouteTable, authority: &str, path: &str) -> Option<&'a str> {
        let headers = HeaderMap::new();
        let req = RequestView {
            method: &Method::GET,
            scheme: "http",
            authority,
            path,
            headers: &headers,
            tls: None,
            internal: false,
        };
        match t.select(&req, 0) {
            Selected::Route(_, r) => r.name.as_deref(),
            Selected::TlsRedirect(_) => Some("tls-redirect"),
            _ => None,
        }
    }

    #[test]
    fn istio_route_config_compiles_and_routes() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/istio-config-dumps/describe-http_config.json"
        );
        let dump: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let rc = dump["configs"][0]["dynamic_route_configs"][0]
            .get("route_config")
            .unwrap_or_else(|| panic!("no route config in {path}"));
        let mut rc = rc.clone();
        rc.as_object_mut().unwrap().remove("@type");
        let rc: RouteConfiguration =
            crate::proto::decode_value(&rc, crate::proto::UnknownFields::Reject)
                .unwrap()
                .message;
        let t = RouteTable::new(&rc, NO_CHECK).unwrap();
        assert_eq!(&*t.name, "http.8080");
        let headers = HeaderMap::new();
        let req = RequestView {
            method: &Method::GET,
            scheme: "http",
            authority: "anything",
            path: "/static/x.css",
            headers: &headers,
            tls: None,
            internal: false,
        };
        let Selected::Route(vh, r) = t.select(&req, 0) else {
            panic!("no route")
        };
        assert_eq!(&*vh.name, "*:80");
        let Action::Forward(a) = &r.action else {
            panic!()
        };
        assert_eq!(
            a.cluster_names(),
            ["outbound|9080||productpage.default.svc.cluster.local"]
        );
        let retry = a.retry.as_ref().unwrap();
        assert_eq!(retry.num_retries, 2);
        assert_eq!(a.timeout, None);
    }

    #[test]
    fn routes_match_in_order_within_the_virtual_host() {
        let t = table(
            r#"
name: rc
virtual_hosts:
- name: a
  domains: [a.com]
  routes:
  - { name: exact, match: { path: /x }, direct_response: { status: 200 } }
  - { name: prefix, match: { prefix: /x }, direct_response: { status: 200 } }
- name: b
  domains: ["*.com"]
  require_tls: ALL
  routes:
  - { name: any, match: { prefix: / }, direct_response: { status: 200 } }
"#,
        )
        .unwrap();
        assert_eq!(select(&t, "a.com", "/x"), Some("exact"));
        assert_eq!(select(&t, "a.com", "/xy"), Some("prefix"));
        assert_eq!(select(&t, "a.com", "/y"), None);
        assert_eq!(select(&t, "b.com", "/"), Some("tls-redirect"));
        assert_eq!(select(&t, "b.org", "/"), None);
    }

    #[test]
    fn errors_name_the_path() {
        let e = table(
            r#"
name: rc
virtual_hosts:
- name: vh
  domains: ["*"]
  routes:
  - { name: r0, match: { prefix: / }, route: { cluster: c, request_mirror_policies: [{ cluster: m }] } }
"#,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "route_config \"rc\" virtual_hosts[0] (\"vh\").routes[0] (\"r0\").route.request_mirror_policies: request mirroring is not supported"
        );
    }

    #[test]
    fn per_filter_configs_that_change_traffic_are_rejected() {
        let e = table(
            r#"
name: rc
virtual_hosts:
- name: vh
  domains: ["*"]
  typed_per_filter_config:
    envoy.filters.http.fault:
      "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
      abort: { http_status: 503, percentage: { numerator: 100 } }
  routes: []
"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("envoy.filters.http.fault"), "{e}");
        table(
            r#"
name: rc
virtual_hosts:
- name: vh
  domains: ["*"]
  typed_per_filter_config:
    istio.stats: { "@type": type.googleapis.com/stats.PluginConfig }
  routes: []
"#,
        )
        .unwrap();
    }

    #[test]
    fn validate_clusters_checks_the_cluster_manager() {
        let cm = ClusterManager::new(crate::stats::Store::new(None).unwrap());
        let rc = from_yaml::<RouteConfiguration>(
            "{ name: rc, virtual_hosts: [{ name: v, domains: ['*'], routes: [{ match: { prefix: / }, route: { cluster: nope } }] }] }",
        );
        let e = RouteTable::new(
            &rc,
            Validation {
                clusters: Some(&cm),
                default: true,
            },
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("route: unknown cluster 'nope'"),
            "{e}"
        );
        RouteTable::new(
            &rc,
            Validation {
                clusters: Some(&cm),
                default: false,
            },
        )
        .unwrap();
    }
}
