//! The RBAC filters' stats, named as Envoy names them:
//! `<prefix>rbac.[<rules_prefix>.]allowed|denied`,
//! `<prefix>rbac.[<shadow_rules_stat_prefix>.]shadow_allowed|shadow_denied`, and with
//! `track_per_rule_stats` `<...>.policy.<name>.allowed` etc. So Istio's `tcp.` network
//! filter counts `tcp.rbac.denied`, and a dry-run policy counts
//! `http.inbound_0.0.0.0_80.rbac.istio_dry_run_allow_.shadow_denied`.

use std::sync::OnceLock;

use crate::stats::{Counter, Store};

/// The four counters every RBAC filter has.
#[derive(Debug, Clone)]
pub struct RbacStats {
    pub allowed: Counter,
    pub denied: Counter,
    pub shadow_allowed: Counter,
    pub shadow_denied: Counter,
    /// Where per-policy stats go: `<rules base>policy.` and `<shadow base>policy.`.
    policy_prefix: String,
    shadow_policy_prefix: String,
    store: Store,
}

/// Per-policy counters of one engine, created on first use (as Envoy creates them) so a
/// policy that never matched has no stat; after that, counting allocates nothing.
#[derive(Debug)]
pub(crate) struct PolicyCounters {
    store: Store,
    /// `<prefix><policy>.`, one per policy in engine order.
    names: Box<[String]>,
    counters: Box<[[OnceLock<Counter>; 2]]>,
}

/// Which per-policy counter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    Allowed,
    Denied,
}

// === impl RbacStats ===

impl RbacStats {
    /// Stats under `prefix` (the network filter's `stat_prefix`, or the HTTP connection
    /// manager's `http.<stat_prefix>.`).
    pub fn new(store: &Store, prefix: &str, rules_prefix: &str, shadow_prefix: &str) -> Self {
        let base = join(prefix, "rbac.");
        let rules = join(&base, rules_prefix);
        let shadow = join(&base, shadow_prefix);
        Self {
            allowed: store.counter(&join(&rules, "allowed")),
            denied: store.counter(&join(&rules, "denied")),
            shadow_allowed: store.counter(&join(&shadow, "shadow_allowed")),
            shadow_denied: store.counter(&join(&shadow, "shadow_denied")),
            policy_prefix: join(&rules, "policy."),
            shadow_policy_prefix: join(&shadow, "policy."),
            store: store.clone(),
        }
    }

    /// Per-policy counters for the enforced engine's policies.
    pub(crate) fn policies<'n>(&self, names: impl Iterator<Item = &'n str>) -> PolicyCounters {
        PolicyCounters::new(&self.store, &self.policy_prefix, names)
    }

    /// Per-policy counters for the shadow engine's policies.
    pub(crate) fn shadow_policies<'n>(
        &self,
        names: impl Iterator<Item = &'n str>,
    ) -> PolicyCounters {
        PolicyCounters::new(&self.store, &self.shadow_policy_prefix, names)
    }

    /// Counts a per-policy stat for a policy this filter's config does not own (a per-route
    /// override). Looks the counter up by name, so it allocates.
    pub(crate) fn count_policy(&self, shadow: bool, policy: &str, outcome: Outcome) {
        let prefix = if shadow {
            &self.shadow_policy_prefix
        } else {
            &self.policy_prefix
        };
        self.store
            .counter(&format!("{prefix}{policy}.{}", outcome.suffix(shadow)))
            .inc();
    }
}

// === impl PolicyCounters ===

impl PolicyCounters {
    fn new<'n>(store: &Store, prefix: &str, names: impl Iterator<Item = &'n str>) -> Self {
        let names: Box<[String]> = names.map(|n| format!("{prefix}{n}.")).collect();
        let counters = names.iter().map(|_| Default::default()).collect();
        Self {
            store: store.clone(),
            names,
            counters,
        }
    }

    pub(crate) fn inc(&self, index: usize, shadow: bool, outcome: Outcome) {
        let (Some(name), Some(cells)) = (self.names.get(index), self.counters.get(index)) else {
            return;
        };
        let cell = &cells[outcome as usize];
        cell.get_or_init(|| {
            self.store
                .counter(&format!("{name}{}", outcome.suffix(shadow)))
        })
        .inc();
    }
}

// === impl Outcome ===

impl Outcome {
    fn suffix(self, shadow: bool) -> &'static str {
        match (self, shadow) {
            (Self::Allowed, false) => "allowed",
            (Self::Denied, false) => "denied",
            (Self::Allowed, true) => "shadow_allowed",
            (Self::Denied, true) => "shadow_denied",
        }
    }
}

/// Envoy's `statPrefixJoin`: `token` alone after an empty prefix, appended directly after
/// a prefix ending in `.`, else joined with a `.`.
pub(crate) fn join(prefix: &str, token: &str) -> String {
    if prefix.is_empty() {
        token.to_string()
    } else if prefix.ends_with('.') {
        format!("{prefix}{token}")
    } else {
        format!("{prefix}.{token}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_envoy() {
        let store = Store::new(None).unwrap();
        let s = RbacStats::new(&store, "tcp.", "", "istio_dry_run_allow_");
        s.denied.inc();
        s.shadow_allowed.inc();
        let h = RbacStats::new(&store, "http.inbound_0.0.0.0_80.", "rules_", "");
        h.allowed.inc();
        h.shadow_denied.inc();
        let p = h.policies(["ns[a]-policy[b]-rule[0]"].into_iter());
        p.inc(0, false, Outcome::Denied);
        p.inc(1, false, Outcome::Denied); // out of range: ignored
        let text = store.render(&crate::stats::Query::default());
        for line in [
            "tcp.rbac.denied: 1",
            "tcp.rbac.istio_dry_run_allow_.shadow_allowed: 1",
            "http.inbound_0.0.0.0_80.rbac.rules_.allowed: 1",
            "http.inbound_0.0.0.0_80.rbac.shadow_denied: 1",
            "http.inbound_0.0.0.0_80.rbac.rules_.policy.ns[a]-policy[b]-rule[0].denied: 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("rule[0].allowed"), "{text}");
    }

    #[test]
    fn join_like_envoy() {
        assert_eq!(join("", "rbac."), "rbac.");
        assert_eq!(join("tcp", "rbac."), "tcp.rbac.");
        assert_eq!(join("tcp.", "rbac."), "tcp.rbac.");
        assert_eq!(join("rbac.x_", "allowed"), "rbac.x_.allowed");
    }
}
