//! SDS: a separate state-of-the-world `StreamSecrets` stream to an SDS server on a Unix
//! domain socket (Istio's agent: `default` and `ROOTCA`), next to secrets over ADS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ads_config, names, node, recorder, start};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use xds_client::testing::{XdsServer, secret, sotw_response};
use xds_client::{ApiType, ClientConfig, ResourceType, StatValue, SubscriptionError, Transport};

const SDS: &str = xds_client::SECRET_TYPE_URL;

#[tokio::test]
async fn secrets_on_their_own_stream_over_uds() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("socket");
    let agent = XdsServer::bind_uds(&socket).await.unwrap();
    let (consumer, mut updates) = recorder();
    let mut config = ClientConfig::sds(Transport::Uds(socket), node());
    config
        .initial_fetch_timeout
        .insert(ResourceType::Secret, std::time::Duration::ZERO);
    let client = xds_client::Client::new(config);
    let handle = client.handle();
    handle
        .set_subscriptions(ResourceType::Secret, ["default", "ROOTCA"])
        .unwrap();
    let _task = AbortOnDrop(tokio::spawn(client.run(consumer)));

    let first = agent.next_sds().await.unwrap().request;
    assert_eq!(
        first,
        DiscoveryRequest {
            node: Some(node()),
            resource_names: vec!["ROOTCA".into(), "default".into()],
            type_url: SDS.into(),
            ..Default::default()
        }
    );
    assert!(!handle.readiness().is_ready());

    agent
        .push_sds(sotw_response(
            ResourceType::Secret,
            "2024-01-01T00:00:00Z",
            "s1",
            &[secret("default"), secret("ROOTCA")],
        ))
        .unwrap();
    let ack = agent.next_sds().await.unwrap().request;
    assert_eq!(ack.version_info, "2024-01-01T00:00:00Z");
    assert_eq!(ack.response_nonce, "s1");
    assert!(ack.error_detail.is_none());
    assert_eq!(names(&updates.next().await), ["default", "ROOTCA"]);
    common::within(handle.readiness().ready()).await;

    // A rotated certificate arrives alone; ROOTCA is not removed by its absence.
    agent
        .push_sds(sotw_response(
            ResourceType::Secret,
            "v2",
            "s2",
            &[secret("default")],
        ))
        .unwrap();
    agent.next_sds().await.unwrap();
    let update = updates.next().await;
    assert_eq!(names(&update), ["default"]);
    assert!(update.removed.is_empty());

    let stats = handle.stats();
    assert_eq!(
        stats.get("sds.default.update_success"),
        Some(StatValue::Counter(2))
    );
    assert_eq!(
        stats.get("sds.ROOTCA.update_success"),
        Some(StatValue::Counter(1))
    );
    assert_eq!(
        stats.get("sds.default.version_text"),
        Some(StatValue::Text("v2".into()))
    );
    assert_eq!(stats.get("control_plane.connected_state"), None);

    assert_eq!(
        handle.set_subscriptions(ResourceType::Cluster, ["c"]),
        Err(SubscriptionError::NotServed(ResourceType::Cluster))
    );
}

#[tokio::test]
async fn secrets_over_ads_use_the_ads_stream() {
    let server = XdsServer::bind_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (consumer, mut updates) = recorder();
    let client = start(ads_config(server.transport(), ApiType::Grpc), consumer);
    server.next_ads_sotw().await.unwrap();
    server.next_ads_sotw().await.unwrap();
    client
        .handle
        .set_subscriptions(
            ResourceType::Secret,
            ["kubernetes://istio-system/gateway-cert"],
        )
        .unwrap();
    let request = server.next_ads_sotw().await.unwrap().request;
    assert_eq!(request.type_url, SDS);
    assert_eq!(
        request.resource_names,
        ["kubernetes://istio-system/gateway-cert"]
    );
    server
        .push_ads_sotw(sotw_response(
            ResourceType::Secret,
            "1",
            "n1",
            &[secret("kubernetes://istio-system/gateway-cert")],
        ))
        .unwrap();
    assert_eq!(
        server.next_ads_sotw().await.unwrap().request.version_info,
        "1"
    );
    assert_eq!(updates.next().await.resource_type, ResourceType::Secret);

    assert_eq!(
        client
            .handle
            .set_subscriptions(ResourceType::Listener, ["l"]),
        Err(SubscriptionError::Wildcard(ResourceType::Listener))
    );
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
