//! YAML read as Envoy reads it. Envoy turns YAML into JSON with yaml-cpp, where a plain
//! (unquoted) scalar is a boolean if it spells one (`true`, `yes`, `on`, ...), a number only
//! if it is an integer within int32, the integer's decimal digits (a string) if it is a
//! larger one, and otherwise its own text: `version: 1.20` is the string `"1.20"`, not the
//! number 1.2. serde-saphyr parses by YAML 1.2 rules, so we keep each number's source span
//! and re-read its text by yaml-cpp's. Merge keys (`<<`) are ordinary keys, as in yaml-cpp.

use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::Error;
use super::node::{Node, Number};

/// A YAML value; numbers and booleans carry the byte range of their source text.
#[derive(Debug)]
enum Yaml {
    Null,
    Bool(bool, Option<Range<usize>>),
    Number(Number, Option<Range<usize>>),
    String(String),
    List(Vec<Yaml>),
    Object(Vec<(Yaml, Yaml)>),
}

/// Parses `text` into a tree, with scalars typed as yaml-cpp types them.
pub(crate) fn parse(text: &str) -> Result<Node, Error> {
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::LastWins,
        merge_keys: serde_saphyr::MergeKeyPolicy::AsOrdinary,
        with_snippet: false,
    };
    let yaml: Yaml = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let message = e.to_string();
        Error::Yaml(
            message
                .strip_prefix("error: ")
                .unwrap_or(&message)
                .to_string(),
        )
    })?;
    Ok(yaml.into_node(text))
}

// === impl Yaml ===

impl Yaml {
    fn into_node(self, source: &str) -> Node {
        match self {
            Yaml::Null => Node::Null,
            Yaml::Bool(b, _) => Node::Bool(b),
            Yaml::String(s) => Node::String(s),
            Yaml::Number(n, span) => {
                match span
                    .and_then(|r| source.get(r))
                    .filter(|raw| !raw.is_empty())
                {
                    Some(raw) => plain_number(raw),
                    None => Node::Number(n),
                }
            }
            Yaml::List(items) => {
                Node::List(items.into_iter().map(|i| i.into_node(source)).collect())
            }
            Yaml::Object(entries) => Node::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.into_key(source), v.into_node(source)))
                    .collect(),
            ),
        }
    }

    /// A mapping key as text, as yaml-cpp's `as<std::string>()` gives it (`y`, not `true`).
    fn into_key(self, source: &str) -> String {
        let raw = |span: Option<Range<usize>>| span.and_then(|r| source.get(r)).map(str::to_string);
        match self {
            Yaml::Number(n, span) => raw(span).unwrap_or_else(|| n.to_string()),
            Yaml::Bool(b, span) => raw(span).unwrap_or_else(|| b.to_string()),
            Yaml::String(s) => s,
            Yaml::Null => "null".into(),
            Yaml::List(_) | Yaml::Object(_) => String::new(),
        }
    }

    /// Records where a scalar came from (`defined`, so an alias reads its anchor's text).
    fn with_span(self, spanned_at: &serde_saphyr::Location) -> Yaml {
        let span = spanned_at.span();
        let range = span.byte_offset().zip(span.byte_len()).and_then(|(o, l)| {
            let start = usize::try_from(o).ok()?;
            Some(start..start.checked_add(usize::try_from(l).ok()?)?)
        });
        match self {
            Yaml::Number(n, None) => Yaml::Number(n, range),
            Yaml::Bool(b, None) => Yaml::Bool(b, range),
            other => other,
        }
    }
}

impl<'de> Deserialize<'de> for Yaml {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(YamlVisitor)
    }
}

struct YamlVisitor;

// === impl YamlVisitor ===

impl<'de> Visitor<'de> for YamlVisitor {
    type Value = Yaml;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Yaml, E> {
        Ok(Yaml::Bool(v, None))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Yaml, E> {
        Ok(Yaml::Number(Number::Signed(v), None))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Yaml, E> {
        Ok(Yaml::Number(Number::Unsigned(v), None))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Yaml, E> {
        Ok(Yaml::Number(Number::Float(v as f64), None))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Yaml, E> {
        Ok(Yaml::Number(Number::Float(v as f64), None))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Yaml, E> {
        Ok(Yaml::Number(Number::Float(v), None))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Yaml, E> {
        Ok(Yaml::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Yaml, E> {
        Ok(Yaml::String(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Yaml, E> {
        Ok(Yaml::String(String::from_utf8_lossy(v).into_owned()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Yaml, E> {
        Ok(Yaml::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Yaml, E> {
        Ok(Yaml::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Yaml, D::Error> {
        Yaml::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Yaml, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Yaml>>()? {
            items.push(item.value.with_span(&item.defined));
        }
        Ok(Yaml::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Yaml, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Yaml>>()? {
            let value = map.next_value::<Spanned<Yaml>>()?;
            entries.push((
                key.value.with_span(&key.defined),
                value.value.with_span(&value.defined),
            ));
        }
        Ok(Yaml::Object(entries))
    }
}

/// A plain scalar that YAML 1.2 calls a number, typed as yaml-cpp types it.
fn plain_number(raw: &str) -> Node {
    match yaml_cpp_int(raw) {
        Some(v) if i32::try_from(v).is_ok() => Node::Number(Number::Signed(v)),
        Some(v) => Node::String(v.to_string()),
        None => Node::String(raw.to_string()),
    }
}

/// yaml-cpp's integer decoding (a C++ stream with the base taken from the prefix): optional
/// sign, then `0x` hex, `0` octal, or decimal; nothing else, and it must fit i64.
fn yaml_cpp_int(raw: &str) -> Option<i64> {
    let (negative, digits) = match raw.as_bytes().first()? {
        b'-' => (true, &raw[1..]),
        b'+' => (false, &raw[1..]),
        _ => (false, raw),
    };
    let magnitude = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        i128::from_str_radix(hex, 16).ok()?
    } else if digits.len() > 1 && digits.starts_with('0') {
        i128::from_str_radix(&digits[1..], 8).ok()?
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse::<i128>().ok()?
    } else {
        return None;
    };
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(text: &str) -> Vec<(String, Node)> {
        match parse(text).unwrap() {
            Node::Object(entries) => entries,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plain_scalars_are_typed_like_yaml_cpp() {
        // What Envoy 1.40 shows in /config_dump for node.metadata written this way.
        let got = entries(
            "a: 1.20\nb: 7\nc: 99999999999\nd: \"8\"\ne: yes\nf: 0x10\ng: 1e3\nh: .5\ni: ~\nj: 'yes'\n",
        );
        let expected = [
            ("a", Node::String("1.20".into())),
            ("b", Node::Number(Number::Signed(7))),
            ("c", Node::String("99999999999".into())),
            ("d", Node::String("8".into())),
            ("e", Node::Bool(true)),
            ("f", Node::Number(Number::Signed(16))),
            ("g", Node::String("1e3".into())),
            ("h", Node::String(".5".into())),
            ("i", Node::Null),
            ("j", Node::String("yes".into())),
        ];
        for ((key, value), (want_key, want)) in got.iter().zip(expected) {
            assert_eq!((key.as_str(), value), (want_key, &want));
        }
    }

    #[test]
    fn aliases_read_their_anchors_text_and_merge_keys_stay_keys() {
        let got = entries("x: &f 1.5\ny: *f\n<<: {z: 1}\n");
        // `y` as a key stays the text "y" (yaml-cpp reads keys as strings).
        assert_eq!(got[1], ("y".to_string(), Node::String("1.5".into())));
        assert_eq!(got[2].0, "<<");
    }

    #[test]
    fn repeated_keys_reach_the_tree_for_the_caller_to_resolve() {
        assert_eq!(entries("a: 1\na: 2\n").len(), 2);
    }
}
