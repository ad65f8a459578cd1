//! Transports: a Unix domain socket in a temp dir (Istio's agent path style), and mutual TLS
//! over TCP with a test CA, including a server the client must refuse to trust.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ads_config, eventually, names, recorder, start};
use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use xds_client::testing::{ServerTls, XdsServer, listener, sotw_response};
use xds_client::{ApiType, Identity, PemSource, ResourceType, TlsConfig, Transport};

#[tokio::test]
async fn ads_over_a_unix_domain_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("etc/istio/proxy/XDS");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let server = XdsServer::bind_uds(&path).await.unwrap();
    let (consumer, mut updates) = recorder();
    let _client = start(
        ads_config(Transport::Uds(path), ApiType::DeltaGrpc),
        consumer,
    );

    server.next_ads_delta().await.unwrap();
    server.next_ads_delta().await.unwrap();
    server
        .push_ads_delta(xds_client::testing::delta_response(
            ResourceType::Listener,
            "n1",
            &[(listener("virtualInbound"), "1")],
            &[],
        ))
        .unwrap();
    let ack = server.next_ads_delta().await.unwrap().request;
    assert_eq!(ack.response_nonce, "n1");
    assert!(ack.error_detail.is_none());
    assert_eq!(names(&updates.next().await), ["virtualInbound"]);
}

struct Pki {
    ca_pem: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "test mesh CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);

    let server_key = KeyPair::generate().unwrap();
    let server_params =
        CertificateParams::new(vec!["istiod.istio-system.svc".to_string()]).unwrap();
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params.subject_alt_names = vec![SanType::URI(
        "spiffe://cluster.local/ns/default/sa/app"
            .try_into()
            .unwrap(),
    )];
    let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();

    Pki {
        ca_pem: ca_cert.pem(),
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client_cert.pem(),
        client_key: client_key.serialize_pem(),
    }
}

fn mtls_transport(server: &XdsServer, ca: &str, pki: &Pki) -> Transport {
    let Transport::Tcp { authority, .. } = server.transport() else {
        panic!("not TCP")
    };
    Transport::Tcp {
        authority,
        tls: Some(TlsConfig {
            ca: Some(PemSource::Inline(ca.as_bytes().to_vec())),
            identity: Some(Identity {
                cert_chain: PemSource::Inline(pki.client_cert.as_bytes().to_vec()),
                private_key: PemSource::Inline(pki.client_key.as_bytes().to_vec()),
            }),
            server_name: Some("istiod.istio-system.svc".into()),
        }),
    }
}

#[tokio::test]
async fn ads_over_mutual_tls() {
    let pki = pki();
    let server = XdsServer::bind_tls(
        "127.0.0.1:0".parse().unwrap(),
        ServerTls {
            cert_chain: pki.server_cert.clone().into_bytes(),
            private_key: pki.server_key.clone().into_bytes(),
            client_ca: Some(pki.ca_pem.clone().into_bytes()),
        },
    )
    .await
    .unwrap();
    let (consumer, mut updates) = recorder();
    let _client = start(
        ads_config(mtls_transport(&server, &pki.ca_pem, &pki), ApiType::Grpc),
        consumer,
    );

    server.next_ads_sotw().await.unwrap();
    server.next_ads_sotw().await.unwrap();
    server
        .push_ads_sotw(sotw_response(
            ResourceType::Listener,
            "1",
            "n1",
            &[listener("l")],
        ))
        .unwrap();
    assert_eq!(
        server.next_ads_sotw().await.unwrap().request.version_info,
        "1"
    );
    assert_eq!(names(&updates.next().await), ["l"]);
}

#[tokio::test]
async fn a_server_signed_by_another_ca_is_refused() {
    let pki = pki();
    let other = self::pki();
    let server = XdsServer::bind_tls(
        "127.0.0.1:0".parse().unwrap(),
        ServerTls {
            cert_chain: pki.server_cert.clone().into_bytes(),
            private_key: pki.server_key.clone().into_bytes(),
            client_ca: None,
        },
    )
    .await
    .unwrap();
    let (consumer, _updates) = recorder();
    let client = start(
        ads_config(mtls_transport(&server, &other.ca_pem, &pki), ApiType::Grpc),
        consumer,
    );
    // Each failed handshake is a connection failure for every subscription, and the client
    // keeps retrying.
    eventually(|| {
        matches!(
            client.handle.stats().get("cluster_manager.cds.update_failure"),
            Some(xds_client::StatValue::Counter(n)) if n >= 2
        )
    })
    .await;
    assert_eq!(
        client.handle.stats().get("control_plane.connected_state"),
        Some(xds_client::StatValue::Gauge(0))
    );
}
