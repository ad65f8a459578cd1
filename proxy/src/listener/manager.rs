//! The listener manager: every listener by name and by address, the sockets and accept loops
//! of those that bind, and updates from the bootstrap and LDS.
//!
//! An update builds new listeners next to the old ones and swaps them in: new connections
//! see the new config at once; connections on filter chains that are gone or changed drain
//! (`--drain-time-s`), connections on unchanged chains go on untouched.
//!
//! A dynamic listener whose HTTP connection managers wait for their RDS route configuration
//! warms first, as in Envoy: it is built but neither bound nor serving (a listener it
//! replaces keeps serving) until the routes arrive or the initial fetch timeout passes.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::active::ActiveListener;
use super::connection;
use super::socket::{self, BindOptions};
use crate::config::listener::ListenerConfig;
use crate::conn::Direction;
use crate::http::HttpContext;
use crate::rbac::HttpRbacFactory;
use crate::stats::{Counter, Gauge, Store};
use crate::upstream::ClusterManager;

/// `listener_manager.*` stats.
#[derive(Debug, Clone)]
struct ManagerStats {
    listener_added: Counter,
    listener_modified: Counter,
    listener_removed: Counter,
    listener_stopped: Counter,
    listener_create_success: Counter,
    listener_create_failure: Counter,
    total_listeners_active: Gauge,
    total_listeners_warming: Gauge,
    total_listeners_draining: Gauge,
    total_filter_chains_draining: Gauge,
    workers_started: Gauge,
}

/// Listeners as published to accept loops and connections.
#[derive(Debug, Default, Clone)]
struct Table {
    by_name: HashMap<Arc<str>, Arc<ActiveListener>>,
    by_address: HashMap<SocketAddr, Arc<ActiveListener>>,
}

/// A bound address and its accept loop.
#[derive(Debug)]
struct Bound {
    owner: Arc<str>,
    /// Bound but not accepting until the workers start.
    socket: Option<std::net::TcpListener>,
    stop: CancellationToken,
}

#[derive(Debug, Default)]
struct Mutable {
    static_names: HashSet<String>,
    bound: HashMap<SocketAddr, Bound>,
    workers: Option<Handle>,
    version_info: String,
    /// Listeners still draining after removal (name, when they stop), for the draining
    /// gauge and `/config_dump`.
    draining: Vec<Arc<ActiveListener>>,
    /// Built listeners waiting for their route configurations, by name.
    warming: HashMap<Arc<str>, Arc<ActiveListener>>,
}

/// What an LDS update did, and what it refused.
#[derive(Debug, Default)]
pub struct LdsOutcome {
    pub added: Vec<String>,
    pub modified: Vec<String>,
    pub removed: Vec<String>,
    /// Listeners refused, with the reason (the NACK text names them).
    pub rejected: Vec<(String, String)>,
}

/// All listeners.
#[derive(Debug)]
pub struct ListenerManager {
    clusters: Arc<ClusterManager>,
    /// What HTTP connection managers share (and its stats store).
    http: HttpContext,
    table: ArcSwap<Table>,
    state: Mutex<Mutable>,
    stats: ManagerStats,
    drain_time: Duration,
}

// === impl ListenerManager ===

impl ListenerManager {
    /// A manager whose HTTP connection managers share fresh pools and RDS store, with the
    /// RBAC engine for `envoy.filters.http.rbac`.
    pub fn new(store: Store, clusters: Arc<ClusterManager>, drain_time: Duration) -> Arc<Self> {
        let mut http = HttpContext::new(clusters.clone(), store.clone());
        http.rbac = Some(HttpRbacFactory::new(store.clone()));
        Self::with_http(http, drain_time)
    }

    /// A manager with the given HTTP context (its store and clusters are the manager's).
    pub fn with_http(http: HttpContext, drain_time: Duration) -> Arc<Self> {
        let store = http.store.clone();
        let clusters = http.clusters.clone();
        let s = store.scope("listener_manager.");
        let stats = ManagerStats {
            listener_added: s.counter("listener_added"),
            listener_modified: s.counter("listener_modified"),
            listener_removed: s.counter("listener_removed"),
            listener_stopped: s.counter("listener_stopped"),
            listener_create_success: s.counter("listener_create_success"),
            listener_create_failure: s.counter("listener_create_failure"),
            total_listeners_active: s.gauge("total_listeners_active"),
            total_listeners_warming: s.gauge("total_listeners_warming"),
            total_listeners_draining: s.gauge("total_listeners_draining"),
            total_filter_chains_draining: s.gauge("total_filter_chains_draining"),
            workers_started: s.gauge("workers_started"),
        };
        stats.workers_started.set(0);
        stats.total_listeners_active.set(0);
        stats.total_listeners_warming.set(0);
        stats.total_listeners_draining.set(0);
        Arc::new(Self {
            clusters,
            http,
            table: ArcSwap::from_pointee(Table::default()),
            state: Mutex::default(),
            stats,
            drain_time,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Mutable> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn clusters(&self) -> &ClusterManager {
        &self.clusters
    }

    /// What the HTTP connection managers share; its RDS store is what RDS feeds.
    pub fn http(&self) -> &HttpContext {
        &self.http
    }

    pub fn drain_time(&self) -> Duration {
        self.drain_time
    }

    /// The version of the last accepted LDS update.
    pub fn version_info(&self) -> String {
        self.state().version_info.clone()
    }

    /// Every listener, sorted by name.
    pub fn all(&self) -> Vec<Arc<ActiveListener>> {
        let mut v: Vec<_> = self.table.load().by_name.values().cloned().collect();
        v.sort_by(|a, b| a.name().cmp(b.name()));
        v
    }

    pub fn is_static(&self, name: &str) -> bool {
        self.state().static_names.contains(name)
    }

    /// The listener that owns an address: exact address first, then the wildcard address
    /// of the same family and port (as Envoy's `use_original_dst` hand-off does).
    pub fn find_by_address(&self, addr: SocketAddr) -> Option<Arc<ActiveListener>> {
        let table = self.table.load();
        if let Some(l) = table.by_address.get(&addr) {
            return Some(l.clone());
        }
        let any: IpAddr = if addr.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        table
            .by_address
            .get(&SocketAddr::new(any, addr.port()))
            .cloned()
    }

    /// Adds the bootstrap's listeners. Any error is fatal, as in Envoy.
    pub fn add_static(self: &Arc<Self>, configs: Vec<ListenerConfig>) -> Result<(), String> {
        // Envoy keeps the first static listener of a name and drops later ones.
        let mut seen = HashSet::new();
        let configs: Vec<ListenerConfig> = configs
            .into_iter()
            .filter(|c| {
                let first = seen.insert(c.name.to_string());
                if !first {
                    tracing::warn!(
                        "static listener '{}' is defined more than once; using the first",
                        c.name
                    );
                }
                first
            })
            .collect();
        let outcome = self.update(configs, &[], false, "", true);
        match outcome.rejected.first() {
            Some((name, reason)) => Err(format!("error adding listener '{name}': {reason}")),
            None => Ok(()),
        }
    }

    /// Applies an LDS update. `complete` (state of the world) removes dynamic listeners it
    /// does not list; `removed` lists delta removals. Bad listeners are rejected one by one;
    /// the good ones are applied (Envoy's partial acceptance).
    pub fn apply_lds(
        self: &Arc<Self>,
        configs: Vec<ListenerConfig>,
        removed: &[String],
        complete: bool,
        version_info: &str,
    ) -> LdsOutcome {
        let outcome = self.update(configs, removed, complete, version_info, false);
        if outcome.rejected.is_empty() {
            self.state().version_info = version_info.to_string();
        }
        outcome
    }

    fn update(
        self: &Arc<Self>,
        configs: Vec<ListenerConfig>,
        removed: &[String],
        complete: bool,
        version_info: &str,
        is_static: bool,
    ) -> LdsOutcome {
        let mut outcome = LdsOutcome::default();
        let old = self.table.load_full();
        let mut table = (*old).clone();
        let statics = self.state().static_names.clone();
        let listed: HashSet<String> = configs.iter().map(|c| c.name.to_string()).collect();
        let mut retired: Vec<Arc<ActiveListener>> = Vec::new();

        for cfg in configs {
            let name = cfg.name.to_string();
            if !is_static && statics.contains(&name) {
                outcome.rejected.push((
                    name,
                    "cannot update a listener added by the bootstrap".into(),
                ));
                continue;
            }
            let previous = old.by_name.get(name.as_str());
            // A newer version replaces one still warming.
            self.state().warming.remove(name.as_str());
            if previous.is_some_and(|p| p.config.proto == cfg.proto) {
                continue;
            }
            match self.install(cfg, previous, &mut table, version_info, is_static) {
                Ok(warming) => {
                    self.stats.listener_create_success.inc();
                    if let Some(p) = previous {
                        self.stats.listener_modified.inc();
                        outcome.modified.push(name.clone());
                        if !warming {
                            retired.push(p.clone());
                        }
                    } else {
                        self.stats.listener_added.inc();
                        outcome.added.push(name.clone());
                    }
                    if is_static {
                        self.state().static_names.insert(name);
                    }
                }
                Err(reason) => {
                    self.stats.listener_create_failure.inc();
                    outcome.rejected.push((name, reason));
                }
            }
        }

        let is_gone = |name: &str| {
            !statics.contains(name)
                && (removed.iter().any(|r| r == name) || (complete && !listed.contains(name)))
        };
        let gone: Vec<Arc<ActiveListener>> = table
            .by_name
            .values()
            .filter(|l| is_gone(l.name()))
            .cloned()
            .collect();
        self.state().warming.retain(|name, _| !is_gone(name));
        for l in gone {
            table.by_name.remove(l.name());
            table.by_address.retain(|_, owner| !Arc::ptr_eq(owner, &l));
            self.unbind_all(l.name());
            self.stats.listener_removed.inc();
            outcome.removed.push(l.name().to_string());
            retired.push(l);
        }

        self.table.store(Arc::new(table));
        self.retire(retired);
        self.update_gauges();
        outcome
    }

    /// Builds one listener and binds it into `table`, or, when it is dynamic and waits for
    /// route configurations, keeps it warming. Returns whether it is warming.
    fn install(
        self: &Arc<Self>,
        cfg: ListenerConfig,
        previous: Option<&Arc<ActiveListener>>,
        table: &mut Table,
        version_info: &str,
        is_static: bool,
    ) -> Result<bool, String> {
        if let Some(p) = previous
            && p.config.addresses().collect::<Vec<_>>() != cfg.addresses().collect::<Vec<_>>()
        {
            return Err(format!(
                "error updating listener: '{}' has a different address '{}' from existing listener address '{}'",
                cfg.name, cfg.address, p.config.address
            ));
        }
        for addr in cfg.addresses() {
            if let Some(other) = table.by_address.get(&addr)
                && other.name() != &*cfg.name
            {
                return Err(format!(
                    "error adding listener '{addr}': listener '{}' has duplicate address '{addr}' as existing listener '{}'",
                    cfg.name,
                    other.name()
                ));
            }
        }
        let active = ActiveListener::build(
            cfg,
            previous.map(|p| &**p),
            &self.http,
            self.clusters.tls(),
            version_info,
        )
        .map_err(|e| e.to_string())?;
        let active = Arc::new(active);
        if !is_static && active.awaiting_routes() {
            self.warm(active);
            return Ok(true);
        }
        self.activate(active, table)?;
        Ok(false)
    }

    /// Binds a built listener and puts it into `table`.
    fn activate(
        self: &Arc<Self>,
        active: Arc<ActiveListener>,
        table: &mut Table,
    ) -> Result<(), String> {
        if active.config.bind_to_port {
            for addr in active.config.addresses() {
                self.bind(addr, &active)?;
            }
        }
        table
            .by_name
            .insert(active.config.name.clone(), active.clone());
        for addr in active.config.addresses() {
            table.by_address.insert(addr, active.clone());
        }
        Ok(())
    }

    /// Keeps a listener warming until its routes arrive ([`Self::routes_updated`]) or their
    /// RDS `initial_fetch_timeout` passes (never, when that is 0, as in Envoy).
    fn warm(self: &Arc<Self>, active: Arc<ActiveListener>) {
        let timeout = active.warming_timeout();
        tracing::info!(
            listener = active.name(),
            timeout = ?timeout,
            "warming: waiting for route configurations"
        );
        let name = active.config.name.clone();
        let weak = Arc::downgrade(&active);
        self.state().warming.insert(name.clone(), active);
        let (Ok(rt), Some(timeout)) = (Handle::try_current(), timeout) else {
            return;
        };
        let manager = Arc::downgrade(self);
        rt.spawn(async move {
            tokio::time::sleep(timeout).await;
            if let (Some(manager), Some(listener)) = (manager.upgrade(), weak.upgrade()) {
                // Only if it is still this version that warms (not served or replaced yet).
                let activated = manager.finish_warming(|l| Arc::ptr_eq(l, &listener));
                if activated > 0 {
                    tracing::warn!(
                        listener = &*name,
                        "routes did not arrive within {timeout:?}; serving without them"
                    );
                }
            }
        });
    }

    /// Listeners built but waiting for their route configurations, by name.
    pub fn warming(&self) -> Vec<Arc<ActiveListener>> {
        let mut out: Vec<_> = self.state().warming.values().cloned().collect();
        out.sort_by(|a, b| a.name().cmp(b.name()));
        out
    }

    /// Starts serving the warming listeners whose route configurations have all arrived
    /// (RDS calls this after each update).
    pub fn routes_updated(self: &Arc<Self>) {
        self.finish_warming(|l| !l.awaiting_routes());
    }

    /// Serves the warming listeners `ready` picks; returns how many.
    fn finish_warming(self: &Arc<Self>, ready: impl Fn(&Arc<ActiveListener>) -> bool) -> usize {
        let done: Vec<Arc<ActiveListener>> = {
            let mut state = self.state();
            let names: Vec<Arc<str>> = state
                .warming
                .iter()
                .filter(|(_, l)| ready(l))
                .map(|(n, _)| n.clone())
                .collect();
            names
                .iter()
                .filter_map(|n| state.warming.remove(n))
                .collect()
        };
        if done.is_empty() {
            return 0;
        }
        let count = done.len();
        let mut table = (*self.table.load_full()).clone();
        let mut retired = Vec::new();
        for l in done {
            let previous = table.by_name.get(l.name()).cloned();
            let name = l.name().to_string();
            match self.activate(l, &mut table) {
                Ok(()) => retired.extend(previous),
                Err(e) => tracing::error!(listener = &*name, "cannot start a warmed listener: {e}"),
            }
        }
        self.table.store(Arc::new(table));
        self.retire(retired);
        self.update_gauges();
        count
    }

    /// Binds `addr` for `listener` unless it already owns it; starts accepting if workers run.
    fn bind(self: &Arc<Self>, addr: SocketAddr, listener: &ActiveListener) -> Result<(), String> {
        let mut state = self.state();
        if state
            .bound
            .get(&addr)
            .is_some_and(|b| b.owner == listener.config.name)
        {
            return Ok(());
        }
        let cfg = &listener.config;
        let opts = BindOptions {
            transparent: cfg.transparent,
            freebind: cfg.freebind,
            backlog: cfg.backlog,
        };
        let socket = socket::bind(addr, opts).map_err(|e| format!("cannot bind '{addr}': {e}"))?;
        let stop = CancellationToken::new();
        let bound = Bound {
            owner: cfg.name.clone(),
            socket: Some(socket),
            stop,
        };
        state.bound.insert(addr, bound);
        if let Some(rt) = state.workers.clone() {
            drop(state);
            self.start_accepting(addr, &rt);
        }
        Ok(())
    }

    fn unbind_all(&self, name: &str) {
        let mut state = self.state();
        state.bound.retain(|_, b| {
            if &*b.owner == name {
                b.stop.cancel();
                false
            } else {
                true
            }
        });
    }

    /// Drains the chains of replaced or removed listeners that the current listeners do not
    /// use any more.
    fn retire(&self, retired: Vec<Arc<ActiveListener>>) {
        if retired.is_empty() {
            return;
        }
        let table = self.table.load();
        let in_use = |chain: &Arc<super::active::ActiveChain>| {
            table
                .by_name
                .values()
                .any(|l| l.all_chains().any(|c| Arc::ptr_eq(c, chain)))
        };
        let mut draining = 0;
        for l in &retired {
            for chain in l.all_chains() {
                if !in_use(chain) && !chain.drain.is_draining() {
                    chain.drain.start(self.drain_time);
                    draining += 1;
                }
            }
        }
        self.stats.total_filter_chains_draining.add(draining);
        let mut state = self.state();
        state.draining.extend(retired);
        state
            .draining
            .retain(|l| l.all_chains().any(|c| !c.drain.is_closed()));
    }

    /// Starts the accept loops of every bound listener on the data-plane runtime. Listeners
    /// bound later start accepting at once.
    pub fn start_workers(self: &Arc<Self>, rt: Handle) {
        let addrs: Vec<SocketAddr> = {
            let mut state = self.state();
            state.workers = Some(rt.clone());
            state.bound.keys().copied().collect()
        };
        for addr in addrs {
            self.start_accepting(addr, &rt);
        }
        self.stats.workers_started.set(1);
    }

    fn start_accepting(self: &Arc<Self>, addr: SocketAddr, rt: &Handle) {
        let (socket, stop) = {
            let mut state = self.state();
            let Some(bound) = state.bound.get_mut(&addr) else {
                return;
            };
            let Some(socket) = bound.socket.take() else {
                return;
            };
            (socket, bound.stop.clone())
        };
        let manager = self.clone();
        rt.spawn(async move {
            let listener = match tokio::net::TcpListener::from_std(socket) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(%addr, "cannot accept on listener socket: {e}");
                    return;
                }
            };
            manager.accept_loop(listener, addr, stop).await;
        });
    }

    async fn accept_loop(
        self: Arc<Self>,
        socket: tokio::net::TcpListener,
        addr: SocketAddr,
        stop: CancellationToken,
    ) {
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                a = socket.accept() => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let Some(listener) = self.table.load().by_address.get(&addr).cloned() else {
                        continue;
                    };
                    tokio::spawn(connection::handle(stream, peer, listener, self.clone()));
                }
                Err(e) => {
                    // Out of file descriptors or similar: back off instead of spinning.
                    tracing::warn!(%addr, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// `/drain_listeners`: drains every listener (or only inbound ones) and stops accepting.
    /// With `graceful`, sockets keep accepting for the drain time first.
    pub fn drain_listeners(self: &Arc<Self>, inbound_only: bool, graceful: bool) {
        let table = self.table.load();
        let chosen: Vec<Arc<ActiveListener>> = table
            .by_name
            .values()
            .filter(|l| !inbound_only || l.config.direction == Direction::Inbound)
            .cloned()
            .collect();
        let grace = if graceful {
            self.drain_time
        } else {
            Duration::ZERO
        };
        for l in &chosen {
            for chain in l.all_chains() {
                chain.drain.start(grace);
            }
        }
        let names: Vec<Arc<str>> = chosen.iter().map(|l| l.config.name.clone()).collect();
        let stop_sockets = move |m: &Self| {
            for name in &names {
                m.unbind_all(name);
                m.stats.listener_stopped.inc();
            }
        };
        if graceful {
            let manager = self.clone();
            let rt = self.state().workers.clone();
            if let Some(rt) = rt {
                rt.spawn(async move {
                    tokio::time::sleep(grace).await;
                    stop_sockets(&manager);
                });
                return;
            }
        }
        stop_sockets(self);
    }

    /// Stops accepting everywhere and drains every connection within `grace`.
    pub fn shutdown(&self, grace: Duration) {
        let table = self.table.load();
        let mut state = self.state();
        for b in state.bound.values() {
            b.stop.cancel();
        }
        state.bound.clear();
        for l in table.by_name.values().chain(state.draining.iter()) {
            for chain in l.all_chains() {
                chain.drain.start(grace);
            }
        }
    }

    fn update_gauges(&self) {
        let table = self.table.load();
        self.stats
            .total_listeners_active
            .set(table.by_name.len() as u64);
        let warming = self.state().warming.len() as u64;
        self.stats.total_listeners_warming.set(warming);
        let draining = self.state().draining.len() as u64;
        self.stats.total_listeners_draining.set(draining);
    }

    /// Whether any connection is still open on any listener (for shutdown).
    pub fn active_connections(&self) -> u64 {
        let table = self.table.load();
        table
            .by_name
            .values()
            .map(|l| l.stats.downstream_cx_active.value())
            .sum::<u64>()
            + self
                .state()
                .draining
                .iter()
                .map(|l| l.stats.downstream_cx_active.value())
                .sum::<u64>()
    }
}
