//! The gRPC side: ADS (state-of-the-world and delta) answering from the [`Store`], and SDS
//! (state-of-the-world only, like pilot-agent's) for one pod, each on a Unix socket.
//!
//! Each stream remembers what it sent per type; a request that subscribes to something new
//! gets an answer at once, a snapshot change pushes only what differs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    Resource as DeltaResource,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::UnixListener;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::task::{JoinHandle, JoinSet};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::codegen::Service as _;
use tonic::{Request, Response, Status, Streaming};

use super::proto;
use super::store::{Snapshot, Store};

static NEXT_STREAM: AtomicU64 = AtomicU64::new(1);
static NEXT_NONCE: AtomicU64 = AtomicU64::new(1);

fn nonce() -> String {
    NEXT_NONCE.fetch_add(1, Ordering::Relaxed).to_string()
}

/// Types a proxy subscribes to as a wildcard (all resources) when it names none.
fn is_wildcard_type(type_url: &str) -> bool {
    type_url == proto::LISTENER || type_url == proto::CLUSTER
}

type SotwTx = UnboundedSender<Result<DiscoveryResponse, Status>>;
type DeltaTx = UnboundedSender<Result<DeltaDiscoveryResponse, Status>>;

/// A listening Unix socket and its connections; dropping or [`Self::kill`]ing it closes
/// them all at once, as a crashed process would.
#[derive(Debug)]
pub struct UdsServer {
    path: PathBuf,
    task: JoinHandle<()>,
}

/// Which service a socket serves.
#[derive(Clone, Debug)]
pub enum Served {
    /// ADS for whichever node connects.
    Ads,
    /// SDS for the pod whose store key this is.
    Sds(String),
}

// === impl UdsServer ===

impl UdsServer {
    /// Binds `path` (replacing a stale socket), owned by `owner` (uid, gid) so a sidecar
    /// running as that user may connect. Must run inside a tokio runtime.
    pub fn bind(
        path: &Path,
        owner: (u32, u32),
        store: Arc<Store>,
        served: Served,
    ) -> io::Result<Self> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(path)?;
        std::os::unix::fs::chown(path, Some(owner.0), Some(owner.1))?;
        let task = tokio::spawn(accept_loop(listener, store, served));
        Ok(Self {
            path: path.to_path_buf(),
            task,
        })
    }

    /// Stops accepting, drops every connection and removes the socket file.
    pub fn kill(self) {
        drop(self);
    }
}

impl Drop for UdsServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn accept_loop(listener: UnixListener, store: Arc<Store>, served: Served) {
    // Connections live in this set: aborting this task drops all of them.
    let mut connections = JoinSet::new();
    loop {
        match listener.accept().await {
            Ok((io, _)) => {
                connections.spawn(serve_connection(io, store.clone(), served.clone()));
            }
            Err(e) => {
                eprintln!("control plane: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        while connections.try_join_next().is_some() {}
    }
}

async fn serve_connection(io: tokio::net::UnixStream, store: Arc<Store>, served: Served) {
    let ads = AggregatedDiscoveryServiceServer::new(Ads {
        store: store.clone(),
    });
    let sds = match &served {
        Served::Sds(key) => Some(SecretDiscoveryServiceServer::new(Sds {
            store,
            key: key.clone(),
        })),
        Served::Ads => None,
    };
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let mut ads = ads.clone();
        let sds = sds.clone();
        async move {
            let path = req.uri().path().to_string();
            match sds {
                Some(mut sds) if path.starts_with("/envoy.service.secret.v3.") => {
                    sds.call(req).await
                }
                None if path.starts_with("/envoy.service.discovery.v3.Aggregated") => {
                    ads.call(req).await
                }
                _ => Ok(Status::unimplemented(format!("nothing served at {path}")).into_http()),
            }
        }
    });
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// ADS over the store; the node id of the first request picks the snapshot.
#[derive(Clone, Debug)]
struct Ads {
    store: Arc<Store>,
}

/// SDS for one pod.
#[derive(Clone, Debug)]
struct Sds {
    store: Arc<Store>,
    key: String,
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream =
        UnboundedReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream =
        UnboundedReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = unbounded_channel();
        tokio::spawn(run_sotw(self.store.clone(), None, request.into_inner(), tx));
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (tx, rx) = unbounded_channel();
        tokio::spawn(run_delta(self.store.clone(), request.into_inner(), tx));
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

#[tonic::async_trait]
impl SecretDiscoveryService for Sds {
    type DeltaSecretsStream = UnboundedReceiverStream<Result<DeltaDiscoveryResponse, Status>>;
    type StreamSecretsStream = UnboundedReceiverStream<Result<DiscoveryResponse, Status>>;

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let (tx, rx) = unbounded_channel();
        let key = Some(self.key.clone());
        tokio::spawn(run_sotw(self.store.clone(), key, request.into_inner(), tx));
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }

    async fn delta_secrets(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented(
            "pilot-agent's SDS serves StreamSecrets only",
        ))
    }

    async fn fetch_secrets(
        &self,
        _request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Err(Status::unimplemented(
            "pilot-agent's SDS serves StreamSecrets only",
        ))
    }
}

// === state of the world ===

#[derive(Debug, Default)]
struct SotwSub {
    names: Vec<String>,
    wildcard: bool,
    sent_version: Option<String>,
    nonce: String,
}

/// One SotW stream; `fixed` is the store key for SDS (else the node id is used).
async fn run_sotw(
    store: Arc<Store>,
    fixed: Option<String>,
    mut requests: Streaming<DiscoveryRequest>,
    tx: SotwTx,
) {
    let id = NEXT_STREAM.fetch_add(1, Ordering::Relaxed);
    let mut key = fixed;
    if let Some(k) = &key {
        store.stream_opened(id, k);
    }
    let mut subs: BTreeMap<String, SotwSub> = BTreeMap::new();
    let mut changes = store.subscribe();
    loop {
        tokio::select! {
            msg = requests.message() => {
                let Ok(Some(req)) = msg else { break };
                if key.is_none() {
                    let Some(node) = req.node.as_ref().map(|n| n.id.clone()) else {
                        let _ = tx.send(Err(Status::invalid_argument("first request has no node")));
                        break;
                    };
                    store.stream_opened(id, &node);
                    key = Some(node);
                }
                let Some(k) = key.as_deref() else { break };
                sotw_request(&store, id, k, &mut subs, req, &tx);
            }
            changed = changes.changed() => {
                if changed.is_err() { break }
                if let Some(k) = key.as_deref() {
                    let (snap, generation) = store.snapshot(k);
                    for (type_url, sub) in subs.iter_mut() {
                        send_sotw(&store, id, snap.as_deref(), type_url, sub, false, &tx);
                    }
                    store.seen(id, generation);
                }
            }
            () = tx.closed() => break,
        }
    }
    store.stream_closed(id);
}

fn sotw_request(
    store: &Store,
    id: u64,
    key: &str,
    subs: &mut BTreeMap<String, SotwSub>,
    req: DiscoveryRequest,
    tx: &SotwTx,
) {
    let first = !subs.contains_key(&req.type_url);
    let sub = subs.entry(req.type_url.clone()).or_default();
    if !req.response_nonce.is_empty() {
        if req.response_nonce != sub.nonce {
            return; // an answer to an older response: ignore, as the protocol says
        }
        let error = req.error_detail.as_ref().map(|s| s.message.clone());
        store.answered(id, &req.type_url, &req.response_nonce, error);
    }
    let wildcard = is_wildcard_type(&req.type_url)
        && (req.resource_names.is_empty() || req.resource_names.iter().any(|n| n == "*"));
    let changed = first || sub.names != req.resource_names || sub.wildcard != wildcard;
    sub.names = req.resource_names;
    sub.wildcard = wildcard;
    if changed {
        let (snap, generation) = store.snapshot(key);
        send_sotw(store, id, snap.as_deref(), &req.type_url, sub, true, tx);
        if first {
            store.seen(id, generation);
        }
    }
}

fn send_sotw(
    store: &Store,
    id: u64,
    snap: Option<&Snapshot>,
    type_url: &str,
    sub: &mut SotwSub,
    force: bool,
    tx: &SotwTx,
) {
    let Some(snap) = snap else { return };
    let selected: Vec<_> = snap.select(type_url, sub.wildcard, &sub.names).collect();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for r in &selected {
        std::hash::Hash::hash(&(&r.name, &r.version), &mut h);
    }
    let version = format!("{:016x}", std::hash::Hasher::finish(&h));
    if !force && sub.sent_version.as_deref() == Some(&version) {
        return;
    }
    sub.nonce = nonce();
    sub.sent_version = Some(version.clone());
    store.sent(id, type_url, &sub.nonce);
    let _ = tx.send(Ok(DiscoveryResponse {
        version_info: version,
        resources: selected.iter().map(|r| r.any.clone()).collect(),
        type_url: type_url.to_string(),
        nonce: sub.nonce.clone(),
        ..DiscoveryResponse::default()
    }));
}

// === delta ===

#[derive(Debug, Default)]
struct DeltaSub {
    wildcard: bool,
    names: BTreeSet<String>,
    sent: HashMap<String, String>,
    nonce: String,
}

async fn run_delta(store: Arc<Store>, mut requests: Streaming<DeltaDiscoveryRequest>, tx: DeltaTx) {
    let id = NEXT_STREAM.fetch_add(1, Ordering::Relaxed);
    let mut key: Option<String> = None;
    let mut subs: BTreeMap<String, DeltaSub> = BTreeMap::new();
    let mut changes = store.subscribe();
    loop {
        tokio::select! {
            msg = requests.message() => {
                let Ok(Some(req)) = msg else { break };
                if key.is_none() {
                    let Some(node) = req.node.as_ref().map(|n| n.id.clone()) else {
                        let _ = tx.send(Err(Status::invalid_argument("first request has no node")));
                        break;
                    };
                    store.stream_opened(id, &node);
                    key = Some(node);
                }
                let Some(k) = key.as_deref() else { break };
                delta_request(&store, id, k, &mut subs, req, &tx);
            }
            changed = changes.changed() => {
                if changed.is_err() { break }
                if let Some(k) = key.as_deref() {
                    let (snap, generation) = store.snapshot(k);
                    for (type_url, sub) in subs.iter_mut() {
                        send_delta(&store, id, snap.as_deref(), type_url, sub, false, &tx);
                    }
                    store.seen(id, generation);
                }
            }
            () = tx.closed() => break,
        }
    }
    store.stream_closed(id);
}

fn delta_request(
    store: &Store,
    id: u64,
    key: &str,
    subs: &mut BTreeMap<String, DeltaSub>,
    req: DeltaDiscoveryRequest,
    tx: &DeltaTx,
) {
    let first = !subs.contains_key(&req.type_url);
    let sub = subs.entry(req.type_url.clone()).or_default();
    if !req.response_nonce.is_empty() && req.response_nonce == sub.nonce {
        let error = req.error_detail.as_ref().map(|s| s.message.clone());
        store.answered(id, &req.type_url, &req.response_nonce, error);
    }
    if first {
        sub.wildcard = is_wildcard_type(&req.type_url) && req.resource_names_subscribe.is_empty();
        sub.sent = req.initial_resource_versions.clone();
    }
    for name in &req.resource_names_subscribe {
        if name == "*" {
            sub.wildcard = true;
        } else {
            sub.names.insert(name.clone());
            // A (re)subscription asks for the resource even if it was sent before.
            sub.sent.remove(name);
        }
    }
    for name in &req.resource_names_unsubscribe {
        if name == "*" {
            sub.wildcard = false;
        } else {
            sub.names.remove(name);
            sub.sent.remove(name);
        }
    }
    if first || !req.resource_names_subscribe.is_empty() {
        let (snap, generation) = store.snapshot(key);
        send_delta(store, id, snap.as_deref(), &req.type_url, sub, first, tx);
        if first {
            store.seen(id, generation);
        }
    }
}

fn send_delta(
    store: &Store,
    id: u64,
    snap: Option<&Snapshot>,
    type_url: &str,
    sub: &mut DeltaSub,
    force: bool,
    tx: &DeltaTx,
) {
    let Some(snap) = snap else { return };
    let names: Vec<String> = sub.names.iter().cloned().collect();
    let current: Vec<_> = snap.select(type_url, sub.wildcard, &names).collect();
    let changed: Vec<DeltaResource> = current
        .iter()
        .filter(|r| sub.sent.get(&r.name) != Some(&r.version))
        .map(|r| DeltaResource {
            name: r.name.clone(),
            version: r.version.clone(),
            resource: Some(r.any.clone()),
            ..DeltaResource::default()
        })
        .collect();
    let removed: Vec<String> = sub
        .sent
        .keys()
        .filter(|n| !current.iter().any(|r| &r.name == *n))
        .cloned()
        .collect();
    if changed.is_empty() && removed.is_empty() && !force {
        return;
    }
    for r in &changed {
        sub.sent.insert(r.name.clone(), r.version.clone());
    }
    for n in &removed {
        sub.sent.remove(n);
    }
    sub.nonce = nonce();
    store.sent(id, type_url, &sub.nonce);
    let _ = tx.send(Ok(DeltaDiscoveryResponse {
        system_version_info: String::new(),
        resources: changed,
        type_url: type_url.to_string(),
        removed_resources: removed,
        nonce: sub.nonce.clone(),
        ..DeltaDiscoveryResponse::default()
    }));
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    use envoy_types::pb::google::rpc::Status as RpcStatus;
    use tokio::net::UnixStream;
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::transport::{Channel, Endpoint};

    use super::*;
    use crate::cp::store::SyncState;

    /// Connects tonic to a Unix socket.
    #[derive(Clone)]
    struct Uds(PathBuf);

    impl tonic::codegen::Service<http::Uri> for Uds {
        type Response = TokioIo<UnixStream>;
        type Error = io::Error;
        type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Uri) -> Self::Future {
            let path = self.0.clone();
            Box::pin(async move { Ok(TokioIo::new(UnixStream::connect(path).await?)) })
        }
    }

    fn cluster(name: &str) -> envoy_types::pb::google::protobuf::Any {
        let json = serde_json::json!({"name": name, "type": "STATIC", "connect_timeout": "1s"});
        proto::to_any(proto::CLUSTER, json).unwrap()
    }

    fn snapshot(names: &[&str]) -> Snapshot {
        let mut s = Snapshot::default();
        for n in names {
            s.insert((*n).to_string(), cluster(n));
        }
        s
    }

    async fn serve(dir: &Path, store: &Arc<Store>) -> (UdsServer, Channel) {
        let path = dir.join("XDS");
        let me = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        let server = UdsServer::bind(&path, me, store.clone(), Served::Ads).unwrap();
        let channel = Endpoint::from_static("http://xds")
            .connect_with_connector(Uds(path))
            .await
            .unwrap();
        (server, channel)
    }

    async fn wait_for(store: &Store, node: &str, want: impl Fn(&SyncState) -> bool) -> SyncState {
        for _ in 0..200 {
            let state = store.sync_state(node, true);
            if want(&state) {
                return state;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        store.sync_state(node, true)
    }

    /// SotW: a wildcard CDS subscription gets the snapshot, the ACK marks the node synced,
    /// a change is pushed, a NACK is recorded with the proxy's words.
    #[tokio::test]
    async fn sotw_serves_acks_pushes_and_records_nacks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new();
        store.set_all([("n1".to_string(), snapshot(&["a"]))]);
        let (_server, channel) = serve(dir.path(), &store).await;
        let (tx, rx) = mpsc::channel(8);
        let mut responses = AggregatedDiscoveryServiceClient::new(channel)
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let request = |version: &str, nonce: &str, error: Option<&str>| DiscoveryRequest {
            node: Some(Node {
                id: "n1".into(),
                ..Node::default()
            }),
            type_url: proto::CLUSTER.into(),
            version_info: version.into(),
            response_nonce: nonce.into(),
            error_detail: error.map(|m| RpcStatus {
                code: 3,
                message: m.into(),
                ..RpcStatus::default()
            }),
            ..DiscoveryRequest::default()
        };
        tx.send(request("", "", None)).await.unwrap();
        let first = responses.message().await.unwrap().unwrap();
        assert_eq!(first.resources.len(), 1);
        assert!(matches!(
            store.sync_state("n1", true),
            SyncState::Pending(_)
        ));
        tx.send(request(&first.version_info, &first.nonce, None))
            .await
            .unwrap();
        let synced = wait_for(&store, "n1", |s| *s == SyncState::Synced).await;
        assert_eq!(synced, SyncState::Synced);

        store.set_all([("n1".to_string(), snapshot(&["a", "b"]))]);
        let pushed = responses.message().await.unwrap().unwrap();
        assert_eq!(pushed.resources.len(), 2);
        assert_ne!(pushed.version_info, first.version_info);
        tx.send(request(
            &first.version_info,
            &pushed.nonce,
            Some("bad cluster b"),
        ))
        .await
        .unwrap();
        let nacked = wait_for(&store, "n1", |s| matches!(s, SyncState::Nacked(_))).await;
        assert!(matches!(nacked, SyncState::Nacked(n) if n.message == "bad cluster b"));
        assert_eq!(store.nacks().len(), 1);
    }

    /// Delta: the first answer carries everything, a change only what changed and what
    /// was removed.
    #[tokio::test]
    async fn delta_sends_only_changes_and_removals() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new();
        store.set_all([("n2".to_string(), snapshot(&["a", "b"]))]);
        let (_server, channel) = serve(dir.path(), &store).await;
        let (tx, rx) = mpsc::channel(8);
        let mut responses = AggregatedDiscoveryServiceClient::new(channel)
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        tx.send(DeltaDiscoveryRequest {
            node: Some(Node {
                id: "n2".into(),
                ..Node::default()
            }),
            type_url: proto::CLUSTER.into(),
            ..DeltaDiscoveryRequest::default()
        })
        .await
        .unwrap();
        let first = responses.message().await.unwrap().unwrap();
        let mut names: Vec<&str> = first.resources.iter().map(|r| r.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["a", "b"]);
        tx.send(DeltaDiscoveryRequest {
            type_url: proto::CLUSTER.into(),
            response_nonce: first.nonce.clone(),
            ..DeltaDiscoveryRequest::default()
        })
        .await
        .unwrap();
        assert_eq!(
            wait_for(&store, "n2", |s| *s == SyncState::Synced).await,
            SyncState::Synced
        );

        store.set_all([("n2".to_string(), snapshot(&["a", "c"]))]);
        let change = responses.message().await.unwrap().unwrap();
        let names: Vec<&str> = change.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["c"]);
        assert_eq!(change.removed_resources, ["b"]);
    }
}
