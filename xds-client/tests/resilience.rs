//! Reconnects: the server is killed and restarted on the same address, closes streams
//! cleanly or with an error, or sends a message over the size limit. The consumer keeps its
//! config and is never told to drop anything the server did not remove; the client
//! resubscribes with what it has.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{ads_config, eventually, names, node, recorder, recorder_with, start};
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use xds_client::testing::{
    ServerAddress, XdsServer, cluster, cluster_load_assignment, delta_response, listener,
    sotw_response,
};
use xds_client::{ApiType, Backoff, ResourceType, StatValue};

const CDS: &str = xds_client::CLUSTER_TYPE_URL;
const EDS: &str = xds_client::CLUSTER_LOAD_ASSIGNMENT_TYPE_URL;
const LDS: &str = xds_client::LISTENER_TYPE_URL;

fn tcp_addr(server: &XdsServer) -> std::net::SocketAddr {
    match server.address() {
        ServerAddress::Tcp(addr) => *addr,
        other => panic!("not a TCP server: {other:?}"),
    }
}

#[tokio::test]
async fn sotw_restart_keeps_state_and_resubscribes_with_last_versions() {
    let server = XdsServer::bind_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let address = server.transport();
    let (consumer, mut updates) = recorder();
    let client = start(ads_config(address.clone(), ApiType::Grpc), consumer);
    client
        .handle
        .set_subscriptions(ResourceType::ClusterLoadAssignment, ["c1"])
        .unwrap();
    for _ in 0..3 {
        server.next_ads_sotw().await.unwrap();
    }
    for response in [
        sotw_response(ResourceType::Cluster, "c-v1", "n1", &[cluster("c1")]),
        sotw_response(
            ResourceType::ClusterLoadAssignment,
            "e-v1",
            "n2",
            &[cluster_load_assignment("c1")],
        ),
        sotw_response(
            ResourceType::Listener,
            "l-v1",
            "n3",
            &[listener("l1"), listener("l2")],
        ),
    ] {
        server.push_ads_sotw(response).unwrap();
        server.next_ads_sotw().await.unwrap();
        updates.next().await;
    }

    let addr = tcp_addr(&server);
    server.kill().await;
    let server = XdsServer::bind_tcp(addr).await.unwrap();

    // The new stream re-sends every subscription with the last accepted version, no nonce,
    // and the node on its first message only.
    let expected = [
        (CDS, "c-v1", vec![]),
        (EDS, "e-v1", vec!["c1".to_string()]),
        (LDS, "l-v1", vec![]),
    ];
    for (i, (type_url, version, names)) in expected.into_iter().enumerate() {
        let recorded = server.next_ads_sotw().await.unwrap().request;
        assert_eq!(
            recorded,
            DiscoveryRequest {
                version_info: version.into(),
                resource_names: names,
                type_url: type_url.into(),
                node: (i == 0).then(node),
                ..Default::default()
            }
        );
    }
    // Nothing reached the consumer while disconnected or on reconnect.
    updates.assert_none();
    let stats = client.handle.stats();
    assert!(matches!(
        stats.get("cluster_manager.cds.update_failure"),
        Some(StatValue::Counter(n)) if n >= 1
    ));

    // The server's first LDS state of the world omits l1: that removal is real.
    server
        .push_ads_sotw(sotw_response(
            ResourceType::Listener,
            "l-v2",
            "m1",
            &[listener("l2")],
        ))
        .unwrap();
    let ack = server.next_ads_sotw().await.unwrap().request;
    assert_eq!(
        (ack.version_info.as_str(), ack.response_nonce.as_str()),
        ("l-v2", "m1")
    );
    let update = updates.next().await;
    assert_eq!(names(&update), ["l2"]);
    assert_eq!(update.removed, ["l1"]);
    assert_eq!(
        client.handle.stats().get("control_plane.connected_state"),
        Some(StatValue::Gauge(1))
    );
}

#[tokio::test]
async fn delta_restart_sends_initial_resource_versions() {
    let server = XdsServer::bind_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = tcp_addr(&server);
    let (consumer, mut updates) = recorder();
    let client = start(ads_config(server.transport(), ApiType::DeltaGrpc), consumer);
    server.next_ads_delta().await.unwrap();
    server.next_ads_delta().await.unwrap();
    client
        .handle
        .set_subscriptions(ResourceType::ClusterLoadAssignment, ["c1", "c2"])
        .unwrap();
    server.next_ads_delta().await.unwrap();
    for response in [
        delta_response(
            ResourceType::Cluster,
            "n1",
            &[(cluster("c1"), "1"), (cluster("c2"), "4")],
            &[],
        ),
        delta_response(
            ResourceType::ClusterLoadAssignment,
            "n2",
            &[(cluster_load_assignment("c1"), "e7")],
            &[],
        ),
    ] {
        server.push_ads_delta(response).unwrap();
        server.next_ads_delta().await.unwrap();
        updates.next().await;
    }

    server.kill().await;
    let server = XdsServer::bind_tcp(addr).await.unwrap();

    let versions = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        server.next_ads_delta().await.unwrap().request,
        DeltaDiscoveryRequest {
            node: Some(node()),
            type_url: CDS.into(),
            initial_resource_versions: versions(&[("c1", "1"), ("c2", "4")]),
            ..Default::default()
        }
    );
    // c2 was subscribed but never received: subscribed again, but not in the versions.
    assert_eq!(
        server.next_ads_delta().await.unwrap().request,
        DeltaDiscoveryRequest {
            type_url: EDS.into(),
            resource_names_subscribe: vec!["c1".into(), "c2".into()],
            initial_resource_versions: versions(&[("c1", "e7")]),
            ..Default::default()
        }
    );
    assert_eq!(
        server.next_ads_delta().await.unwrap().request,
        DeltaDiscoveryRequest {
            type_url: LDS.into(),
            ..Default::default()
        }
    );
    updates.assert_none();
}

#[tokio::test]
async fn clean_close_reconnects_at_once() {
    let server = XdsServer::bind_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (consumer, mut updates) = recorder();
    let mut config = ads_config(server.transport(), ApiType::Grpc);
    // Only the immediate path can reconnect within the test's guard.
    config.backoff = Backoff {
        base: Duration::from_secs(3600),
        max: Duration::from_secs(3600),
    };
    let _client = start(config, consumer);
    server.next_ads_sotw().await.unwrap();
    server.next_ads_sotw().await.unwrap();
    server
        .push_ads_sotw(sotw_response(
            ResourceType::Cluster,
            "1",
            "n1",
            &[cluster("c")],
        ))
        .unwrap();
    server.next_ads_sotw().await.unwrap();
    updates.next().await;

    server.end_streams(None);
    let again = server.next_ads_sotw().await.unwrap();
    assert_eq!(again.stream, 2);
    assert_eq!(again.request.version_info, "1");
    assert_eq!(again.request.response_nonce, "");
    updates.assert_none();
}

#[tokio::test]
async fn error_status_backs_off_and_reconnects() {
    let server = XdsServer::bind_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (consumer, _updates) = recorder();
    let client = start(ads_config(server.transport(), ApiType::DeltaGrpc), consumer);
    server.next_ads_delta().await.unwrap();
    server.next_ads_delta().await.unwrap();

    server.end_streams(Some(tonic::Status::unavailable("istiod is shutting down")));
    let again = server.next_ads_delta().await.unwrap();
    assert_eq!(again.stream, 2);
    eventually(|| {
        client
            .handle
            .stats()
            .get("listener_manager.lds.update_failure")
            == Some(StatValue::Counter(1))
    })
    .await;
}

#[tokio::test]
async fn oversized_response_ends_the_stream_without_reaching_the_consumer() {
    let server = XdsServer::bind_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (consumer, mut updates) = recorder_with(|_| {});
    let mut config = ads_config(server.transport(), ApiType::Grpc);
    config.max_message_size = Some(1024);
    let _client = start(config, consumer);
    server.next_ads_sotw().await.unwrap();
    server.next_ads_sotw().await.unwrap();

    let huge = listener(&"x".repeat(4096));
    server
        .push_ads_sotw(sotw_response(ResourceType::Listener, "big", "n1", &[huge]))
        .unwrap();
    // No ACK/NACK: the client drops the stream and starts over with what it had.
    let next = server.next_ads_sotw().await.unwrap();
    assert_eq!(next.stream, 2);
    assert_eq!(next.request.version_info, "");
    assert_eq!(next.request.type_url, CDS);

    // Responses under the limit still work on the new stream.
    server.next_ads_sotw().await.unwrap();
    server
        .push_ads_sotw(sotw_response(
            ResourceType::Listener,
            "small",
            "n2",
            &[listener("l")],
        ))
        .unwrap();
    assert_eq!(
        server.next_ads_sotw().await.unwrap().request.version_info,
        "small"
    );
    assert_eq!(names(&updates.next().await), ["l"]);
}
