use super::codec::{Decode, HEADER_LEN, MAGIC, decode};
use super::*;
use envoy_types::pb::google::protobuf::Any;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A frame made by the protobuf library (Python's, from `google.protobuf.struct_pb2`) the way
/// istio-proxy builds it: node id `sidecar~10.0.0.1~productpage-v1-123.default~default.svc.cluster.local`,
/// metadata NAME, NAMESPACE, CLUSTER_ID and LABELS {app, version}.
const PROTOBUF_FRAME: &str = "3d2304670000013b0a2a747970652e676f6f676c65617069732e636f6d2f676f6f676c652e70726f746f6275662e537472756374128c020a630a18782d656e766f792d706565722d6d657461646174612d696412471a45736964656361727e31302e302e302e317e70726f64756374706167652d76312d3132332e64656661756c747e64656661756c742e7376632e636c75737465722e6c6f63616c0aa4010a15782d656e766f792d706565722d6d65746164617461128a012a87010a1a0a0a434c55535445525f4944120c1a0a4b756265726e657465730a330a064c4142454c5312292a270a140a03617070120d1a0b70726f64756374706167650a0f0a0776657273696f6e12041a0276310a160a094e414d45535041434512091a0764656661756c740a1c0a044e414d4512141a1270726f64756374706167652d76312d313233";

/// istio-proxy's `MetadataExchangeFound` test input: a Struct without the
/// `x-envoy-peer-metadata` keys, followed by the payload "world".
const ISTIO_TEST_FRAME: &str = "3d230467000000660a2a747970652e676f6f676c65617069732e636f6d2f676f6f676c652e70726f746f6275662e53747275637412380a160a096e616d65737061636512091a0764656661756c740a1e0a066c6162656c7312141a127b6170702c2070726f64756374706167657d776f726c64";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn s(v: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(v.into())),
    }
}

fn productpage() -> Struct {
    let labels = Struct {
        fields: [
            ("app", "productpage"),
            ("version", "v1"),
            ("pod-template-hash", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), s(v)))
        .collect(),
    };
    let mut md = Struct::default();
    md.fields.insert("NAME".into(), s("productpage-v1-123"));
    md.fields.insert("NAMESPACE".into(), s("default"));
    md.fields.insert("CLUSTER_ID".into(), s("Kubernetes"));
    md.fields.insert("ISTIO_VERSION".into(), s("1.28.0"));
    md.fields.insert(
        "LABELS".into(),
        Value {
            kind: Some(Kind::StructValue(labels)),
        },
    );
    md
}

const ID: &str = "sidecar~10.0.0.1~productpage-v1-123.default~default.svc.cluster.local";

#[test]
fn decodes_frames_made_by_protobuf() {
    let frame = hex(PROTOBUF_FRAME);
    let Decode::Done { consumed, peer } = decode(&frame) else {
        panic!("not decoded");
    };
    assert_eq!(consumed, frame.len());
    assert_eq!(peer.id.as_deref(), Some(ID));
    assert_eq!(peer.get("NAME"), Some("productpage-v1-123"));
    assert_eq!(peer.get("NAMESPACE"), Some("default"));
    assert_eq!(peer.label("app"), Some("productpage"));
    assert_eq!(peer.label("version"), Some("v1"));
}

#[test]
fn the_istio_test_frame_leaves_the_payload() {
    let frame = hex(ISTIO_TEST_FRAME);
    let Decode::Done { consumed, peer } = decode(&frame) else {
        panic!("not decoded");
    };
    assert_eq!(&frame[consumed..], b"world");
    assert_eq!(peer.id, None);
    assert!(peer.metadata.fields.is_empty());
}

#[test]
fn our_frame_matches_protobuf_and_is_deterministic() {
    let node = LocalNode::from_parts(ID.into(), filter_node_metadata(&productpage()));
    // Only the exchanged keys and labels remain.
    assert!(!node.metadata.fields.contains_key("ISTIO_VERSION"));
    let ours = node.frame().to_vec();
    let theirs = hex(PROTOBUF_FRAME);
    assert_eq!(ours.len(), theirs.len());
    assert_eq!(&ours[..4], &MAGIC.to_be_bytes());
    // Same content (protobuf's Python sorts map keys differently from C++; we sort as C++).
    let (Decode::Done { peer: a, .. }, Decode::Done { peer: b, .. }) =
        (decode(&ours), decode(&theirs))
    else {
        panic!("not decoded");
    };
    assert_eq!(a, b);
    // Deterministic across differently ordered maps.
    for _ in 0..8 {
        let again = LocalNode::from_parts(ID.into(), filter_node_metadata(&productpage()));
        assert_eq!(again.frame(), node.frame());
    }
    // Decodes with a generic protobuf decoder too.
    let any = Any::decode(&ours[HEADER_LEN..]).unwrap();
    assert_eq!(any.type_url, codec::STRUCT_TYPE_URL);
    assert_eq!(
        Struct::decode(any.value.as_slice()).unwrap().fields.len(),
        2,
        "metadata and id"
    );
}

#[test]
fn malformed_input_never_panics() {
    let frame = hex(PROTOBUF_FRAME);
    for n in 0..frame.len() {
        let d = decode(&frame[..n]);
        assert!(
            matches!(d, Decode::NeedMore | Decode::Invalid { .. }),
            "{n}: {d:?}"
        );
    }
    let mut huge = MAGIC.to_be_bytes().to_vec();
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(decode(&huge), Decode::TooLarge(u32::MAX));
    let mut garbage = MAGIC.to_be_bytes().to_vec();
    garbage.extend_from_slice(&3u32.to_be_bytes());
    garbage.extend_from_slice(&[0xff, 0xff, 0xff, b'x']);
    assert!(matches!(
        decode(&garbage),
        Decode::Invalid {
            consumed: HEADER_LEN,
            ..
        }
    ));
    assert!(matches!(
        decode(b"GET / HTTP/1.1\r\n"),
        Decode::Invalid { consumed: 0, .. }
    ));
    // Corrupt every byte of a real frame in turn, and pseudo-random junk after a valid header.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for i in 0..frame.len() {
        let mut f = frame.clone();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        f[i] ^= (seed as u8) | 1;
        let _ = decode(&f);
        let mut junk = frame[..HEADER_LEN].to_vec();
        junk.extend((0..frame.len()).map(|j| (seed >> (j % 56)) as u8));
        let _ = decode(&junk);
    }
    assert!(PeerMetadata::from_headers(Some(b"%%%"), None).is_none());
}

#[test]
fn http_headers_carry_the_same_metadata() {
    let node = LocalNode::from_parts(ID.into(), filter_node_metadata(&productpage()));
    let peer = PeerMetadata::from_headers(Some(node.header_value().as_bytes()), Some(ID)).unwrap();
    assert_eq!(peer.get("NAME"), Some("productpage-v1-123"));
    assert_eq!(peer.label("version"), Some("v1"));
    assert_eq!(peer.id.as_deref(), Some(ID));
}

#[tokio::test]
async fn both_sides_exchange_then_pass_data() {
    let a_node = LocalNode::from_parts("a~1".into(), filter_node_metadata(&productpage()));
    let b_node = LocalNode::from_parts("b~2".into(), Struct::default());
    let (a, b) = tokio::io::duplex(4096);
    let mut a = wrap(a, Some(ALPN), Some(&a_node));
    let mut b = wrap(b, Some(ALPN), Some(&b_node));
    a.write_all(b"hello").await.unwrap();
    a.flush().await.unwrap();
    b.flush().await.unwrap();
    let mut buf = [0u8; 5];
    b.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello");
    b.write_all(b"back").await.unwrap();
    let mut back = [0u8; 4];
    a.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"back");
    assert_eq!(
        b.peer_metadata().metadata().unwrap().get("NAME"),
        Some("productpage-v1-123")
    );
    assert_eq!(
        a.peer_metadata().metadata().unwrap().id.as_deref(),
        Some("b~2")
    );
}

#[tokio::test]
async fn a_peer_without_the_exchange_is_passed_through() {
    let node = LocalNode::from_parts("a~1".into(), Struct::default());
    let (a, mut b) = tokio::io::duplex(4096);
    let mut a = wrap(a, Some(ALPN), Some(&node));
    b.write_all(b"plain bytes").await.unwrap();
    drop(b);
    let mut out = Vec::new();
    a.read_to_end(&mut out).await.unwrap();
    assert_eq!(out, b"plain bytes");
    assert!(matches!(
        a.peer_metadata().get(),
        Some(PeerOutcome::Absent(_))
    ));
    // Without the negotiated ALPN nothing is added or removed.
    let (c, mut d) = tokio::io::duplex(64);
    let mut c = wrap(c, Some(b"h2"), Some(&node));
    c.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    d.read_exact(&mut one).await.unwrap();
    assert_eq!(&one, b"x");
    assert!(c.peer_metadata().get().is_none());
}

#[tokio::test]
async fn an_oversized_frame_fails_the_read() {
    let node = LocalNode::from_parts("a~1".into(), Struct::default());
    let (a, mut b) = tokio::io::duplex(64);
    let mut a = wrap(a, Some(ALPN), Some(&node));
    let mut frame = MAGIC.to_be_bytes().to_vec();
    frame.extend_from_slice(&(64u32 << 20).to_be_bytes());
    b.write_all(&frame).await.unwrap();
    let mut buf = [0u8; 1];
    let e = a.read(&mut buf).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
}
