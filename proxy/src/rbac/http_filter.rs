//! `envoy.filters.http.rbac`: RBAC on a request, with the per-route `RBACPerRoute` override.
//!
//! How the connection manager runs it (what Envoy's filter does): in the filter chain's
//! order (istiod: CUSTOM, then jwt_authn, then the AUDIT/LOG, DENY and ALLOW RBAC filters),
//! on the request headers, call [`HttpRbac::decide`] with the request head as filters see
//! it and the route's `RBACPerRoute` if the route (or its virtual host) has one. When
//! [`HttpVerdict::allowed`] is false, stop the chain and send [`HttpVerdict::local_reply`]:
//! `403`, body `RBAC: access denied`, with its response code details. Set
//! [`HttpVerdict::dynamic_metadata`] under [`HTTP_FILTER_NAME`] if anything reads it.

use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::{
    Rbac as HttpRbacProto, RbacPerRoute,
};
use envoy_types::pb::google::protobuf::{Any, Struct, Value, value::Kind};

use super::engine::{Decision, Engine};
use super::error::RbacError;
use super::input::Input;
use super::stats::{Outcome, PolicyCounters, RbacStats};
use super::{decode_any, shadow_fields};
use crate::config::{ConfigError, Context};
use crate::stats::Store;

/// The HTTP filter's name, and where it puts its dynamic metadata.
pub const HTTP_FILTER_NAME: &str = "envoy.filters.http.rbac";

/// The body of the local reply for a denied request.
pub const ACCESS_DENIED_BODY: &str = "RBAC: access denied";

/// A compiled HTTP RBAC filter config.
#[derive(Debug)]
pub struct HttpRbac {
    rules: RuleSet,
    stats: RbacStats,
    /// Per-policy counters of `rules`, when `track_per_rule_stats` is set.
    policy_counters: Option<(PolicyCounters, PolicyCounters)>,
}

/// A compiled `RBACPerRoute`: replaces the filter's engines on its route.
#[derive(Debug)]
pub struct HttpRbacPerRoute {
    rules: RuleSet,
}

/// Engines and the prefixes that name their metadata.
#[derive(Debug)]
struct RuleSet {
    engine: Option<Engine>,
    shadow: Option<Engine>,
    rules_stat_prefix: String,
    shadow_rules_stat_prefix: String,
    per_rule_stats: bool,
}

/// The outcome for one request.
#[derive(Debug, Clone, Copy)]
pub struct HttpVerdict<'a> {
    /// Whether the request goes on. True when there is no enforced engine.
    pub allowed: bool,
    pub enforced: Option<Decision<'a>>,
    pub shadow: Option<Decision<'a>>,
    rules_prefix: &'a str,
    shadow_prefix: &'a str,
}

/// The reply for a denied request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: http::StatusCode,
    pub body: &'static str,
    /// Response code details for the access log (`%RESPONSE_CODE_DETAILS%`).
    pub details: String,
}

// === impl HttpRbac ===

impl HttpRbac {
    /// Compiles `envoy.extensions.filters.http.rbac.v3.RBAC` (an Any, possibly a TypedStruct;
    /// unknown fields are an error). `stat_prefix` is the connection manager's
    /// `http.<stat_prefix>.`.
    pub fn from_any(any: &Any, store: &Store, stat_prefix: &str) -> Result<Self, ConfigError> {
        Self::new(&decode_any::<HttpRbacProto>(any)?, store, stat_prefix)
    }

    pub fn new(
        proto: &HttpRbacProto,
        store: &Store,
        stat_prefix: &str,
    ) -> Result<Self, ConfigError> {
        let rules = RuleSet::new(proto)?;
        let stats = RbacStats::new(
            store,
            stat_prefix,
            &proto.rules_stat_prefix,
            &proto.shadow_rules_stat_prefix,
        );
        let policy_counters = rules.per_rule_stats.then(|| {
            (
                stats.policies(rules.engine.iter().flat_map(Engine::policy_names)),
                stats.shadow_policies(rules.shadow.iter().flat_map(Engine::policy_names)),
            )
        });
        Ok(Self {
            rules,
            stats,
            policy_counters,
        })
    }

    pub fn stats(&self) -> &RbacStats {
        &self.stats
    }

    /// Decides a request, counting stats. Allocates nothing (except the first count of a
    /// per-policy stat, and per-policy stats of a per-route override, which are looked up
    /// by name).
    pub fn decide<'s>(
        &'s self,
        input: &Input<'_>,
        per_route: Option<&'s HttpRbacPerRoute>,
    ) -> HttpVerdict<'s> {
        let rules = per_route.map_or(&self.rules, |r| &r.rules);
        let own = per_route.is_none();
        let per_policy = |shadow: bool, d: &Decision<'_>| {
            let (Some(index), Some(name)) = (d.matched_index, d.matched_policy) else {
                return;
            };
            if !rules.per_rule_stats {
                return;
            }
            let outcome = if d.allowed {
                Outcome::Allowed
            } else {
                Outcome::Denied
            };
            match (&self.policy_counters, own) {
                (Some((enforced, shadows)), true) => {
                    let c = if shadow { shadows } else { enforced };
                    c.inc(index, shadow, outcome);
                }
                _ => self.stats.count_policy(shadow, name, outcome),
            }
        };
        let shadow = rules.shadow.as_ref().map(|e| {
            let d = e.evaluate(input);
            let c = if d.allowed {
                &self.stats.shadow_allowed
            } else {
                &self.stats.shadow_denied
            };
            c.inc();
            per_policy(true, &d);
            d
        });
        let enforced = rules.engine.as_ref().map(|e| {
            let d = e.evaluate(input);
            let c = if d.allowed {
                &self.stats.allowed
            } else {
                &self.stats.denied
            };
            c.inc();
            per_policy(false, &d);
            d
        });
        let (rules_prefix, shadow_prefix) = match per_route {
            Some(r) => (
                non_empty_or(&r.rules.rules_stat_prefix, &self.rules.rules_stat_prefix),
                non_empty_or(
                    &r.rules.shadow_rules_stat_prefix,
                    &self.rules.shadow_rules_stat_prefix,
                ),
            ),
            None => (
                &*self.rules.rules_stat_prefix,
                &*self.rules.shadow_rules_stat_prefix,
            ),
        };
        HttpVerdict {
            allowed: enforced.is_none_or(|d| d.allowed),
            enforced,
            shadow,
            rules_prefix,
            shadow_prefix,
        }
    }
}

fn non_empty_or<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.is_empty() { b } else { a }
}

// === impl HttpRbacPerRoute ===

impl HttpRbacPerRoute {
    /// Compiles `envoy.extensions.filters.http.rbac.v3.RBACPerRoute`. A per-route config
    /// without `rbac` turns RBAC off on its route.
    pub fn from_any(any: &Any) -> Result<Self, ConfigError> {
        Self::new(&decode_any::<RbacPerRoute>(any)?)
    }

    pub fn new(proto: &RbacPerRoute) -> Result<Self, ConfigError> {
        let rules = match &proto.rbac {
            Some(rbac) => RuleSet::new(rbac).at("rbac")?,
            None => RuleSet::new(&HttpRbacProto::default())?,
        };
        Ok(Self { rules })
    }
}

// === impl RuleSet ===

impl RuleSet {
    fn new(proto: &HttpRbacProto) -> Result<Self, ConfigError> {
        if proto.matcher.is_some() || proto.shadow_matcher.is_some() {
            let field = if proto.matcher.is_some() {
                "matcher"
            } else {
                "shadow_matcher"
            };
            return Err(ConfigError::from(RbacError::Unsupported(
                "the xDS matcher API for RBAC (use rules / shadow_rules)",
            ))
            .at(field));
        }
        Ok(Self {
            engine: proto
                .rules
                .as_ref()
                .map(Engine::new)
                .transpose()
                .at("rules")?,
            shadow: proto
                .shadow_rules
                .as_ref()
                .map(Engine::new)
                .transpose()
                .at("shadow_rules")?,
            rules_stat_prefix: proto.rules_stat_prefix.clone(),
            shadow_rules_stat_prefix: proto.shadow_rules_stat_prefix.clone(),
            per_rule_stats: proto.track_per_rule_stats,
        })
    }
}

// === impl HttpVerdict ===

impl HttpVerdict<'_> {
    /// The 403 to send for a denied request; `None` when allowed.
    pub fn local_reply(&self) -> Option<LocalReply> {
        let denied = self.enforced.filter(|d| !d.allowed)?;
        Some(LocalReply {
            status: http::StatusCode::FORBIDDEN,
            body: ACCESS_DENIED_BODY,
            details: denied.denied_details(),
        })
    }

    /// For a LOG engine: the `envoy.common` / `access_log_hint` metadata value.
    pub fn access_log_hint(&self) -> Option<bool> {
        self.enforced.and_then(|d| d.access_log_hint)
    }

    /// The dynamic metadata Envoy sets under [`HTTP_FILTER_NAME`]:
    /// `<shadow prefix>shadow_engine_result`, `<shadow prefix>shadow_effective_policy_id`,
    /// `<rules prefix>enforced_engine_result` and `<rules prefix>enforced_effective_policy_id`
    /// for the engines that ran. Istio's dry-run stats and logs read the `istio_dry_run_*`
    /// ones. Allocates; call only if the metadata is wanted.
    pub fn dynamic_metadata(&self) -> Option<Struct> {
        if self.enforced.is_none() && self.shadow.is_none() {
            return None;
        }
        let mut fields = std::collections::HashMap::new();
        if let Some(shadow) = &self.shadow {
            shadow_fields(&mut fields, self.shadow_prefix, shadow);
        }
        if let Some(d) = &self.enforced {
            if let Some(p) = d.matched_policy {
                fields.insert(
                    format!("{}enforced_effective_policy_id", self.rules_prefix),
                    string(p),
                );
            }
            let result = if d.allowed { "allowed" } else { "denied" };
            fields.insert(
                format!("{}enforced_engine_result", self.rules_prefix),
                string(result),
            );
        }
        Some(Struct { fields })
    }
}

pub(crate) fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}
