//! Envoy's protos as JSON and YAML: the shared proto layer for bootstrap files, xDS
//! `TypedStruct`s and `/config_dump`.
//!
//! envoy-types gives us the Rust types but no JSON support, so we carry a protobuf descriptor
//! set of exactly the `.proto` files bundled in envoy-types (plus TypedStruct and the Istio
//! extension configs, see `proxy/proto/`), generated once by `scripts/gen-descriptors.sh`
//! and compiled in. A document is read into a tree, checked against the descriptors by the
//! proto3 JSON mapping the way Envoy's parser does it, and turned into the envoy-types
//! message; errors name the field path (`static_resources.clusters[2].connect_timeout`) and
//! what is wrong there.
//!
//! - [`decode`] / [`decode_value`]: JSON or YAML text (or a `serde_json::Value`) to a message;
//!   [`decode_binary`] and [`decode_text`] for binary and text-format protobuf.
//! - [`encode`] / [`encode_any`]: a message to JSON in Envoy's `/config_dump` style
//!   (snake_case names, Anys expanded with `"@type"`, 64-bit integers as strings).
//! - [`unwrap_typed_struct`]: a `udpa.type.v1.TypedStruct` / `xds.type.v3.TypedStruct` Any
//!   turned into an Any of the message it describes.
//! - [`validate`]: what Envoy checks after parsing, for any message: every Any resolves,
//!   every TypedStruct converts, every Duration is in range, no unknown binary fields.
//!
//! Unknown fields are a policy ([`UnknownFields`]): rejected with their path (Envoy's
//! default), or skipped and reported back (`--allow-unknown-static-fields`). As in Envoy, an
//! unknown enum value name counts as an unknown field.

use std::fmt;

use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};

mod decode;
mod encode;
mod node;
mod path;
mod pool;
mod typed_struct;
mod validate;
mod wkt;
mod yaml;

pub use path::{FieldPath, Segment};
pub use pool::{DESCRIPTOR_SET, pool};
pub use typed_struct::{is_typed_struct, unwrap_typed_struct};

pub(crate) use wkt::utc as utc_parts;

use decode::Decoder;
use node::Node;
use validate::{Checks, Walker};

/// What to do with a field (or enum value name) the schema does not know.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnknownFields {
    /// Fail with the field's path: Envoy's default for static config.
    #[default]
    Reject,
    /// Skip it and report it in [`Decoded::ignored`]: `--allow-unknown-static-fields`.
    Ignore,
}

/// The text format of a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

/// A decoded message and what was skipped to get it.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded<T> {
    pub message: T,
    /// Unknown fields and enum values skipped under [`UnknownFields::Ignore`].
    pub ignored: Vec<Ignored>,
}

/// One unknown field or enum value that was skipped, and where.
#[derive(Clone, Debug, PartialEq)]
pub struct Ignored {
    pub path: FieldPath,
    pub problem: Problem,
}

/// Why a document cannot be read as the message asked for.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the descriptor set compiled into this binary does not decode: {0}")]
    Pool(String),
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("invalid YAML: {0}")]
    Yaml(String),
    /// The document parsed, but the value at `path` does not fit the schema.
    #[error("{path}: {problem}")]
    Field { path: FieldPath, problem: Problem },
    /// A problem inside the JSON of a TypedStruct.
    #[error("{source} (inside a TypedStruct of {type_url})")]
    InTypedStruct {
        type_url: String,
        source: Box<Error>,
    },
    #[error(
        "message type {0} is not in the descriptor set (regenerate it with scripts/gen-descriptors.sh)"
    )]
    UnknownMessage(String),
    #[error("invalid binary protobuf for {type_name}: {reason}")]
    Binary { type_name: String, reason: String },
    #[error("invalid text-format protobuf for {type_name}: {reason}")]
    Text { type_name: String, reason: String },
}

/// What is wrong with one value.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Problem {
    #[error("unknown field {field:?} in {message}")]
    UnknownField { field: String, message: String },
    #[error("unknown field number {number} in {message}")]
    UnknownFieldNumber { number: u32, message: String },
    #[error("unknown value {value} for enum {enum_name} (expected one of: {})", known.join(", "))]
    UnknownEnumValue {
        value: String,
        enum_name: String,
        known: Vec<String>,
    },
    #[error(
        "invalid Duration {value}: expected a string of seconds with an \"s\" suffix and at \
         most 9 decimals, like \"0.250s\" or \"30s\""
    )]
    InvalidDuration { value: String },
    #[error("Duration {value} is negative; durations must be >= 0")]
    NegativeDuration { value: String },
    #[error("Duration {value} is out of range (at most 315576000000s)")]
    DurationOutOfRange { value: String },
    #[error("unknown @type {0:?}: no such message type is compiled in")]
    UnknownAnyType(String),
    #[error("invalid @type {0:?}: expected a type URL like \"type.googleapis.com/<message name>\"")]
    InvalidTypeUrl(String),
    #[error("missing \"@type\": an Any must say which message type it holds")]
    MissingAnyType,
    #[error("expected {expected}, found {found}")]
    WrongType { expected: String, found: String },
    #[error("invalid value {value}: expected {expected}")]
    InvalidValue { expected: String, value: String },
    #[error("{value} is out of range for {kind}")]
    OutOfRange { value: String, kind: &'static str },
    #[error("{field:?} is set twice{}", if earlier == field { String::new() } else { format!(" (also as {earlier:?})") })]
    Duplicate { field: String, earlier: String },
    #[error("{field:?} and {other:?} are alternatives (oneof {oneof}); set only one")]
    OneofConflict {
        field: String,
        other: String,
        oneof: String,
    },
    #[error("the embedded {type_name} does not decode: {reason}")]
    BadEmbedded { type_name: String, reason: String },
    #[error("internal error: {0}")]
    Internal(String),
}

// === impl Ignored ===

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.path, self.problem)
    }
}

/// Decodes JSON or YAML text into `T` by the proto3 JSON mapping.
pub fn decode<T>(text: &str, format: Format, unknown: UnknownFields) -> Result<Decoded<T>, Error>
where
    T: Message + Name + Default,
{
    let node = match format {
        Format::Json => Node::from_json(text)?,
        Format::Yaml => Node::from_yaml(text)?,
    };
    decode_node(&node, unknown)
}

/// Decodes an already parsed JSON value into `T` by the proto3 JSON mapping.
pub fn decode_value<T>(
    value: &serde_json::Value,
    unknown: UnknownFields,
) -> Result<Decoded<T>, Error>
where
    T: Message + Name + Default,
{
    decode_node(&Node::from(value), unknown)
}

/// Decodes binary protobuf into `T`, applying the unknown-field policy to fields the schema
/// does not know (which a plain `T::decode` would drop silently).
pub fn decode_binary<T>(bytes: &[u8], unknown: UnknownFields) -> Result<Decoded<T>, Error>
where
    T: Message + Name + Default,
{
    let pool = pool()?;
    let desc = descriptor::<T>(pool)?;
    let dynamic = DynamicMessage::decode(desc, bytes).map_err(|e| Error::Binary {
        type_name: T::full_name(),
        reason: e.to_string(),
    })?;
    let mut walker = Walker::new(pool, unknown, Checks::UnknownFieldsOnly);
    walker.message(&dynamic)?;
    Ok(Decoded {
        message: transcode(&dynamic)?,
        ignored: walker.ignored,
    })
}

/// Decodes text-format protobuf (`.pb_text`) into `T`. Unknown fields are always an error
/// there, as in Envoy.
pub fn decode_text<T>(text: &str) -> Result<T, Error>
where
    T: Message + Name + Default,
{
    let desc = descriptor::<T>(pool()?)?;
    let dynamic = DynamicMessage::parse_text_format(desc, text).map_err(|e| Error::Text {
        type_name: T::full_name(),
        reason: e.to_string(),
    })?;
    transcode(&dynamic)
}

/// Renders `message` as JSON the way Envoy's `/config_dump` does. Anys whose type is not in
/// the descriptor set do not fail the dump: see [`encode_any`].
pub fn encode<T: Message + Name>(message: &T) -> Result<serde_json::Value, Error> {
    Ok(encode::message(&to_dynamic(message)?))
}

/// Renders an Any as `/config_dump` does: `{"@type": url, ...fields}`. An Any whose type is
/// not in the descriptor set (or whose bytes do not decode as it) is rendered as
/// `{"@type": url, "value": "<base64 of the bytes>"}` instead of failing.
pub fn encode_any(any: &Any) -> serde_json::Value {
    match pool() {
        Ok(pool) => encode::any_parts(pool, &any.type_url, &any.value),
        Err(_) => encode::opaque_any(&any.type_url, &any.value),
    }
}

/// Checks what Envoy checks once a message is parsed: every Any has a known type and decodes,
/// every TypedStruct converts into its type (under the unknown-field policy), every Duration is
/// between 0 and 315576000000s, and no field is unknown. Returns what the policy skipped.
pub fn validate<T: Message + Name>(
    message: &T,
    unknown: UnknownFields,
) -> Result<Vec<Ignored>, Error> {
    let pool = pool()?;
    let dynamic = to_dynamic(message)?;
    let mut walker = Walker::new(pool, unknown, Checks::All);
    walker.message(&dynamic)?;
    Ok(walker.ignored)
}

/// The descriptor of `T` in the compiled-in descriptor set.
pub fn descriptor<T: Name>(pool: &DescriptorPool) -> Result<MessageDescriptor, Error> {
    let name = T::full_name();
    pool.get_message_by_name(&name)
        .ok_or(Error::UnknownMessage(name))
}

fn decode_node<T>(node: &Node, unknown: UnknownFields) -> Result<Decoded<T>, Error>
where
    T: Message + Name + Default,
{
    let pool = pool()?;
    let desc = descriptor::<T>(pool)?;
    let mut decoder = Decoder::new(pool, unknown, FieldPath::root());
    let dynamic = decoder.message(&desc, node)?;
    Ok(Decoded {
        message: transcode(&dynamic)?,
        ignored: decoder.ignored,
    })
}

fn to_dynamic<T: Message + Name>(message: &T) -> Result<DynamicMessage, Error> {
    let desc = descriptor::<T>(pool()?)?;
    DynamicMessage::decode(desc, message.encode_to_vec().as_slice()).map_err(|e| Error::Binary {
        type_name: T::full_name(),
        reason: e.to_string(),
    })
}

fn transcode<T: Message + Name + Default>(dynamic: &DynamicMessage) -> Result<T, Error> {
    T::decode(dynamic.encode_to_vec().as_slice()).map_err(|e| Error::Binary {
        type_name: T::full_name(),
        reason: e.to_string(),
    })
}

/// The message type a type URL names: the part after the last `/`, which must follow a
/// non-empty host (`type.googleapis.com/envoy.config.cluster.v3.Cluster`).
pub(crate) fn resolve_type_url(
    pool: &DescriptorPool,
    url: &str,
) -> Result<MessageDescriptor, Problem> {
    match url.rsplit_once('/') {
        Some((host, name)) if !host.is_empty() && !name.is_empty() => pool
            .get_message_by_name(name)
            .ok_or_else(|| Problem::UnknownAnyType(url.to_string())),
        _ => Err(Problem::InvalidTypeUrl(url.to_string())),
    }
}

// === impl Error ===

impl Error {
    /// The field path the error is at, if it is about one value.
    pub fn path(&self) -> Option<&FieldPath> {
        match self {
            Error::Field { path, .. } => Some(path),
            Error::InTypedStruct { source, .. } => source.path(),
            _ => None,
        }
    }

    /// What is wrong with the value at [`Error::path`], if the error is about one value.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Error::Field { problem, .. } => Some(problem),
            Error::InTypedStruct { source, .. } => source.problem(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
