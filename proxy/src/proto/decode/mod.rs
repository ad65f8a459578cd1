//! JSON/YAML tree to protobuf message, by the proto3 JSON mapping, with Envoy's leniencies:
//! field names in snake_case or lowerCamelCase, enum names in any case, integers as numbers
//! or strings (`"0x10"` too), booleans as `true`/`"true"`, well-known types in their object
//! form too, and `null` meaning "not set".

use std::collections::HashMap;

use base64::Engine as _;
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, EnumDescriptor, FieldDescriptor, Kind, MapKey,
    MessageDescriptor, Value,
};

use super::node::{Node, Number};
use super::path::{FieldPath, Segment};
use super::{Error, Ignored, Problem, UnknownFields, wkt};

mod well_known;

/// Decodes one document. Stops at the first error; with [`UnknownFields::Ignore`] it skips
/// unknown fields and enum values and records them.
pub(crate) struct Decoder<'p> {
    pool: &'p DescriptorPool,
    unknown: UnknownFields,
    path: FieldPath,
    pub(crate) ignored: Vec<Ignored>,
}

// === impl Decoder ===

impl<'p> Decoder<'p> {
    pub(crate) fn new(pool: &'p DescriptorPool, unknown: UnknownFields, base: FieldPath) -> Self {
        Self {
            pool,
            unknown,
            path: base,
            ignored: Vec::new(),
        }
    }

    /// Decodes `node` as a `desc` message.
    pub(crate) fn message(
        &mut self,
        desc: &MessageDescriptor,
        node: &Node,
    ) -> Result<DynamicMessage, Error> {
        let name = desc.full_name();
        if name == wkt::ANY {
            return self.any(desc, node);
        }
        if let Some(message) = self.well_known(desc, node)? {
            return Ok(message);
        }
        match node {
            Node::Object(entries) => self.object(desc, entries, false),
            other => Err(self.error(Problem::WrongType {
                expected: format!("an object ({name})"),
                found: other.describe(),
            })),
        }
    }

    fn error(&self, problem: Problem) -> Error {
        Error::Field {
            path: self.path.clone(),
            problem,
        }
    }

    /// An unknown field or enum value: an error, or noted and skipped.
    fn unknown(&mut self, problem: Problem) -> Result<(), Error> {
        match self.unknown {
            UnknownFields::Reject => Err(self.error(problem)),
            UnknownFields::Ignore => {
                self.ignored.push(Ignored {
                    path: self.path.clone(),
                    problem,
                });
                Ok(())
            }
        }
    }

    /// A message from its object form. `skip_type` drops an `@type` entry (inside an Any).
    fn object(
        &mut self,
        desc: &MessageDescriptor,
        entries: &[(String, Node)],
        skip_type: bool,
    ) -> Result<DynamicMessage, Error> {
        let mut message = DynamicMessage::new(desc.clone());
        // Which field numbers this object has set, and by which key, for duplicate and oneof
        // checks.
        let mut seen: HashMap<u32, &str> = HashMap::new();
        for (key, value) in entries {
            if skip_type && key == "@type" {
                continue;
            }
            self.path.push(Segment::Field(key.clone()));
            let field = desc
                .get_field_by_json_name(key)
                .or_else(|| desc.get_field_by_name(key));
            match field {
                None => self.unknown(Problem::UnknownField {
                    field: key.clone(),
                    message: desc.full_name().to_string(),
                })?,
                Some(field) => self.field(&mut message, &field, key, value, &mut seen)?,
            }
            self.path.pop();
        }
        Ok(message)
    }

    fn field<'k>(
        &mut self,
        message: &mut DynamicMessage,
        field: &FieldDescriptor,
        key: &'k str,
        node: &Node,
        seen: &mut HashMap<u32, &'k str>,
    ) -> Result<(), Error> {
        let is_value = matches!(field.kind(), Kind::Message(m) if m.full_name() == wkt::VALUE);
        if *node == Node::Null && !(is_value && !field.is_list() && !field.is_map()) {
            // proto3 JSON: null means the field is not set.
            return Ok(());
        }
        let singular = !field.is_list() && !field.is_map();
        let is_message = matches!(field.kind(), Kind::Message(_));
        if let Some(earlier) = seen.get(&field.number())
            && singular
            && !is_message
        {
            return Err(self.error(Problem::Duplicate {
                field: key.to_string(),
                earlier: earlier.to_string(),
            }));
        }
        if let Some(oneof) = field.containing_oneof().filter(|o| !o.is_synthetic()) {
            let other = oneof
                .fields()
                .filter(|f| f.number() != field.number())
                .find_map(|f| seen.get(&f.number()));
            if let Some(other) = other {
                return Err(self.error(Problem::OneofConflict {
                    field: key.to_string(),
                    other: other.to_string(),
                    oneof: oneof.name().to_string(),
                }));
            }
        }
        seen.insert(field.number(), key);
        let Some(value) = self.field_value(field, node)? else {
            return Ok(());
        };
        let was_set = message.has_field(field);
        let slot = message.get_field_mut(field);
        match (slot, value) {
            (Value::List(items), Value::List(more)) => items.extend(more),
            (Value::Map(entries), Value::Map(more)) => entries.extend(more),
            (Value::Message(existing), Value::Message(more)) if was_set => {
                // A message field given twice (e.g. as `foo_bar` and `fooBar`) merges.
                existing
                    .merge(more.encode_to_vec().as_slice())
                    .map_err(|e| self.error(Problem::Internal(e.to_string())))?;
            }
            (slot, value) => *slot = value,
        }
        Ok(())
    }

    /// The value of one field; `None` when it was an ignored unknown enum value.
    fn field_value(
        &mut self,
        field: &FieldDescriptor,
        node: &Node,
    ) -> Result<Option<Value>, Error> {
        if field.is_map() {
            return self.map(field, node).map(Some);
        }
        if !field.is_list() {
            return self.single(&field.kind(), node);
        }
        let Node::List(items) = node else {
            return Err(self.error(Problem::WrongType {
                expected: "a list".into(),
                found: node.describe(),
            }));
        };
        let kind = field.kind();
        let mut values = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            self.path.push(Segment::Index(i));
            if *item == Node::Null
                && !matches!(&kind, Kind::Message(m) if m.full_name() == wkt::VALUE)
            {
                return Err(self.error(Problem::WrongType {
                    expected: kind_name(&kind),
                    found: "null".into(),
                }));
            }
            if let Some(value) = self.single(&kind, item)? {
                values.push(value);
            }
            self.path.pop();
        }
        Ok(Some(Value::List(values)))
    }

    fn map(&mut self, field: &FieldDescriptor, node: &Node) -> Result<Value, Error> {
        let Node::Object(entries) = node else {
            return Err(self.error(Problem::WrongType {
                expected: "an object (a map)".into(),
                found: node.describe(),
            }));
        };
        let Kind::Message(entry) = field.kind() else {
            return Err(self.error(Problem::Internal("map field without entry type".into())));
        };
        let key_kind = entry.map_entry_key_field().kind();
        let value_kind = entry.map_entry_value_field().kind();
        let mut map = HashMap::with_capacity(entries.len());
        for (key, value) in entries {
            self.path.push(Segment::Key(key.clone()));
            let key = self.map_key(&key_kind, key)?;
            if *value == Node::Null
                && !matches!(&value_kind, Kind::Message(m) if m.full_name() == wkt::VALUE)
            {
                return Err(self.error(Problem::WrongType {
                    expected: kind_name(&value_kind),
                    found: "null".into(),
                }));
            }
            if let Some(value) = self.single(&value_kind, value)? {
                map.insert(key, value);
            }
            self.path.pop();
        }
        Ok(Value::Map(map))
    }

    fn map_key(&self, kind: &Kind, key: &str) -> Result<MapKey, Error> {
        let text = Node::String(key.to_string());
        let key = match kind {
            Kind::String => Some(MapKey::String(key.to_string())),
            Kind::Bool => match key {
                "true" => Some(MapKey::Bool(true)),
                "false" => Some(MapKey::Bool(false)),
                _ => None,
            },
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                integer(&text, i32::MIN.into(), i32::MAX.into()).map(|v| MapKey::I32(v as i32))
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                integer(&text, i64::MIN.into(), i64::MAX.into()).map(|v| MapKey::I64(v as i64))
            }
            Kind::Uint32 | Kind::Fixed32 => {
                integer(&text, 0, u32::MAX.into()).map(|v| MapKey::U32(v as u32))
            }
            Kind::Uint64 | Kind::Fixed64 => {
                integer(&text, 0, u64::MAX.into()).map(|v| MapKey::U64(v as u64))
            }
            _ => None,
        };
        key.ok_or_else(|| {
            self.error(Problem::InvalidValue {
                expected: format!("a map key of type {}", kind_name(kind)),
                value: text.literal(),
            })
        })
    }

    /// One value of `kind`; `None` for an ignored unknown enum value.
    fn single(&mut self, kind: &Kind, node: &Node) -> Result<Option<Value>, Error> {
        let invalid = |expected: &str| Problem::InvalidValue {
            expected: expected.to_string(),
            value: node.literal(),
        };
        let value = match kind {
            Kind::Message(desc) => Value::Message(self.message(desc, node)?),
            Kind::Enum(desc) => return self.enumeration(desc, node),
            Kind::String => match node {
                Node::String(s) => Value::String(s.clone()),
                other => return Err(self.wrong_type("a string", other)),
            },
            Kind::Bool => match node {
                Node::Bool(b) => Value::Bool(*b),
                Node::String(s) if s == "true" => Value::Bool(true),
                Node::String(s) if s == "false" => Value::Bool(false),
                other => return Err(self.wrong_type("true or false", other)),
            },
            Kind::Bytes => match node {
                Node::String(s) => Value::Bytes(
                    decode_base64(s)
                        .ok_or_else(|| self.error(invalid("base64 bytes")))?
                        .into(),
                ),
                other => return Err(self.wrong_type("a base64 string", other)),
            },
            Kind::Double | Kind::Float => {
                let x = float(node).ok_or_else(|| self.error(invalid("a number")))?;
                if matches!(kind, Kind::Double) {
                    Value::F64(x)
                } else if x.is_finite() && x.abs() > f64::from(f32::MAX) {
                    return Err(self.error(Problem::OutOfRange {
                        value: node.literal(),
                        kind: "float",
                    }));
                } else {
                    Value::F32(x as f32)
                }
            }
            _ => return self.int(kind, node).map(Some),
        };
        Ok(Some(value))
    }

    fn int(&self, kind: &Kind, node: &Node) -> Result<Value, Error> {
        let (min, max, name): (i128, i128, &'static str) = match kind {
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                (i32::MIN.into(), i32::MAX.into(), "int32")
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                (i64::MIN.into(), i64::MAX.into(), "int64")
            }
            Kind::Uint32 | Kind::Fixed32 => (0, u32::MAX.into(), "uint32"),
            _ => (0, u64::MAX.into(), "uint64"),
        };
        if let Node::List(_) | Node::Object(_) | Node::Bool(_) | Node::Null = node {
            return Err(self.wrong_type("an integer", node));
        }
        let Some(v) = integer(node, i128::MIN, i128::MAX) else {
            return Err(self.error(Problem::InvalidValue {
                expected: format!("an integer ({name})"),
                value: node.literal(),
            }));
        };
        if v < min || v > max {
            return Err(self.error(Problem::OutOfRange {
                value: node.literal(),
                kind: name,
            }));
        }
        // In range, so these casts are exact.
        Ok(match kind {
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(v as i32),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(v as i64),
            Kind::Uint32 | Kind::Fixed32 => Value::U32(v as u32),
            _ => Value::U64(v as u64),
        })
    }

    fn enumeration(&mut self, desc: &EnumDescriptor, node: &Node) -> Result<Option<Value>, Error> {
        if desc.full_name() == wkt::NULL_VALUE && *node == Node::Null {
            return Ok(Some(Value::EnumNumber(0)));
        }
        let number = match node {
            Node::String(name) => desc
                .get_value_by_name(name)
                // Envoy parses enum names case-insensitively.
                .or_else(|| desc.values().find(|v| v.name().eq_ignore_ascii_case(name)))
                .map(|v| v.number())
                .or_else(|| name.parse::<i32>().ok()),
            Node::Number(_) => integer(node, i32::MIN.into(), i32::MAX.into()).map(|v| v as i32),
            other => return Err(self.wrong_type("an enum value name", other)),
        };
        match number {
            Some(n) => Ok(Some(Value::EnumNumber(n))),
            None => {
                self.unknown(Problem::UnknownEnumValue {
                    value: node.literal(),
                    enum_name: desc.full_name().to_string(),
                    known: desc.values().map(|v| v.name().to_string()).collect(),
                })?;
                Ok(None)
            }
        }
    }

    fn wrong_type(&self, expected: &str, found: &Node) -> Error {
        self.error(Problem::WrongType {
            expected: expected.to_string(),
            found: found.describe(),
        })
    }
}

/// The integer `node` denotes, if it denotes one within `[min, max]` of i128: a whole number,
/// a float with no fraction, or a string of either (decimal, exponent, or `0x` hex).
pub(crate) fn integer(node: &Node, min: i128, max: i128) -> Option<i128> {
    let v = match node {
        Node::Number(Number::Unsigned(u)) => i128::from(*u),
        Node::Number(Number::Signed(i)) => i128::from(*i),
        Node::Number(Number::Float(x)) => whole(*x)?,
        Node::String(s) => {
            if let Ok(v) = s.parse::<i128>() {
                v
            } else if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                i128::from_str_radix(hex, 16).ok()?
            } else if let Some(hex) = s.strip_prefix("-0x").or_else(|| s.strip_prefix("-0X")) {
                -i128::from_str_radix(hex, 16).ok()?
            } else if s
                .bytes()
                .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
            {
                whole(s.parse::<f64>().ok()?)?
            } else {
                return None;
            }
        }
        _ => return None,
    };
    (min..=max).contains(&v).then_some(v)
}

/// `x` as an integer if it has no fractional part.
fn whole(x: f64) -> Option<i128> {
    (x.is_finite() && x.fract() == 0.0 && x.abs() < 1e30).then_some(x as i128)
}

/// A float from a number or a string (`"1.5"`, `"NaN"`, `"Infinity"`, `"-Infinity"`).
fn float(node: &Node) -> Option<f64> {
    match node {
        Node::Number(Number::Unsigned(u)) => Some(*u as f64),
        Node::Number(Number::Signed(i)) => Some(*i as f64),
        Node::Number(Number::Float(x)) => Some(*x),
        Node::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            s if s
                .bytes()
                .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
            {
                s.parse().ok()
            }
            _ => None,
        },
        _ => None,
    }
}

/// Standard or URL-safe base64, padded or not, as proto3 JSON allows.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let standard = GeneralPurpose::new(&base64::alphabet::STANDARD, config);
    let url_safe = GeneralPurpose::new(&base64::alphabet::URL_SAFE, config);
    standard.decode(s).or_else(|_| url_safe.decode(s)).ok()
}

/// How a kind is named in messages: `uint32`, `envoy.config.core.v3.Address`.
pub(crate) fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::Message(m) => m.full_name().to_string(),
        Kind::Enum(e) => e.full_name().to_string(),
        Kind::Double => "double".into(),
        Kind::Float => "float".into(),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => "int32".into(),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => "int64".into(),
        Kind::Uint32 | Kind::Fixed32 => "uint32".into(),
        Kind::Uint64 | Kind::Fixed64 => "uint64".into(),
        Kind::Bool => "bool".into(),
        Kind::String => "string".into(),
        Kind::Bytes => "bytes".into(),
    }
}
