//! What Envoy checks once a message is parsed, over the whole message tree including the
//! messages inside Anys and TypedStructs.

use prost_reflect::{DescriptorPool, DynamicMessage, MapKey, ReflectMessage, Value};

use super::path::{FieldPath, Segment};
use super::{Error, Ignored, Problem, UnknownFields, resolve_type_url, typed_struct, wkt};

/// Which checks a [`Walker`] makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Checks {
    /// Only fields the schema does not know (left by a binary decode).
    UnknownFieldsOnly,
    /// Unknown fields, Anys, TypedStructs and Duration ranges.
    All,
}

/// Walks a message tree, failing at the first problem.
pub(crate) struct Walker<'p> {
    pool: &'p DescriptorPool,
    unknown: UnknownFields,
    checks: Checks,
    path: FieldPath,
    pub(crate) ignored: Vec<Ignored>,
}

// === impl Walker ===

impl<'p> Walker<'p> {
    pub(crate) fn new(pool: &'p DescriptorPool, unknown: UnknownFields, checks: Checks) -> Self {
        Self {
            pool,
            unknown,
            checks,
            path: FieldPath::root(),
            ignored: Vec::new(),
        }
    }

    pub(crate) fn message(&mut self, message: &DynamicMessage) -> Result<(), Error> {
        let desc = message.descriptor();
        for field in message.unknown_fields() {
            let problem = Problem::UnknownFieldNumber {
                number: field.number(),
                message: desc.full_name().to_string(),
            };
            match self.unknown {
                UnknownFields::Reject => return Err(self.error(problem)),
                UnknownFields::Ignore => self.ignored.push(Ignored {
                    path: self.path.clone(),
                    problem,
                }),
            }
        }
        match desc.full_name() {
            wkt::DURATION if self.checks == Checks::All => return self.duration(message),
            wkt::ANY => return self.any(message),
            _ => {}
        }
        for (field, value) in message.fields() {
            self.path.push(Segment::Field(field.name().to_string()));
            self.value(value)?;
            self.path.pop();
        }
        Ok(())
    }

    fn value(&mut self, value: &Value) -> Result<(), Error> {
        match value {
            Value::Message(m) => self.message(m)?,
            Value::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.path.push(Segment::Index(i));
                    self.value(item)?;
                    self.path.pop();
                }
            }
            Value::Map(entries) => {
                let mut entries: Vec<_> = entries.iter().collect();
                entries.sort_by_key(|(k, _)| key_text(k));
                for (key, item) in entries {
                    self.path.push(Segment::Key(key_text(key)));
                    self.value(item)?;
                    self.path.pop();
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn any(&mut self, any: &DynamicMessage) -> Result<(), Error> {
        let type_url = any
            .get_field_by_name("type_url")
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let bytes = any
            .get_field_by_name("value")
            .and_then(|v| v.as_bytes().cloned())
            .unwrap_or_default();
        if type_url.is_empty() && bytes.is_empty() {
            return Ok(());
        }
        let desc = resolve_type_url(self.pool, &type_url).map_err(|p| self.error(p))?;
        let inner = DynamicMessage::decode(desc.clone(), bytes).map_err(|e| {
            self.error(Problem::BadEmbedded {
                type_name: desc.full_name().to_string(),
                reason: e.to_string(),
            })
        })?;
        if self.checks == Checks::All && typed_struct::is_typed_struct(desc.full_name()) {
            let (_, converted, ignored) =
                typed_struct::convert(self.pool, &inner, self.path.clone(), self.unknown)?;
            self.ignored.extend(ignored);
            self.path.push(Segment::Field("value".into()));
            self.message(&converted)?;
            self.path.pop();
            return Ok(());
        }
        self.message(&inner)
    }

    fn duration(&self, duration: &DynamicMessage) -> Result<(), Error> {
        let get = |name| {
            duration
                .get_field_by_name(name)
                .and_then(|v| v.as_i64().or_else(|| v.as_i32().map(i64::from)))
                .unwrap_or_default()
        };
        let (seconds, nanos) = (get("seconds"), get("nanos"));
        let value = format!("\"{}\"", wkt::format_duration(seconds, nanos as i32));
        if seconds < 0 || nanos < 0 {
            return Err(self.error(Problem::NegativeDuration { value }));
        }
        if seconds > wkt::MAX_DURATION_SECONDS || nanos > 999_999_999 {
            return Err(self.error(Problem::DurationOutOfRange { value }));
        }
        Ok(())
    }

    fn error(&self, problem: Problem) -> Error {
        Error::Field {
            path: self.path.clone(),
            problem,
        }
    }
}

fn key_text(key: &MapKey) -> String {
    match key {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(i) => i.to_string(),
        MapKey::I64(i) => i.to_string(),
        MapKey::U32(u) => u.to_string(),
        MapKey::U64(u) => u.to_string(),
        MapKey::String(s) => s.clone(),
    }
}
