//! One `config.rbac.v3.RBAC`: an action and named policies, compiled.

use envoy_types::pb::envoy::config::rbac::v3::{Policy as PolicyProto, Rbac, rbac};

use super::compile::{self, Headers};
use super::error::RbacError;
use super::input::Input;
use super::rule::Rule;
use crate::config::{ConfigError, Context};

/// What an engine does when a policy matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Allow only requests that match a policy.
    Allow,
    /// Deny requests that match a policy.
    Deny,
    /// Allow everything; a match only asks the access log to record the request.
    Log,
}

/// A compiled RBAC engine. Policies are kept in name order, as Envoy keeps them in a
/// `std::map`: the first matching name is the one reported.
#[derive(Debug, Clone)]
pub struct Engine {
    action: Action,
    policies: Box<[Policy]>,
}

#[derive(Debug, Clone)]
struct Policy {
    name: Box<str>,
    /// Any of the permissions and any of the principals must match.
    permissions: Box<[Rule]>,
    principals: Box<[Rule]>,
}

/// The outcome of evaluating an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'e> {
    /// Whether the engine lets the connection or request through.
    pub allowed: bool,
    /// The first policy (by name) that matched, if any.
    pub matched_policy: Option<&'e str>,
    /// For a LOG engine, Envoy's `envoy.common` / `access_log_hint` metadata: whether a
    /// policy matched. `None` for ALLOW and DENY.
    pub access_log_hint: Option<bool>,
    pub(crate) matched_index: Option<usize>,
}

// === impl Engine ===

impl Engine {
    /// Compiles an RBAC message. Errors name the field, e.g.
    /// `policies["ns[foo]-policy[x]-rule[0]"].permissions[0].header: ...`.
    pub fn new(proto: &Rbac) -> Result<Self, ConfigError> {
        Self::compile(proto, Headers::Allowed)
    }

    /// Compiles an RBAC message for the network filter, which refuses `header` rules.
    pub fn for_network(proto: &Rbac) -> Result<Self, ConfigError> {
        Self::compile(proto, Headers::Refused)
    }

    fn compile(proto: &Rbac, headers: Headers) -> Result<Self, ConfigError> {
        let action = match rbac::Action::try_from(proto.action) {
            Ok(rbac::Action::Allow) => Action::Allow,
            Ok(rbac::Action::Deny) => Action::Deny,
            Ok(rbac::Action::Log) => Action::Log,
            Err(_) => {
                return Err(ConfigError::from(RbacError::UnknownEnum {
                    what: "action",
                    value: proto.action,
                })
                .at("action"));
            }
        };
        if proto.audit_logging_options.is_some() {
            return Err(
                ConfigError::from(RbacError::Unsupported("RBAC audit loggers"))
                    .at("audit_logging_options"),
            );
        }
        let mut names: Vec<&String> = proto.policies.keys().collect();
        names.sort();
        let policies = names
            .into_iter()
            .map(|name| {
                Policy::new(name, &proto.policies[name], headers).at(format!("policies[{name:?}]"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { action, policies })
    }

    pub fn action(&self) -> Action {
        self.action
    }

    /// The policy names, in evaluation order.
    pub fn policy_names(&self) -> impl Iterator<Item = &str> {
        self.policies.iter().map(|p| &*p.name)
    }

    /// The name of the policy at `index` in evaluation order.
    pub(crate) fn policy_name(&self, index: usize) -> Option<&str> {
        self.policies.get(index).map(|p| &*p.name)
    }

    /// Evaluates the engine. Allocates nothing.
    pub fn evaluate(&self, input: &Input<'_>) -> Decision<'_> {
        let matched = self.policies.iter().position(|p| p.matches(input));
        let allowed = match self.action {
            Action::Allow => matched.is_some(),
            Action::Deny => matched.is_none(),
            Action::Log => true,
        };
        Decision {
            allowed,
            matched_policy: matched.map(|i| &*self.policies[i].name),
            access_log_hint: (self.action == Action::Log).then_some(matched.is_some()),
            matched_index: matched,
        }
    }
}

// === impl Policy ===

impl Policy {
    fn new(name: &str, proto: &PolicyProto, headers: Headers) -> Result<Self, ConfigError> {
        if proto.condition.is_some() || proto.checked_condition.is_some() {
            let field = if proto.condition.is_some() {
                "condition"
            } else {
                "checked_condition"
            };
            return Err(ConfigError::from(RbacError::Unsupported("CEL conditions")).at(field));
        }
        if proto.cel_config.is_some() {
            return Err(
                ConfigError::from(RbacError::Unsupported("CEL conditions")).at("cel_config")
            );
        }
        Ok(Self {
            name: name.into(),
            permissions: compile::permissions(&proto.permissions, headers).at("permissions")?,
            principals: compile::principals(&proto.principals, headers).at("principals")?,
        })
    }

    fn matches(&self, input: &Input<'_>) -> bool {
        self.permissions.iter().any(|r| r.matches(input))
            && self.principals.iter().any(|r| r.matches(input))
    }
}

// === impl Decision ===

impl Decision<'_> {
    /// Envoy's response code details / connection termination details for a denial:
    /// `rbac_access_denied_matched_policy[<policy>]`, `[none]` when no policy matched.
    /// Whitespace in the name becomes `_` so access logs keep their fields.
    pub fn denied_details(&self) -> String {
        let name: String = self
            .matched_policy
            .unwrap_or("none")
            .chars()
            .map(|c| {
                if c.is_ascii_whitespace() || c == '\x0b' {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        format!("rbac_access_denied_matched_policy[{name}]")
    }
}
