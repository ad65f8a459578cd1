//! Helpers shared by the integration tests: a recording consumer, a running client that
//! stops when dropped, and polling with a generous guard.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use tokio::sync::mpsc::{
    UnboundedReceiver, UnboundedSender, error::TryRecvError, unbounded_channel,
};
use tokio::task::JoinHandle;
use xds_client::{
    ApiType, Backoff, Client, ClientConfig, ClientHandle, Handler, Rejection, Transport, Update,
};

/// Guard for anything a test waits for; never reached when things work.
pub const GUARD: Duration = Duration::from_secs(10);

pub fn node() -> Node {
    Node {
        id: "sidecar~10.0.0.1~app-1.default~default.svc.cluster.local".into(),
        cluster: "app.default".into(),
        ..Default::default()
    }
}

/// An ADS config with a fast backoff and no initial fetch timeouts in the way.
pub fn ads_config(transport: Transport, api_type: ApiType) -> ClientConfig {
    let mut config = ClientConfig::ads(transport, api_type, node());
    // As Istio's bootstrap sets it.
    config.set_node_on_first_message_only = true;
    config.backoff = Backoff {
        base: Duration::from_millis(10),
        max: Duration::from_millis(100),
    };
    config
}

/// A consumer that records every update and answers with scripted verdicts (default `Ok`).
#[derive(Clone)]
pub struct Recorder {
    tx: UnboundedSender<Update>,
    verdicts: Arc<Mutex<VecDeque<Result<(), Rejection>>>>,
    on_update: Arc<dyn Fn(&Update) + Send + Sync>,
}

pub struct Updates {
    rx: UnboundedReceiver<Update>,
}

pub fn recorder() -> (Recorder, Updates) {
    recorder_with(|_| {})
}

/// A recorder that also runs `on_update` (e.g. to follow CDS with EDS subscriptions).
pub fn recorder_with(on_update: impl Fn(&Update) + Send + Sync + 'static) -> (Recorder, Updates) {
    let (tx, rx) = unbounded_channel();
    let recorder = Recorder {
        tx,
        verdicts: Default::default(),
        on_update: Arc::new(on_update),
    };
    (recorder, Updates { rx })
}

impl Recorder {
    /// The verdict for the next update (updates after it are accepted again).
    pub fn answer_next(&self, verdict: Result<(), Rejection>) {
        self.verdicts.lock().unwrap().push_back(verdict);
    }
}

impl Handler for Recorder {
    fn on_update(&self, update: Update) -> Result<(), Rejection> {
        (self.on_update)(&update);
        let verdict = self.verdicts.lock().unwrap().pop_front().unwrap_or(Ok(()));
        self.tx.send(update).unwrap();
        verdict
    }
}

impl Updates {
    pub async fn next(&mut self) -> Update {
        tokio::time::timeout(GUARD, self.rx.recv())
            .await
            .expect("no update within the guard timeout")
            .expect("consumer gone")
    }

    /// The next update if one is already there.
    pub fn try_next(&mut self) -> Option<Update> {
        self.rx.try_recv().ok()
    }

    /// Asserts the consumer got nothing so far. Updates are delivered before the ACK is
    /// sent, so once a test has seen an ACK this is deterministic.
    pub fn assert_none(&mut self) {
        match self.rx.try_recv() {
            Err(TryRecvError::Empty) => {}
            other => panic!("unexpected update: {other:?}"),
        }
    }
}

/// A client task that is aborted when the test drops it.
pub struct Running {
    pub handle: ClientHandle,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn start(config: ClientConfig, handler: impl Handler) -> Running {
    let client = Client::new(config);
    let handle = client.handle();
    let task = tokio::spawn(client.run(handler));
    Running { handle, task }
}

/// Polls `condition` until it holds; fails after the guard.
pub async fn eventually(mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + GUARD;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within the guard"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Fails the test if `future` does not complete within the guard.
pub async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(GUARD, future)
        .await
        .expect("did not complete within the guard timeout")
}

pub fn names(update: &Update) -> Vec<&str> {
    update.resources.iter().map(|r| r.name.as_str()).collect()
}
