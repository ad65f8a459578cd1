//! AuthorizationPolicy -> Envoy RBAC (`pilot/pkg/security/authz/builder`): one filter per
//! action (DENY before ALLOW), policies keyed `ns[<ns>]-policy[<name>]-rule[<i>]`,
//! principals matched on the peer certificate (`authenticated`).

use serde_json::{Map, Value, json};

use crate::cp::model::{Action, AuthorizationPolicy, MeshSpec, Operation, Rule, Source, Workload};

/// Whether the filter guards an HTTP or a TCP chain (TCP cannot express HTTP-only fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    Http,
    Tcp,
}

fn applies(ap: &AuthorizationPolicy, w: &Workload) -> bool {
    ap.namespace == w.namespace && ap.selector.as_ref().is_none_or(|s| *s == w.app)
}

/// The RBAC filters for `w` on one layer, in Istio's order; empty when no policy applies.
pub fn filters(spec: &MeshSpec, w: &Workload, layer: Layer) -> Vec<Value> {
    let mut out = Vec::new();
    for action in [Action::Deny, Action::Allow] {
        let policies: Vec<&AuthorizationPolicy> = spec
            .authorization_policies
            .iter()
            .filter(|ap| ap.action == action && applies(ap, w))
            .collect();
        if policies.is_empty() {
            continue;
        }
        let mut rules = Map::new();
        for ap in policies {
            if ap.rules.is_empty() && action == Action::Allow {
                rules.insert(key(ap, 0), match_never());
            }
            for (i, rule) in ap.rules.iter().enumerate() {
                if let Some(policy) = policy(rule, action, layer) {
                    rules.insert(key(ap, i), policy);
                }
            }
        }
        out.push(filter(action, layer, rules));
    }
    out
}

fn key(ap: &AuthorizationPolicy, i: usize) -> String {
    format!("ns[{}]-policy[{}]-rule[{i}]", ap.namespace, ap.name)
}

fn filter(action: Action, layer: Layer, policies: Map<String, Value>) -> Value {
    let (action_name, prefix) = match action {
        Action::Allow => ("ALLOW", "istio_dry_run_allow_"),
        Action::Deny => ("DENY", "istio_dry_run_deny_"),
    };
    let mut rules = json!({"policies": policies});
    if action == Action::Deny {
        rules["action"] = json!(action_name);
    }
    match layer {
        Layer::Http => json!({
            "name": "envoy.filters.http.rbac",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
                "rules": rules,
                "shadow_rules_stat_prefix": prefix
            }
        }),
        Layer::Tcp => json!({
            "name": "envoy.filters.network.rbac",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
                "rules": rules,
                "stat_prefix": "tcp.",
                "shadow_rules_stat_prefix": prefix
            }
        }),
    }
}

/// `rbacPolicyMatchNever`: what a rule-less ALLOW policy becomes.
fn match_never() -> Value {
    json!({
        "permissions": [{"not_rule": {"any": true}}],
        "principals": [{"not_id": {"any": true}}]
    })
}

/// One rule as an RBAC policy; `None` when an ALLOW rule cannot apply to TCP at all.
fn policy(rule: &Rule, action: Action, layer: Layer) -> Option<Value> {
    let mut permissions = Vec::new();
    for op in &rule.to {
        let http_only = !op.methods.is_empty() || !op.paths.is_empty();
        if layer == Layer::Tcp && http_only && action == Action::Allow {
            return None;
        }
        permissions.push(operation(op, layer));
    }
    if permissions.is_empty() {
        permissions.push(json!({"and_rules": {"rules": [{"any": true}]}}));
    }
    let mut principals: Vec<Value> = rule.from.iter().map(source).collect();
    if principals.is_empty() {
        principals.push(json!({"and_ids": {"ids": [{"any": true}]}}));
    }
    Some(json!({"permissions": permissions, "principals": principals}))
}

fn operation(op: &Operation, layer: Layer) -> Value {
    let mut rules = Vec::new();
    if layer == Layer::Http {
        if !op.methods.is_empty() {
            let m: Vec<Value> = op
                .methods
                .iter()
                .map(|m| json!({"header": {"name": ":method", "string_match": {"exact": m}}}))
                .collect();
            rules.push(json!({"or_rules": {"rules": m}}));
        }
        if !op.paths.is_empty() {
            let p: Vec<Value> = op
                .paths
                .iter()
                .map(|p| json!({"url_path": {"path": {"exact": p}}}))
                .collect();
            rules.push(json!({"or_rules": {"rules": p}}));
        }
    }
    if !op.ports.is_empty() {
        let p: Vec<Value> = op
            .ports
            .iter()
            .map(|p| json!({"destination_port": p}))
            .collect();
        rules.push(json!({"or_rules": {"rules": p}}));
    }
    if rules.is_empty() {
        rules.push(json!({"any": true}));
    }
    json!({"and_rules": {"rules": rules}})
}

fn source(src: &Source) -> Value {
    let mut ids = Vec::new();
    if !src.principals.is_empty() {
        let p: Vec<Value> = src
            .principals
            .iter()
            .map(|p| json!({"authenticated": {"principal_name": {"exact": format!("spiffe://{p}")}}}))
            .collect();
        ids.push(json!({"or_ids": {"ids": p}}));
    }
    if !src.namespaces.is_empty() {
        let n: Vec<Value> = src
            .namespaces
            .iter()
            .map(|ns| {
                json!({"authenticated": {"principal_name": {"safe_regex": {"regex": format!(".*/ns/{ns}/.*")}}}})
            })
            .collect();
        ids.push(json!({"or_ids": {"ids": n}}));
    }
    if ids.is_empty() {
        ids.push(json!({"any": true}));
    }
    json!({"and_ids": {"ids": ids}})
}
