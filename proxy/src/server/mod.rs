//! The server: builds everything from the bootstrap and runs it.
//!
//! Two runtimes, as DESIGN.md asks: the data plane (listeners, connections) on a
//! multi-threaded runtime sized by `--concurrency`; the admin server, xDS and DNS on a
//! single-threaded runtime of their own, so a busy data plane never starves the control path
//! and a slow control plane never stalls traffic.
//!
//! Start-up follows Envoy: bootstrap secrets, static clusters and listeners from the
//! bootstrap, admin up, then the initial xDS fetch (CDS then EDS, LDS; honouring
//! `initial_fetch_timeout`), then the secrets their TLS contexts need (over ADS or their own
//! SDS stream, see [`sds`]; at most until the SDS initial fetch ends or 15s), then the
//! workers start accepting and `server.state` becomes LIVE. A TLS chain still without its
//! secrets closes its connections until they arrive; it never serves plaintext.
//!
//! Shutdown: SIGTERM, SIGINT and `/quitquitquit` drain: stop accepting, let open
//! connections finish within `--drain-time-s`, then exit 0, so a `kill`, a `systemctl stop`
//! or pilot-agent's exit does not cut requests in flight. (Envoy exits at once; a second
//! SIGTERM or SIGINT does that here.)

pub mod sds;
mod sds_file;
pub mod state;
pub mod xds;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;

pub use state::{ServerState, State};

use crate::bootstrap::Loaded;
use crate::cli::logging::LogHandle;
use crate::cli::{Mode, Options};
use crate::config::cluster::ClusterConfig;
use crate::config::listener::ListenerConfig;
use crate::istio_stats::{IstioStats, Workload};
use crate::listener::ListenerManager;
use crate::stats::Store;
use crate::tls::{LocalNode, TlsResources};
use crate::upstream::ClusterManager;
use sds::Sds;

/// Everything the admin server and the xDS handler share.
#[derive(Debug)]
pub struct Shared {
    pub store: Store,
    pub clusters: Arc<ClusterManager>,
    pub listeners: Arc<ListenerManager>,
    /// The secrets and node identity every TLS context is built from.
    pub tls: TlsResources,
    pub sds: Arc<Sds>,
    pub state: ServerState,
    pub bootstrap: Arc<Bootstrap>,
    pub bootstrap_loaded: SystemTime,
    pub options: Options,
    pub log: Option<LogHandle>,
}

// === impl Shared ===

impl Shared {
    /// The certificates of every TLS context whose secrets have arrived: listener filter
    /// chains, then cluster transports (`/certs`, the certificate expiry gauge).
    pub fn tls_contexts(&self) -> Vec<crate::tls::ContextCerts> {
        let mut contexts = Vec::new();
        for listener in self.listeners.all() {
            contexts.extend(
                listener
                    .all_chains()
                    .filter_map(|c| c.tls.as_ref()?.certs()),
            );
        }
        for cluster in self.clusters.all() {
            contexts.extend(cluster.tls.certs());
        }
        contexts
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("cannot start a runtime: {0}")]
    Runtime(std::io::Error),
    #[error("admin: {0}")]
    Admin(String),
    #[error("xDS: {0}")]
    Xds(String),
}

/// Runs the proxy until it is shut down. Returns the process exit code.
pub fn run(options: Options, loaded: Loaded, log: Option<LogHandle>) -> ExitCode {
    match run_inner(options, loaded, log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run_inner(options: Options, loaded: Loaded, log: Option<LogHandle>) -> Result<(), StartError> {
    let bootstrap = Arc::new(loaded.bootstrap);
    let store = Store::new(bootstrap.stats_config.as_ref())
        .map_err(|e| StartError::Config(e.to_string()))?;
    // Istio's metrics describe this proxy's workload from the node metadata.
    let node_metadata = bootstrap
        .node
        .as_ref()
        .and_then(|n| n.metadata.clone())
        .unwrap_or_default();
    IstioStats::install(IstioStats::new(
        store.clone(),
        Workload::from_node_metadata(&node_metadata),
    ));
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("main")
        .build()
        .map_err(StartError::Runtime)?;
    crate::worker::set_count(options.concurrency.max(1) as usize);
    let data = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.concurrency.max(1) as usize)
        .on_thread_start(crate::worker::register_thread)
        .thread_name("wrk")
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;

    let shared = control.block_on(build(&options, &bootstrap, &store, log))?;

    control.block_on(async {
        crate::admin::start(shared.clone())
            .await
            .map_err(StartError::Admin)?;
        shared.state.set(State::Initializing);
        let xds = start_xds(&shared)?;
        if let Some(handle) = &xds {
            tracing::info!("waiting for the initial xDS configuration");
            let readiness = handle.readiness();
            tokio::select! {
                () = readiness.ready() => {}
                () = shared.state.shutdown.cancelled() => {}
            }
        }
        wait_for_static_clusters(&shared).await;
        wait_for_secrets(&shared).await;
        if options.mode == Mode::InitOnly {
            tracing::info!("initialized (--mode init_only); exiting");
            return Ok(());
        }
        tokio::spawn(track_cert_expiry(shared.clone()));
        shared.listeners.start_workers(data.handle().clone());
        shared.state.set(State::Live);
        tracing::info!("all listeners started; server is LIVE");
        wait_for_shutdown(&shared).await;
        shut_down(&shared).await;
        Ok(())
    })?;
    data.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// Builds the TLS resources (bootstrap secrets, the node for Istio's metadata exchange),
/// the static clusters and listeners, and starts fetching the secrets they need.
async fn build(
    options: &Options,
    bootstrap: &Arc<Bootstrap>,
    store: &Store,
    log: Option<LogHandle>,
) -> Result<Arc<Shared>, StartError> {
    let tls = TlsResources {
        secrets: crate::tls::SecretStore::new(),
        node: bootstrap.node.as_ref().map(|n| Arc::new(LocalNode::new(n))),
    };
    if let Some(sr) = &bootstrap.static_resources {
        tls.secrets
            .add_static(&sr.secrets)
            .map_err(|e| StartError::Config(format!("static_resources.{e}")))?;
    }
    let clusters = ClusterManager::with_tls(store.clone(), tls.clone());
    clusters
        .add_static(static_clusters(bootstrap)?)
        .map_err(StartError::Config)?;
    let listeners = ListenerManager::new(store.clone(), clusters.clone(), options.drain_time);
    listeners
        .add_static(static_listeners(bootstrap)?)
        .map_err(StartError::Config)?;
    let sds = Arc::new(Sds::new(
        bootstrap.clone(),
        tls.secrets.clone(),
        store.clone(),
    ));
    Ok(Arc::new(Shared {
        state: ServerState::new(store, options.concurrency),
        store: store.clone(),
        clusters,
        listeners,
        tls,
        sds,
        bootstrap: bootstrap.clone(),
        bootstrap_loaded: SystemTime::now(),
        options: options.clone(),
        log,
    }))
}

fn static_clusters(bootstrap: &Bootstrap) -> Result<Vec<ClusterConfig>, StartError> {
    let Some(sr) = &bootstrap.static_resources else {
        return Ok(Vec::new());
    };
    sr.clusters
        .iter()
        .enumerate()
        .map(|(i, c)| {
            ClusterConfig::from_proto(c)
                .map_err(|e| StartError::Config(format!("static_resources.clusters[{i}]: {e}")))
        })
        .collect()
}

fn static_listeners(bootstrap: &Bootstrap) -> Result<Vec<ListenerConfig>, StartError> {
    let Some(sr) = &bootstrap.static_resources else {
        return Ok(Vec::new());
    };
    sr.listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            ListenerConfig::from_proto(l)
                .map_err(|e| StartError::Config(format!("static_resources.listeners[{i}]: {e}")))
        })
        .collect()
}

/// What `--mode validate` checks beyond the proto level, as Envoy's validation server does:
/// the static clusters and listeners convert and build (filter chains, matchers), and
/// names are unique. Nothing is bound or connected.
pub fn check_static(bootstrap: &Bootstrap) -> Result<(), String> {
    // A runtime of its own: DNS clusters start resolving when added (and stop with it).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async { check_static_in(bootstrap) })
}

fn check_static_in(bootstrap: &Bootstrap) -> Result<(), String> {
    let store = Store::new(None).map_err(|e| e.to_string())?;
    // TLS contexts bind to the bootstrap's secrets, as in serve mode.
    let tls = TlsResources::default();
    if let Some(sr) = &bootstrap.static_resources {
        tls.secrets
            .add_static(&sr.secrets)
            .map_err(|e| format!("static_resources.{e}"))?;
    }
    let clusters = ClusterManager::with_tls(store.clone(), tls.clone());
    // Duplicate names are refused here, as Envoy's cluster manager does.
    clusters.add_static(static_clusters(bootstrap).map_err(|e| e.to_string())?)?;
    // HTTP connection managers check their routes' clusters against these.
    let listeners = ListenerManager::new(store, clusters, Duration::ZERO);
    let mut names = std::collections::HashSet::new();
    for (i, l) in static_listeners(bootstrap)
        .map_err(|e| e.to_string())?
        .into_iter()
        .enumerate()
    {
        // Envoy keeps the first listener of a name (see ListenerManager::add_static).
        if !names.insert(l.name.clone()) {
            continue;
        }
        let name = l.name.clone();
        crate::listener::active::ActiveListener::build(l, None, listeners.http(), &tls, "")
            .map_err(|e| {
                format!("static_resources.listeners[{i}]: error adding listener '{name}': {e}")
            })?;
    }
    Ok(())
}

/// Connects ADS if the bootstrap configures it; its stats join the store.
fn start_xds(shared: &Arc<Shared>) -> Result<Option<xds_client::ClientHandle>, StartError> {
    let has_ads = shared
        .bootstrap
        .dynamic_resources
        .as_ref()
        .is_some_and(|d| d.ads_config.is_some());
    if !has_ads {
        shared.sds.sync();
        return Ok(None);
    }
    let config = xds_client::ClientConfig::from_bootstrap(&shared.bootstrap)
        .map_err(|e| StartError::Xds(e.to_string()))?;
    let client = xds_client::Client::new(config);
    let handle = client.handle();
    sds::add_stats(&shared.store, handle.clone());
    shared.sds.set_ads(handle.clone());
    shared.sds.sync();
    let handler = xds::XdsHandler {
        clusters: shared.clusters.clone(),
        listeners: shared.listeners.clone(),
        sds: shared.sds.clone(),
        client: handle.clone(),
    };
    // Bootstrap listeners may use RDS too.
    handler.subscribe_routes();
    tokio::spawn(client.run(handler));
    Ok(Some(handle))
}

/// DNS clusters resolve once before the workers start, as Envoy's primary cluster init.
async fn wait_for_static_clusters(shared: &Shared) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !shared.clusters.all_warm() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long start-up waits for the secrets of TLS contexts when their SDS source has no
/// `initial_fetch_timeout` of its own (Envoy's default).
const SECRETS_TIMEOUT: Duration = xds_client::DEFAULT_INITIAL_FETCH_TIMEOUT;

/// Like Envoy's listener and cluster warming: LIVE only once every TLS context has its
/// secrets, or each SDS stream finished its initial fetch (a response, or its
/// `initial_fetch_timeout`), or [`SECRETS_TIMEOUT`] passed. Chains still without secrets
/// then close their connections until the secrets arrive; never plaintext.
async fn wait_for_secrets(shared: &Shared) {
    let deadline = tokio::time::Instant::now() + SECRETS_TIMEOUT;
    let mut changes = shared.tls.secrets.changes();
    // Secrets over ADS have no stream of their own: only the deadline ends their wait.
    let streams = shared.sds.has_streams();
    let fetched = async {
        if streams {
            shared.sds.initial_fetch_done().await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(fetched);
    loop {
        let Err(missing) = tls_readiness(shared) else {
            return;
        };
        tokio::select! {
            _ = changes.changed() => {}
            () = &mut fetched => {
                if tls_readiness(shared).is_err() {
                    tracing::warn!("initial secret fetch done; TLS not ready: {missing}");
                    return;
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                tracing::warn!("secrets still missing after {SECRETS_TIMEOUT:?}: {missing}");
                return;
            }
            () = shared.state.shutdown.cancelled() => return,
        }
    }
}

/// Keeps `server.days_until_first_cert_expiring` at the fewest days any certificate in use
/// (chain or CA) has left, as Envoy does; recomputed on every secret change and hourly
/// (contexts also change with listeners and clusters).
async fn track_cert_expiry(shared: Arc<Shared>) {
    let gauge = shared
        .store
        .scope("server.")
        .gauge("days_until_first_cert_expiring");
    let mut changes = shared.tls.secrets.changes();
    loop {
        let now = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let fewest = shared
            .tls_contexts()
            .iter()
            .flat_map(|c| c.ca.iter().chain(&c.chain))
            .filter_map(|(_, der)| crate::tls::cert::Leaf::parse(der).ok())
            .map(|leaf| u64::try_from((leaf.not_after - now) / 86_400).unwrap_or(0))
            .min();
        gauge.set(fewest.unwrap_or(u64::from(u32::MAX)));
        tokio::select! {
            _ = changes.changed() => {}
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
            () = shared.state.shutdown.cancelled() => return,
        }
    }
}

/// The first listener or cluster whose TLS secrets are missing.
fn tls_readiness(shared: &Shared) -> Result<(), String> {
    for l in shared.listeners.all() {
        l.tls_readiness()
            .map_err(|e| format!("listener {:?}: {e}", l.name()))?;
    }
    for c in shared.clusters.all() {
        c.tls
            .readiness()
            .map_err(|e| format!("cluster {:?}: {e}", c.name()))?;
    }
    Ok(())
}

async fn wait_for_shutdown(shared: &Shared) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    let drain = shared.options.drain_time;
    tokio::select! {
        () = shared.state.shutdown.cancelled() => {
            tracing::warn!("shutting down (admin request); draining for up to {drain:?}");
        }
        Some(()) = next(term.as_mut()) => {
            tracing::warn!("caught SIGTERM; draining for up to {drain:?}");
        }
        Some(()) = next(int.as_mut()) => {
            tracing::warn!("caught SIGINT; draining for up to {drain:?}");
        }
    }
}

/// Waits for a second SIGTERM or SIGINT (the one that asks to stop now).
async fn wait_for_second_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    tokio::select! {
        Some(()) = next(term.as_mut()) => {}
        Some(()) = next(int.as_mut()) => {}
        else => std::future::pending().await,
    }
    tracing::warn!("second signal; closing all connections now");
}

async fn next(s: Option<&mut tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Stops accepting, then waits for connections to finish within the drain time; what is
/// left is closed. A second signal during the drain closes everything at once.
async fn shut_down(shared: &Shared) {
    shared.state.set(State::Draining);
    let grace = shared.options.drain_time;
    shared.listeners.shutdown(grace);
    let deadline = tokio::time::Instant::now() + grace + Duration::from_millis(500);
    let cut_short = async {
        wait_for_second_signal().await;
        shared.listeners.shutdown(Duration::ZERO);
        std::future::pending::<()>().await;
    };
    let drained = async {
        while shared.listeners.active_connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        () = drained => {}
        () = cut_short => {}
    }
    tracing::info!(
        "exiting with {} connections open",
        shared.listeners.active_connections()
    );
}
