//! The consumer's side of the contract: it receives one [`Update`] per accepted-for-processing
//! response and returns a verdict, which the client turns into an ACK or a NACK.

use crate::resource::{DecodedResource, ResourceType};

/// Envoy truncates NACK messages to this many bytes (`truncateGrpcStatusMessage`).
const MAX_ERROR_DETAIL_LEN: usize = 4096;

/// Everything one response changed for one resource type.
///
/// The consumer upserts `resources` and deletes `removed`; nothing else changes. For LDS/CDS in
/// state-of-the-world mode the client computes `removed` from what the response left out (the
/// server said so); it never invents removals on its own, e.g. across a reconnect.
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    /// The resource type of every entry.
    pub resource_type: ResourceType,
    /// `version_info` (SotW) or `system_version_info` (delta) of the response.
    pub version_info: String,
    /// Added or updated resources.
    pub resources: Vec<DecodedResource>,
    /// Names of resources the server removed.
    pub removed: Vec<String>,
}

/// The consumer of updates: the proxy's config layer.
///
/// `on_update` runs on the client's task, so it must not block for long and must never wait for
/// another xDS update (that update could only arrive after it returns). Build the new snapshot,
/// publish it, return the verdict. Call [`ClientHandle::set_subscriptions`] from inside it to
/// follow what the update needs (e.g. EDS for new clusters); the client sends that promptly.
///
/// [`ClientHandle::set_subscriptions`]: crate::ClientHandle::set_subscriptions
pub trait Handler: Send + Sync + 'static {
    /// Applies one update. `Err` keeps the previous config for whatever was rejected.
    fn on_update(&self, update: Update) -> Result<(), Rejection>;
}

/// Why the consumer refused (part of) an update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Nothing from the update was applied.
    Update(String),
    /// Only the named resources were refused; everything else in the update (including its
    /// removals) was applied, as Envoy does for LDS/CDS. An empty list counts as acceptance.
    Resources(Vec<RejectedResource>),
}

/// One refused resource and the reason, in words an operator can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedResource {
    /// The resource name.
    pub name: String,
    /// Why it was refused.
    pub reason: String,
}

// === impl Handler for closures ===

impl<F> Handler for F
where
    F: Fn(Update) -> Result<(), Rejection> + Send + Sync + 'static,
{
    fn on_update(&self, update: Update) -> Result<(), Rejection> {
        self(update)
    }
}

// === impl Rejection ===

impl Rejection {
    /// Refuses the whole update.
    pub fn update(reason: impl Into<String>) -> Self {
        Rejection::Update(reason.into())
    }

    /// Refuses one resource; the rest of the update was applied.
    pub fn resource(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Rejection::Resources(vec![RejectedResource {
            name: name.into(),
            reason: reason.into(),
        }])
    }

    /// The NACK text, in Envoy's words for partial rejections:
    /// `Error adding/updating listener(s) a: reason, b: reason`.
    pub(crate) fn message(&self, resource_type: ResourceType) -> String {
        match self {
            Rejection::Update(reason) => reason.clone(),
            Rejection::Resources(rejected) => {
                let parts: Vec<String> = rejected
                    .iter()
                    .map(|r| format!("{}: {}", r.name, r.reason))
                    .collect();
                format!(
                    "Error adding/updating {}(s) {}",
                    resource_type.noun(),
                    parts.join(", ")
                )
            }
        }
    }
}

/// Cuts a NACK message to Envoy's limit, on a character boundary.
pub(crate) fn truncate_error_detail(mut message: String) -> String {
    if message.len() > MAX_ERROR_DETAIL_LEN {
        let mut end = MAX_ERROR_DETAIL_LEN;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_rejection_message_names_each_resource() {
        let r = Rejection::Resources(vec![
            RejectedResource {
                name: "a".into(),
                reason: "bad port".into(),
            },
            RejectedResource {
                name: "b".into(),
                reason: "no filter chain".into(),
            },
        ]);
        assert_eq!(
            r.message(ResourceType::Listener),
            "Error adding/updating listener(s) a: bad port, b: no filter chain"
        );
        assert_eq!(
            Rejection::update("nope").message(ResourceType::Cluster),
            "nope"
        );
    }

    #[test]
    fn long_messages_are_truncated_on_a_char_boundary() {
        let long = "é".repeat(3000);
        let cut = truncate_error_detail(long);
        assert!(cut.len() <= MAX_ERROR_DETAIL_LEN);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(truncate_error_detail("short".into()), "short");
    }
}
