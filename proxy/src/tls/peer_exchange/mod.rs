//! Istio's metadata exchange: how two sidecars learn each other's workload (name,
//! namespace, labels) for telemetry.
//!
//! - TCP: when mTLS negotiated ALPN `istio-peer-exchange`, each side first writes a frame
//!   with its node metadata ([`codec`]) and strips the peer's frame before passing data
//!   ([`PeerExchange`]). Like Envoy, a peer that sends no frame is tolerated: its bytes pass
//!   through untouched and the peer metadata stays unknown.
//! - HTTP: the same metadata travels in the `x-envoy-peer-metadata` (base64 of the
//!   serialized Struct) and `x-envoy-peer-metadata-id` headers ([`LocalNode::header_value`],
//!   [`PeerMetadata::from_headers`]).
//!
//! We only offer or accept `istio-peer-exchange` when we will do the exchange: a peer that
//! negotiated it expects the frame, and one that did not would read ours as data.

pub mod codec;
mod stream;

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use envoy_types::pb::envoy::config::cluster::v3::Filter;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use prost::Message;

pub use codec::PeerMetadata;
pub use stream::PeerExchange;

/// The ALPN that promises the exchange.
pub const ALPN: &[u8] = b"istio-peer-exchange";
/// The filter config type istiod uses for it (network filter and upstream cluster filter).
pub const FILTER_TYPE_URL: &str =
    "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange";

/// Node metadata keys Istio exchanges (`extractNodeFlatBufferFromStruct`); everything else
/// stays local.
const STRING_KEYS: &[&str] = &["NAME", "NAMESPACE", "OWNER", "WORKLOAD_NAME", "CLUSTER_ID"];
/// Labels Istio exchanges.
const LABEL_KEYS: &[&str] = &[
    "service.istio.io/canonical-name",
    "service.istio.io/canonical-revision",
    "app",
    "version",
];

/// This proxy's identity for the exchange, with its frame encoded once.
#[derive(Debug, Clone)]
pub struct LocalNode {
    pub id: String,
    pub metadata: Struct,
    frame: Arc<[u8]>,
}

/// What became of the peer's metadata on one connection.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerOutcome {
    Received(PeerMetadata),
    /// The peer sent no (valid) metadata; why.
    Absent(&'static str),
}

/// Where the peer's metadata appears once the stream has read it; telemetry holds a clone.
#[derive(Debug, Clone, Default)]
pub struct PeerMetadataSlot(Arc<OnceLock<PeerOutcome>>);

// === impl LocalNode ===

impl LocalNode {
    /// From the bootstrap's `node`: its id and the metadata Istio exchanges.
    pub fn new(node: &Node) -> Self {
        let metadata = node
            .metadata
            .as_ref()
            .map(filter_node_metadata)
            .unwrap_or_default();
        Self::from_parts(node.id.clone(), metadata)
    }

    /// From an id and already filtered metadata.
    pub fn from_parts(id: String, metadata: Struct) -> Self {
        let frame = codec::encode(&id, &metadata).into();
        Self {
            id,
            metadata,
            frame,
        }
    }

    /// The exchange frame this proxy writes.
    pub fn frame(&self) -> &[u8] {
        &self.frame
    }

    /// The `x-envoy-peer-metadata` header value: base64 of the serialized metadata Struct.
    pub fn header_value(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(codec::encode_struct(&self.metadata))
    }
}

// === impl PeerMetadata ===

impl PeerMetadata {
    /// From the HTTP headers `x-envoy-peer-metadata` and `x-envoy-peer-metadata-id`; `None`
    /// if the metadata header is missing or malformed.
    pub fn from_headers(metadata: Option<&[u8]>, id: Option<&str>) -> Option<Self> {
        // Istio sends padded base64 and reads it with or without padding.
        const LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let raw = LENIENT.decode(metadata?).ok()?;
        let s = Struct::decode(raw.as_slice()).ok()?;
        Some(Self {
            id: id.map(str::to_string),
            metadata: filter_node_metadata(&s),
        })
    }

    /// A string field of the metadata (`NAME`, `NAMESPACE`, ...).
    pub fn get(&self, key: &str) -> Option<&str> {
        match self.metadata.fields.get(key)?.kind.as_ref()? {
            Kind::StringValue(s) => Some(s),
            _ => None,
        }
    }

    /// A label the peer exchanged (`app`, `version`, canonical name and revision).
    pub fn label(&self, key: &str) -> Option<&str> {
        let Kind::StructValue(labels) = self.metadata.fields.get("LABELS")?.kind.as_ref()? else {
            return None;
        };
        match labels.fields.get(key)?.kind.as_ref()? {
            Kind::StringValue(s) => Some(s),
            _ => None,
        }
    }
}

// === impl PeerMetadataSlot ===

impl PeerMetadataSlot {
    /// The peer's metadata, once read.
    pub fn get(&self) -> Option<&PeerOutcome> {
        self.0.get()
    }

    /// The peer's metadata, if it sent some.
    pub fn metadata(&self) -> Option<&PeerMetadata> {
        match self.0.get()? {
            PeerOutcome::Received(m) => Some(m),
            PeerOutcome::Absent(_) => None,
        }
    }

    fn set(&self, outcome: PeerOutcome) {
        let _ = self.0.set(outcome);
    }
}

/// The subset of node metadata Istio exchanges, as Envoy's
/// `extractNodeFlatBufferFromStruct` keeps it.
pub fn filter_node_metadata(metadata: &Struct) -> Struct {
    let mut out = Struct::default();
    for (key, value) in &metadata.fields {
        if STRING_KEYS.contains(&key.as_str()) {
            let s = match &value.kind {
                Some(Kind::StringValue(s)) => s.clone(),
                _ => String::new(),
            };
            out.fields.insert(key.clone(), string(s));
        } else if key == "LABELS" || key == "PLATFORM_METADATA" {
            let Some(Kind::StructValue(inner)) = &value.kind else {
                continue;
            };
            let kept: Struct = Struct {
                fields: inner
                    .fields
                    .iter()
                    .filter(|(k, _)| key != "LABELS" || LABEL_KEYS.contains(&k.as_str()))
                    .map(|(k, v)| {
                        let s = match &v.kind {
                            Some(Kind::StringValue(s)) => s.clone(),
                            _ => String::new(),
                        };
                        (k.clone(), string(s))
                    })
                    .collect(),
            };
            if !kept.fields.is_empty() {
                out.fields.insert(
                    key.clone(),
                    Value {
                        kind: Some(Kind::StructValue(kept)),
                    },
                );
            }
        }
    }
    out
}

fn string(s: String) -> Value {
    Value {
        kind: Some(Kind::StringValue(s)),
    }
}

/// Whether a cluster runs Istio's upstream metadata exchange (`filters` with
/// `istio.metadata_exchange`, protocol `istio-peer-exchange`); only then do its TLS
/// connections offer that ALPN.
pub fn cluster_runs_exchange(filters: &[Filter]) -> bool {
    filters.iter().any(|f| {
        let Some(any) = &f.typed_config else {
            return false;
        };
        let Ok(url) = crate::config::any::effective_type_url(any) else {
            return false;
        };
        url == FILTER_TYPE_URL
    })
}

/// Whether a listener filter chain runs Istio's metadata exchange (the
/// `istio.metadata_exchange` network filter); only then do its TLS contexts accept
/// `istio-peer-exchange`.
pub fn listener_runs_exchange(
    filters: &[envoy_types::pb::envoy::config::listener::v3::Filter],
) -> bool {
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
    filters.iter().any(|f| {
        let Some(ConfigType::TypedConfig(any)) = &f.config_type else {
            return false;
        };
        crate::config::any::effective_type_url(any).is_ok_and(|url| url == FILTER_TYPE_URL)
    })
}

/// Wraps a stream for the exchange if ALPN `istio-peer-exchange` was negotiated and we have
/// a node to announce; otherwise passes it through untouched. Flush the result once to send
/// our frame right away.
pub fn wrap<S>(io: S, negotiated_alpn: Option<&[u8]>, node: Option<&LocalNode>) -> PeerExchange<S> {
    match node {
        Some(node) if negotiated_alpn == Some(ALPN) => PeerExchange::new(io, node),
        _ => PeerExchange::passthrough(io),
    }
}

#[cfg(test)]
mod tests;
