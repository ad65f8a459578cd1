//! The well-known types whose JSON form is not a plain object of their fields: Any (with
//! `@type`), Duration, Timestamp, FieldMask, Struct/Value/ListValue and the wrappers.

use std::collections::HashMap;

use prost::Message as _;
use prost_reflect::{DynamicMessage, MapKey, MessageDescriptor, Value};

use super::super::node::{Node, Number};
use super::super::path::Segment;
use super::super::{Error, Problem, resolve_type_url, wkt};
use super::Decoder;

// === impl Decoder ===

impl Decoder<'_> {
    /// `{"@type": "type.googleapis.com/x.Y", ...fields of x.Y}`, or for a well-known inner type
    /// `{"@type": ..., "value": <its JSON>}`. An empty object is an empty Any.
    pub(super) fn any(
        &mut self,
        desc: &MessageDescriptor,
        node: &Node,
    ) -> Result<DynamicMessage, Error> {
        let Node::Object(entries) = node else {
            return Err(self.wrong_type("an object with an \"@type\"", node));
        };
        let mut any = DynamicMessage::new(desc.clone());
        let type_url = match entries.iter().find(|(k, _)| k == "@type") {
            None if entries.is_empty() => return Ok(any),
            None => return Err(self.error(Problem::MissingAnyType)),
            Some((_, Node::String(url))) => url,
            Some((_, other)) => {
                self.path.push(Segment::Field("@type".into()));
                return Err(self.wrong_type("a type URL string", other));
            }
        };
        let inner_desc = resolve_type_url(self.pool, type_url).map_err(|p| self.error(p))?;
        let inner = if wkt::has_value_key_in_any(inner_desc.full_name()) {
            let value = entries
                .iter()
                .find(|(k, _)| k == "value")
                .map_or(&Node::Null, |(_, v)| v);
            self.path.push(Segment::Field("value".into()));
            let inner = self.message(&inner_desc, value)?;
            self.path.pop();
            inner
        } else {
            self.object(&inner_desc, entries, true)?
        };
        set(&mut any, "type_url", Value::String(type_url.clone()));
        set(
            &mut any,
            "value",
            Value::Bytes(inner.encode_to_vec().into()),
        );
        Ok(any)
    }

    /// A well-known type in its special JSON form, or `None` to decode it as a plain object.
    pub(super) fn well_known(
        &mut self,
        desc: &MessageDescriptor,
        node: &Node,
    ) -> Result<Option<DynamicMessage>, Error> {
        let name = desc.full_name();
        let mut message = DynamicMessage::new(desc.clone());
        match (name, node) {
            // Envoy also accepts the object form ({"seconds": 1}) of these.
            (wkt::DURATION | wkt::TIMESTAMP | wkt::FIELD_MASK, Node::Object(_)) => return Ok(None),
            (wkt::DURATION, Node::String(s)) => {
                let (seconds, nanos) = wkt::parse_duration(s).ok_or_else(|| {
                    self.error(Problem::InvalidDuration {
                        value: node.literal(),
                    })
                })?;
                set(&mut message, "seconds", Value::I64(seconds));
                set(&mut message, "nanos", Value::I32(nanos));
            }
            (wkt::DURATION, other) => {
                return Err(self.error(Problem::InvalidDuration {
                    value: other.literal(),
                }));
            }
            (wkt::TIMESTAMP, Node::String(s)) => {
                let (seconds, nanos) = wkt::parse_timestamp(s).ok_or_else(|| {
                    self.error(Problem::InvalidValue {
                        expected: "an RFC 3339 timestamp like \"2026-01-02T03:04:05Z\"".into(),
                        value: node.literal(),
                    })
                })?;
                set(&mut message, "seconds", Value::I64(seconds));
                set(&mut message, "nanos", Value::I32(nanos));
            }
            (wkt::FIELD_MASK, Node::String(s)) => {
                let paths = wkt::parse_field_mask(s);
                set(
                    &mut message,
                    "paths",
                    Value::List(paths.into_iter().map(Value::String).collect()),
                );
            }
            (wkt::TIMESTAMP | wkt::FIELD_MASK, other) => {
                return Err(self.wrong_type("a string", other));
            }
            (wkt::STRUCT, Node::Object(entries)) => return self.structure(desc, entries).map(Some),
            (wkt::STRUCT, other) => return Err(self.wrong_type("an object", other)),
            (wkt::VALUE, _) => return self.value(desc, node).map(Some),
            (wkt::LIST_VALUE, Node::List(items)) => return self.list_value(desc, items).map(Some),
            (wkt::LIST_VALUE, other) => return Err(self.wrong_type("a list", other)),
            (_, Node::Object(_)) => return Ok(None),
            (name, _) if wkt::is_wrapper(name) => {
                let Some(field) = desc.get_field_by_name("value") else {
                    return Ok(None);
                };
                if let Some(value) = self.single(&field.kind(), node)? {
                    let _ = message.try_set_field(&field, value);
                }
            }
            _ => return Ok(None),
        }
        Ok(Some(message))
    }

    /// `google.protobuf.Struct` from a JSON object.
    fn structure(
        &mut self,
        desc: &MessageDescriptor,
        entries: &[(String, Node)],
    ) -> Result<DynamicMessage, Error> {
        let value_desc = self.descriptor(wkt::VALUE)?;
        let mut fields = HashMap::with_capacity(entries.len());
        for (key, node) in entries {
            self.path.push(Segment::Key(key.clone()));
            let value = self.value(&value_desc, node)?;
            fields.insert(MapKey::String(key.clone()), Value::Message(value));
            self.path.pop();
        }
        let mut message = DynamicMessage::new(desc.clone());
        set(&mut message, "fields", Value::Map(fields));
        Ok(message)
    }

    /// `google.protobuf.Value` from any JSON value.
    fn value(&mut self, desc: &MessageDescriptor, node: &Node) -> Result<DynamicMessage, Error> {
        let mut message = DynamicMessage::new(desc.clone());
        match node {
            Node::Null => set(&mut message, "null_value", Value::EnumNumber(0)),
            Node::Bool(b) => set(&mut message, "bool_value", Value::Bool(*b)),
            Node::Number(n) => set(&mut message, "number_value", Value::F64(number(*n))),
            Node::String(s) => set(&mut message, "string_value", Value::String(s.clone())),
            Node::List(items) => {
                let list = self.list_value(&self.descriptor(wkt::LIST_VALUE)?, items)?;
                set(&mut message, "list_value", Value::Message(list));
            }
            Node::Object(entries) => {
                let object = self.structure(&self.descriptor(wkt::STRUCT)?, entries)?;
                set(&mut message, "struct_value", Value::Message(object));
            }
        }
        Ok(message)
    }

    fn list_value(
        &mut self,
        desc: &MessageDescriptor,
        items: &[Node],
    ) -> Result<DynamicMessage, Error> {
        let value_desc = self.descriptor(wkt::VALUE)?;
        let mut values = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            self.path.push(Segment::Index(i));
            values.push(Value::Message(self.value(&value_desc, item)?));
            self.path.pop();
        }
        let mut message = DynamicMessage::new(desc.clone());
        set(&mut message, "values", Value::List(values));
        Ok(message)
    }

    fn descriptor(&self, name: &str) -> Result<MessageDescriptor, Error> {
        self.pool
            .get_message_by_name(name)
            .ok_or_else(|| Error::UnknownMessage(name.to_string()))
    }
}

fn number(n: Number) -> f64 {
    match n {
        Number::Unsigned(u) => u as f64,
        Number::Signed(i) => i as f64,
        Number::Float(x) => x,
    }
}

/// Sets a field of a well-known type by name; the names and value types are fixed by the
/// protobuf spec, so a mismatch cannot happen and is ignored.
pub(crate) fn set(message: &mut DynamicMessage, name: &str, value: Value) {
    let _ = message.try_set_field_by_name(name, value);
}
