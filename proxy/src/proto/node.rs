//! The document tree a JSON or YAML text parses into before it meets a schema.
//!
//! Unlike `serde_json::Value` it keeps every object entry in order, duplicates included, so
//! the decoder can reject a field that is set twice, as Envoy's JSON parser does.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::Error;

/// One JSON/YAML value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    List(Vec<Node>),
    Object(Vec<(String, Node)>),
}

/// A number as the parser read it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Number {
    Unsigned(u64),
    Signed(i64),
    Float(f64),
}

// === impl Node ===

impl Node {
    /// Parses JSON the way Envoy's protobuf JSON parser does: strict, except that a trailing
    /// comma before `}` or `]` is accepted.
    pub(crate) fn from_json(text: &str) -> Result<Node, Error> {
        let text = blank_trailing_commas(text);
        serde_json::from_str(&text).map_err(|e| Error::Json {
            line: e.line(),
            column: e.column(),
            message: json_error_message(&e),
        })
    }

    /// Parses YAML as Envoy (yaml-cpp) does, see [`super::yaml`]; a key given twice in one
    /// mapping keeps its last value.
    pub(crate) fn from_yaml(text: &str) -> Result<Node, Error> {
        Ok(super::yaml::parse(text)?.last_key_wins())
    }

    /// Drops earlier entries of keys that repeat in an object, recursively: what yaml-cpp
    /// (and so Envoy) does with a YAML mapping that repeats a key.
    fn last_key_wins(self) -> Node {
        match self {
            Node::List(items) => Node::List(items.into_iter().map(Node::last_key_wins).collect()),
            Node::Object(entries) => {
                let mut kept: Vec<(String, Node)> = Vec::with_capacity(entries.len());
                for (key, value) in entries {
                    let value = value.last_key_wins();
                    match kept.iter_mut().find(|(k, _)| *k == key) {
                        Some(slot) => slot.1 = value,
                        None => kept.push((key, value)),
                    }
                }
                Node::Object(kept)
            }
            other => other,
        }
    }

    /// A short description of this value for error messages: `string "5"`, `number 80`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Node::Null => "null".into(),
            Node::Bool(b) => format!("boolean {b}"),
            Node::Number(n) => format!("number {n}"),
            Node::String(s) => format!("string {}", quote(s)),
            Node::List(_) => "a list".into(),
            Node::Object(_) => "an object".into(),
        }
    }

    /// This value as it would be written: `"5"`, `80`, `true`, `[...]`.
    pub(crate) fn literal(&self) -> String {
        match self {
            Node::Null => "null".into(),
            Node::Bool(b) => b.to_string(),
            Node::Number(n) => n.to_string(),
            Node::String(s) => quote(s),
            Node::List(_) => "[...]".into(),
            Node::Object(_) => "{...}".into(),
        }
    }
}

impl From<&serde_json::Value> for Node {
    fn from(value: &serde_json::Value) -> Self {
        match value {
            serde_json::Value::Null => Node::Null,
            serde_json::Value::Bool(b) => Node::Bool(*b),
            serde_json::Value::Number(n) => Node::Number(if let Some(u) = n.as_u64() {
                Number::Unsigned(u)
            } else if let Some(i) = n.as_i64() {
                Number::Signed(i)
            } else {
                Number::Float(n.as_f64().unwrap_or(f64::NAN))
            }),
            serde_json::Value::String(s) => Node::String(s.clone()),
            serde_json::Value::Array(items) => Node::List(items.iter().map(Node::from).collect()),
            serde_json::Value::Object(map) => Node::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), Node::from(v)))
                    .collect(),
            ),
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

// === impl NodeVisitor ===

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON or YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Number(Number::Signed(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Number(Number::Unsigned(v)))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        // Out of i64/u64 range: keep the digits, as proto3 JSON allows for integers.
        Ok(Node::String(v.to_string()))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        Ok(Node::String(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Number(Number::Float(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::String(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Node, E> {
        Ok(Node::String(String::from_utf8_lossy(v).into_owned()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(key) = map.next_key::<Key>()? {
            entries.push((key.0, map.next_value()?));
        }
        Ok(Node::Object(entries))
    }
}

/// A mapping key. YAML allows non-string scalars as keys (`80: x`); JSON objects and proto3
/// maps key by their text, so keep that.
struct Key(String);

// === impl Key ===

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Node::deserialize(deserializer)? {
            Node::String(s) => Ok(Key(s)),
            Node::Bool(b) => Ok(Key(b.to_string())),
            Node::Number(n) => Ok(Key(n.to_string())),
            Node::Null => Ok(Key("null".into())),
            other => Err(de::Error::custom(format!(
                "a mapping key must be a scalar, found {}",
                other.describe()
            ))),
        }
    }
}

// === impl Number ===

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Number::Unsigned(u) => write!(f, "{u}"),
            Number::Signed(i) => write!(f, "{i}"),
            Number::Float(x) => write!(f, "{x}"),
        }
    }
}

/// `s` in double quotes, cut short if long.
pub(crate) fn quote(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head:?}...")
    }
}

/// serde_json's message without its own " at line L column C" suffix (we add position).
fn json_error_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Replaces each comma that directly precedes (whitespace aside) a `}` or `]` with a space,
/// outside strings, so positions in error messages stay true.
fn blank_trailing_commas(text: &str) -> std::borrow::Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out: Option<Vec<u8>> = None;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b',' => {
                let next = bytes[i + 1..].iter().find(|c| !c.is_ascii_whitespace());
                if matches!(next, Some(b'}') | Some(b']')) {
                    out.get_or_insert_with(|| bytes.to_vec())[i] = b' ';
                }
            }
            _ => {}
        }
    }
    match out {
        // Only an ASCII comma was replaced by an ASCII space, so this stays UTF-8.
        Some(bytes) => {
            String::from_utf8(bytes).map_or(std::borrow::Cow::Borrowed(text), Into::into)
        }
        None => std::borrow::Cow::Borrowed(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_duplicate_keys_in_order() {
        let node = Node::from_json(r#"{"a": 1, "b": "x", "a": 2}"#).unwrap();
        let Node::Object(entries) = node else {
            panic!("not an object")
        };
        let keys: Vec<_> = entries.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b", "a"]);
    }

    #[test]
    fn json_accepts_trailing_commas_like_envoy() {
        let node = Node::from_json(r#"{"a": [1, 2,], "b": {"c": "x,}",},}"#).unwrap();
        let json: Node = Node::from_json(r#"{"a": [1, 2], "b": {"c": "x,}"}}"#).unwrap();
        assert_eq!(node, json);
    }

    #[test]
    fn json_errors_give_position() {
        let err = Node::from_json("{\n  \"a\": [1,\n").unwrap_err();
        let Error::Json { line, .. } = err else {
            panic!("{err:?}")
        };
        assert_eq!(line, 3);
    }

    #[test]
    fn yaml_duplicate_key_keeps_the_last_value() {
        let node = Node::from_yaml("a: 1\na: 2\n").unwrap();
        assert_eq!(
            node,
            Node::Object(vec![("a".into(), Node::Number(Number::Signed(2)))])
        );
    }
}
