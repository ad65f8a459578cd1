//! `envoy.filters.network.tcp_proxy` as a typed config.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, tcp_proxy::ClusterSpecifier,
};

use super::{ConfigError, Context, duration, extension};

/// Where tcp_proxy sends a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpRoute {
    Cluster(Arc<str>),
    /// One of several clusters, chosen by weight.
    Weighted {
        clusters: Vec<(Arc<str>, u32)>,
        total: u64,
    },
}

/// A validated tcp_proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpProxyConfig {
    pub stat_prefix: String,
    pub route: TcpRoute,
    /// Close both sides after this long without traffic; `None` disables it.
    pub idle_timeout: Option<Duration>,
    pub max_connect_attempts: u32,
    /// `access_log`, compiled (and its files opened) when the filter is built.
    pub access_log: Vec<envoy_types::pb::envoy::config::accesslog::v3::AccessLog>,
    pub max_downstream_connection_duration: Option<Duration>,
}

// === impl TcpProxyConfig ===

impl TcpProxyConfig {
    pub fn from_proto(p: &TcpProxy) -> Result<Self, ConfigError> {
        if p.stat_prefix.is_empty() {
            return Err(ConfigError::new("stat_prefix is required").at("stat_prefix"));
        }
        let route = match &p.cluster_specifier {
            Some(ClusterSpecifier::Cluster(c)) if !c.is_empty() => {
                TcpRoute::Cluster(Arc::from(c.as_str()))
            }
            Some(ClusterSpecifier::WeightedClusters(w)) => {
                let clusters: Vec<(Arc<str>, u32)> = w
                    .clusters
                    .iter()
                    .filter(|c| c.weight > 0)
                    .map(|c| (Arc::from(c.name.as_str()), c.weight))
                    .collect();
                let total = clusters.iter().map(|(_, w)| u64::from(*w)).sum();
                if total == 0 {
                    return Err(ConfigError::new("needs a cluster with a positive weight")
                        .at("weighted_clusters"));
                }
                TcpRoute::Weighted { clusters, total }
            }
            _ => return Err(ConfigError::new("cluster or weighted_clusters is required")),
        };
        if p.tunneling_config.is_some() {
            return Err(extension::unsupported(
                "tcp_proxy option",
                "tunneling_config",
                "HTTP CONNECT tunneling",
            ));
        }
        if p.on_demand.is_some() {
            return Err(
                ConfigError::new("on-demand cluster discovery is not supported").at("on_demand"),
            );
        }
        if p.metadata_match.is_some() {
            return Err(
                ConfigError::new("subset load balancing is not supported").at("metadata_match")
            );
        }
        if !p.proxy_protocol_tlvs.is_empty() {
            return Err(
                ConfigError::new("PROXY protocol TLVs are not supported").at("proxy_protocol_tlvs")
            );
        }
        if p.upstream_connect_mode != 0 {
            return Err(ConfigError::new("only IMMEDIATE is supported").at("upstream_connect_mode"));
        }
        // Envoy's default idle timeout is one hour; 0s disables it.
        let idle_timeout = match &p.idle_timeout {
            None => Some(Duration::from_secs(3600)),
            Some(d) => Some(duration(d).at("idle_timeout")?).filter(|d| !d.is_zero()),
        };
        let max_downstream_connection_duration = p
            .max_downstream_connection_duration
            .as_ref()
            .map(duration)
            .transpose()
            .at("max_downstream_connection_duration")?
            .filter(|d| !d.is_zero());
        Ok(Self {
            stat_prefix: p.stat_prefix.clone(),
            route,
            idle_timeout,
            max_connect_attempts: p
                .max_connect_attempts
                .as_ref()
                .map_or(1, |v| v.value.max(1)),
            max_downstream_connection_duration,
            access_log: p.access_log.clone(),
        })
    }
}
