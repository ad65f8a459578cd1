//! Envoy resources written as proto3 JSON (the shape of a config dump) and encoded to
//! protobuf `Any`s with the descriptor set the proxy crate commits.
//!
//! Writing resources as JSON keeps the generators readable next to istiod's real dumps; the
//! descriptor pool checks every field name and type, so a typo fails loudly at generation.

use std::sync::OnceLock;

use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::Value;

/// Every Envoy proto bundled in envoy-types (see scripts/gen-descriptors.sh).
static DESCRIPTORS: &[u8] = include_bytes!("../../../proxy/proto/descriptor_set.bin");

const TYPE_PREFIX: &str = "type.googleapis.com/";

pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINTS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// Why a JSON resource could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("the descriptor set proxy/proto/descriptor_set.bin does not decode: {0}")]
    Descriptors(String),
    #[error("no message type {0} in the descriptor set")]
    UnknownType(String),
    #[error("{type_url} {name:?} is not valid proto3 JSON: {error}")]
    Json {
        type_url: String,
        name: String,
        error: String,
    },
}

fn pool() -> Result<&'static DescriptorPool, ProtoError> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(DESCRIPTORS).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| ProtoError::Descriptors(e.clone()))
}

/// Encodes `json` as a message of `type_url` (`type.googleapis.com/<full name>`).
pub fn to_any(type_url: &str, json: Value) -> Result<Any, ProtoError> {
    let full_name = type_url.strip_prefix(TYPE_PREFIX).unwrap_or(type_url);
    let desc = pool()?
        .get_message_by_name(full_name)
        .ok_or_else(|| ProtoError::UnknownType(full_name.to_string()))?;
    let name = json
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let message = DynamicMessage::deserialize(desc, json).map_err(|e| ProtoError::Json {
        type_url: type_url.to_string(),
        name,
        error: e.to_string(),
    })?;
    Ok(Any {
        type_url: format!("{TYPE_PREFIX}{full_name}"),
        value: message.encode_to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_nested_any_and_rejects_unknown_fields() {
        let listener = serde_json::json!({
            "name": "l",
            "address": {"socket_address": {"address": "0.0.0.0", "port_value": 1}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.tcp_proxy",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                    "stat_prefix": "s", "cluster": "c"
                }
            }]}]
        });
        let any = to_any(LISTENER, listener).unwrap();
        assert_eq!(any.type_url, LISTENER);
        assert!(!any.value.is_empty());

        let bad = serde_json::json!({"name": "x", "no_such_field": 1});
        let err = to_any(CLUSTER, bad).unwrap_err().to_string();
        assert!(err.contains("\"x\""), "{err}");
    }
}
