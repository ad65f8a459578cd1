//! The TLS connectors of one cluster: one per distinct transport (the cluster's own
//! `transport_socket` and each `transport_socket_matches` entry), built with the cluster so
//! connections only look theirs up.

use crate::config::cluster::{ClusterConfig, UpstreamTransport};
use crate::stats::Scope;
use crate::upstream::host::Host;

use super::TlsResources;
use super::common::{NotReady, SecretRef};
use super::peer_exchange::cluster_runs_exchange;
use super::stats::SslStats;
use super::upstream::UpstreamTls;

/// A connector, or why the context could not be bound (kept so connections to hosts that
/// need it fail with the reason instead of going out in plaintext).
#[derive(Debug, Clone)]
enum Slot {
    Ready(UpstreamTls),
    Broken(String),
}

/// The TLS connectors of a cluster.
#[derive(Debug, Default)]
pub struct ClusterTls {
    /// For hosts that use the cluster's own `transport_socket`.
    default: Option<Slot>,
    /// For hosts matched by `transport_socket_matches`, by entry name (and transport, for
    /// entries that share a name).
    matches: Vec<(String, UpstreamTransport, Slot)>,
}

/// Why a host's TLS connector cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterTlsError {
    #[error("{0}")]
    NotReady(#[from] NotReady),
    #[error("upstream TLS context unusable: {0}")]
    Broken(String),
    #[error("no TLS connector for transport socket match {0:?}")]
    Missing(String),
}

// === impl ClusterTls ===

impl ClusterTls {
    /// Builds a connector for every TLS transport of `config`. `scope` is the cluster's stats
    /// scope (`cluster.<name>.`), for `ssl.*`.
    pub fn new(config: &ClusterConfig, resources: &TlsResources, scope: Option<&Scope>) -> Self {
        let exchange = cluster_runs_exchange(&config.proto.filters);
        // Like Envoy, a cluster has `ssl.*` stats only when it has a TLS context.
        let any_tls = std::iter::once(&config.transport)
            .chain(config.transport_socket_matches.iter().map(|m| &m.transport))
            .any(|t| matches!(t, UpstreamTransport::Tls(_)));
        let stats = scope.filter(|_| any_tls).map(SslStats::new);
        let build = |t: &UpstreamTransport| -> Option<Slot> {
            let UpstreamTransport::Tls(ctx) = t else {
                return None;
            };
            Some(
                match UpstreamTls::from_proto(ctx, resources, exchange, stats.clone()) {
                    Ok(tls) => Slot::Ready(tls),
                    Err(e) => {
                        tracing::error!(cluster = &*config.name, "upstream TLS context: {e}");
                        Slot::Broken(e.to_string())
                    }
                },
            )
        };
        Self {
            default: build(&config.transport),
            matches: config
                .transport_socket_matches
                .iter()
                .filter_map(|m| {
                    build(&m.transport).map(|s| (m.name.clone(), m.transport.clone(), s))
                })
                .collect(),
        }
    }

    /// The connector for a host whose transport is TLS.
    pub fn for_host(&self, host: &Host) -> Result<&UpstreamTls, ClusterTlsError> {
        let slot = match &host.transport_match {
            None => self.default.as_ref(),
            Some(name) => {
                let mut named = self.matches.iter().filter(|(n, _, _)| n == name);
                let first = named.next();
                match named.next() {
                    None => first.map(|(_, _, s)| s),
                    Some(_) => self
                        .matches
                        .iter()
                        .find(|(n, t, _)| n == name && *t == host.transport)
                        .map(|(_, _, s)| s),
                }
            }
        };
        match slot {
            Some(Slot::Ready(tls)) => Ok(tls),
            Some(Slot::Broken(e)) => Err(ClusterTlsError::Broken(e.clone())),
            None => Err(ClusterTlsError::Missing(
                host.transport_match.clone().unwrap_or_default(),
            )),
        }
    }

    fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.default
            .iter()
            .chain(self.matches.iter().map(|(_, _, s)| s))
    }

    /// Whether every TLS transport has its secrets (Envoy keeps such a cluster warming).
    pub fn readiness(&self) -> Result<(), ClusterTlsError> {
        for slot in self.slots() {
            match slot {
                Slot::Ready(tls) => tls.readiness()?,
                Slot::Broken(e) => return Err(ClusterTlsError::Broken(e.clone())),
            }
        }
        Ok(())
    }

    pub fn is_ready(&self) -> bool {
        self.readiness().is_ok()
    }

    /// The certificates of each TLS transport whose secrets have arrived, for `/certs`.
    pub fn certs(&self) -> Vec<super::common::ContextCerts> {
        self.slots()
            .filter_map(|s| match s {
                Slot::Ready(tls) => tls.certs(),
                Slot::Broken(_) => None,
            })
            .collect()
    }

    /// The secrets the cluster's TLS transports need.
    pub fn secret_refs(&self) -> Vec<SecretRef> {
        self.slots()
            .filter_map(|s| match s {
                Slot::Ready(tls) => Some(tls.secret_refs()),
                Slot::Broken(_) => None,
            })
            .flatten()
            .collect()
    }
}
