//! What the client remembers per resource type across streams, and the one path every
//! response takes to the consumer: filter, compute removals, hand over, turn the verdict into
//! an ACK or NACK and keep the books (versions, held resources, stats) consistent with what the
//! consumer actually applied.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::handler::{Handler, Rejection, Update, truncate_error_detail};
use crate::resource::{DecodedResource, ResourceType};
use crate::stats::{Outcome, StatsRecorder};

/// Per-type state that survives reconnects.
#[derive(Debug)]
pub(crate) struct TypeState {
    pub(crate) resource_type: ResourceType,
    /// Subscribed with a wildcard (LDS/CDS); otherwise by `names`.
    pub(crate) wildcard: bool,
    /// The names the consumer currently wants (named types).
    pub(crate) names: BTreeSet<String>,
    /// The last accepted `version_info` (SotW) or `system_version_info` (delta).
    pub(crate) version_info: String,
    /// What the consumer holds: name -> version. Delta reconnects report it as
    /// `initial_resource_versions`; SotW LDS/CDS removals are computed against it.
    pub(crate) held: BTreeMap<String, String>,
}

/// All per-type state, in push order.
pub(crate) type Types = BTreeMap<ResourceType, TypeState>;

/// The consumer and the stats it feeds.
#[derive(Clone)]
pub(crate) struct Consumer {
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) stats: StatsRecorder,
}

/// How the server signals removals.
#[derive(Debug)]
pub(crate) enum Removals {
    /// SotW: for wildcard types, whatever is held and absent from the response.
    AbsentFromResponse,
    /// Delta: `removed_resources`.
    Explicit(Vec<String>),
}

/// The answer owed to the server for one response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Ack,
    Nack(String),
}

// === impl TypeState ===

impl TypeState {
    pub(crate) fn new(resource_type: ResourceType, wildcard: bool) -> Self {
        Self {
            resource_type,
            wildcard,
            names: BTreeSet::new(),
            version_info: String::new(),
            held: BTreeMap::new(),
        }
    }

    /// Whether a stream should carry a subscription for this type at all.
    pub(crate) fn is_subscribed(&self) -> bool {
        self.wildcard || !self.names.is_empty()
    }

    /// Takes the consumer's current names. Resources it no longer wants are forgotten (the
    /// consumer dropped them itself; it is not told again).
    pub(crate) fn set_names(&mut self, names: BTreeSet<String>) {
        if self.wildcard {
            return;
        }
        self.held.retain(|name, _| names.contains(name));
        self.names = names;
    }

    /// Runs one decoded response through the consumer and returns the ACK/NACK verdict.
    pub(crate) fn apply(
        &mut self,
        consumer: &Consumer,
        version_info: String,
        mut resources: Vec<DecodedResource>,
        removals: Removals,
    ) -> Verdict {
        if !self.wildcard {
            // "The client will silently ignore any supplied resources that were not
            // explicitly requested" (xDS protocol).
            resources.retain(|r| self.names.contains(&r.name));
        }
        let removed = self.removed_names(&resources, removals);
        if !self.wildcard && resources.is_empty() && removed.is_empty() {
            // Nothing the consumer asked for: Envoy does not call any watch either.
            self.version_info = version_info;
            self.record_type(consumer, Outcome::Accepted { empty: true });
            return Verdict::Ack;
        }

        let touched: Vec<(String, String)> = resources
            .iter()
            .map(|r| (r.name.clone(), r.version.clone()))
            .chain(removed.iter().map(|n| (n.clone(), String::new())))
            .collect();
        let empty = resources.is_empty();
        let update = Update {
            resource_type: self.resource_type,
            version_info: version_info.clone(),
            resources,
            removed: removed.clone(),
        };
        match consumer.handler.on_update(update) {
            Ok(()) => self.accept(consumer, &touched, &removed, version_info, empty),
            Err(Rejection::Resources(list)) if list.is_empty() => {
                self.accept(consumer, &touched, &removed, version_info, empty)
            }
            Err(Rejection::Resources(list)) => {
                let bad: BTreeSet<String> = list.iter().map(|r| r.name.clone()).collect();
                let message = Rejection::Resources(list).message(self.resource_type);
                self.commit(&touched, &removed, &bad);
                self.record_type(consumer, Outcome::Rejected);
                self.record_resources(consumer, &touched, &bad);
                Verdict::Nack(truncate_error_detail(message))
            }
            Err(rejection) => {
                self.reject_all(consumer);
                Verdict::Nack(truncate_error_detail(rejection.message(self.resource_type)))
            }
        }
    }

    fn accept(
        &mut self,
        consumer: &Consumer,
        touched: &[(String, String)],
        removed: &[String],
        version_info: String,
        empty: bool,
    ) -> Verdict {
        self.commit(touched, removed, &BTreeSet::new());
        self.version_info = version_info;
        self.record_type(consumer, Outcome::Accepted { empty });
        self.record_resources(consumer, touched, &BTreeSet::new());
        Verdict::Ack
    }

    /// A response that could not be decoded, or that broke the protocol: nothing reaches the
    /// consumer, every subscription of the type counts a rejection (Envoy's
    /// `onConfigUpdateFailed` on all watches).
    pub(crate) fn reject_all(&self, consumer: &Consumer) {
        self.record_type(consumer, Outcome::Rejected);
        let all: Vec<(String, String)> = self
            .names
            .iter()
            .map(|n| (n.clone(), String::new()))
            .collect();
        let bad: BTreeSet<String> = self.names.clone();
        self.record_resources(consumer, &all, &bad);
    }

    fn removed_names(&self, resources: &[DecodedResource], removals: Removals) -> Vec<String> {
        match removals {
            Removals::AbsentFromResponse if self.wildcard => {
                let present: BTreeSet<&str> = resources.iter().map(|r| r.name.as_str()).collect();
                self.held
                    .keys()
                    .filter(|name| !present.contains(name.as_str()))
                    .cloned()
                    .collect()
            }
            // SotW gives no removal signal for EDS/RDS/SDS: parents stop referring to them.
            Removals::AbsentFromResponse => Vec::new(),
            Removals::Explicit(names) => names
                .into_iter()
                .filter(|n| self.held.contains_key(n) || (!self.wildcard && self.names.contains(n)))
                .collect(),
        }
    }

    /// Records what the consumer applied: every touched resource except the rejected ones.
    fn commit(
        &mut self,
        touched: &[(String, String)],
        removed: &[String],
        rejected: &BTreeSet<String>,
    ) {
        let removed: BTreeSet<&String> = removed.iter().collect();
        for (name, version) in touched {
            if rejected.contains(name) {
                continue;
            }
            if removed.contains(name) {
                self.held.remove(name);
            } else {
                self.held.insert(name.clone(), version.clone());
            }
        }
    }

    fn record_type(&self, consumer: &Consumer, outcome: Outcome) {
        let version = match outcome {
            Outcome::Accepted { .. } => self.version_info.as_str(),
            Outcome::Rejected => "",
        };
        consumer
            .stats
            .record_type(self.resource_type, outcome, version);
    }

    fn record_resources(
        &self,
        consumer: &Consumer,
        touched: &[(String, String)],
        rejected: &BTreeSet<String>,
    ) {
        if self.wildcard {
            return;
        }
        consumer.stats.record_resources(
            self.resource_type,
            touched.iter().map(|(name, version)| {
                let outcome = if rejected.contains(name) {
                    Outcome::Rejected
                } else {
                    Outcome::Accepted { empty: false }
                };
                (name.as_str(), outcome, version.as_str())
            }),
        );
    }
}
