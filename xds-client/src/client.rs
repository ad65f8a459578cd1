//! The client: one long-lived task that keeps a stream to the server, reconnects with backoff,
//! feeds the consumer and answers every response; and the cloneable handle through which the
//! proxy changes named subscriptions and reads readiness and stats.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

use crate::backoff::BackoffState;
use crate::config::{ApiType, ClientConfig, Service};
use crate::delta::DeltaStream;
use crate::handler::Handler;
use crate::readiness::{Readiness, ReadinessTracker};
use crate::resource::ResourceType;
use crate::sotw::SotwStream;
use crate::state::{Consumer, TypeState, Types};
use crate::stats::{Stats, StatsRecorder};
use crate::stream::StreamError;
use crate::transport;

type Subscriptions = BTreeMap<ResourceType, BTreeSet<String>>;

/// An xDS client for one server (ADS, or SDS on its own stream). Build it, take handles (the
/// consumer usually keeps one to subscribe EDS/RDS/SDS names), then drive [`Client::run`] on
/// the xDS runtime; dropping that future stops the client.
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    shared: Arc<Shared>,
}

/// A cloneable handle to a client: named subscriptions, readiness and stats.
#[derive(Clone, Debug)]
pub struct ClientHandle {
    shared: Arc<Shared>,
}

/// Why a subscription change was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    /// LDS/CDS (as configured in `ClientConfig::wildcard`) always get everything.
    #[error("{0} is subscribed with a wildcard by this client; it cannot be subscribed by name")]
    Wildcard(ResourceType),
    /// An SDS client serves only secrets.
    #[error("this SDS client only serves secrets; subscribe to {0} on the ADS client")]
    NotServed(ResourceType),
}

/// State shared between the client task and its handles.
#[derive(Debug)]
struct Shared {
    service: Service,
    wildcard: BTreeSet<ResourceType>,
    fetch_timeouts: BTreeMap<ResourceType, Option<Duration>>,
    subscriptions: watch::Sender<Subscriptions>,
    stats: StatsRecorder,
    readiness: ReadinessTracker,
}

/// The client task's own state.
struct Worker {
    config: ClientConfig,
    consumer: Consumer,
    shared: Arc<Shared>,
    types: Types,
    subscriptions: watch::Receiver<Subscriptions>,
    backoff: BackoffState,
}

/// How a stream ended, and whether it got as far as handling a response.
struct StreamEnd {
    error: StreamError,
    progressed: bool,
}

// === impl Client ===

impl Client {
    /// A client for `config`. Nothing happens until [`Client::run`].
    pub fn new(config: ClientConfig) -> Self {
        let stats = StatsRecorder::new(config.service);
        let readiness = ReadinessTracker::new();
        let fetch_timeouts = ResourceType::ALL
            .into_iter()
            .map(|t| (t, config.fetch_timeout(t)))
            .collect::<BTreeMap<_, _>>();
        for resource_type in &config.wildcard {
            stats.subscribe_type(*resource_type);
            readiness.subscribe(*resource_type, config.fetch_timeout(*resource_type));
        }
        let (subscriptions, _) = watch::channel(Subscriptions::new());
        let shared = Arc::new(Shared {
            service: config.service,
            wildcard: config.wildcard.clone(),
            fetch_timeouts,
            subscriptions,
            stats,
            readiness,
        });
        Self { config, shared }
    }

    /// A handle for subscriptions, readiness and stats; valid before and while the client runs.
    pub fn handle(&self) -> ClientHandle {
        ClientHandle {
            shared: self.shared.clone(),
        }
    }

    /// Runs the client forever, delivering updates to `handler`: connect, stream, reconnect
    /// with backoff. Run it on the xDS runtime (e.g. `tokio::spawn(client.run(handler))`);
    /// abort or drop it to stop.
    pub fn run(self, handler: impl Handler) -> impl Future<Output = ()> + Send + 'static {
        let shared = self.shared.clone();
        let worker = Worker::new(self, Arc::new(handler));
        async move {
            shared.readiness.arm();
            tokio::select! {
                _ = worker.run() => {}
                _ = shared.readiness.run_timers(&shared.stats) => {}
            }
        }
    }
}

// === impl ClientHandle ===

impl ClientHandle {
    /// Replaces the named subscription of a type (EDS cluster names, RDS route configuration
    /// names, SDS secret names). The client sends the change promptly, also when called from
    /// inside [`Handler::on_update`]. Names dropped here are forgotten by the client; the
    /// consumer is not told they were removed (it dropped them itself).
    pub fn set_subscriptions<I, S>(
        &self,
        resource_type: ResourceType,
        names: I,
    ) -> Result<(), SubscriptionError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let shared = &self.shared;
        if shared.wildcard.contains(&resource_type) {
            return Err(SubscriptionError::Wildcard(resource_type));
        }
        if shared.service == Service::Secret && resource_type != ResourceType::Secret {
            return Err(SubscriptionError::NotServed(resource_type));
        }
        let names: BTreeSet<String> = names.into_iter().map(Into::into).collect();
        // Everything under the watch's lock, so concurrent callers keep stats consistent.
        shared.subscriptions.send_if_modified(|subs| {
            let previous = subs.get(&resource_type).cloned().unwrap_or_default();
            for gone in previous.difference(&names) {
                shared.stats.unsubscribe_resource(resource_type, gone);
            }
            for new in names.difference(&previous) {
                shared.stats.subscribe_resource(resource_type, new);
            }
            if names.is_empty() {
                shared.readiness.unsubscribe(resource_type);
                subs.remove(&resource_type);
            } else {
                shared.stats.subscribe_type(resource_type);
                let timeout = shared.fetch_timeouts.get(&resource_type).copied().flatten();
                shared.readiness.subscribe(resource_type, timeout);
                subs.insert(resource_type, names.clone());
            }
            previous != names
        });
        Ok(())
    }

    /// The names currently subscribed for a type (empty for wildcard types).
    pub fn subscriptions(&self, resource_type: ResourceType) -> BTreeSet<String> {
        self.shared
            .subscriptions
            .borrow()
            .get(&resource_type)
            .cloned()
            .unwrap_or_default()
    }

    /// Readiness (initial fetch) of this client.
    pub fn readiness(&self) -> Readiness {
        self.shared.readiness.readiness()
    }

    /// A snapshot of the client's statistics.
    pub fn stats(&self) -> Stats {
        self.shared.stats.snapshot()
    }
}

// === impl Worker ===

impl Worker {
    fn new(client: Client, handler: Arc<dyn Handler>) -> Self {
        let Client { config, shared } = client;
        let consumer = Consumer {
            handler,
            stats: shared.stats.clone(),
        };
        let types = ResourceType::ALL
            .into_iter()
            .map(|t| (t, TypeState::new(t, config.wildcard.contains(&t))))
            .collect();
        let subscriptions = shared.subscriptions.subscribe();
        let backoff = BackoffState::new(config.backoff);
        Self {
            config,
            consumer,
            shared,
            types,
            subscriptions,
            backoff,
        }
    }

    async fn run(mut self) {
        loop {
            let end = self.connect_and_stream().await;
            self.shared.stats.record_failure();
            if end.progressed {
                self.backoff.reset();
            }
            let delay = match (&end.error, end.progressed) {
                (StreamError::Closed, true) => Duration::ZERO,
                _ => self.backoff.next_delay(),
            };
            match &end.error {
                StreamError::Closed => {
                    tracing::info!(?delay, "xDS stream closed by the server; reconnecting")
                }
                error => tracing::warn!(%error, ?delay, "xDS stream lost; reconnecting"),
            }
            tokio::time::sleep(delay).await;
        }
    }

    async fn connect_and_stream(&mut self) -> StreamEnd {
        let channel =
            match transport::connect(&self.config.transport, self.config.connect_timeout).await {
                Ok(channel) => channel,
                Err(e) => {
                    return StreamEnd {
                        error: e.into(),
                        progressed: false,
                    };
                }
            };
        let service = self.config.service;
        let max = self.config.max_message_size.unwrap_or(usize::MAX);
        match self.config.api_type {
            ApiType::Grpc => {
                let stream = SotwStream::new(&self.config);
                self.drive(
                    stream,
                    |s, types| s.pending_requests(types),
                    |s, types, consumer, response| s.on_response(types, consumer, response),
                    |requests| open_sotw(channel, service, max, requests),
                )
                .await
            }
            ApiType::DeltaGrpc => {
                let stream = DeltaStream::new(&self.config);
                self.drive(
                    stream,
                    |s, types| s.pending_requests(types),
                    |s, types, consumer, response| s.on_response(types, consumer, response),
                    |requests| open_delta(channel, service, max, requests),
                )
                .await
            }
        }
    }

    /// Runs one stream: initial requests, then responses and subscription changes until the
    /// stream ends.
    async fn drive<P, Req, Resp, Open, Fut>(
        &mut self,
        mut stream: P,
        pending: impl Fn(&mut P, &Types) -> Vec<Req>,
        on_response: impl Fn(&mut P, &mut Types, &Consumer, Resp) -> (Option<ResourceType>, Req),
        open: Open,
    ) -> StreamEnd
    where
        Open: FnOnce(UnboundedReceiverStream<Req>) -> Fut,
        Fut: Future<Output = Result<Streaming<Resp>, tonic::Status>>,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        self.sync_subscriptions();
        for request in pending(&mut stream, &self.types) {
            // A send error means the stream is already gone; the response side reports why.
            let _ = tx.send(request);
        }
        let mut responses = match open(UnboundedReceiverStream::new(rx)).await {
            Ok(responses) => responses,
            Err(status) => {
                return StreamEnd {
                    error: StreamError::from_status(&status),
                    progressed: false,
                };
            }
        };
        self.shared.stats.set_connected(true);
        tracing::info!(server = %self.config.transport, "xDS stream established");

        let mut progressed = false;
        loop {
            tokio::select! {
                message = responses.message() => {
                    let response = match message {
                        Ok(Some(response)) => response,
                        Ok(None) => return StreamEnd { error: StreamError::Closed, progressed },
                        Err(status) => {
                            return StreamEnd { error: StreamError::from_status(&status), progressed };
                        }
                    };
                    let (resource_type, request) =
                        on_response(&mut stream, &mut self.types, &self.consumer, response);
                    // Readiness first, so whoever sees the ACK also sees the readiness.
                    if let Some(resource_type) = resource_type {
                        self.shared.readiness.received(resource_type);
                    }
                    let _ = tx.send(request);
                    progressed = true;
                }
                changed = self.subscriptions.changed() => {
                    if changed.is_err() {
                        // The sender lives in `Shared`, which this worker holds: unreachable.
                        continue;
                    }
                }
            }
            // The consumer may have changed subscriptions (also from inside the handler).
            self.sync_subscriptions();
            for request in pending(&mut stream, &self.types) {
                let _ = tx.send(request);
            }
        }
    }

    /// Copies the handle's named subscriptions into the per-type state.
    fn sync_subscriptions(&mut self) {
        let subscriptions = self.subscriptions.borrow_and_update().clone();
        for (resource_type, state) in &mut self.types {
            state.set_names(
                subscriptions
                    .get(resource_type)
                    .cloned()
                    .unwrap_or_default(),
            );
        }
    }
}

async fn open_sotw(
    channel: Channel,
    service: Service,
    max_message_size: usize,
    requests: UnboundedReceiverStream<DiscoveryRequest>,
) -> Result<Streaming<DiscoveryResponse>, tonic::Status> {
    let response = match service {
        Service::Aggregated => {
            AggregatedDiscoveryServiceClient::new(channel)
                .max_decoding_message_size(max_message_size)
                .stream_aggregated_resources(requests)
                .await?
        }
        Service::Secret => {
            SecretDiscoveryServiceClient::new(channel)
                .max_decoding_message_size(max_message_size)
                .stream_secrets(requests)
                .await?
        }
    };
    Ok(response.into_inner())
}

async fn open_delta(
    channel: Channel,
    service: Service,
    max_message_size: usize,
    requests: UnboundedReceiverStream<DeltaDiscoveryRequest>,
) -> Result<Streaming<DeltaDiscoveryResponse>, tonic::Status> {
    let response = match service {
        Service::Aggregated => {
            AggregatedDiscoveryServiceClient::new(channel)
                .max_decoding_message_size(max_message_size)
                .delta_aggregated_resources(requests)
                .await?
        }
        Service::Secret => {
            SecretDiscoveryServiceClient::new(channel)
                .max_decoding_message_size(max_message_size)
                .delta_secrets(requests)
                .await?
        }
    };
    Ok(response.into_inner())
}
