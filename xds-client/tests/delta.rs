//! Incremental (delta) ADS against the in-process server over loopback TCP: nonce ACK/NACK,
//! per-resource versions, removals, and subscribe/unsubscribe deltas.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use common::{ads_config, names, node, recorder, start};
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use xds_client::testing::{XdsServer, cluster, cluster_load_assignment, delta_response, listener};
use xds_client::{ApiType, Rejection, ResourceType};

const CDS: &str = xds_client::CLUSTER_TYPE_URL;
const EDS: &str = xds_client::CLUSTER_LOAD_ASSIGNMENT_TYPE_URL;
const LDS: &str = xds_client::LISTENER_TYPE_URL;

fn ack(type_url: &str, nonce: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: type_url.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

fn subscribe(type_url: &str, add: &[&str], remove: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: type_url.into(),
        resource_names_subscribe: add.iter().map(|s| s.to_string()).collect(),
        resource_names_unsubscribe: remove.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn ack_nack_sequence_is_exact() {
    let server = XdsServer::bind_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (consumer, mut updates) = recorder();
    let _client = start(
        ads_config(server.transport(), ApiType::DeltaGrpc),
        consumer.clone(),
    );

    // Initial requests: legacy wildcard (nothing subscribed by name), no versions known.
    assert_eq!(
        server.next_ads_delta().await.unwrap().request,
        DeltaDiscoveryRequest {
            node: Some(node()),
            ..subscribe(CDS, &[], &[])
        }
    );
    assert_eq!(
        server.next_ads_delta().await.unwrap().request,
        subscribe(LDS, &[], &[])
    );

    server
        .push_ads_delta(delta_response(
            ResourceType::Cluster,
            "n1",
            &[(cluster("a"), "1"), (cluster("b"), "1")],
            &[],
        ))
        .unwrap();
    assert_eq!(
        server.next_ads_delta().await.unwrap().request,
        ack(CDS, "n1")
    );
    let update = updates.next().await;
    assert_eq!(names(&update), ["a", "b"]);
    let versions: Vec<_> = update
        .resources
        .iter()
        .map(|r| r.version.as_str())
        .collect();
    assert_eq!(versions, ["1", "1"]);
    assert_eq!(update.version_info, "system-n1");

    // NACK: same nonce, error_detail with the consumer's reason.
    consumer.answer_next(Err(Rejection::update("cluster a: bad circuit breaker")));
    server
        .push_ads_delta(delta_response(
            ResourceType::Cluster,
            "n2",
            &[(cluster("a"), "2")],
            &[],
        ))
        .unwrap();
    let nack = server.next_ads_delta().await.unwrap().request;
    assert_eq!(
        nack,
        DeltaDiscoveryRequest {
            error_detail: Some(envoy_types::pb::google::rpc::Status {
                code: 13,
                message: "cluster a: bad circuit breaker".into(),
                details: vec![],
            }),
            ..ack(CDS, "n2")
        }
    );
    updates.next().await;

    // Removal, then ACK again.
    server
        .push_ads_delta(delta_response(ResourceType::Cluster, "n3", &[], &["b"]))
        .unwrap();
    assert_eq!(
        server.next_ads_delta().await.unwrap().request,
        ack(CDS, "n3")
    );
    let update = updates.next().await;
    assert!(update.resources.is_empty());
    assert_eq!(update.removed, ["b"]);

    // A delta response that omits resources removes nothing.
    server
        .push_ads_delta(delta_response(
            ResourceType::Listener,
            "n4",
            &[(listener("l"), "7")],
            &[],
        ))
        .unwrap();
    assert_eq!(
        server.next_ads_delta().await.unwrap().request,
        ack(LDS, "n4")
    );
    assert!(updates.next().await.removed.is_empty());
}

#[tokio::test]
async fn named_subscriptions_send_only_the_changes() {
    let server = XdsServer::bind_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (consumer, mut updates) = recorder();
    let client = start(ads_config(server.transport(), ApiType::DeltaGrpc), consumer);
    server.next_ads_delta().await.unwrap();
    server.next_ads_delta().await.unwrap();

    client
        .handle
        .set_subscriptions(ResourceType::ClusterLoadAssignment, ["a", "b"])
        .unwrap();
    assert_eq!(
        server.next_ads_delta().await.unwrap().request,
        subscribe(EDS, &["a", "b"], &[])
    );

    server
        .push_ads_delta(delta_response(
            ResourceType::ClusterLoadAssignment,
            "e1",
            &[
                (cluster_load_assignment("a"), "1"),
                (cluster_load_assignment("zzz"), "1"),
            ],
            &[],
        ))
        .unwrap();
    assert_eq!(
        server.next_ads_delta().await.unwrap().request,
        ack(EDS, "e1")
    );
    assert_eq!(
        names(&updates.next().await),
        ["a"],
        "unrequested resources are ignored"
    );

    client
        .handle
        .set_subscriptions(ResourceType::ClusterLoadAssignment, ["b", "c"])
        .unwrap();
    assert_eq!(
        server.next_ads_delta().await.unwrap().request,
        subscribe(EDS, &["c"], &["a"])
    );

    // The server says b does not exist: the consumer hears it as a removal.
    server
        .push_ads_delta(delta_response(
            ResourceType::ClusterLoadAssignment,
            "e2",
            &[],
            &["b"],
        ))
        .unwrap();
    assert_eq!(
        server.next_ads_delta().await.unwrap().request,
        ack(EDS, "e2")
    );
    assert_eq!(updates.next().await.removed, ["b"]);
}

#[tokio::test]
async fn partial_rejection_keeps_accepted_versions() {
    let server = XdsServer::bind_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (consumer, mut updates) = recorder();
    let _client = start(
        ads_config(server.transport(), ApiType::DeltaGrpc),
        consumer.clone(),
    );
    server.next_ads_delta().await.unwrap();
    server.next_ads_delta().await.unwrap();

    consumer.answer_next(Err(Rejection::resource("bad", "no filter chains")));
    server
        .push_ads_delta(delta_response(
            ResourceType::Listener,
            "n1",
            &[(listener("good"), "g1"), (listener("bad"), "b1")],
            &[],
        ))
        .unwrap();
    let nack = server.next_ads_delta().await.unwrap().request;
    assert_eq!(nack.response_nonce, "n1");
    assert_eq!(
        nack.error_detail.unwrap().message,
        "Error adding/updating listener(s) bad: no filter chains"
    );
    updates.next().await;

    // On the next stream only the accepted resource is reported as held.
    server.end_streams(None);
    let cds = server.next_ads_delta().await.unwrap();
    assert_eq!(cds.stream, 2);
    assert!(cds.request.initial_resource_versions.is_empty());
    let lds = server.next_ads_delta().await.unwrap().request;
    assert_eq!(
        lds.initial_resource_versions,
        HashMap::from([("good".to_string(), "g1".to_string())])
    );
}
