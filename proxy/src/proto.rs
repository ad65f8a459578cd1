//! Envoy's protos as JSON/YAML. Placeholder until the proto layer lands.

use crate::config::ConfigError;

/// Decodes a TypedStruct-wrapped config as `T`. Not available yet.
pub fn typed_struct_to_message<T: prost::Message + prost::Name + Default>(
    any: &envoy_types::pb::google::protobuf::Any,
) -> Result<T, ConfigError> {
    Err(ConfigError::new(format!(
        "TypedStruct-wrapped {} configs cannot be decoded yet",
        any.type_url
    )))
}
