use super::*;
use crate::proto_test_util::from_yaml;
use crate::tls::UpstreamTls;
use crate::tls::secrets::testing::{
    CLIENT_ID, Ca, ISTIO_INBOUND, SERVER_ID, istio_mutual, mesh_store,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

fn server(store: &crate::tls::SecretStore) -> DownstreamTls {
    let resources = TlsResources {
        secrets: store.clone(),
        node: None,
    };
    DownstreamTls::from_proto(&from_yaml(ISTIO_INBOUND), &resources, None).unwrap()
}

fn client_yaml(store: &crate::tls::SecretStore, yaml: &str) -> UpstreamTls {
    let resources = TlsResources {
        secrets: store.clone(),
        node: None,
    };
    let ctx: UpstreamTlsContext = from_yaml(yaml);
    UpstreamTls::from_proto(&ctx, &resources, false, None).unwrap()
}

fn client(store: &crate::tls::SecretStore) -> UpstreamTls {
    client_yaml(store, &istio_mutual(SERVER_ID))
}

type Accepted = Result<(TlsStream<DuplexStream>, PeerTls), HandshakeError>;
type Connected = Result<crate::tls::ClientStream<DuplexStream>, HandshakeError>;

async fn handshake(
    server: &DownstreamTls,
    client: &UpstreamTls,
    alpn: Option<&[Vec<u8>]>,
) -> (Accepted, Connected) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    tokio::join!(server.accept_stream(a), client.connect(b, alpn))
}

#[tokio::test]
async fn istio_inbound_terminates_mtls_and_knows_the_peer() {
    let ca = Ca::new("cluster.local");
    let server = server(&mesh_store(&ca, SERVER_ID));
    let client = client(&mesh_store(&ca, CLIENT_ID));
    let (accepted, connected) = handshake(&server, &client, None).await;
    let (mut s, peer) = accepted.unwrap();
    let mut c = connected.unwrap();
    assert_eq!(peer.principal(), Some(CLIENT_ID));
    assert_eq!(peer.local_uri_sans, [SERVER_ID]);
    assert_eq!(peer.version, "TLSv1.3");
    assert!(peer.cipher.starts_with("TLS_"), "{}", peer.cipher);
    let cert = peer.peer_certificate.as_ref().unwrap();
    assert_eq!(cert.subject, "O=cluster.local");
    assert!(cert.pem.contains("BEGIN CERTIFICATE"));
    // The client offered [istio] (no metadata exchange without a node) and the server
    // [h2, http/1.1]: no common protocol, so none is negotiated, as BoringSSL does.
    assert_eq!(peer.alpn, None);
    assert_eq!(
        c.info().peer_certificate.as_ref().unwrap().uri_sans,
        [SERVER_ID]
    );
    c.write_all(b"ping").await.unwrap();
    c.flush().await.unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
}

#[tokio::test]
async fn the_istio_alpn_override_negotiates_http() {
    let ca = Ca::new("cluster.local");
    let server = server(&mesh_store(&ca, SERVER_ID));
    let client = client(&mesh_store(&ca, CLIENT_ID));
    let http11: Vec<Vec<u8>> = vec![
        b"istio-http/1.1".to_vec(),
        b"istio".to_vec(),
        b"http/1.1".to_vec(),
    ];
    let (accepted, connected) = handshake(&server, &client, Some(&http11)).await;
    assert_eq!(accepted.unwrap().1.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(connected.unwrap().alpn(), Some(&b"http/1.1"[..]));
    let h2: Vec<Vec<u8>> = vec![b"istio-h2".to_vec(), b"istio".to_vec(), b"h2".to_vec()];
    let (accepted, _) = handshake(&server, &client, Some(&h2)).await;
    assert_eq!(accepted.unwrap().1.alpn.as_deref(), Some(&b"h2"[..]));
}

#[tokio::test]
async fn clients_without_a_mesh_certificate_are_refused() {
    let ca = Ca::new("cluster.local");
    let store = mesh_store(&ca, SERVER_ID);
    let scope = crate::stats::Store::new(None)
        .unwrap()
        .scope("listener.test.");
    let stats = SslStats::new(&scope);
    let resources = TlsResources {
        secrets: store.clone(),
        node: None,
    };
    let server =
        DownstreamTls::from_proto(&from_yaml(ISTIO_INBOUND), &resources, Some(stats.clone()))
            .unwrap();

    // No client certificate (a plain TLS client).
    let no_cert = client_yaml(
        &mesh_store(&ca, CLIENT_ID),
        &istio_mutual(SERVER_ID).replace(
            "  tls_certificate_sds_secret_configs: [{name: default, sds_config: {ads: {}, resource_api_version: V3}}]\n",
            "",
        ),
    );
    let (accepted, _) = handshake(&server, &no_cert, None).await;
    let e = accepted.unwrap_err();
    assert!(
        matches!(
            e,
            HandshakeError::Tls(rustls::Error::NoCertificatesPresented)
        ),
        "{e}"
    );
    assert_eq!(stats.fail_verify_no_cert.value(), 1);

    // A certificate from another CA (Istio's self-signed roots all share one name, so
    // webpki finds the right issuer name and a wrong signature).
    let other = Ca::new("cluster.local");
    let store_other = mesh_store(&other, CLIENT_ID);
    store_other.apply(&[ca.root_secret("ROOTCA")]).unwrap();
    let (accepted, _) = handshake(&server, &client(&store_other), None).await;
    let e = accepted.unwrap_err();
    assert!(e.to_string().contains("BadSignature"), "{e}");
    assert!(e.is_verify_failure());
    assert_eq!(stats.fail_verify_error.value(), 1);

    // Our CA, but outside the trust domain the SAN prefix allows.
    let evil = mesh_store(&ca, "spiffe://evil.local/ns/default/sa/client");
    let (accepted, _) = handshake(&server, &client(&evil), None).await;
    let e = accepted.unwrap_err();
    assert!(
        e.to_string()
            .contains("match none of the configured subject_alt_names"),
        "{e}"
    );
    assert_eq!(stats.fail_verify_san.value(), 1);

    // Plaintext.
    let (mut a, b) = tokio::io::duplex(1024);
    a.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let e = server.accept_stream(b).await.unwrap_err();
    assert!(
        matches!(e, HandshakeError::Io(_) | HandshakeError::Tls(_)),
        "{e}"
    );
    assert_eq!(stats.handshake.value(), 0);
    assert_eq!(stats.connection_error.value(), 4);
}

#[tokio::test]
async fn not_ready_until_the_secrets_arrive() {
    let ca = Ca::new("cluster.local");
    let store = crate::tls::SecretStore::new();
    let server = server(&store);
    assert_eq!(server.readiness(), Err(NotReady::Missing("default".into())));
    let refs: Vec<String> = server.secret_refs().into_iter().map(|r| r.name).collect();
    assert_eq!(refs, ["default", "ROOTCA"]);
    let (a, _b) = tokio::io::duplex(1024);
    assert!(matches!(
        server.accept_stream(a).await,
        Err(HandshakeError::NotReady(NotReady::Missing(_)))
    ));
    store
        .apply(&[ca.leaf(SERVER_ID).secret("default")])
        .unwrap();
    assert_eq!(server.readiness(), Err(NotReady::Missing("ROOTCA".into())));
    store.apply(&[ca.leaf(SERVER_ID).secret("ROOTCA")]).unwrap();
    assert!(matches!(
        server.readiness(),
        Err(NotReady::WrongKind { .. })
    ));
    store.apply(&[ca.root_secret("ROOTCA")]).unwrap();
    assert!(server.is_ready());
}

#[tokio::test]
async fn rotation_serves_new_handshakes_and_spares_live_sessions() {
    let ca = Ca::new("cluster.local");
    let server_store = mesh_store(&ca, SERVER_ID);
    let server = server(&server_store);
    let client = client_yaml(
        &mesh_store(&ca, CLIENT_ID),
        &istio_mutual(SERVER_ID).replace(
            "exact: \"spiffe://cluster.local/ns/default/sa/server\"",
            "prefix: \"spiffe://cluster.local/\"",
        ),
    );
    let (first_s, first_c) = handshake(&server, &client, None).await;
    let (mut s1, _) = first_s.unwrap();
    let mut c1 = first_c.unwrap();
    assert_eq!(
        c1.info().peer_certificate.as_ref().unwrap().uri_sans,
        [SERVER_ID]
    );

    let rotated = "spiffe://cluster.local/ns/default/sa/server-v2";
    server_store
        .apply(&[ca.leaf(rotated).secret("default")])
        .unwrap();
    let (second_s, second_c) = handshake(&server, &client, None).await;
    assert_eq!(second_s.unwrap().1.local_uri_sans, [rotated]);
    assert_eq!(
        second_c
            .unwrap()
            .info()
            .peer_certificate
            .as_ref()
            .unwrap()
            .uri_sans,
        [rotated]
    );

    // The session from before the rotation still carries data both ways.
    c1.write_all(b"still here").await.unwrap();
    c1.flush().await.unwrap();
    let mut buf = [0u8; 10];
    s1.read_exact(&mut buf).await.unwrap();
    s1.write_all(b"ok").await.unwrap();
    s1.flush().await.unwrap();
    let mut ok = [0u8; 2];
    c1.read_exact(&mut ok).await.unwrap();
    assert_eq!(&ok, b"ok");
}

#[tokio::test]
async fn require_sni_refuses_clients_without_it() {
    let ca = Ca::new("cluster.local");
    let resources = TlsResources {
        secrets: mesh_store(&ca, SERVER_ID),
        node: None,
    };
    let server = DownstreamTls::from_proto(
        &from_yaml(&format!("{ISTIO_INBOUND}require_sni: true\n")),
        &resources,
        None,
    )
    .unwrap();
    let no_sni = client_yaml(
        &mesh_store(&ca, CLIENT_ID),
        &istio_mutual(SERVER_ID).replace(
            "sni: outbound_.9080_.v1_.productpage.default.svc.cluster.local",
            "",
        ),
    );
    let (accepted, _) = handshake(&server, &no_sni, None).await;
    assert!(matches!(accepted, Err(HandshakeError::NoSni)));
    let (accepted, _) = handshake(&server, &client(&mesh_store(&ca, CLIENT_ID)), None).await;
    assert!(accepted.is_ok());
}

#[test]
fn the_exchange_alpn_is_advertised_only_when_the_chain_runs_it() {
    let ca = Ca::new("cluster.local");
    let node = Arc::new(crate::tls::LocalNode::from_parts(
        "sidecar~1".into(),
        Default::default(),
    ));
    let resources = TlsResources {
        secrets: mesh_store(&ca, SERVER_ID),
        node: Some(node),
    };
    let mut config = DownstreamTlsConfig::from_proto(&from_yaml(ISTIO_INBOUND)).unwrap();
    let without = DownstreamTls::new(config.clone(), &resources, None).unwrap();
    assert_eq!(
        without.alpn_protocols(),
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    config.peer_exchange = true;
    let with = DownstreamTls::new(config, &resources, None).unwrap();
    assert_eq!(with.alpn_protocols()[0], b"istio-peer-exchange");
}

#[test]
fn invalid_contexts_name_the_field() {
    let err = |yaml: &str| {
        DownstreamTlsConfig::from_proto(&from_yaml(yaml))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err("common_tls_context: {alpn_protocols: [h2]}"),
        "common_tls_context: a server context needs a certificate: set tls_certificates or \
         tls_certificate_sds_secret_configs"
    );
    let sds = "common_tls_context: {tls_certificate_sds_secret_configs: [{name: default, sds_config: {ads: {}}}]";
    assert!(
        err(&format!("{sds}}}\nrequire_client_certificate: true")).starts_with(
            "require_client_certificate: require_client_certificate needs a validation context"
        )
    );
    assert!(
        err(&format!(
            "{sds}, tls_params: {{cipher_suites: [RC4-MD5]}}}}"
        ))
        .starts_with(
            "common_tls_context.tls_params.cipher_suites: unknown cipher suite \"RC4-MD5\""
        )
    );
    assert_eq!(
        err(&format!("{sds}, custom_handshaker: {{name: x}}}}")),
        "common_tls_context.custom_handshaker: is not supported"
    );
    assert!(
        err(&format!(
            "{sds}}}\nsession_ticket_keys: {{keys: [{{inline_string: abc}}]}}"
        ))
        .starts_with("session_ticket_keys: session ticket keys are not supported")
    );
    assert!(
        err(&format!("{sds}}}\nocsp_staple_policy: MUST_STAPLE"))
            .starts_with("ocsp_staple_policy: only LENIENT_STAPLING")
    );
    assert!(
        err("common_tls_context: {tls_certificates: [{certificate_chain: {inline_string: junk}, private_key: {inline_string: junk}}]}")
            .starts_with("common_tls_context.tls_certificates[0]: certificate_chain: not PEM")
    );
    assert!(
        err(&format!(
            "{sds}, validation_context: {{trusted_ca: {{inline_string: junk}}}}}}"
        ))
        .starts_with("common_tls_context.validation_context: trusted_ca: not PEM")
    );
}

#[tokio::test]
async fn accept_takes_a_prefixed_tcp_stream() {
    let ca = Ca::new("cluster.local");
    let server = server(&mesh_store(&ca, SERVER_ID));
    let client = client(&mesh_store(&ca, CLIENT_ID));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut c = client.connect(tcp, None).await.unwrap();
        c.write_all(b"hi").await.unwrap();
        c.flush().await.unwrap();
        c
    };
    let accept = async {
        let (tcp, _) = listener.accept().await.unwrap();
        // The TLS inspector has read the first 5 bytes (the record header).
        let mut tcp = tcp;
        let mut prefix = [0u8; 5];
        tcp.read_exact(&mut prefix).await.unwrap();
        let io = Prefixed::new(bytes::Bytes::copy_from_slice(&prefix), tcp);
        server.accept(io).await.unwrap()
    };
    let (_c, (mut io, peer)) = tokio::join!(connect, accept);
    assert!(matches!(io, DownstreamIo::Tls(_)));
    assert_eq!(peer.principal(), Some(CLIENT_ID));
    let mut buf = [0u8; 2];
    io.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hi");
}

#[tokio::test]
async fn a_new_trust_root_applies_to_the_next_handshake() {
    let old = Ca::new("cluster.local");
    let new = Ca::new("cluster.local");
    let store = mesh_store(&old, SERVER_ID);
    let server = server(&store);
    let old_client = client(&mesh_store(&old, CLIENT_ID));
    assert!(handshake(&server, &old_client, None).await.0.is_ok());
    // The server now trusts only a new root: clients with old certificates are refused.
    store.apply(&[new.root_secret("ROOTCA")]).unwrap();
    let (accepted, _) = handshake(&server, &old_client, None).await;
    assert!(accepted.unwrap_err().is_verify_failure());
    // Once it also has a certificate from the new root, clients of the new root get in, and
    // old clients refuse the server.
    store
        .apply(&[new.leaf(SERVER_ID).secret("default")])
        .unwrap();
    let (accepted, connected) = handshake(&server, &old_client, None).await;
    assert!(accepted.is_err());
    assert!(connected.unwrap_err().is_verify_failure());
    let new_client = client(&mesh_store(&new, CLIENT_ID));
    let (accepted, connected) = handshake(&server, &new_client, None).await;
    assert_eq!(accepted.unwrap().1.principal(), Some(CLIENT_ID));
    assert!(connected.is_ok());
}
