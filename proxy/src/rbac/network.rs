//! `envoy.filters.network.rbac`: RBAC on a connection, decided when its first data arrives.
//!
//! How the listener runs it (what Envoy's filter does): on each read of downstream data,
//! before handing the bytes to the next network filter, call [`NetworkRbac::on_data`] with
//! the connection's [`NetworkRbacState`]. With `ONE_TIME_ON_FIRST_BYTE` (the default) the
//! engines run on the first read only and later reads reuse the verdict; with `CONTINUOUS`
//! they run on every read. On [`NetworkAction::Deny`] stop reading and close the connection
//! without flushing (`NoFlush`), after `delay` if one is set, and record
//! [`NetworkVerdict::termination_details`] as the connection termination details. A
//! connection that never sends data is never evaluated (as in Envoy, where tcp_proxy may
//! already have connected upstream).

use std::time::Duration;

use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::{
    Rbac as NetworkRbacProto, rbac::EnforcementType as EnforcementProto,
};
use envoy_types::pb::google::protobuf::{Any, Struct};

use super::engine::{Decision, Engine};
use super::error::RbacError;
use super::input::Input;
use super::stats::RbacStats;
use super::{decode_any, shadow_fields};
use crate::config::{ConfigError, Context, duration};
use crate::stats::Store;

/// The network filter's name, and where it puts its dynamic metadata.
pub const NETWORK_FILTER_NAME: &str = "envoy.filters.network.rbac";

/// When the engines run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnforcementType {
    /// Once, on the first data from the client.
    OneTimeOnFirstByte,
    /// On every read of client data.
    Continuous,
}

/// A compiled network RBAC filter config.
#[derive(Debug)]
pub struct NetworkRbac {
    engine: Option<Engine>,
    shadow: Option<Engine>,
    enforcement: EnforcementType,
    delay_deny: Option<Duration>,
    shadow_rules_stat_prefix: String,
    stats: RbacStats,
}

/// What the filter remembers about one connection.
#[derive(Debug, Default, Clone, Copy)]
pub struct NetworkRbacState {
    /// The enforced verdict once made: allowed, and the matched policy's index.
    enforced: Option<(bool, Option<usize>)>,
    shadow_done: bool,
}

/// What to do with the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkAction {
    /// Pass the data on.
    Continue,
    /// Stop reading and close without flushing, after `delay` if set.
    Deny { delay: Option<Duration> },
}

/// The outcome of one read.
#[derive(Debug, Clone, Copy)]
pub struct NetworkVerdict<'a> {
    pub action: NetworkAction,
    /// The enforced engine's decision when it ran on this read.
    pub enforced: Option<Decision<'a>>,
    /// The shadow engine's decision when it ran on this read.
    pub shadow: Option<Decision<'a>>,
    matched_policy: Option<&'a str>,
    shadow_prefix: &'a str,
}

// === impl NetworkRbac ===

impl NetworkRbac {
    /// Compiles `envoy.extensions.filters.network.rbac.v3.RBAC` (an Any, possibly a
    /// TypedStruct; unknown fields are an error). Stats go in `store`.
    pub fn from_any(any: &Any, store: &Store) -> Result<Self, ConfigError> {
        Self::new(&decode_any::<NetworkRbacProto>(any)?, store)
    }

    pub fn new(proto: &NetworkRbacProto, store: &Store) -> Result<Self, ConfigError> {
        if proto.stat_prefix.is_empty() {
            return Err(ConfigError::from(RbacError::Empty("stat_prefix")).at("stat_prefix"));
        }
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
        let enforcement = match EnforcementProto::try_from(proto.enforcement_type) {
            Ok(EnforcementProto::OneTimeOnFirstByte) => EnforcementType::OneTimeOnFirstByte,
            Ok(EnforcementProto::Continuous) => EnforcementType::Continuous,
            Err(_) => {
                return Err(ConfigError::from(RbacError::UnknownEnum {
                    what: "enforcement_type",
                    value: proto.enforcement_type,
                })
                .at("enforcement_type"));
            }
        };
        let delay_deny = proto
            .delay_deny
            .as_ref()
            .map(duration)
            .transpose()
            .at("delay_deny")?
            .filter(|d| !d.is_zero());
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
            enforcement,
            delay_deny,
            shadow_rules_stat_prefix: proto.shadow_rules_stat_prefix.clone(),
            stats: RbacStats::new(
                store,
                &proto.stat_prefix,
                "",
                &proto.shadow_rules_stat_prefix,
            ),
        })
    }

    pub fn stats(&self) -> &RbacStats {
        &self.stats
    }

    pub fn enforcement(&self) -> EnforcementType {
        self.enforcement
    }

    /// Runs the filter for one read of client data; see the module docs for what to do with
    /// the verdict. Allocates nothing.
    pub fn on_data<'s>(
        &'s self,
        state: &mut NetworkRbacState,
        input: &Input<'_>,
    ) -> NetworkVerdict<'s> {
        let every_read = self.enforcement == EnforcementType::Continuous;
        let mut shadow = None;
        if every_read || !state.shadow_done {
            state.shadow_done = true;
            shadow = self.shadow.as_ref().map(|e| {
                let d = e.evaluate(input);
                let c = if d.allowed {
                    &self.stats.shadow_allowed
                } else {
                    &self.stats.shadow_denied
                };
                c.inc();
                d
            });
        }
        let mut enforced = None;
        if (every_read || state.enforced.is_none())
            && let Some(engine) = &self.engine
        {
            let d = engine.evaluate(input);
            let c = if d.allowed {
                &self.stats.allowed
            } else {
                &self.stats.denied
            };
            c.inc();
            state.enforced = Some((d.allowed, d.matched_index));
            enforced = Some(d);
        }
        let (allowed, index) = state.enforced.unwrap_or((true, None));
        let matched_policy = index.and_then(|i| self.engine.as_ref()?.policy_name(i));
        NetworkVerdict {
            action: if allowed {
                NetworkAction::Continue
            } else {
                NetworkAction::Deny {
                    delay: self.delay_deny,
                }
            },
            enforced,
            shadow,
            matched_policy,
            shadow_prefix: &self.shadow_rules_stat_prefix,
        }
    }
}

// === impl NetworkVerdict ===

impl NetworkVerdict<'_> {
    pub fn allowed(&self) -> bool {
        self.action == NetworkAction::Continue
    }

    /// `rbac_access_denied_matched_policy[<policy>|none]` for a denied connection.
    pub fn termination_details(&self) -> Option<String> {
        if self.allowed() {
            return None;
        }
        let d = Decision {
            allowed: false,
            matched_policy: self.matched_policy,
            access_log_hint: None,
            matched_index: None,
        };
        Some(d.denied_details())
    }

    /// The dynamic metadata Envoy sets under [`NETWORK_FILTER_NAME`] when the shadow engine
    /// ran: `<shadow_rules_stat_prefix>shadow_engine_result` (`allowed`/`denied`) and
    /// `<...>shadow_effective_policy_id` when a policy matched. Allocates; call only if the
    /// metadata is wanted.
    pub fn dynamic_metadata(&self) -> Option<Struct> {
        let shadow = self.shadow.as_ref()?;
        let mut fields = Default::default();
        shadow_fields(&mut fields, self.shadow_prefix, shadow);
        Some(Struct { fields })
    }
}
