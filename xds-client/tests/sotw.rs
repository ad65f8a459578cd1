//! State-of-the-world ADS against the in-process server over loopback TCP: the exact request
//! sequence (versions, nonces, names, error details), removal by absence for LDS/CDS, and
//! EDS/RDS subscriptions that follow the consumer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ads_config, names, node, recorder, recorder_with, start};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use xds_client::testing::{
    XdsServer, cluster, cluster_load_assignment, listener, route_configuration, sotw_response,
};
use xds_client::{ApiType, Rejection, ResourceType, StatValue};

const CDS: &str = xds_client::CLUSTER_TYPE_URL;
const EDS: &str = xds_client::CLUSTER_LOAD_ASSIGNMENT_TYPE_URL;
const LDS: &str = xds_client::LISTENER_TYPE_URL;
const RDS: &str = xds_client::ROUTE_CONFIGURATION_TYPE_URL;

async fn server() -> XdsServer {
    XdsServer::bind_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// A request as Envoy would send it, for whole-message comparison.
fn request(type_url: &str, version: &str, names: &[&str], nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: version.into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        type_url: type_url.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

fn nack(
    type_url: &str,
    version: &str,
    names: &[&str],
    nonce: &str,
    message: &str,
) -> DiscoveryRequest {
    DiscoveryRequest {
        error_detail: Some(envoy_types::pb::google::rpc::Status {
            code: 13,
            message: message.into(),
            details: vec![],
        }),
        ..request(type_url, version, names, nonce)
    }
}

#[tokio::test]
async fn ack_nack_reack_sequence_is_exact() {
    let server = server().await;
    let (consumer, mut updates) = recorder();
    let _client = start(
        ads_config(server.transport(), ApiType::Grpc),
        consumer.clone(),
    );

    // First requests: CDS then LDS, legacy wildcard, empty version and nonce, node only first.
    let first = server.next_ads_sotw().await.unwrap();
    assert_eq!(
        first.request,
        DiscoveryRequest {
            node: Some(node()),
            ..request(CDS, "", &[], "")
        }
    );
    assert_eq!(
        server.next_ads_sotw().await.unwrap().request,
        request(LDS, "", &[], "")
    );

    // ACK: new version and the response's nonce.
    server
        .push_ads_sotw(sotw_response(
            ResourceType::Cluster,
            "c1",
            "n1",
            &[cluster("a")],
        ))
        .unwrap();
    assert_eq!(
        server.next_ads_sotw().await.unwrap().request,
        request(CDS, "c1", &[], "n1")
    );
    let update = updates.next().await;
    assert_eq!(
        (update.resource_type, update.version_info.as_str()),
        (ResourceType::Cluster, "c1")
    );
    assert_eq!(names(&update), ["a"]);

    // NACK: the previous (empty) version, the rejected response's nonce, the consumer's words.
    consumer.answer_next(Err(Rejection::update("listener l: unknown filter foo")));
    server
        .push_ads_sotw(sotw_response(
            ResourceType::Listener,
            "l1",
            "n2",
            &[listener("l")],
        ))
        .unwrap();
    assert_eq!(
        server.next_ads_sotw().await.unwrap().request,
        nack(LDS, "", &[], "n2", "listener l: unknown filter foo")
    );
    assert_eq!(names(&updates.next().await), ["l"]);

    // Re-ACK of a fixed version.
    server
        .push_ads_sotw(sotw_response(
            ResourceType::Listener,
            "l2",
            "n3",
            &[listener("l")],
        ))
        .unwrap();
    assert_eq!(
        server.next_ads_sotw().await.unwrap().request,
        request(LDS, "l2", &[], "n3")
    );

    // A NACK after an accepted version keeps that version.
    consumer.answer_next(Err(Rejection::update("bad")));
    server
        .push_ads_sotw(sotw_response(
            ResourceType::Listener,
            "l3",
            "n4",
            &[listener("l")],
        ))
        .unwrap();
    assert_eq!(
        server.next_ads_sotw().await.unwrap().request,
        nack(LDS, "l2", &[], "n4", "bad")
    );
}

#[tokio::test]
async fn node_on_every_request_unless_first_message_only() {
    let server = server().await;
    let (consumer, _updates) = recorder();
    let mut config = ads_config(server.transport(), ApiType::Grpc);
    config.set_node_on_first_message_only = false;
    let _client = start(config, consumer);

    assert!(server.next_ads_sotw().await.unwrap().request.node.is_some());
    assert!(server.next_ads_sotw().await.unwrap().request.node.is_some());
    server
        .push_ads_sotw(sotw_response(ResourceType::Cluster, "1", "n1", &[]))
        .unwrap();
    assert_eq!(
        server.next_ads_sotw().await.unwrap().request.node,
        Some(node())
    );
}

#[tokio::test]
async fn lds_and_cds_removal_by_absence() {
    let server = server().await;
    let (consumer, mut updates) = recorder();
    let _client = start(ads_config(server.transport(), ApiType::Grpc), consumer);
    server.next_ads_sotw().await.unwrap();
    server.next_ads_sotw().await.unwrap();

    server
        .push_ads_sotw(sotw_response(
            ResourceType::Listener,
            "1",
            "n1",
            &[listener("a"), listener("b")],
        ))
        .unwrap();
    let update = updates.next().await;
    assert_eq!(names(&update), ["a", "b"]);
    assert!(update.removed.is_empty());

    server
        .push_ads_sotw(sotw_response(
            ResourceType::Listener,
            "2",
            "n2",
            &[listener("b")],
        ))
        .unwrap();
    let update = updates.next().await;
    assert_eq!(names(&update), ["b"]);
    assert_eq!(update.removed, ["a"]);

    // An empty state of the world removes everything.
    server
        .push_ads_sotw(sotw_response(ResourceType::Listener, "3", "n3", &[]))
        .unwrap();
    let update = updates.next().await;
    assert!(update.resources.is_empty());
    assert_eq!(update.removed, ["b"]);

    // Same for clusters.
    server
        .push_ads_sotw(sotw_response(
            ResourceType::Cluster,
            "1",
            "n4",
            &[cluster("x"), cluster("y")],
        ))
        .unwrap();
    updates.next().await;
    server
        .push_ads_sotw(sotw_response(
            ResourceType::Cluster,
            "2",
            "n5",
            &[cluster("y")],
        ))
        .unwrap();
    assert_eq!(updates.next().await.removed, ["x"]);
}

/// A consumer that follows its parents from inside the handler, as the proxy does: EDS for
/// every cluster CDS gives it, RDS for every listener (these tests name each listener's route
/// configuration after the listener). Returns the running client too.
fn following_client(server: &XdsServer) -> (common::Running, common::Updates) {
    let handle_slot = std::sync::Arc::new(std::sync::OnceLock::<xds_client::ClientHandle>::new());
    let slot = handle_slot.clone();
    let (consumer, updates) = recorder_with(move |update| {
        let child = match update.resource_type {
            ResourceType::Cluster => ResourceType::ClusterLoadAssignment,
            ResourceType::Listener => ResourceType::RouteConfiguration,
            _ => return,
        };
        let handle = slot.get().unwrap();
        let mut names = handle.subscriptions(child);
        names.extend(update.resources.iter().map(|r| r.name.clone()));
        for gone in &update.removed {
            names.remove(gone);
        }
        handle.set_subscriptions(child, names).unwrap();
    });
    let client = start(ads_config(server.transport(), ApiType::Grpc), consumer);
    handle_slot.set(client.handle.clone()).unwrap();
    (client, updates)
}

#[tokio::test]
async fn eds_follows_cds() {
    let server = server().await;
    let (_client, mut updates) = following_client(&server);
    server.next_ads_sotw().await.unwrap();
    server.next_ads_sotw().await.unwrap();

    // CDS gives c1, c2: ACK, then the EDS subscription (first EDS request: empty version/nonce).
    server
        .push_ads_sotw(sotw_response(
            ResourceType::Cluster,
            "1",
            "c-n1",
            &[cluster("c1"), cluster("c2")],
        ))
        .unwrap();
    assert_eq!(
        server.next_ads_sotw().await.unwrap().request,
        request(CDS, "1", &[], "c-n1")
    );
    assert_eq!(
        server.next_ads_sotw().await.unwrap().request,
        request(EDS, "", &["c1", "c2"], "")
    );
    updates.next().await;

    // EDS response: resources nobody asked for are ignored.
    server
        .push_ads_sotw(sotw_response(
            ResourceType::ClusterLoadAssignment,
            "e1",
            "e-n1",
            &[
                cluster_load_assignment("c1"),
                cluster_load_assignment("c2"),
                cluster_load_assignment("other"),
            ],
        ))
        .unwrap();
    assert_eq!(
        server.next_ads_sotw().await.unwrap().request,
        request(EDS, "e1", &["c1", "c2"], "e-n1")
    );
    assert_eq!(names(&updates.next().await), ["c1", "c2"]);

    // CDS drops c1: the EDS subscription follows, with the last EDS version and nonce.
    server
        .push_ads_sotw(sotw_response(
            ResourceType::Cluster,
            "2",
            "c-n2",
            &[cluster("c2")],
        ))
        .unwrap();
    assert_eq!(
        server.next_ads_sotw().await.unwrap().request,
        request(CDS, "2", &[], "c-n2")
    );
    assert_eq!(
        server.next_ads_sotw().await.unwrap().request,
        request(EDS, "e1", &["c2"], "e-n1")
    );
    assert_eq!(updates.next().await.removed, ["c1"]);

    // An EDS response without c2 is not a removal (SotW has none for EDS/RDS).
    server
        .push_ads_sotw(sotw_response(
            ResourceType::ClusterLoadAssignment,
            "e2",
            "e-n2",
            &[],
        ))
        .unwrap();
    assert_eq!(
        server.next_ads_sotw().await.unwrap().request,
        request(EDS, "e2", &["c2"], "e-n2")
    );
    updates.assert_none();
}

#[tokio::test]
async fn rds_follows_lds() {
    let server = server().await;
    let (_client, mut updates) = following_client(&server);
    server.next_ads_sotw().await.unwrap();
    server.next_ads_sotw().await.unwrap();

    // LDS gives l1: ACK, then the RDS subscription.
    server
        .push_ads_sotw(sotw_response(
            ResourceType::Listener,
            "1",
            "l-n1",
            &[listener("l1")],
        ))
        .unwrap();
    assert_eq!(
        server.next_ads_sotw().await.unwrap().request,
        request(LDS, "1", &[], "l-n1")
    );
    assert_eq!(
        server.next_ads_sotw().await.unwrap().request,
        request(RDS, "", &["l1"], "")
    );
    updates.next().await;
    server
        .push_ads_sotw(sotw_response(
            ResourceType::RouteConfiguration,
            "r",
            "r-n1",
            &[route_configuration("l1")],
        ))
        .unwrap();
    assert_eq!(
        server.next_ads_sotw().await.unwrap().request,
        request(RDS, "r", &["l1"], "r-n1")
    );
    assert_eq!(names(&updates.next().await), ["l1"]);

    // LDS removes l1: RDS drops to no names, sent as an empty list (an explicit
    // unsubscribe on this stream, not a wildcard), with the last RDS version and nonce.
    server
        .push_ads_sotw(sotw_response(ResourceType::Listener, "2", "l-n2", &[]))
        .unwrap();
    assert_eq!(
        server.next_ads_sotw().await.unwrap().request,
        request(LDS, "2", &[], "l-n2")
    );
    assert_eq!(
        server.next_ads_sotw().await.unwrap().request,
        request(RDS, "r", &[], "r-n1")
    );
    assert_eq!(updates.next().await.removed, ["l1"]);
}

#[tokio::test]
async fn partial_rejection_applies_the_good_and_nacks_naming_the_bad() {
    let server = server().await;
    let (consumer, mut updates) = recorder();
    let client = start(
        ads_config(server.transport(), ApiType::Grpc),
        consumer.clone(),
    );
    server.next_ads_sotw().await.unwrap();
    server.next_ads_sotw().await.unwrap();

    consumer.answer_next(Err(Rejection::resource(
        "bad",
        "unsupported lb_policy MAGLEV_X",
    )));
    server
        .push_ads_sotw(sotw_response(
            ResourceType::Cluster,
            "1",
            "n1",
            &[cluster("good"), cluster("bad")],
        ))
        .unwrap();
    assert_eq!(
        server.next_ads_sotw().await.unwrap().request,
        nack(
            CDS,
            "",
            &[],
            "n1",
            "Error adding/updating cluster(s) bad: unsupported lb_policy MAGLEV_X"
        )
    );
    assert_eq!(names(&updates.next().await), ["good", "bad"]);

    // "good" was applied, "bad" was not: the next state of the world without either removes
    // only "good".
    server
        .push_ads_sotw(sotw_response(
            ResourceType::Cluster,
            "2",
            "n2",
            &[cluster("other")],
        ))
        .unwrap();
    assert_eq!(
        server.next_ads_sotw().await.unwrap().request,
        request(CDS, "2", &[], "n2")
    );
    let update = updates.next().await;
    assert_eq!(update.removed, ["good"]);

    let stats = client.handle.stats();
    assert_eq!(
        stats.get("cluster_manager.cds.update_rejected"),
        Some(StatValue::Counter(1))
    );
    assert_eq!(
        stats.get("cluster_manager.cds.update_success"),
        Some(StatValue::Counter(1))
    );
}

#[tokio::test]
async fn stats_carry_envoy_names_and_values() {
    let server = server().await;
    let (consumer, _updates) = recorder();
    let client = start(
        ads_config(server.transport(), ApiType::Grpc),
        consumer.clone(),
    );
    client
        .handle
        .set_subscriptions(ResourceType::ClusterLoadAssignment, ["c1"])
        .unwrap();
    for _ in 0..3 {
        server.next_ads_sotw().await.unwrap();
    }
    server
        .push_ads_sotw(sotw_response(
            ResourceType::Cluster,
            "v1",
            "n1",
            &[cluster("c1")],
        ))
        .unwrap();
    server.next_ads_sotw().await.unwrap();
    consumer.answer_next(Err(Rejection::update("no")));
    server
        .push_ads_sotw(sotw_response(
            ResourceType::Listener,
            "v9",
            "n2",
            &[listener("l")],
        ))
        .unwrap();
    server.next_ads_sotw().await.unwrap();
    server
        .push_ads_sotw(sotw_response(ResourceType::Listener, "v10", "n3", &[]))
        .unwrap();
    server.next_ads_sotw().await.unwrap();
    server
        .push_ads_sotw(sotw_response(
            ResourceType::ClusterLoadAssignment,
            "e1",
            "n4",
            &[cluster_load_assignment("c1")],
        ))
        .unwrap();
    server.next_ads_sotw().await.unwrap();

    let stats = client.handle.stats();
    let expect = [
        ("control_plane.connected_state", StatValue::Gauge(1)),
        ("cluster_manager.cds.update_attempt", StatValue::Counter(1)),
        ("cluster_manager.cds.update_success", StatValue::Counter(1)),
        ("cluster_manager.cds.update_rejected", StatValue::Counter(0)),
        ("cluster_manager.cds.update_failure", StatValue::Counter(0)),
        (
            "cluster_manager.cds.version_text",
            StatValue::Text("v1".into()),
        ),
        ("listener_manager.lds.update_attempt", StatValue::Counter(2)),
        ("listener_manager.lds.update_success", StatValue::Counter(1)),
        (
            "listener_manager.lds.update_rejected",
            StatValue::Counter(1),
        ),
        ("listener_manager.lds.update_empty", StatValue::Counter(1)),
        (
            "listener_manager.lds.version_text",
            StatValue::Text("v10".into()),
        ),
        ("cluster.c1.update_success", StatValue::Counter(1)),
        ("cluster.c1.version_text", StatValue::Text("e1".into())),
    ];
    for (name, value) in expect {
        assert_eq!(stats.get(name), Some(value), "{name}");
    }
}
