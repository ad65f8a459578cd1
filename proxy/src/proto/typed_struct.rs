//! TypedStruct: an extension config carried as JSON (a `google.protobuf.Struct`) plus the
//! type URL of the message it describes. istiod wraps Istio filter configs this way; Envoy
//! converts the Struct into the real message when it builds the extension.

use envoy_types::pb::google::protobuf::Any;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MapKey, Value};

use super::decode::Decoder;
use super::node::{Node, Number};
use super::path::{FieldPath, Segment};
use super::{Decoded, Error, Ignored, UnknownFields, pool, resolve_type_url};

const UDPA: &str = "udpa.type.v1.TypedStruct";
const XDS: &str = "xds.type.v3.TypedStruct";

/// Whether a type URL (or message name) names `udpa.type.v1.TypedStruct` or
/// `xds.type.v3.TypedStruct`.
pub fn is_typed_struct(type_url: &str) -> bool {
    let name = type_url.rsplit('/').next().unwrap_or(type_url);
    name == UDPA || name == XDS
}

/// Turns a TypedStruct Any into an Any of the message it describes (type URL from its
/// `type_url`, bytes from converting its `value` by the proto3 JSON mapping). Any other Any is
/// returned as it is. Errors name the inner type and the field path under `value`.
pub fn unwrap_typed_struct(any: &Any, unknown: UnknownFields) -> Result<Decoded<Any>, Error> {
    if !is_typed_struct(&any.type_url) {
        return Ok(Decoded {
            message: any.clone(),
            ignored: Vec::new(),
        });
    }
    let pool = pool()?;
    let desc = resolve_type_url(pool, &any.type_url).map_err(|problem| Error::Field {
        path: FieldPath::root(),
        problem,
    })?;
    let typed_struct =
        DynamicMessage::decode(desc, any.value.as_slice()).map_err(|e| Error::Binary {
            type_name: any.type_url.clone(),
            reason: e.to_string(),
        })?;
    let (type_url, inner, ignored) = convert(pool, &typed_struct, FieldPath::root(), unknown)?;
    Ok(Decoded {
        message: Any {
            type_url,
            value: inner.encode_to_vec(),
        },
        ignored,
    })
}

/// Converts a decoded TypedStruct found at `at` into its inner message. Paths in errors and
/// in the returned ignored fields are `at.value.<field>`.
pub(crate) fn convert(
    pool: &DescriptorPool,
    typed_struct: &DynamicMessage,
    at: FieldPath,
    unknown: UnknownFields,
) -> Result<(String, DynamicMessage, Vec<Ignored>), Error> {
    let type_url = typed_struct
        .get_field_by_name("type_url")
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    let desc = resolve_type_url(pool, &type_url).map_err(|problem| {
        let mut path = at.clone();
        path.push(Segment::Field("type_url".into()));
        Error::Field { path, problem }
    })?;
    let value = typed_struct
        .get_field_by_name("value")
        .and_then(|v| v.as_message().map(struct_to_node))
        .unwrap_or(Node::Object(Vec::new()));
    let mut path = at;
    path.push(Segment::Field("value".into()));
    let mut decoder = Decoder::new(pool, unknown, path);
    let inner = decoder
        .message(&desc, &value)
        .map_err(|source| Error::InTypedStruct {
            type_url: type_url.clone(),
            source: Box::new(source),
        })?;
    Ok((type_url, inner, decoder.ignored))
}

/// A `google.protobuf.Struct` back as a JSON tree, keys sorted so errors are stable.
fn struct_to_node(message: &DynamicMessage) -> Node {
    let mut entries: Vec<(String, Node)> = match message.get_field_by_name("fields").as_deref() {
        Some(Value::Map(fields)) => fields
            .iter()
            .filter_map(|(key, value)| match (key, value) {
                (MapKey::String(k), Value::Message(v)) => Some((k.clone(), value_to_node(v))),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Node::Object(entries)
}

fn value_to_node(message: &DynamicMessage) -> Node {
    let Some((field, value)) = message.fields().next() else {
        return Node::Null;
    };
    match (field.name(), value) {
        ("number_value", Value::F64(x)) => Node::Number(Number::Float(*x)),
        ("string_value", Value::String(s)) => Node::String(s.clone()),
        ("bool_value", Value::Bool(b)) => Node::Bool(*b),
        ("struct_value", Value::Message(m)) => struct_to_node(m),
        ("list_value", Value::Message(m)) => Node::List(
            m.get_field_by_name("values")
                .and_then(|v| {
                    v.as_list().map(|items| {
                        items
                            .iter()
                            .filter_map(|item| item.as_message().map(value_to_node))
                            .collect()
                    })
                })
                .unwrap_or_default(),
        ),
        _ => Node::Null,
    }
}
