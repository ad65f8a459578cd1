//! The wire format of Istio's TCP metadata exchange (istio/proxy
//! `source/extensions/filters/network/metadata_exchange`): a header
//! `magic 0x3D230467 (u32, big endian) | length (u32, big endian)` followed by `length` bytes
//! of a serialized `google.protobuf.Any` holding a `google.protobuf.Struct` with the sender's
//! node metadata under `x-envoy-peer-metadata` and its node id under
//! `x-envoy-peer-metadata-id`.
//!
//! Structs are serialized deterministically (map keys sorted, as protobuf's C++ deterministic
//! mode does), so our bytes equal Envoy's for the same metadata.

use envoy_types::pb::google::protobuf::{Any, ListValue, Struct, Value, value::Kind};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};

/// The header's magic number.
pub const MAGIC: u32 = 0x3D23_0467;
/// Header size: magic and length.
pub const HEADER_LEN: usize = 8;
/// The largest payload we accept. Istio's is a few hundred bytes; anything near this is not
/// a metadata exchange.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// `Any.type_url` of the payload.
pub const STRUCT_TYPE_URL: &str = "type.googleapis.com/google.protobuf.Struct";
/// Key of the node metadata.
pub const METADATA_KEY: &str = "x-envoy-peer-metadata";
/// Key of the node id.
pub const METADATA_ID_KEY: &str = "x-envoy-peer-metadata-id";

/// What the peer sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerMetadata {
    /// The peer's node id (`sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local`), if it sent one.
    pub id: Option<String>,
    /// The peer's node metadata (`NAME`, `NAMESPACE`, `LABELS`, ...), possibly empty.
    pub metadata: Struct,
}

/// The result of looking at the first bytes of a stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Decode {
    /// Not enough bytes yet.
    NeedMore,
    /// A complete exchange of `consumed` bytes.
    Done { consumed: usize, peer: PeerMetadata },
    /// Not an exchange (Envoy's "Invalid" state): the first `consumed` bytes are dropped, the
    /// rest is the peer's data.
    Invalid {
        consumed: usize,
        reason: &'static str,
    },
    /// The header announces more than [`MAX_PAYLOAD`] bytes.
    TooLarge(u32),
}

/// A complete exchange frame for a node id and metadata.
pub fn encode(id: &str, metadata: &Struct) -> Vec<u8> {
    let mut data = Struct::default();
    data.fields.insert(
        METADATA_KEY.to_string(),
        Value {
            kind: Some(Kind::StructValue(metadata.clone())),
        },
    );
    if !id.is_empty() {
        data.fields.insert(
            METADATA_ID_KEY.to_string(),
            Value {
                kind: Some(Kind::StringValue(id.to_string())),
            },
        );
    }
    let any = Any {
        type_url: STRUCT_TYPE_URL.to_string(),
        value: encode_struct(&data),
    };
    let payload = any.encode_to_vec();
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decodes the first bytes of a stream.
pub fn decode(buf: &[u8]) -> Decode {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Decode::NeedMore;
    };
    let word =
        |i: usize| u32::from_be_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    if word(0) != MAGIC {
        return Decode::Invalid {
            consumed: 0,
            reason: "incorrect istio-peer-exchange magic; the peer does not run the metadata exchange",
        };
    }
    let len = word(4);
    if len as usize > MAX_PAYLOAD {
        return Decode::TooLarge(len);
    }
    let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + len as usize) else {
        return Decode::NeedMore;
    };
    let Ok(any) = Any::decode(payload) else {
        // Envoy drops the header and passes the rest on.
        return Decode::Invalid {
            consumed: HEADER_LEN,
            reason: "magic matched but the metadata is not a protobuf Any",
        };
    };
    let consumed = HEADER_LEN + len as usize;
    let data = if any.type_url == STRUCT_TYPE_URL {
        Struct::decode(any.value.as_slice()).unwrap_or_default()
    } else {
        Struct::default()
    };
    let metadata = match data.fields.get(METADATA_KEY).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StructValue(s)) => super::filter_node_metadata(s),
        _ => Struct::default(),
    };
    let id = match data
        .fields
        .get(METADATA_ID_KEY)
        .and_then(|v| v.kind.as_ref())
    {
        Some(Kind::StringValue(s)) => Some(s.clone()),
        _ => None,
    };
    Decode::Done {
        consumed,
        peer: PeerMetadata { id, metadata },
    }
}

/// Serializes a Struct with map entries sorted by key (protobuf deterministic mode).
pub fn encode_struct(s: &Struct) -> Vec<u8> {
    let mut out = Vec::new();
    let mut keys: Vec<&String> = s.fields.keys().collect();
    keys.sort();
    for key in keys {
        let mut entry = Vec::new();
        encode_key(1, WireType::LengthDelimited, &mut entry);
        encode_varint(key.len() as u64, &mut entry);
        entry.extend_from_slice(key.as_bytes());
        let value = s.fields.get(key).map(encode_value).unwrap_or_default();
        encode_key(2, WireType::LengthDelimited, &mut entry);
        encode_varint(value.len() as u64, &mut entry);
        entry.extend_from_slice(&value);
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(entry.len() as u64, &mut out);
        out.extend_from_slice(&entry);
    }
    out
}

fn encode_value(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let nested = |tag: u32, bytes: Vec<u8>, out: &mut Vec<u8>| {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(bytes.len() as u64, out);
        out.extend_from_slice(&bytes);
    };
    match &v.kind {
        None => {}
        Some(Kind::NullValue(n)) => {
            encode_key(1, WireType::Varint, &mut out);
            encode_varint(*n as u64, &mut out);
        }
        Some(Kind::NumberValue(n)) => {
            encode_key(2, WireType::SixtyFourBit, &mut out);
            out.extend_from_slice(&n.to_le_bytes());
        }
        Some(Kind::StringValue(s)) => nested(3, s.as_bytes().to_vec(), &mut out),
        Some(Kind::BoolValue(b)) => {
            encode_key(4, WireType::Varint, &mut out);
            encode_varint(u64::from(*b), &mut out);
        }
        Some(Kind::StructValue(s)) => nested(5, encode_struct(s), &mut out),
        Some(Kind::ListValue(ListValue { values })) => {
            let mut list = Vec::new();
            for item in values {
                nested(1, encode_value(item), &mut list);
            }
            nested(6, list, &mut out);
        }
    }
    out
}
