//! Readiness with Envoy's `initial_fetch_timeout`: `0s` waits forever for the first response,
//! a short timeout lets readiness proceed without it; types subscribed during the initial
//! fetch (EDS for the first clusters) hold readiness back too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{ads_config, recorder, recorder_with, start, within};
use xds_client::testing::{XdsServer, cluster, cluster_load_assignment, listener, sotw_response};
use xds_client::{ApiType, InitialFetch, ResourceType, StatValue};

#[tokio::test]
async fn zero_timeout_waits_forever_and_a_short_one_expires() {
    let server = XdsServer::bind_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (consumer, _updates) = recorder();
    let mut config = ads_config(server.transport(), ApiType::Grpc);
    config
        .initial_fetch_timeout
        .insert(ResourceType::Cluster, Duration::from_millis(50));
    config
        .initial_fetch_timeout
        .insert(ResourceType::Listener, Duration::ZERO);
    let client = start(config, consumer);
    let readiness = client.handle.readiness();
    server.next_ads_sotw().await.unwrap();
    server.next_ads_sotw().await.unwrap();

    // CDS times out without any response...
    let state = within(
        readiness
            .wait_for(|s| s.types.get(&ResourceType::Cluster) == Some(&InitialFetch::TimedOut)),
    )
    .await;
    // ... but LDS (0s) is still waited for.
    assert_eq!(state.types[&ResourceType::Listener], InitialFetch::Pending);
    assert!(!state.ready);
    let stats = client.handle.stats();
    assert_eq!(
        stats.get("cluster_manager.cds.init_fetch_timeout"),
        Some(StatValue::Counter(1))
    );
    assert_eq!(
        stats.get("listener_manager.lds.init_fetch_timeout"),
        Some(StatValue::Counter(0))
    );

    server
        .push_ads_sotw(sotw_response(
            ResourceType::Listener,
            "1",
            "n1",
            &[listener("l")],
        ))
        .unwrap();
    within(readiness.ready()).await;
    assert_eq!(
        readiness.state().types[&ResourceType::Listener],
        InitialFetch::Received
    );
}

#[tokio::test]
async fn timeouts_alone_make_the_client_ready() {
    let server = XdsServer::bind_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (consumer, _updates) = recorder();
    let mut config = ads_config(server.transport(), ApiType::DeltaGrpc);
    for t in [ResourceType::Cluster, ResourceType::Listener] {
        config
            .initial_fetch_timeout
            .insert(t, Duration::from_millis(20));
    }
    let client = start(config, consumer);
    within(client.handle.readiness().ready()).await;
    let state = client.handle.readiness().state();
    assert_eq!(state.types[&ResourceType::Cluster], InitialFetch::TimedOut);
    assert_eq!(state.types[&ResourceType::Listener], InitialFetch::TimedOut);
}

#[tokio::test]
async fn eds_subscribed_during_init_holds_readiness_back() {
    let server = XdsServer::bind_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let slot = std::sync::Arc::new(std::sync::OnceLock::<xds_client::ClientHandle>::new());
    let handle_slot = slot.clone();
    let (consumer, _updates) = recorder_with(move |update| {
        if update.resource_type == ResourceType::Cluster {
            let names = update.resources.iter().map(|r| r.name.clone());
            handle_slot
                .get()
                .unwrap()
                .set_subscriptions(ResourceType::ClusterLoadAssignment, names)
                .unwrap();
        }
    });
    let mut config = ads_config(server.transport(), ApiType::Grpc);
    for t in ResourceType::ALL {
        config.initial_fetch_timeout.insert(t, Duration::ZERO);
    }
    let client = start(config, consumer);
    slot.set(client.handle.clone()).unwrap();
    let readiness = client.handle.readiness();
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
    server.next_ads_sotw().await.unwrap(); // CDS ACK
    server.next_ads_sotw().await.unwrap(); // EDS subscription
    server
        .push_ads_sotw(sotw_response(
            ResourceType::Listener,
            "1",
            "n2",
            &[listener("l")],
        ))
        .unwrap();
    server.next_ads_sotw().await.unwrap(); // LDS ACK
    let state = readiness.state();
    assert!(!state.ready, "{state:?}");
    assert_eq!(
        state.types[&ResourceType::ClusterLoadAssignment],
        InitialFetch::Pending
    );

    server
        .push_ads_sotw(sotw_response(
            ResourceType::ClusterLoadAssignment,
            "1",
            "n3",
            &[cluster_load_assignment("c")],
        ))
        .unwrap();
    within(readiness.ready()).await;
}
