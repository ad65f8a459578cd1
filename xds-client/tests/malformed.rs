//! Malformed input never panics and never reaches the consumer: random bytes in `Any.value`,
//! a wrong type URL inside a response, unknown types, types not subscribed to, duplicate
//! names. Each is NACKed with a reason an operator can read, and the stream stays up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Updates, ads_config, recorder, start};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryResponse, DiscoveryResponse, Resource as WireResource,
};
use envoy_types::pb::google::protobuf::Any;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use xds_client::testing::{XdsServer, cluster, delta_response, listener, sotw_response};
use xds_client::{ApiType, ResourceType};

struct Fixture {
    server: XdsServer,
    updates: Updates,
    _client: common::Running,
}

async fn fixture(api_type: ApiType) -> Fixture {
    let server = XdsServer::bind_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (consumer, updates) = recorder();
    let client = start(ads_config(server.transport(), api_type), consumer);
    match api_type {
        ApiType::Grpc => {
            server.next_ads_sotw().await.unwrap();
            server.next_ads_sotw().await.unwrap();
        }
        ApiType::DeltaGrpc => {
            server.next_ads_delta().await.unwrap();
            server.next_ads_delta().await.unwrap();
        }
    }
    Fixture {
        server,
        updates,
        _client: client,
    }
}

/// Pushes a SotW response and returns the NACK message (or `None` for an ACK).
async fn answer(server: &XdsServer, response: DiscoveryResponse) -> Option<String> {
    let nonce = response.nonce.clone();
    server.push_ads_sotw(response).unwrap();
    let reply = server.next_ads_sotw().await.unwrap();
    assert_eq!(reply.stream, 1, "the stream must survive bad input");
    assert_eq!(reply.request.response_nonce, nonce);
    reply.request.error_detail.map(|e| e.message)
}

async fn answer_delta(server: &XdsServer, response: DeltaDiscoveryResponse) -> Option<String> {
    let nonce = response.nonce.clone();
    server.push_ads_delta(response).unwrap();
    let reply = server.next_ads_delta().await.unwrap();
    assert_eq!(reply.stream, 1, "the stream must survive bad input");
    assert_eq!(reply.request.response_nonce, nonce);
    reply.request.error_detail.map(|e| e.message)
}

#[test]
fn random_bytes_in_any_value_never_panic() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut f = runtime.block_on(fixture(ApiType::Grpc));
    let mut runner = TestRunner::new(Config {
        cases: 128,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (0usize..5, proptest::collection::vec(any::<u8>(), 0..256));
    let count = std::cell::Cell::new(0u64);
    runner
        .run(&strategy, |(type_index, bytes)| {
            count.set(count.get() + 1);
            let count = count.get();
            let resource_type = ResourceType::ALL[type_index];
            let response = DiscoveryResponse {
                version_info: format!("v{count}"),
                resources: vec![Any {
                    type_url: resource_type.type_url().into(),
                    value: bytes,
                }],
                type_url: resource_type.type_url().into(),
                nonce: format!("n{count}"),
                ..Default::default()
            };
            let reply = runtime.block_on(answer(&f.server, response));
            if matches!(
                resource_type,
                ResourceType::Cluster | ResourceType::Listener
            ) {
                // A NACK names the resource; an ACK means the bytes happened to be a valid
                // message with a name.
                if let Some(message) = reply {
                    prop_assert!(message.starts_with("resource #0 "), "{message}");
                }
            } else {
                // Named types are not subscribed here: always a NACK saying so.
                let message = reply.unwrap_or_default();
                prop_assert!(message.contains("has not subscribed"), "{message:?}");
            }
            Ok(())
        })
        .unwrap();
    // Drain what the consumer saw: only successfully decoded resources, each with a name.
    while let Some(update) = f.updates.try_next() {
        assert!(update.resources.iter().all(|r| !r.name.is_empty()));
    }
}

#[test]
fn random_bytes_in_delta_resources_never_panic() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let f = runtime.block_on(fixture(ApiType::DeltaGrpc));
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = proptest::collection::vec(any::<u8>(), 0..256);
    let count = std::cell::Cell::new(0u64);
    runner
        .run(&strategy, |bytes| {
            count.set(count.get() + 1);
            let count = count.get();
            let response = DeltaDiscoveryResponse {
                resources: vec![WireResource {
                    name: format!("l{count}"),
                    version: "1".into(),
                    resource: Some(Any {
                        type_url: xds_client::LISTENER_TYPE_URL.into(),
                        value: bytes,
                    }),
                    ..Default::default()
                }],
                type_url: xds_client::LISTENER_TYPE_URL.into(),
                nonce: format!("n{count}"),
                ..Default::default()
            };
            if let Some(message) = runtime.block_on(answer_delta(&f.server, response)) {
                prop_assert!(
                    message.starts_with("resource #0 is not a valid"),
                    "{message}"
                );
            }
            Ok(())
        })
        .unwrap();
}

#[tokio::test]
async fn a_wrong_type_url_inside_a_response_is_nacked_by_name() {
    let mut f = fixture(ApiType::Grpc).await;
    let mut response = sotw_response(ResourceType::Listener, "1", "n1", &[listener("ok")]);
    response.resources.push(cluster("sneaky").to_any());
    assert_eq!(
        answer(&f.server, response).await.unwrap(),
        "resource #1 has type URL type.googleapis.com/envoy.config.cluster.v3.Cluster, which \
         does not match the response's type URL \
         type.googleapis.com/envoy.config.listener.v3.Listener"
    );
    f.updates.assert_none();
}

#[tokio::test]
async fn an_unknown_type_is_nacked() {
    let mut f = fixture(ApiType::Grpc).await;
    let type_url = "type.googleapis.com/istio.networking.nds.v1.NameTable";
    let response = DiscoveryResponse {
        version_info: "1".into(),
        type_url: type_url.into(),
        nonce: "n1".into(),
        ..Default::default()
    };
    let message = answer(&f.server, response).await.unwrap();
    assert!(
        message.starts_with(&format!("unsupported resource type {type_url}")),
        "{message}"
    );
    f.updates.assert_none();

    // Delta too.
    let f = fixture(ApiType::DeltaGrpc).await;
    let response = DeltaDiscoveryResponse {
        type_url: type_url.into(),
        nonce: "d1".into(),
        ..Default::default()
    };
    let message = answer_delta(&f.server, response).await.unwrap();
    assert!(
        message.starts_with("unsupported resource type"),
        "{message}"
    );
}

#[tokio::test]
async fn a_type_not_subscribed_to_is_nacked() {
    let mut f = fixture(ApiType::DeltaGrpc).await;
    let response = delta_response(
        ResourceType::RouteConfiguration,
        "n1",
        &[(xds_client::testing::route_configuration("r"), "1")],
        &[],
    );
    let message = answer_delta(&f.server, response).await.unwrap();
    assert_eq!(
        message,
        "received type.googleapis.com/envoy.config.route.v3.RouteConfiguration but this client \
         has not subscribed to it"
    );
    f.updates.assert_none();
}

#[tokio::test]
async fn duplicate_names_are_nacked() {
    let mut f = fixture(ApiType::Grpc).await;
    let response = sotw_response(
        ResourceType::Cluster,
        "1",
        "n1",
        &[cluster("a"), cluster("a")],
    );
    assert_eq!(
        answer(&f.server, response).await.unwrap(),
        "duplicate resource name a in one response"
    );
    f.updates.assert_none();
}
