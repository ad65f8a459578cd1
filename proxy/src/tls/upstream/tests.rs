use super::*;
use crate::proto_test_util::from_yaml;
use crate::tls::secrets::testing::{
    CLIENT_ID, Ca, ISTIO_INBOUND, SERVER_ID, istio_mutual, mesh_store,
};
use crate::tls::{DownstreamTls, DownstreamTlsConfig, SecretStore};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use tokio::io::AsyncReadExt;

fn resources(store: &SecretStore, node: Option<LocalNode>) -> TlsResources {
    TlsResources {
        secrets: store.clone(),
        node: node.map(Arc::new),
    }
}

fn server(store: &SecretStore, node: Option<LocalNode>) -> DownstreamTls {
    let mut config = DownstreamTlsConfig::from_proto(&from_yaml(ISTIO_INBOUND)).unwrap();
    config.peer_exchange = true;
    DownstreamTls::new(config, &resources(store, node), None).unwrap()
}

fn client(store: &SecretStore, expected: &str, node: Option<LocalNode>) -> UpstreamTls {
    let ctx: UpstreamTlsContext = from_yaml(&istio_mutual(expected));
    UpstreamTls::from_proto(&ctx, &resources(store, node), true, None).unwrap()
}

async fn connect(
    server: &DownstreamTls,
    client: &UpstreamTls,
) -> Result<ClientStream<tokio::io::DuplexStream>, HandshakeError> {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (accepted, connected) = tokio::join!(server.accept_stream(a), client.connect(b, None));
    // Keep the server side alive long enough for the client to finish.
    drop(accepted);
    connected
}

#[tokio::test]
async fn istio_mutual_verifies_the_destination_spiffe_id() {
    let ca = Ca::new("cluster.local");
    let server = server(&mesh_store(&ca, SERVER_ID), None);
    let store = mesh_store(&ca, CLIENT_ID);
    assert!(
        connect(&server, &client(&store, SERVER_ID, None))
            .await
            .is_ok()
    );

    let e = connect(
        &server,
        &client(&store, "spiffe://cluster.local/ns/default/sa/other", None),
    )
    .await
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "TLS handshake failed: invalid peer certificate: peer certificate SANs \
         [\"spiffe://cluster.local/ns/default/sa/server\"] match none of the configured \
         subject_alt_names"
    );

    let other = Ca::new("other.local");
    let foreign_server = server_with(&other, SERVER_ID);
    let e = connect(&foreign_server, &client(&store, SERVER_ID, None))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
}

fn server_with(ca: &Ca, id: &str) -> DownstreamTls {
    let store = mesh_store(ca, id);
    // The server trusts our CA so that only the client's verification can fail.
    server(&store, None)
}

#[tokio::test]
async fn metadata_exchange_ours_to_ours() {
    let ca = Ca::new("cluster.local");
    let mut md = Struct::default();
    md.fields.insert(
        "NAME".into(),
        Value {
            kind: Some(Kind::StringValue("server-pod".into())),
        },
    );
    let server_node = LocalNode::from_parts("sidecar~10.0.0.2~server".into(), md);
    let client_node = LocalNode::from_parts("sidecar~10.0.0.1~client".into(), Struct::default());
    let server = server(&mesh_store(&ca, SERVER_ID), Some(server_node.clone()));
    let client = client(&mesh_store(&ca, CLIENT_ID), SERVER_ID, Some(client_node));
    assert_eq!(client.alpn_protocols()[0], peer_exchange::ALPN);
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (accepted, connected) = tokio::join!(server.accept_stream(a), client.connect(b, None));
    let (tls, peer) = accepted.unwrap();
    assert_eq!(peer.alpn.as_deref(), Some(peer_exchange::ALPN));
    let mut s = peer_exchange::wrap(tls, peer.alpn.as_deref(), Some(&server_node));
    let mut c = connected.unwrap();
    c.write_all(b"tcp payload").await.unwrap();
    c.flush().await.unwrap();
    s.flush().await.unwrap();
    let mut buf = [0u8; 11];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"tcp payload");
    assert_eq!(
        s.peer_metadata().metadata().unwrap().id.as_deref(),
        Some("sidecar~10.0.0.1~client")
    );
    s.write_all(b"reply").await.unwrap();
    s.flush().await.unwrap();
    let mut reply = [0u8; 5];
    c.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"reply");
    assert_eq!(
        c.peer_metadata().metadata().unwrap().get("NAME"),
        Some("server-pod")
    );
}

#[test]
fn the_exchange_alpn_is_offered_only_with_a_node_and_the_cluster_filter() {
    let ca = Ca::new("cluster.local");
    let store = mesh_store(&ca, CLIENT_ID);
    let ctx: UpstreamTlsContext = from_yaml(&istio_mutual(SERVER_ID));
    let node = Some(LocalNode::from_parts("n".into(), Struct::default()));
    let without_filter =
        UpstreamTls::from_proto(&ctx, &resources(&store, node.clone()), false, None).unwrap();
    assert_eq!(without_filter.alpn_protocols(), [b"istio".to_vec()]);
    let without_node = UpstreamTls::from_proto(&ctx, &resources(&store, None), true, None).unwrap();
    assert_eq!(without_node.alpn_protocols(), [b"istio".to_vec()]);
    let with = UpstreamTls::from_proto(&ctx, &resources(&store, node), true, None).unwrap();
    assert_eq!(with.alpn_protocols().len(), 2);
    assert_eq!(
        without_filter
            .secret_refs()
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["default", "ROOTCA"]
    );
}

#[test]
fn invalid_contexts_name_the_field() {
    let err = |yaml: &str| {
        let ctx: UpstreamTlsContext = from_yaml(yaml);
        UpstreamTlsConfig::from_proto(&ctx).unwrap_err().to_string()
    };
    assert!(err("sni: \"bad name!\"").starts_with("sni: \"bad name!\" is not a valid server name"));
    assert_eq!(
        err("allow_renegotiation: true"),
        "allow_renegotiation: renegotiation is not supported"
    );
    assert!(
        err("common_tls_context: {tls_params: {tls_maximum_protocol_version: TLSv1_1}}")
            .starts_with("common_tls_context.tls_params.tls_maximum_protocol_version: TLSv1_1 is not supported")
    );
    assert_eq!(
        err("common_tls_context: {combined_validation_context: {default_validation_context: {}}}"),
        "common_tls_context.combined_validation_context.validation_context_sds_secret_config: is required"
    );
    // Istio's outbound SNI has underscores; it must be accepted.
    let ctx: UpstreamTlsContext = from_yaml(&istio_mutual(SERVER_ID));
    assert!(UpstreamTlsConfig::from_proto(&ctx).is_ok());
}

#[tokio::test]
async fn a_missing_secret_fails_the_connection_instead_of_going_plaintext() {
    let store = SecretStore::new();
    let client = client(&store, SERVER_ID, None);
    assert_eq!(client.readiness(), Err(NotReady::Missing("default".into())));
    let (a, _b) = tokio::io::duplex(1024);
    let e = client.connect(a, None).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "TLS context not ready: secret \"default\" has not been received yet"
    );
}
