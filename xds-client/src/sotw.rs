//! State-of-the-world bookkeeping for one stream: which names were sent per type, the last
//! nonce per type, and the exact requests Envoy would send.
//!
//! - first request per type: empty `version_info` and nonce (or, after a reconnect, the last
//!   accepted `version_info` with an empty nonce, as Envoy's `onStreamEstablished` does);
//! - LDS/CDS use the legacy wildcard (empty `resource_names`), as Envoy does;
//! - ACK: the response's `version_info` and nonce; NACK: the last accepted `version_info`, the
//!   response's nonce and `error_detail` (code 13, INTERNAL, as Envoy);
//! - a subscription change re-sends the full name list with the last accepted version and the
//!   type's latest nonce; a named type never subscribed on this stream sends nothing (an empty
//!   list would read as a wildcard).

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

use crate::config::ClientConfig;
use crate::resource::{DecodeError, ResourceType, decode_sotw};
use crate::state::{Consumer, Removals, Types, Verdict};
use crate::stream::{NodeSender, error_detail, log_verdict};

/// One SotW stream's view of the protocol.
#[derive(Debug)]
pub(crate) struct SotwStream {
    node: NodeSender,
    per_type: BTreeMap<ResourceType, StreamType>,
}

#[derive(Debug, Default)]
struct StreamType {
    /// The names last sent on this stream; `None` until the type's first request.
    sent: Option<BTreeSet<String>>,
    /// The nonce of the latest response of this type on this stream.
    nonce: String,
}

// === impl SotwStream ===

impl SotwStream {
    pub(crate) fn new(config: &ClientConfig) -> Self {
        Self {
            node: NodeSender::new(config),
            per_type: BTreeMap::new(),
        }
    }

    /// Requests owed to the server: first requests for newly subscribed types and full name
    /// lists for types whose names changed.
    pub(crate) fn pending_requests(&mut self, types: &Types) -> Vec<DiscoveryRequest> {
        let mut out = Vec::new();
        for (resource_type, state) in types {
            let stream = self.per_type.entry(*resource_type).or_default();
            let desired = if state.wildcard {
                BTreeSet::new()
            } else {
                state.names.clone()
            };
            let due = match &stream.sent {
                None => state.is_subscribed(),
                Some(sent) => !state.wildcard && *sent != desired,
            };
            if !due {
                continue;
            }
            let request = DiscoveryRequest {
                version_info: state.version_info.clone(),
                resource_names: desired.iter().cloned().collect(),
                type_url: resource_type.type_url().to_string(),
                response_nonce: stream.nonce.clone(),
                ..Default::default()
            };
            stream.sent = Some(desired);
            out.push(request);
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
        response: DiscoveryResponse,
    ) -> (Option<ResourceType>, DiscoveryRequest) {
        let DiscoveryResponse {
            version_info,
            resources,
            type_url,
            nonce,
            ..
        } = response;
        let known = ResourceType::from_type_url(&type_url);
        let subscribed = known.and_then(|t| {
            let stream = self.per_type.get_mut(&t)?;
            let sent = stream.sent.clone()?;
            Some((t, stream, sent))
        });
        let Some((resource_type, stream, sent)) = subscribed else {
            let reason = match known {
                None => DecodeError::UnknownType {
                    type_url: type_url.clone(),
                }
                .to_string(),
                Some(_) => format!("received {type_url} but this client has not subscribed to it"),
            };
            tracing::warn!(%type_url, %nonce, %reason, "NACKing response");
            let previous = known
                .and_then(|t| types.get(&t))
                .map(|s| s.version_info.clone())
                .unwrap_or_default();
            let request = DiscoveryRequest {
                version_info: previous,
                type_url,
                response_nonce: nonce,
                error_detail: Some(error_detail(reason)),
                node: self.node.next(),
                ..Default::default()
            };
            return (None, request);
        };
        stream.nonce = nonce.clone();

        let Some(state) = types.get_mut(&resource_type) else {
            // Unreachable: a type is only sent when it has state.
            return (None, DiscoveryRequest::default());
        };
        let verdict = match decode_sotw(resource_type, &version_info, &resources) {
            Ok(decoded) => state.apply(
                consumer,
                version_info.clone(),
                decoded,
                Removals::AbsentFromResponse,
            ),
            Err(e) => {
                state.reject_all(consumer);
                Verdict::Nack(e.to_string())
            }
        };
        log_verdict(resource_type, &version_info, &nonce, &verdict);
        let request = DiscoveryRequest {
            version_info: state.version_info.clone(),
            resource_names: sent.into_iter().collect(),
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
