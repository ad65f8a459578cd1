//! SDS: fetching the secrets the TLS contexts of the current listeners and clusters refer to.
//!
//! A context's `sds_config` says where its secret comes from: `ads {}` (the ADS stream
//! subscribes the name) or an `api_config_source` such as Istio's `sds-grpc` cluster on the
//! agent's socket (one SDS stream per distinct source). After every LDS and CDS change,
//! [`Sds::sync`] re-subscribes exactly the names the live contexts need. Secrets that arrive
//! go into the [`SecretStore`]; a bad one is NACKed naming it and the last good value keeps
//! serving.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use prost::Message;
use xds_client::{ClientHandle, RejectedResource, Rejection, Resource, ResourceType, Update};

use crate::stats::{External, Store};
use crate::tls::SecretStore;

/// The SDS side of the proxy: the ADS stream (when secrets come over it) and one client per
/// separate SDS source.
#[derive(Debug)]
pub struct Sds {
    bootstrap: Arc<Bootstrap>,
    secrets: SecretStore,
    store: Store,
    ads: Mutex<Option<ClientHandle>>,
    /// SDS streams by their `api_config_source` (encoded), with the task running each.
    streams: Mutex<HashMap<Vec<u8>, Stream>>,
    /// File watchers by `path_config_source.path`.
    files: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
}

#[derive(Debug)]
struct Stream {
    handle: ClientHandle,
    task: tokio::task::JoinHandle<()>,
}

/// Applies secret updates (from an SDS stream or ADS) to the store.
#[derive(Debug, Clone)]
pub struct SecretHandler {
    pub secrets: SecretStore,
}

// === impl Sds ===

impl Sds {
    pub fn new(bootstrap: Arc<Bootstrap>, secrets: SecretStore, store: Store) -> Self {
        Self {
            bootstrap,
            secrets,
            store,
            ads: Mutex::default(),
            streams: Mutex::default(),
            files: Mutex::default(),
        }
    }

    /// The ADS client, for secrets whose `sds_config` is `ads {}`.
    pub fn set_ads(&self, handle: ClientHandle) {
        *self.ads.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
    }

    /// Subscribes exactly the secrets live TLS contexts need, starting SDS streams for
    /// sources not seen before. Call it on the control runtime after every listener or
    /// cluster change.
    pub fn sync(&self) {
        let mut over_ads = BTreeSet::new();
        let mut by_stream: BTreeMap<Vec<u8>, (BTreeSet<String>, _)> = BTreeMap::new();
        for sub in self.secrets.sds_subscriptions() {
            match &sub.source.config_source_specifier {
                Some(ConfigSourceSpecifier::Ads(_)) => {
                    over_ads.insert(sub.name);
                }
                Some(ConfigSourceSpecifier::PathConfigSource(p)) => self.watch_file(&p.path),
                #[allow(deprecated)]
                Some(ConfigSourceSpecifier::Path(p)) => self.watch_file(p),
                _ => {
                    let key = sub.source.encode_to_vec();
                    let entry = by_stream
                        .entry(key)
                        .or_insert_with(|| (BTreeSet::new(), sub.source.clone()));
                    entry.0.insert(sub.name);
                }
            }
        }
        self.sync_ads(over_ads);
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        for (key, stream) in streams.iter() {
            if !by_stream.contains_key(key) {
                let _ = stream
                    .handle
                    .set_subscriptions(ResourceType::Secret, Vec::<String>::new());
            }
        }
        for (key, (names, source)) in by_stream {
            if !streams.contains_key(&key) {
                match self.start_stream(&source) {
                    Ok(stream) => {
                        streams.insert(key.clone(), stream);
                    }
                    Err(e) => {
                        tracing::error!("cannot fetch secrets {names:?} over SDS: {e}");
                        continue;
                    }
                }
            }
            if let Some(stream) = streams.get(&key)
                && let Err(e) = stream.handle.set_subscriptions(ResourceType::Secret, names)
            {
                tracing::error!("cannot subscribe to secrets: {e}");
            }
        }
    }

    /// Starts watching an SDS file, once per path.
    fn watch_file(&self, path: &str) {
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        if files.contains_key(path) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::error!(path, "cannot watch the SDS file: no runtime");
            return;
        };
        let task = rt.spawn(super::sds_file::watch(path.into(), self.secrets.clone()));
        files.insert(path.to_string(), task);
    }

    fn sync_ads(&self, names: BTreeSet<String>) {
        let ads = self.ads.lock().unwrap_or_else(PoisonError::into_inner);
        match ads.as_ref() {
            Some(ads) => {
                if let Err(e) = ads.set_subscriptions(ResourceType::Secret, names) {
                    tracing::error!("cannot subscribe to secrets over ADS: {e}");
                }
            }
            None if !names.is_empty() => {
                tracing::error!(
                    "secrets {names:?} are configured to come over ADS, but the bootstrap has \
                     no ads_config; their TLS contexts stay not ready"
                );
            }
            None => {}
        }
    }

    fn start_stream(
        &self,
        source: &envoy_types::pb::envoy::config::core::v3::ConfigSource,
    ) -> Result<Stream, String> {
        let config = match xds_client::ClientConfig::from_sds_config(&self.bootstrap, source)
            .map_err(|e| e.to_string())?
        {
            xds_client::SdsSource::Stream(config) => *config,
            xds_client::SdsSource::Ads => return Err("expected an api_config_source".into()),
        };
        tracing::info!(transport = ?config.transport, "starting an SDS stream");
        let client = xds_client::Client::new(config);
        let handle = client.handle();
        add_stats(&self.store, handle.clone());
        let task = tokio::spawn(client.run(SecretHandler {
            secrets: self.secrets.clone(),
        }));
        Ok(Stream { handle, task })
    }

    /// Whether any separate SDS stream runs.
    pub fn has_streams(&self) -> bool {
        !self
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Resolves once every SDS stream finished its initial fetch (received a response or
    /// timed out, per its `initial_fetch_timeout`).
    pub async fn initial_fetch_done(&self) {
        let readiness: Vec<_> = self
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|s| s.handle.readiness())
            .collect();
        for r in readiness {
            r.ready().await;
        }
    }
}

impl Drop for Sds {
    fn drop(&mut self) {
        for stream in self
            .streams
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            stream.task.abort();
        }
    }
}

/// Publishes an xDS client's stats (`sds.*`, `control_plane.*`) in the store.
pub fn add_stats(store: &Store, handle: ClientHandle) {
    store.add_source(Box::new(move || {
        handle
            .stats()
            .envoy_stats()
            .into_iter()
            .map(|s| match s.value {
                xds_client::StatValue::Counter(v) => External::Counter(s.name, v),
                xds_client::StatValue::Gauge(v) => External::Gauge(s.name, v),
                xds_client::StatValue::Text(t) => External::Text(s.name, t),
            })
            .collect()
    }));
}

// === impl SecretHandler ===

impl SecretHandler {
    /// Applies a secret update: good secrets replace the old ones, bad ones are refused by
    /// name (the previous value stays), removed ones make their contexts not ready.
    pub fn apply(&self, update: &Update) -> Result<(), Rejection> {
        let secrets: Vec<_> = update
            .resources
            .iter()
            .filter_map(|r| match &r.resource {
                Resource::Secret(s) => Some((**s).clone()),
                _ => None,
            })
            .collect();
        let result = self.secrets.apply_versioned(&secrets, &update.version_info);
        if !update.removed.is_empty() {
            self.secrets.remove(&update.removed);
        }
        tracing::info!(
            "sds: version {:?}: {} secrets received, {} removed",
            update.version_info,
            secrets.len(),
            update.removed.len()
        );
        result.map_err(|rejected| {
            Rejection::Resources(
                rejected
                    .into_iter()
                    .map(|r| RejectedResource {
                        reason: format!("secret {:?}: {}", r.name, r.error),
                        name: r.name,
                    })
                    .collect(),
            )
        })
    }
}

impl xds_client::Handler for SecretHandler {
    fn on_update(&self, update: Update) -> Result<(), Rejection> {
        if update.resource_type != ResourceType::Secret {
            return Err(Rejection::update(format!(
                "unexpected {:?} resources on an SDS stream",
                update.resource_type
            )));
        }
        let result = self.apply(&update);
        if let Err(rejection) = &result {
            tracing::warn!("rejected secrets: {rejection:?}");
        }
        result
    }
}
