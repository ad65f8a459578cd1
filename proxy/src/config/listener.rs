//! `config.listener.v3.Listener` as a typed, validated `ListenerConfig`.
//!
//! Filter chain matching itself is compiled by [`crate::listener::FilterChainMatcher`] when
//! the listener is built; here each chain's filters and transport socket are validated.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::{
    TrafficDirection, TransportSocket, data_source, transport_socket,
};
use envoy_types::pb::envoy::config::listener::v3::{
    FilterChain, Listener, ListenerFilter, ListenerFilterChainMatchPredicate, filter,
    listener_filter, listener_filter_chain_match_predicate::Rule,
};
use envoy_types::pb::envoy::extensions::filters::listener::original_src::v3::OriginalSrc;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector as TlsInspectorProto;
use envoy_types::pb::envoy::extensions::filters::network::direct_response::v3::Config as DirectResponseProto;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager as HcmProto;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::DownstreamTlsContext;

use super::endpoint::HostAddress;
use super::tcp_proxy::TcpProxyConfig;
use super::{ConfigError, Context, any, duration, extension};
use crate::conn::Direction;
use crate::listener::TlsInspector;

const TYPE_PREFIX: &str = "type.googleapis.com/envoy.extensions.";

/// Which destination ports a listener filter is disabled for (`filter_disabled`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortPredicate {
    Any,
    /// `[start, end)`, as Envoy's `Int32Range`.
    Range(u32, u32),
    Or(Vec<PortPredicate>),
    And(Vec<PortPredicate>),
    Not(Box<PortPredicate>),
}

// === impl PortPredicate ===

impl PortPredicate {
    fn from_proto(p: &ListenerFilterChainMatchPredicate) -> Result<Self, ConfigError> {
        let all = |set: &envoy_types::pb::envoy::config::listener::v3::listener_filter_chain_match_predicate::MatchSet| {
            set.rules.iter().map(Self::from_proto).collect::<Result<Vec<_>, _>>()
        };
        match p.rule.as_ref() {
            Some(Rule::AnyMatch(true)) => Ok(Self::Any),
            Some(Rule::AnyMatch(false)) | None => {
                Err(ConfigError::new("predicate must set a rule"))
            }
            Some(Rule::DestinationPortRange(r)) => {
                if r.start < 0 || r.end < r.start {
                    return Err(ConfigError::new(format!(
                        "invalid port range [{}, {})",
                        r.start, r.end
                    )));
                }
                Ok(Self::Range(r.start as u32, r.end as u32))
            }
            Some(Rule::OrMatch(set)) => Ok(Self::Or(all(set)?)),
            Some(Rule::AndMatch(set)) => Ok(Self::And(all(set)?)),
            Some(Rule::NotMatch(inner)) => Ok(Self::Not(Box::new(Self::from_proto(inner)?))),
        }
    }

    /// Whether the predicate holds for a connection to `port`.
    pub fn matches(&self, port: u16) -> bool {
        let port = u32::from(port);
        match self {
            Self::Any => true,
            Self::Range(start, end) => port >= *start && port < *end,
            Self::Or(v) => v.iter().any(|p| p.matches(port as u16)),
            Self::And(v) => v.iter().all(|p| p.matches(port as u16)),
            Self::Not(p) => !p.matches(port as u16),
        }
    }
}

/// A listener filter that only runs for some destination ports.
#[derive(Debug, Clone)]
pub struct Gated<T> {
    pub filter: T,
    /// `filter_disabled`: ports the filter skips.
    pub disabled: Option<PortPredicate>,
}

impl<T> Gated<T> {
    pub fn enabled_for(&self, port: u16) -> Option<&T> {
        match &self.disabled {
            Some(p) if p.matches(port) => None,
            _ => Some(&self.filter),
        }
    }
}

/// How the downstream side of a filter chain is secured.
#[derive(Debug, Clone, PartialEq)]
pub enum DownstreamTransport {
    Raw,
    Tls(Box<DownstreamTlsContext>),
}

/// A network filter of a filter chain, in the configured order.
#[derive(Debug, Clone, PartialEq)]
pub enum NetworkFilterConfig {
    /// Istio's telemetry filters (`istio.stats`, `istio.metadata_exchange` config only):
    /// accepted, not run.
    TelemetryOnly(String),
    /// Istio's `istio.stats` (`stats.PluginConfig`): the connection is reported in Istio's
    /// TCP metrics ([`crate::istio_stats`]).
    IstioStats,
    TcpProxy(TcpProxyConfig),
    /// `envoy.filters.network.rbac`, compiled (with its stats) when the chain is built.
    Rbac(Box<envoy_types::pb::google::protobuf::Any>),
    /// `envoy.filters.network.direct_response`: writes fixed bytes and closes.
    DirectResponse(Bytes),
    /// `envoy.filters.network.http_connection_manager`, decoded. It is compiled (routes,
    /// HTTP filters, clusters checked) when the listener is built, which needs the
    /// process's HTTP context; a compile error rejects the listener there.
    HttpConnectionManager(Arc<HcmProto>),
}

// === impl NetworkFilterConfig ===

impl NetworkFilterConfig {
    fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::TcpProxy(_) | Self::DirectResponse(_) | Self::HttpConnectionManager(_)
        )
    }
}

/// A validated filter chain.
#[derive(Debug, Clone)]
pub struct FilterChainConfig {
    pub name: Arc<str>,
    /// The chain as configured: its match (for the matcher) and identity (an unchanged
    /// chain across listener updates keeps its connections).
    pub proto: Arc<FilterChain>,
    pub transport: DownstreamTransport,
    pub filters: Vec<NetworkFilterConfig>,
}

// === impl FilterChainConfig ===

impl FilterChainConfig {
    /// Validates a filter chain. (`use_proxy_proto` is deprecated but must still be refused
    /// when set: ignoring it would misread the first bytes.)
    #[allow(deprecated)]
    pub fn from_proto(fc: &FilterChain) -> Result<Self, ConfigError> {
        if fc.use_proxy_proto.as_ref().is_some_and(|v| v.value) {
            return Err(ConfigError::new("PROXY protocol is not supported").at("use_proxy_proto"));
        }
        let transport = match &fc.transport_socket {
            Some(ts) => transport_socket(ts).at("transport_socket")?,
            None => DownstreamTransport::Raw,
        };
        let filters = fc
            .filters
            .iter()
            .enumerate()
            .map(|(i, f)| network_filter(f).at(format!("filters[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        match filters.iter().position(NetworkFilterConfig::is_terminal) {
            None => {
                return Err(ConfigError::new(
                    "the last filter must be a terminal filter such as tcp_proxy",
                )
                .at("filters"));
            }
            Some(i) if i + 1 != filters.len() => {
                return Err(ConfigError::new(format!(
                    "terminal filter at position {i} must be the last filter"
                ))
                .at("filters"));
            }
            Some(_) => {}
        }
        Ok(Self {
            name: Arc::from(fc.name.as_str()),
            proto: Arc::new(fc.clone()),
            transport,
            filters,
        })
    }
}

/// A validated listener.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub name: Arc<str>,
    pub address: SocketAddr,
    pub additional_addresses: Vec<SocketAddr>,
    pub bind_to_port: bool,
    /// Hand redirected connections to the listener of their original destination.
    pub use_original_dst: bool,
    /// Recover the original destination (SO_ORIGINAL_DST); implied by `use_original_dst`.
    pub original_dst: bool,
    pub transparent: bool,
    pub freebind: bool,
    pub tls_inspector: Option<Gated<TlsInspector>>,
    pub http_inspector: Option<Gated<()>>,
    /// `envoy.filters.listener.original_src`: connect upstream from the client's address
    /// with this mark (TPROXY inbound).
    pub original_src_mark: Option<u32>,
    /// `listener_filters_timeout`; `None` when disabled (0s).
    pub filters_timeout: Option<Duration>,
    pub continue_on_filters_timeout: bool,
    pub chains: Vec<FilterChainConfig>,
    pub default_chain: Option<FilterChainConfig>,
    pub direction: Direction,
    /// `listener.<address or stat_prefix>.`
    pub stat_prefix: String,
    pub per_connection_buffer_limit: u32,
    pub backlog: u32,
    pub proto: Arc<Listener>,
}

// === impl ListenerConfig ===

impl ListenerConfig {
    pub fn from_proto(l: &Listener) -> Result<Self, ConfigError> {
        Self::convert(l).at(format!("listener {:?}", l.name))
    }

    fn convert(l: &Listener) -> Result<Self, ConfigError> {
        if l.name.is_empty() {
            return Err(ConfigError::new("name is required").at("name"));
        }
        let address = socket_address(l.address.as_ref()).at("address")?;
        let additional_addresses = l
            .additional_addresses
            .iter()
            .enumerate()
            .map(|(i, a)| {
                socket_address(a.address.as_ref()).at(format!("additional_addresses[{i}]"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        reject_unsupported(l)?;
        let use_original_dst = l.use_original_dst.as_ref().is_some_and(|v| v.value);
        let mut cfg = Self {
            name: Arc::from(l.name.as_str()),
            address,
            additional_addresses,
            bind_to_port: l.bind_to_port.as_ref().is_none_or(|v| v.value),
            use_original_dst,
            original_dst: use_original_dst,
            transparent: l.transparent.as_ref().is_some_and(|v| v.value),
            freebind: l.freebind.as_ref().is_some_and(|v| v.value),
            tls_inspector: None,
            http_inspector: None,
            original_src_mark: None,
            filters_timeout: match &l.listener_filters_timeout {
                None => Some(Duration::from_secs(15)),
                Some(d) => {
                    Some(duration(d).at("listener_filters_timeout")?).filter(|d| !d.is_zero())
                }
            },
            continue_on_filters_timeout: l.continue_on_listener_filters_timeout,
            chains: l
                .filter_chains
                .iter()
                .enumerate()
                .map(|(i, fc)| {
                    FilterChainConfig::from_proto(fc).at(chain_label("filter_chains", i, &fc.name))
                })
                .collect::<Result<_, _>>()?,
            default_chain: l
                .default_filter_chain
                .as_ref()
                .map(FilterChainConfig::from_proto)
                .transpose()
                .at("default_filter_chain")?,
            direction: match TrafficDirection::try_from(l.traffic_direction) {
                Ok(TrafficDirection::Inbound) => Direction::Inbound,
                Ok(TrafficDirection::Outbound) => Direction::Outbound,
                _ => Direction::Unspecified,
            },
            stat_prefix: if l.stat_prefix.is_empty() {
                format!("listener.{}.", stat_address(&address))
            } else {
                format!("listener.{}.", l.stat_prefix)
            },
            per_connection_buffer_limit: l
                .per_connection_buffer_limit_bytes
                .as_ref()
                .map_or(1024 * 1024, |v| v.value),
            backlog: l.tcp_backlog_size.as_ref().map_or(1024, |v| v.value.max(1)),
            proto: Arc::new(l.clone()),
        };
        if cfg.chains.is_empty() && cfg.default_chain.is_none() {
            return Err(ConfigError::new("no filter chains specified").at("filter_chains"));
        }
        for (i, lf) in l.listener_filters.iter().enumerate() {
            listener_filter(&mut cfg, lf).at(format!("listener_filters[{i}]"))?;
        }
        Ok(cfg)
    }

    /// Every address the listener owns.
    pub fn addresses(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        std::iter::once(self.address).chain(self.additional_addresses.iter().copied())
    }
}

fn chain_label(field: &str, index: usize, name: &str) -> String {
    if name.is_empty() {
        format!("{field}[{index}]")
    } else {
        format!("{field}[{index}] ({name:?})")
    }
}

/// Envoy's stat name for an address: `0.0.0.0_15001`, `[__]_15006`.
pub fn stat_address(addr: &SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("{}_{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]_{}", a.ip(), a.port()).replace(':', "_"),
    }
}

fn socket_address(
    addr: Option<&envoy_types::pb::envoy::config::core::v3::Address>,
) -> Result<SocketAddr, ConfigError> {
    let addr = addr.ok_or_else(|| ConfigError::new("address is required"))?;
    match HostAddress::from_proto(addr, false)? {
        HostAddress::Ip(a) => Ok(a),
        HostAddress::Pipe(_) => Err(ConfigError::new("pipe listeners are not supported")),
        HostAddress::Dns { .. } => Err(ConfigError::new("listeners need IP addresses")),
    }
}

fn reject_unsupported(l: &Listener) -> Result<(), ConfigError> {
    let unsupported = [
        (
            l.filter_chain_matcher.is_some(),
            "filter_chain_matcher",
            "the xDS matcher API for filter chains",
        ),
        (
            l.udp_listener_config.is_some(),
            "udp_listener_config",
            "UDP listeners",
        ),
        (l.api_listener.is_some(), "api_listener", "API listeners"),
        (
            l.fcds_config.is_some(),
            "fcds_config",
            "filter chain discovery",
        ),
        (l.enable_mptcp, "enable_mptcp", "MPTCP"),
        (
            l.listener_specifier.is_some(),
            "internal_listener",
            "internal listeners",
        ),
    ];
    for (set, field, what) in unsupported {
        if set {
            return Err(ConfigError::new(format!("{what} are not supported")).at(field));
        }
    }
    Ok(())
}

fn listener_filter(cfg: &mut ListenerConfig, lf: &ListenerFilter) -> Result<(), ConfigError> {
    let Some(listener_filter::ConfigType::TypedConfig(any_cfg)) = &lf.config_type else {
        return Err(ConfigError::new(format!(
            "listener filter {:?} needs a typed_config (config discovery is not supported)",
            lf.name
        )));
    };
    let disabled = lf
        .filter_disabled
        .as_ref()
        .map(PortPredicate::from_proto)
        .transpose()
        .at("filter_disabled")?;
    let type_url = any::effective_type_url(any_cfg)?;
    match type_url.strip_prefix(TYPE_PREFIX) {
        Some("filters.listener.original_dst.v3.OriginalDst") => {
            if disabled.is_some() {
                return Err(ConfigError::new("original_dst cannot be disabled per port")
                    .at("filter_disabled"));
            }
            cfg.original_dst = true;
        }
        Some("filters.listener.tls_inspector.v3.TlsInspector") => {
            let proto: TlsInspectorProto = any::decode(any_cfg)?;
            let filter = TlsInspector::from_proto(&proto)
                .map_err(|e| ConfigError::new(e.to_string()).at("typed_config"))?;
            cfg.tls_inspector = Some(Gated { filter, disabled });
        }
        Some("filters.listener.http_inspector.v3.HttpInspector") => {
            cfg.http_inspector = Some(Gated {
                filter: (),
                disabled,
            });
        }
        Some("filters.listener.original_src.v3.OriginalSrc") => {
            let proto: OriginalSrc = any::decode(any_cfg)?;
            if proto.bind_port {
                return Err(ConfigError::new("bind_port is not supported").at("typed_config"));
            }
            cfg.original_src_mark = Some(proto.mark);
        }
        _ => {
            return Err(extension::unsupported(
                "listener filter",
                &lf.name,
                &type_url,
            ));
        }
    }
    Ok(())
}

fn network_filter(
    f: &envoy_types::pb::envoy::config::listener::v3::Filter,
) -> Result<NetworkFilterConfig, ConfigError> {
    let Some(filter::ConfigType::TypedConfig(any_cfg)) = &f.config_type else {
        return Err(ConfigError::new(format!(
            "network filter {:?} needs a typed_config (config discovery is not supported)",
            f.name
        )));
    };
    let type_url = any::effective_type_url(any_cfg)?;
    if type_url == crate::istio_stats::TYPE_URL {
        return Ok(NetworkFilterConfig::IstioStats);
    }
    if extension::is_telemetry_only(&type_url) {
        return Ok(NetworkFilterConfig::TelemetryOnly(f.name.clone()));
    }
    match type_url.strip_prefix(TYPE_PREFIX) {
        Some("filters.network.tcp_proxy.v3.TcpProxy") => {
            let proto: TcpProxy = any::decode(any_cfg)?;
            Ok(NetworkFilterConfig::TcpProxy(
                TcpProxyConfig::from_proto(&proto).at("typed_config")?,
            ))
        }
        Some("filters.network.rbac.v3.RBAC") => Ok(NetworkFilterConfig::Rbac(Box::new(
            // Keep a TypedStruct as it came: the RBAC compiler unwraps it strictly.
            any_cfg.clone(),
        ))),
        Some("filters.network.direct_response.v3.Config") => {
            let proto: DirectResponseProto = any::decode(any_cfg)?;
            let body = match proto.response.and_then(|r| r.specifier) {
                None => Bytes::new(),
                Some(data_source::Specifier::InlineString(s)) => Bytes::from(s),
                Some(data_source::Specifier::InlineBytes(b)) => Bytes::from(b),
                Some(_) => {
                    return Err(ConfigError::new("only inline responses are supported")
                        .at("typed_config.response"));
                }
            };
            Ok(NetworkFilterConfig::DirectResponse(body))
        }
        Some("filters.network.http_connection_manager.v3.HttpConnectionManager") => {
            let proto: HcmProto = any::decode(any_cfg)?;
            if proto.stat_prefix.is_empty() {
                return Err(
                    ConfigError::new("stat_prefix is required").at("typed_config.stat_prefix")
                );
            }
            Ok(NetworkFilterConfig::HttpConnectionManager(Arc::new(proto)))
        }
        _ => Err(extension::unsupported("network filter", &f.name, &type_url)),
    }
}

fn transport_socket(ts: &TransportSocket) -> Result<DownstreamTransport, ConfigError> {
    let Some(transport_socket::ConfigType::TypedConfig(cfg)) = &ts.config_type else {
        return match ts.name.as_str() {
            "" | "envoy.transport_sockets.raw_buffer" => Ok(DownstreamTransport::Raw),
            name => Err(ConfigError::new(format!(
                "transport socket {name:?} has no typed_config"
            ))),
        };
    };
    let url = any::effective_type_url(cfg)?;
    match url.strip_prefix(TYPE_PREFIX) {
        Some("transport_sockets.raw_buffer.v3.RawBuffer") => Ok(DownstreamTransport::Raw),
        Some("transport_sockets.tls.v3.DownstreamTlsContext") => {
            let ctx: DownstreamTlsContext = any::decode(cfg)?;
            crate::tls::downstream::validate(&ctx).at("typed_config")?;
            Ok(DownstreamTransport::Tls(Box::new(ctx)))
        }
        _ => Err(extension::unsupported("transport socket", &ts.name, &url)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto_test_util::from_yaml;

    fn listener(yaml: &str) -> Result<ListenerConfig, ConfigError> {
        ListenerConfig::from_proto(&from_yaml::<Listener>(yaml))
    }

    #[test]
    fn istio_virtual_outbound_implies_original_dst() {
        let l = listener(
            r#"
name: virtualOutbound
address: { socket_address: { address: 0.0.0.0, port_value: 15001 } }
use_original_dst: true
traffic_direction: OUTBOUND
filter_chains:
- name: virtualOutbound-blackhole
  filter_chain_match: { destination_port: 15001 }
  filters:
  - name: istio.stats
    typed_config:
      "@type": type.googleapis.com/udpa.type.v1.TypedStruct
      type_url: type.googleapis.com/stats.PluginConfig
      value: {}
  - name: envoy.filters.network.tcp_proxy
    typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: BlackHoleCluster, cluster: BlackHoleCluster }
- name: virtualOutbound-catchall-tcp
  filters:
  - name: envoy.filters.network.tcp_proxy
    typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: PassthroughCluster, cluster: PassthroughCluster }
"#,
        )
        .unwrap();
        assert!(l.use_original_dst && l.original_dst);
        assert_eq!(l.stat_prefix, "listener.0.0.0.0_15001.");
        assert_eq!(l.direction, Direction::Outbound);
        assert_eq!(l.chains.len(), 2);
        assert!(matches!(
            l.chains[0].filters[0],
            NetworkFilterConfig::IstioStats
        ));
    }

    #[test]
    fn istio_virtual_inbound_listener_filters() {
        let l = listener(
            r#"
name: virtualInbound
address: { socket_address: { address: 0.0.0.0, port_value: 15006 } }
listener_filters_timeout: 0s
continue_on_listener_filters_timeout: true
listener_filters:
- name: envoy.filters.listener.original_dst
  typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst }
- name: envoy.filters.listener.tls_inspector
  typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }
  filter_disabled: { destination_port_range: { start: 15006, end: 15007 } }
- name: envoy.filters.listener.http_inspector
  typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector }
  filter_disabled: { or_match: { rules: [ { destination_port_range: { start: 80, end: 81 } }, { destination_port_range: { start: 15006, end: 15007 } } ] } }
filter_chains:
- filters:
  - name: envoy.filters.network.tcp_proxy
    typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: InboundPassthroughCluster, cluster: InboundPassthroughCluster }
"#,
        )
        .unwrap();
        assert!(l.original_dst && !l.use_original_dst);
        assert_eq!(l.filters_timeout, None);
        let tls = l.tls_inspector.as_ref().unwrap();
        assert!(tls.enabled_for(8080).is_some());
        assert!(tls.enabled_for(15006).is_none());
        let http = l.http_inspector.as_ref().unwrap();
        assert!(http.enabled_for(80).is_none());
        assert!(http.enabled_for(81).is_some());
    }

    #[test]
    fn bad_listeners_name_the_problem() {
        let base = |filters: &str| {
            format!(
                "name: l\naddress: {{ socket_address: {{ address: 127.0.0.1, port_value: 1 }} }}\nfilter_chains:\n- name: c\n  filters:\n{filters}"
            )
        };
        let err = listener(&base(
            "  - name: envoy.filters.network.local_ratelimit\n    typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit, stat_prefix: tcp. }\n  - name: envoy.filters.network.tcp_proxy\n    typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: x, cluster: c }\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("listener \"l\" filter_chains[0] (\"c\").filters[0]:"),
            "{err}"
        );
        assert!(err.contains("refusing"), "{err}");
        let err = listener(&base(
            "  - name: envoy.filters.network.tcp_proxy\n    typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: x, cluster: c }\n  - name: istio.stats\n    typed_config: { \"@type\": type.googleapis.com/udpa.type.v1.TypedStruct, type_url: type.googleapis.com/stats.PluginConfig, value: {} }\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("must be the last filter"), "{err}");
        let err = listener(
            "name: l\naddress: { socket_address: { address: 127.0.0.1, port_value: 1 } }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no filter chains"), "{err}");
    }

    #[test]
    fn stat_addresses_like_envoy() {
        assert_eq!(
            stat_address(&"0.0.0.0:15001".parse().unwrap()),
            "0.0.0.0_15001"
        );
        assert_eq!(stat_address(&"[::]:15006".parse().unwrap()), "[__]_15006");
    }
}
