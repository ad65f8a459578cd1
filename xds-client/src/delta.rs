//! Incremental (delta) bookkeeping for one stream, following Envoy's
//! `DeltaSubscriptionState`:
//!
//! - first request per type: `initial_resource_versions` with every resource the consumer
//!   holds, and every subscribed name in `resource_names_subscribe` (LDS/CDS: none, the
//!   legacy wildcard);
//! - ACK: the response's nonce; NACK: the same with `error_detail` (code 13, INTERNAL);
//! - subscription changes: only the added and removed names, without a nonce (the protocol
//!   says spontaneous requests must omit it).

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};

use crate::config::ClientConfig;
use crate::resource::{DecodeError, ResourceType, decode_delta};
use crate::state::{Consumer, Removals, Types, Verdict};
use crate::stream::{NodeSender, error_detail, log_verdict};

/// One delta stream's view of the protocol.
#[derive(Debug)]
pub(crate) struct DeltaStream {
    node: NodeSender,
    /// The names subscribed on this stream per type; absent until the type's first request.
    sent: BTreeMap<ResourceType, BTreeSet<String>>,
}

// === impl DeltaStream ===

impl DeltaStream {
    pub(crate) fn new(config: &ClientConfig) -> Self {
        Self {
            node: NodeSender::new(config),
            sent: BTreeMap::new(),
        }
    }

    /// Requests owed to the server: initial requests for newly subscribed types, and
    /// subscribe/unsubscribe deltas for named types whose names changed.
    pub(crate) fn pending_requests(&mut self, types: &Types) -> Vec<DeltaDiscoveryRequest> {
        let mut out = Vec::new();
        for (resource_type, state) in types {
            let type_url = resource_type.type_url().to_string();
            match self.sent.get_mut(resource_type) {
                None if state.is_subscribed() => {
                    out.push(DeltaDiscoveryRequest {
                        type_url,
                        resource_names_subscribe: state.names.iter().cloned().collect(),
                        initial_resource_versions: state
                            .held
                            .iter()
                            .map(|(n, v)| (n.clone(), v.clone()))
                            .collect(),
                        ..Default::default()
                    });
                    self.sent.insert(*resource_type, state.names.clone());
                }
                None => {}
                Some(sent) if !state.wildcard && *sent != state.names => {
                    out.push(DeltaDiscoveryRequest {
                        type_url,
                        resource_names_subscribe: state.names.difference(sent).cloned().collect(),
                        resource_names_unsubscribe: sent
                            .difference(&state.names)
                            .cloned()
                            .collect(),
                        ..Default::default()
                    });
                    *sent = state.names.clone();
                }
                Some(_) => {}
            }
        }
        for request in &mut out {
            request.node = self.node.next();
        }
        out
    }

    /// Handles one response and returns its ACK or NACK, plus the type it was for when the
    /// client is subscribed to it.
    pub(crate) fn on_response(
        &mut self,
        types: &mut Types,
        consumer: &Consumer,
        response: DeltaDiscoveryResponse,
    ) -> (Option<ResourceType>, DeltaDiscoveryRequest) {
        let DeltaDiscoveryResponse {
            system_version_info,
            resources,
            type_url,
            removed_resources,
            nonce,
            ..
        } = response;
        let known = ResourceType::from_type_url(&type_url);
        let subscribed = known
            .filter(|t| self.sent.contains_key(t))
            .and_then(|t| Some((t, types.get_mut(&t)?)));
        let Some((resource_type, state)) = subscribed else {
            let reason = match known {
                None => DecodeError::UnknownType {
                    type_url: type_url.clone(),
                }
                .to_string(),
                Some(_) => format!("received {type_url} but this client has not subscribed to it"),
            };
            tracing::warn!(%type_url, %nonce, %reason, "NACKing response");
            let request = DeltaDiscoveryRequest {
                type_url,
                response_nonce: nonce,
                error_detail: Some(error_detail(reason)),
                node: self.node.next(),
                ..Default::default()
            };
            return (None, request);
        };

        let verdict = match decode_delta(resource_type, &resources, &removed_resources) {
            Ok(decoded) => state.apply(
                consumer,
                system_version_info.clone(),
                decoded,
                Removals::Explicit(removed_resources),
            ),
            Err(e) => {
                state.reject_all(consumer);
                Verdict::Nack(e.to_string())
            }
        };
        log_verdict(resource_type, &system_version_info, &nonce, &verdict);
        let request = DeltaDiscoveryRequest {
            type_url,
            response_nonce: nonce,
            error_detail: match verdict {
                Verdict::Ack => None,
                Verdict::Nack(message) => Some(error_detail(message)),
            },
            node: self.node.next(),
            ..Default::default()
        };
        (Some(resource_type), request)
    }
}
