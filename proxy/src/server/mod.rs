//! The server: builds everything from the bootstrap and runs it.
//!
//! Two runtimes, as DESIGN.md asks: the data plane (listeners, connections) on a
//! multi-threaded runtime sized by `--concurrency`; the admin server, xDS and DNS on a
//! single-threaded runtime of their own, so a busy data plane never starves the control path
//! and a slow control plane never stalls traffic.
//!
//! Start-up follows Envoy: static clusters and listeners from the bootstrap, admin up, then
//! the initial xDS fetch (CDS then EDS, LDS; honouring `initial_fetch_timeout`), then the
//! workers start accepting and `server.state` becomes LIVE.
//!
//! Shutdown: SIGTERM, SIGINT and `/quitquitquit` drain: stop accepting, let open
//! connections finish within `--drain-time-s`, then exit 0, so a `kill`, a `systemctl stop`
//! or pilot-agent's exit does not cut requests in flight. (Envoy exits at once; a second
//! SIGTERM or SIGINT does that here.)

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
use crate::stats::{External, Store};
use crate::upstream::ClusterManager;

/// Everything the admin server and the xDS handler share.
#[derive(Debug)]
pub struct Shared {
    pub store: Store,
    pub clusters: Arc<ClusterManager>,
    pub listeners: Arc<ListenerManager>,
    pub state: ServerState,
    pub bootstrap: Arc<Bootstrap>,
    pub bootstrap_loaded: SystemTime,
    pub options: Options,
    pub log: Option<LogHandle>,
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

    let shared = control.block_on(async {
        let clusters = ClusterManager::new(store.clone());
        let statics = static_clusters(&bootstrap)?;
        clusters.add_static(statics).map_err(StartError::Config)?;
        let listeners = ListenerManager::new(store.clone(), clusters.clone(), options.drain_time);
        listeners
            .add_static(static_listeners(&bootstrap)?)
            .map_err(StartError::Config)?;
        Ok::<_, StartError>(Arc::new(Shared {
            state: ServerState::new(&store, options.concurrency),
            store: store.clone(),
            clusters,
            listeners,
            bootstrap: bootstrap.clone(),
            bootstrap_loaded: SystemTime::now(),
            options: options.clone(),
            log,
        }))
    })?;

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
        if options.mode == Mode::InitOnly {
            tracing::info!("initialized (--mode init_only); exiting");
            return Ok(());
        }
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
    let clusters = ClusterManager::new(store.clone());
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
        crate::listener::active::ActiveListener::build(l, None, listeners.http(), "").map_err(
            |e| format!("static_resources.listeners[{i}]: error adding listener '{name}': {e}"),
        )?;
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
        return Ok(None);
    }
    let config = xds_client::ClientConfig::from_bootstrap(&shared.bootstrap)
        .map_err(|e| StartError::Xds(e.to_string()))?;
    let client = xds_client::Client::new(config);
    let handle = client.handle();
    let stats = handle.clone();
    shared.store.add_source(Box::new(move || {
        stats
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
    let handler = xds::XdsHandler {
        clusters: shared.clusters.clone(),
        listeners: shared.listeners.clone(),
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
