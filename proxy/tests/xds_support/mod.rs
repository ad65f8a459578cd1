//! A scripted ADS control plane for tests that run the `proxy` binary and Envoy against
//! the same pushes, and the bootstrap that points them at it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use xds_client::testing::{XdsServer, sotw_response};
use xds_client::{Resource, ResourceType};

/// A bootstrap with ADS for CDS and LDS (RDS follows the listeners) on `xds_port`.
pub fn bootstrap(xds_port: u16) -> String {
    format!(
        "node: {{id: sidecar, cluster: test}}\n\
         admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}}}\n\
         dynamic_resources:\n  ads_config:\n    api_type: GRPC\n    transport_api_version: V3\n\
         \x20   grpc_services: [{{envoy_grpc: {{cluster_name: xds}}}}]\n\
         \x20 cds_config: {{ads: {{}}, resource_api_version: V3}}\n\
         \x20 lds_config: {{ads: {{}}, resource_api_version: V3}}\n\
         static_resources:\n  clusters:\n  - name: xds\n    type: STATIC\n    connect_timeout: 1s\n\
         \x20   typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n\
         \x20       \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n\
         \x20       explicit_http_config: {{http2_protocol_options: {{}}}}\n\
         \x20   load_assignment:\n      cluster_name: xds\n\
         \x20     endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {xds_port}}}}}}}}}]}}]\n"
    )
}

/// What the client said about a response: ACK, or NACK with the error detail.
pub type Verdict = Result<(), String>;

/// The current version and resources of each type.
pub type Snapshot = Arc<Mutex<HashMap<ResourceType, (String, Vec<Resource>)>>>;

/// Answers each subscription with the current snapshot of its type and reports the client's
/// ACKs and NACKs by nonce.
pub struct ControlPlane {
    server: Arc<XdsServer>,
    snapshot: Snapshot,
    verdicts: mpsc::UnboundedReceiver<(String, Verdict)>,
    next_nonce: u32,
}

// === impl ControlPlane ===

impl ControlPlane {
    pub async fn start(initial: Vec<(ResourceType, Vec<Resource>)>) -> Self {
        let server = Arc::new(
            XdsServer::bind_tcp("127.0.0.1:0".parse().unwrap())
                .await
                .unwrap(),
        );
        let snapshot: Snapshot = Arc::new(Mutex::new(
            initial
                .into_iter()
                .map(|(t, r)| (t, ("1".to_string(), r)))
                .collect::<HashMap<_, _>>(),
        ));
        let (tx, verdicts) = mpsc::unbounded_channel();
        let (srv, snap) = (server.clone(), snapshot.clone());
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                let request = match srv.next_ads_sotw().await {
                    Ok(r) => r.request,
                    Err(xds_client::testing::ServerError::Timeout(_)) => continue,
                    Err(_) => return,
                };
                if !request.response_nonce.is_empty() {
                    let verdict = match request.error_detail {
                        Some(status) => Err(status.message),
                        None => Ok(()),
                    };
                    let _ = tx.send((request.response_nonce, verdict));
                    continue;
                }
                let Some(t) = resource_type(&request.type_url) else {
                    continue;
                };
                let current = snap.lock().unwrap().get(&t).cloned();
                if let Some((version, resources)) = current {
                    n += 1;
                    let nonce = format!("initial-{n}");
                    let _ = srv.push_ads_sotw(sotw_response(t, &version, &nonce, &resources));
                }
            }
        });
        Self {
            server,
            snapshot,
            verdicts,
            next_nonce: 0,
        }
    }

    pub fn port(&self) -> u16 {
        match self.server.address() {
            xds_client::testing::ServerAddress::Tcp(a) => a.port(),
            xds_client::testing::ServerAddress::Uds(_) => unreachable!(),
        }
    }

    /// Pushes a new version of one type and waits for the client's verdict on it.
    pub async fn push(
        &mut self,
        t: ResourceType,
        version: &str,
        resources: Vec<Resource>,
    ) -> Verdict {
        self.push_all(vec![(t, version, resources)]).await.remove(0)
    }

    /// Pushes several updates back to back (as a control plane follows a cluster update
    /// with its endpoints), then waits for the client's verdict on each, in order.
    pub async fn push_all(
        &mut self,
        pushes: Vec<(ResourceType, &str, Vec<Resource>)>,
    ) -> Vec<Verdict> {
        let mut nonces = Vec::new();
        for (t, version, resources) in pushes {
            self.next_nonce += 1;
            let nonce = format!("push-{}", self.next_nonce);
            self.server
                .push_ads_sotw(sotw_response(t, version, &nonce, &resources))
                .unwrap();
            if !version.starts_with("bad") {
                self.snapshot
                    .lock()
                    .unwrap()
                    .insert(t, (version.to_string(), resources));
            }
            nonces.push(nonce);
        }
        let mut verdicts: Vec<Option<Verdict>> = vec![None; nonces.len()];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while verdicts.iter().any(Option::is_none) {
            let next = tokio::time::timeout_at(deadline, self.verdicts.recv()).await;
            match next {
                Ok(Some((n, verdict))) => {
                    if let Some(i) = nonces.iter().position(|x| *x == n) {
                        verdicts[i] = Some(verdict);
                    }
                }
                _ => panic!("no ACK or NACK for some of {nonces:?}: {verdicts:?}"),
            }
        }
        verdicts.into_iter().flatten().collect()
    }
}

pub fn resource_type(type_url: &str) -> Option<ResourceType> {
    [
        ResourceType::Cluster,
        ResourceType::ClusterLoadAssignment,
        ResourceType::Listener,
        ResourceType::RouteConfiguration,
        ResourceType::Secret,
    ]
    .into_iter()
    .find(|t| t.type_url() == type_url)
}
