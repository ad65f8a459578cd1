//! Protobuf message to JSON in Envoy's `/config_dump` style: proto field names (snake_case),
//! fields at their default value left out, enums by name, 64-bit integers as strings, bytes
//! as base64, Anys expanded with `"@type"`.
//!
//! Object keys come out sorted by name (serde_json's map), where Envoy orders them by field
//! number; JSON readers do not care.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MapKey, ReflectMessage, Value};
use serde_json::{Map, Value as Json};

use super::{pool, resolve_type_url, wkt};

/// `message` as JSON.
pub(crate) fn message(message: &DynamicMessage) -> Json {
    let desc = message.descriptor();
    let name = desc.full_name();
    match name {
        wkt::ANY => {
            let type_url = string_field(message, "type_url");
            let value = message
                .get_field_by_name("value")
                .and_then(|v| v.as_bytes().map(|b| b.to_vec()))
                .unwrap_or_default();
            return match pool() {
                Ok(pool) => any_parts(pool, &type_url, &value),
                Err(_) => opaque_any(&type_url, &value),
            };
        }
        wkt::DURATION => {
            return Json::String(wkt::format_duration(
                int_field(message, "seconds"),
                int_field(message, "nanos") as i32,
            ));
        }
        wkt::TIMESTAMP => {
            return Json::String(wkt::format_timestamp(
                int_field(message, "seconds"),
                int_field(message, "nanos") as i32,
            ));
        }
        wkt::FIELD_MASK => {
            let paths: Vec<String> = message
                .get_field_by_name("paths")
                .and_then(|v| {
                    v.as_list().map(|l| {
                        l.iter()
                            .filter_map(|p| p.as_str().map(String::from))
                            .collect()
                    })
                })
                .unwrap_or_default();
            return Json::String(wkt::format_field_mask(&paths));
        }
        wkt::STRUCT => return structure(message),
        wkt::VALUE => return value_message(message),
        wkt::LIST_VALUE => return list_value(message),
        name if wkt::is_wrapper(name) => {
            if let Some(field) = desc.get_field_by_name("value") {
                return value(&field.kind(), &message.get_field(&field));
            }
        }
        _ => {}
    }
    let mut object = Map::new();
    for (field, v) in message.fields() {
        let json = if field.is_map() {
            map(&field.kind(), v)
        } else {
            value(&field.kind(), v)
        };
        object.insert(field.name().to_string(), json);
    }
    Json::Object(object)
}

/// An Any from its parts: expanded when its type is known and its bytes decode, else opaque.
pub(crate) fn any_parts(pool: &DescriptorPool, type_url: &str, bytes: &[u8]) -> Json {
    if type_url.is_empty() && bytes.is_empty() {
        return Json::Object(Map::new());
    }
    let Ok(desc) = resolve_type_url(pool, type_url) else {
        return opaque_any(type_url, bytes);
    };
    let Ok(inner) = DynamicMessage::decode(desc.clone(), bytes) else {
        return opaque_any(type_url, bytes);
    };
    let json = message(&inner);
    let mut object = Map::new();
    object.insert("@type".into(), Json::String(type_url.to_string()));
    match json {
        Json::Object(fields) if !wkt::has_value_key_in_any(desc.full_name()) => {
            object.extend(fields);
        }
        other => {
            object.insert("value".into(), other);
        }
    }
    Json::Object(object)
}

/// `{"@type": url, "value": "<base64>"}`: an Any we cannot expand.
pub(crate) fn opaque_any(type_url: &str, bytes: &[u8]) -> Json {
    let mut object = Map::new();
    object.insert("@type".into(), Json::String(type_url.to_string()));
    object.insert("value".into(), Json::String(STANDARD.encode(bytes)));
    Json::Object(object)
}

fn value(kind: &Kind, v: &Value) -> Json {
    match v {
        Value::Bool(b) => Json::Bool(*b),
        Value::I32(i) => Json::from(*i),
        Value::U32(u) => Json::from(*u),
        Value::I64(i) => Json::String(i.to_string()),
        Value::U64(u) => Json::String(u.to_string()),
        // Printed as the float's own shortest form (0.1, not 0.10000000149011612).
        Value::F32(x) => float(x.to_string().parse().unwrap_or(f64::from(*x))),
        Value::F64(x) => float(*x),
        Value::String(s) => Json::String(s.clone()),
        Value::Bytes(b) => Json::String(STANDARD.encode(b)),
        Value::EnumNumber(n) => match kind {
            Kind::Enum(e) if e.full_name() == wkt::NULL_VALUE => Json::Null,
            Kind::Enum(e) => e
                .get_value(*n)
                .map_or_else(|| Json::from(*n), |v| Json::String(v.name().to_string())),
            _ => Json::from(*n),
        },
        Value::Message(m) => message(m),
        Value::List(items) => Json::Array(items.iter().map(|item| value(kind, item)).collect()),
        Value::Map(_) => map(kind, v),
    }
}

fn map(kind: &Kind, v: &Value) -> Json {
    let (Value::Map(entries), Kind::Message(entry)) = (v, kind) else {
        return Json::Null;
    };
    let value_kind = entry.map_entry_value_field().kind();
    let mut object = Map::new();
    for (key, v) in entries {
        let key = match key {
            MapKey::Bool(b) => b.to_string(),
            MapKey::I32(i) => i.to_string(),
            MapKey::I64(i) => i.to_string(),
            MapKey::U32(u) => u.to_string(),
            MapKey::U64(u) => u.to_string(),
            MapKey::String(s) => s.clone(),
        };
        object.insert(key, value(&value_kind, v));
    }
    Json::Object(object)
}

fn float(x: f64) -> Json {
    if x.is_nan() {
        Json::String("NaN".into())
    } else if x.is_infinite() {
        Json::String(if x > 0.0 { "Infinity" } else { "-Infinity" }.into())
    } else if x.fract() == 0.0 && x.abs() < 9_007_199_254_740_992.0 {
        // Protobuf prints whole doubles without a fraction: 9080, not 9080.0.
        Json::from(x as i64)
    } else {
        serde_json::Number::from_f64(x).map_or(Json::Null, Json::Number)
    }
}

fn structure(message: &DynamicMessage) -> Json {
    let mut object = Map::new();
    if let Some(Value::Map(fields)) = message.get_field_by_name("fields").as_deref() {
        for (key, v) in fields {
            if let (MapKey::String(key), Value::Message(v)) = (key, v) {
                object.insert(key.clone(), value_message(v));
            }
        }
    }
    Json::Object(object)
}

fn value_message(message: &DynamicMessage) -> Json {
    let Some((field, v)) = message.fields().next() else {
        return Json::Null;
    };
    match (field.name(), v) {
        ("number_value", Value::F64(x)) => float(*x),
        ("string_value", Value::String(s)) => Json::String(s.clone()),
        ("bool_value", Value::Bool(b)) => Json::Bool(*b),
        ("struct_value", Value::Message(m)) => structure(m),
        ("list_value", Value::Message(m)) => list_value(m),
        _ => Json::Null,
    }
}

fn list_value(message: &DynamicMessage) -> Json {
    let items = message
        .get_field_by_name("values")
        .and_then(|v| {
            v.as_list().map(|items| {
                items
                    .iter()
                    .filter_map(|item| item.as_message().map(value_message))
                    .collect()
            })
        })
        .unwrap_or_default();
    Json::Array(items)
}

fn string_field(message: &DynamicMessage, name: &str) -> String {
    message
        .get_field_by_name(name)
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn int_field(message: &DynamicMessage, name: &str) -> i64 {
    message
        .get_field_by_name(name)
        .and_then(|v| v.as_i64().or_else(|| v.as_i32().map(i64::from)))
        .unwrap_or_default()
}
