//! A listener in service: its config, its built filter chains and their compiled matcher,
//! and its stats. Rebuilt on every update; chains that did not change are carried over as
//! the same objects, so their connections are not drained.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::FilterChainMatcher;
use super::filter_chain_match::ChainSpec;
use crate::config::listener::{
    DownstreamTransport, FilterChainConfig, ListenerConfig, NetworkFilterConfig,
};
use crate::config::{ConfigError, Context};
use crate::drain::Drain;
use crate::http::access_log::AccessLogManager;
use crate::http::{HttpConnectionManager, HttpContext};
use crate::rbac::NetworkRbac;
use crate::stats::{Counter, Gauge, Histogram, Store};
use crate::tcp::TcpProxy;
use crate::tls::{DownstreamTls, DownstreamTlsConfig, SslStats, TlsResources, peer_exchange};

/// Envoy's listener stats (`listener.<address>.*`).
#[derive(Debug, Clone)]
pub struct ListenerStats {
    pub downstream_cx_total: Counter,
    pub downstream_cx_destroy: Counter,
    pub downstream_cx_active: Gauge,
    pub downstream_cx_length_ms: Histogram,
    pub downstream_pre_cx_active: Gauge,
    pub downstream_pre_cx_timeout: Counter,
    pub no_filter_chain_match: Counter,
    pub downstream_listener_filter_error: Counter,
    pub downstream_listener_filter_remote_close: Counter,
    pub downstream_cx_overflow: Counter,
    pub downstream_cx_transport_socket_connect_timeout: Counter,
    /// `worker_<N>.downstream_cx_{total,active}`, indexed by [`crate::worker::current`].
    pub per_worker: Arc<[(Counter, Gauge)]>,
}

// === impl ListenerStats ===

impl ListenerStats {
    pub fn new(store: &Store, prefix: &str) -> Self {
        let s = store.scope(prefix.to_string());
        // Envoy's counters for the overload manager and extension config discovery, which
        // this proxy does not have; declared so the stat set matches.
        for name in [
            "downstream_cx_overload_reject",
            "downstream_global_cx_overflow",
            "extension_config_missing",
            "network_extension_config_missing",
        ] {
            s.counter(name);
        }
        let per_worker = (0..crate::worker::count())
            .map(|i| {
                let w = s.scope(&format!("worker_{i}"));
                (
                    w.counter("downstream_cx_total"),
                    w.gauge("downstream_cx_active"),
                )
            })
            .collect();
        Self {
            downstream_cx_total: s.counter("downstream_cx_total"),
            downstream_cx_destroy: s.counter("downstream_cx_destroy"),
            downstream_cx_active: s.gauge("downstream_cx_active"),
            downstream_cx_length_ms: s.histogram("downstream_cx_length_ms"),
            downstream_pre_cx_active: s.gauge("downstream_pre_cx_active"),
            downstream_pre_cx_timeout: s.counter("downstream_pre_cx_timeout"),
            no_filter_chain_match: s.counter("no_filter_chain_match"),
            downstream_listener_filter_error: s.counter("downstream_listener_filter_error"),
            downstream_listener_filter_remote_close: s
                .counter("downstream_listener_filter_remote_close"),
            downstream_cx_overflow: s.counter("downstream_cx_overflow"),
            downstream_cx_transport_socket_connect_timeout: s
                .counter("downstream_cx_transport_socket_connect_timeout"),
            per_worker,
        }
    }
}

/// The terminal network filter of a chain.
#[derive(Debug)]
pub enum Terminal {
    TcpProxy(Box<TcpProxy>),
    DirectResponse(Bytes),
    Http(HttpConnectionManager),
}

/// A filter chain in service.
#[derive(Debug)]
pub struct ActiveChain {
    pub config: FilterChainConfig,
    pub terminal: Terminal,
    /// The chain's `envoy.filters.network.rbac` filters, in order, run on client data before
    /// the terminal filter sees it.
    pub rbac: Box<[NetworkRbac]>,
    /// Whether Istio's `istio.stats` reports this chain's connections.
    pub istio_stats: bool,
    /// The chain's TLS acceptor when its transport socket terminates TLS. Connections on a
    /// TLS chain are never served in plaintext: a chain whose secrets have not arrived
    /// closes its connections.
    pub tls: Option<DownstreamTls>,
    /// Drained when the chain is removed or changed by a listener update.
    pub drain: Drain,
}

// === impl ActiveChain ===

impl ActiveChain {
    /// Builds a chain's filters. An HTTP connection manager is compiled here (it needs the
    /// process's clusters, RDS store and RBAC engine); errors name the chain and filter.
    fn build(
        config: FilterChainConfig,
        http: &HttpContext,
        transport: &ChainTransport<'_>,
    ) -> Result<Self, ConfigError> {
        let store = &http.store;
        let tls = transport.build(&config)?;
        let mut terminal = None;
        let mut rbac = Vec::new();
        let mut istio_stats = false;
        for (i, f) in config.filters.iter().enumerate() {
            match f {
                NetworkFilterConfig::TelemetryOnly(_) => {}
                NetworkFilterConfig::IstioStats => istio_stats = true,
                NetworkFilterConfig::Rbac(any) => rbac.push(
                    NetworkRbac::from_any(any, store)
                        .at(format!("filters[{i}].typed_config"))
                        .at(format!("filter_chains ({:?})", &*config.name))?,
                ),
                NetworkFilterConfig::TcpProxy(c) => {
                    let proxy =
                        TcpProxy::with_access_logs(c.clone(), store, AccessLogManager::global())
                            .at(format!("filters[{i}].typed_config"))
                            .at(format!("filter_chains ({:?})", &*config.name))?;
                    terminal = Some(Terminal::TcpProxy(Box::new(proxy)));
                }
                NetworkFilterConfig::DirectResponse(body) => {
                    terminal = Some(Terminal::DirectResponse(body.clone()));
                }
                NetworkFilterConfig::HttpConnectionManager(proto) => {
                    let hcm = HttpConnectionManager::new(proto, http)
                        .at(format!("filters[{i}].typed_config"))
                        .at(format!("filter_chains ({:?})", &*config.name))?;
                    terminal = Some(Terminal::Http(hcm));
                }
            }
        }
        let terminal =
            terminal.ok_or_else(|| ConfigError::new("filter chain has no terminal filter"))?;
        if matches!(terminal, Terminal::Http(_)) && !rbac.is_empty() {
            // Not run in front of the HCM yet; skipping it would let denied clients through.
            return Err(ConfigError::new(
                "envoy.filters.network.rbac in front of an HTTP connection manager is not supported",
            )
            .at(format!("filter_chains ({:?})", &*config.name)));
        }
        Ok(Self {
            config,
            terminal,
            rbac: rbac.into_boxed_slice(),
            istio_stats,
            tls,
            drain: Drain::new(),
        })
    }
}

/// What a listener's chains build their transport sockets from: the proxy's TLS resources
/// and the listener's `ssl.*` stats (`listener.<address>.ssl.`, shared by its chains).
struct ChainTransport<'a> {
    resources: &'a TlsResources,
    /// Like Envoy, only a listener with a TLS chain has `ssl.*` stats.
    stats: Option<SslStats>,
}

// === impl ChainTransport ===

impl ChainTransport<'_> {
    /// The chain's TLS acceptor, if its transport socket is TLS. A context that cannot be
    /// bound (e.g. an unknown bootstrap secret) rejects the listener, as in Envoy.
    fn build(&self, config: &FilterChainConfig) -> Result<Option<DownstreamTls>, ConfigError> {
        let DownstreamTransport::Tls(ctx) = &config.transport else {
            return Ok(None);
        };
        let mut tls = DownstreamTlsConfig::from_proto(ctx).at("transport_socket")?;
        tls.peer_exchange = peer_exchange::listener_runs_exchange(&config.proto.filters);
        let acceptor =
            DownstreamTls::new(tls, self.resources, self.stats.clone()).at("transport_socket")?;
        Ok(Some(acceptor))
    }
}

/// A listener in service.
#[derive(Debug)]
pub struct ActiveListener {
    pub config: Arc<ListenerConfig>,
    pub matcher: FilterChainMatcher<Arc<ActiveChain>>,
    pub stats: ListenerStats,
    /// The xDS version it came with (empty for bootstrap listeners).
    pub version_info: String,
    pub last_updated: SystemTime,
}

// === impl ActiveListener ===

impl ActiveListener {
    /// Builds a listener; chains equal to one of `previous`'s are reused as they are.
    /// Errors name the listener, as an LDS NACK does.
    pub fn build(
        config: ListenerConfig,
        previous: Option<&ActiveListener>,
        http: &HttpContext,
        tls: &TlsResources,
        version_info: &str,
    ) -> Result<Self, ConfigError> {
        let http = HttpContext {
            buffer_limit: config.per_connection_buffer_limit as usize,
            ..http.clone()
        };
        let name = config.name.clone();
        Self::build_with(config, previous, &http, tls, version_info)
            .map_err(|e| e.at(format!("listener {:?}", &*name)))
    }

    fn build_with(
        config: ListenerConfig,
        previous: Option<&ActiveListener>,
        http: &HttpContext,
        tls: &TlsResources,
        version_info: &str,
    ) -> Result<Self, ConfigError> {
        let transport = ChainTransport {
            resources: tls,
            stats: config
                .chains
                .iter()
                .chain(&config.default_chain)
                .any(|c| matches!(c.transport, DownstreamTransport::Tls(_)))
                .then(|| SslStats::new(&http.store.scope(config.stat_prefix.clone()))),
        };
        let reuse = |cfg: &FilterChainConfig| -> Option<Arc<ActiveChain>> {
            previous?
                .all_chains()
                .find(|c| c.config.proto == cfg.proto && !c.drain.is_draining())
                .cloned()
        };
        let mut build = |cfg: &FilterChainConfig| -> Result<Arc<ActiveChain>, ConfigError> {
            match reuse(cfg) {
                Some(chain) => Ok(chain),
                None => Ok(Arc::new(ActiveChain::build(cfg.clone(), http, &transport)?)),
            }
        };
        let chains = config
            .chains
            .iter()
            .map(|c| Ok((c, build(c)?)))
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let default_chain = config.default_chain.as_ref().map(&mut build).transpose()?;
        let matcher = FilterChainMatcher::new(
            chains.into_iter().map(|(cfg, chain)| ChainSpec {
                name: &cfg.proto.name,
                filter_chain_match: cfg.proto.filter_chain_match.as_ref(),
                chain,
            }),
            default_chain,
        )
        .map_err(|e| ConfigError::new(e.to_string()))?;
        let stats = ListenerStats::new(&http.store, &config.stat_prefix);
        Ok(Self {
            config: Arc::new(config),
            matcher,
            stats,
            version_info: version_info.to_string(),
            last_updated: SystemTime::now(),
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Why the listener cannot serve every chain yet: the first TLS chain whose secrets
    /// are missing (Envoy keeps such a listener warming).
    pub fn tls_readiness(&self) -> Result<(), String> {
        for chain in self.all_chains() {
            if let Some(tls) = &chain.tls
                && let Err(e) = tls.readiness()
            {
                return Err(format!("filter chain {:?}: {e}", &*chain.config.name));
            }
        }
        Ok(())
    }

    /// Whether an HTTP connection manager of the listener still waits for its RDS route
    /// configuration (Envoy keeps such a listener warming, not serving).
    pub fn awaiting_routes(&self) -> bool {
        self.all_chains().any(|c| match &c.terminal {
            Terminal::Http(hcm) => matches!(
                &hcm.config().routes,
                crate::http::RouteSource::Rds(slot) if slot.current().is_none()
            ),
            _ => false,
        })
    }

    /// How long this listener may warm for its routes: the longest `initial_fetch_timeout`
    /// of the RDS subscriptions still waiting; `None` when one of them waits forever (0).
    pub fn warming_timeout(&self) -> Option<Duration> {
        let mut longest = Duration::ZERO;
        for c in self.all_chains() {
            let Terminal::Http(hcm) = &c.terminal else {
                continue;
            };
            let cfg = hcm.config();
            if matches!(&cfg.routes, crate::http::RouteSource::Rds(slot) if slot.current().is_none())
            {
                longest = longest.max(cfg.rds_warming?);
            }
        }
        Some(longest)
    }

    /// Every chain, the default one included.
    pub fn all_chains(&self) -> impl Iterator<Item = &Arc<ActiveChain>> {
        self.matcher
            .chains()
            .iter()
            .chain(self.matcher.default_chain())
    }
}
