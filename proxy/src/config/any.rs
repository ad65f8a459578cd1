//! `google.protobuf.Any` typed configs: decoding them, and seeing through the `TypedStruct`
//! wrapper (`udpa.type.v1` / `xds.type.v3`) that Istio uses for its own extensions.

use envoy_types::pb::google::protobuf::{Any, Struct};
use prost::{Message, Name};

use super::ConfigError;

pub const UDPA_TYPED_STRUCT: &str = "type.googleapis.com/udpa.type.v1.TypedStruct";
pub const XDS_TYPED_STRUCT: &str = "type.googleapis.com/xds.type.v3.TypedStruct";

/// `udpa.type.v1.TypedStruct` / `xds.type.v3.TypedStruct` (same wire format): a config of
/// type `type_url`, written as a JSON-like Struct.
#[derive(Clone, PartialEq, Message)]
pub struct TypedStruct {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Struct>,
}

/// The type a typed config really has: the Any's type, or the type inside a TypedStruct.
pub fn effective_type_url(any: &Any) -> Result<String, ConfigError> {
    if any.type_url == UDPA_TYPED_STRUCT || any.type_url == XDS_TYPED_STRUCT {
        let ts = TypedStruct::decode(any.value.as_slice())
            .map_err(|e| ConfigError::new(format!("cannot decode {}: {e}", any.type_url)))?;
        return Ok(ts.type_url);
    }
    Ok(any.type_url.clone())
}

/// Decodes an Any as `T`, naming the expected and actual types when they differ. A
/// TypedStruct wrapping `T` is decoded through the proto descriptor pool.
pub fn decode<T: Message + Name + Default>(any: &Any) -> Result<T, ConfigError> {
    let want = T::type_url();
    if any.type_url == want {
        return T::decode(any.value.as_slice())
            .map_err(|e| ConfigError::new(format!("cannot decode {want}: {e}")));
    }
    if any.type_url == UDPA_TYPED_STRUCT || any.type_url == XDS_TYPED_STRUCT {
        let inner = effective_type_url(any)?;
        if inner == want {
            // Unknown fields are skipped here, as prost skips them in a binary Any: the
            // policy (`--allow-unknown-static-fields`, `--reject-unknown-dynamic-fields`) is
            // applied where the config is loaded, with the field's path.
            let unwrapped =
                crate::proto::unwrap_typed_struct(any, crate::proto::UnknownFields::Ignore)
                    .map_err(|e| ConfigError::new(e.to_string()))?;
            return T::decode(unwrapped.message.value.as_slice())
                .map_err(|e| ConfigError::new(format!("cannot decode {want}: {e}")));
        }
        return Err(ConfigError::new(format!(
            "expected {want}, got a TypedStruct of {inner}"
        )));
    }
    Err(ConfigError::new(format!(
        "expected {want}, got {}",
        any.type_url
    )))
}
