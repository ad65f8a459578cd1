//! Runs the client against the in-process fake control plane: CDS arrives, the consumer
//! subscribes EDS for the new clusters, the client becomes ready, and the stats print under
//! Envoy's names.
//!
//! `cargo run -p xds-client --example in_process --features testing`

use envoy_types::pb::envoy::config::core::v3::Node;
use xds_client::testing::{XdsServer, cluster, cluster_load_assignment, listener, sotw_response};
use xds_client::{ApiType, Client, ClientConfig, Rejection, ResourceType, StatValue, Update};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = XdsServer::bind_tcp("127.0.0.1:0".parse()?).await?;
    let node = Node {
        id: "sidecar~10.0.0.1~app-1.default~default.svc.cluster.local".into(),
        ..Default::default()
    };
    let client = Client::new(ClientConfig::ads(server.transport(), ApiType::Grpc, node));
    let handle = client.handle();

    // The consumer: print each update and follow CDS with EDS.
    let subscriber = handle.clone();
    let handler = move |update: Update| -> Result<(), Rejection> {
        let names: Vec<&str> = update.resources.iter().map(|r| r.name.as_str()).collect();
        println!(
            "{} version {}: {names:?} removed {:?}",
            update.resource_type.api_name(),
            update.version_info,
            update.removed
        );
        if update.resource_type == ResourceType::Cluster {
            subscriber
                .set_subscriptions(ResourceType::ClusterLoadAssignment, names)
                .map_err(|e| Rejection::update(e.to_string()))?;
        }
        Ok(())
    };
    let task = tokio::spawn(client.run(handler));

    // Play istiod: CDS, then the EDS the client asks for, then LDS.
    server.next_ads_sotw().await?;
    server.next_ads_sotw().await?;
    server.push_ads_sotw(sotw_response(
        ResourceType::Cluster,
        "1",
        "a",
        &[cluster("outbound|80||web")],
    ))?;
    server.next_ads_sotw().await?;
    let eds = server.next_ads_sotw().await?;
    println!("client subscribed EDS for {:?}", eds.request.resource_names);
    server.push_ads_sotw(sotw_response(
        ResourceType::ClusterLoadAssignment,
        "1",
        "b",
        &[cluster_load_assignment("outbound|80||web")],
    ))?;
    server.next_ads_sotw().await?;
    server.push_ads_sotw(sotw_response(
        ResourceType::Listener,
        "1",
        "c",
        &[listener("virtualOutbound")],
    ))?;
    server.next_ads_sotw().await?;

    handle.readiness().ready().await;
    println!("ready");
    for stat in handle.stats().envoy_stats() {
        match stat.value {
            StatValue::Counter(v) | StatValue::Gauge(v) => println!("{}: {v}", stat.name),
            StatValue::Text(t) => println!("{}: \"{t}\"", stat.name),
        }
    }
    task.abort();
    Ok(())
}
