//! Client configuration as plain structs. Build it by hand, or from an Envoy bootstrap with
//! [`ClientConfig::from_bootstrap`](crate::ClientConfig::from_bootstrap).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;

use crate::resource::ResourceType;

/// Envoy's default `initial_fetch_timeout` when a config source does not set one.
pub const DEFAULT_INITIAL_FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// Everything one client (one gRPC stream to one server) needs.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Where the server is.
    pub transport: Transport,
    /// Which gRPC service to call: ADS, or SDS on its own stream.
    pub service: Service,
    /// State of the world (`GRPC`) or incremental (`DELTA_GRPC`).
    pub api_type: ApiType,
    /// The node identity sent to the server.
    pub node: Node,
    /// Send `node` only in the first request of each stream (Envoy's
    /// `set_node_on_first_message_only`; off by default as in Envoy, on in Istio's bootstrap).
    pub set_node_on_first_message_only: bool,
    /// Types subscribed with a wildcard for the client's whole life (LDS and CDS for a proxy).
    /// Other types are subscribed by name through the handle.
    pub wildcard: BTreeSet<ResourceType>,
    /// Per-type `initial_fetch_timeout`; a type not listed gets
    /// [`DEFAULT_INITIAL_FETCH_TIMEOUT`]. `Duration::ZERO` waits forever, as in Envoy.
    pub initial_fetch_timeout: BTreeMap<ResourceType, Duration>,
    /// Reconnect backoff.
    pub backoff: Backoff,
    /// Time allowed to establish the connection (the xDS cluster's `connect_timeout`).
    pub connect_timeout: Duration,
    /// Largest response accepted; `None` is unlimited, Envoy's default. A larger message ends
    /// the stream (logged) and the client reconnects.
    pub max_message_size: Option<usize>,
}

/// How to reach the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A Unix domain socket (Istio's agent serves `./etc/istio/proxy/XDS`).
    Uds(PathBuf),
    /// HTTP/2 over TCP, with TLS when `tls` is set.
    Tcp {
        /// `host:port` (a DNS name or an IP address; IPv6 in brackets).
        authority: String,
        /// TLS settings; `None` is plaintext.
        tls: Option<TlsConfig>,
    },
}

/// TLS towards the server. Files are read at every connection attempt, so rotated
/// certificates are picked up on the next reconnect.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TlsConfig {
    /// CA bundle (PEM) that verifies the server. Required.
    pub ca: Option<PemSource>,
    /// Client certificate chain and private key (PEM), for mTLS.
    pub identity: Option<Identity>,
    /// Name verified against the server certificate and sent as SNI; defaults to the host of
    /// the authority.
    pub server_name: Option<String>,
}

/// A client certificate chain and its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// PEM certificate chain.
    pub cert_chain: PemSource,
    /// PEM private key.
    pub private_key: PemSource,
}

/// PEM bytes, inline or in a file (Envoy's `DataSource`). `Debug` never prints inline bytes
/// (they may be a private key).
#[derive(Clone, PartialEq, Eq)]
pub enum PemSource {
    /// Read from this file at connect time.
    File(PathBuf),
    /// These bytes.
    Inline(Vec<u8>),
}

/// The gRPC service the client calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// `envoy.service.discovery.v3.AggregatedDiscoveryService` (ADS).
    Aggregated,
    /// `envoy.service.secret.v3.SecretDiscoveryService` (SDS on its own stream, e.g. to Istio's
    /// agent for `default` and `ROOTCA`).
    Secret,
}

/// xDS protocol variant (`ApiConfigSource.api_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiType {
    /// State of the world (`GRPC`).
    Grpc,
    /// Incremental (`DELTA_GRPC`), Istio's default.
    DeltaGrpc,
}

/// Exponential reconnect backoff with jitter: attempt `n` waits a random time in
/// `[d/2, d]` where `d = min(base * 2^n, max)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// First delay bound (Envoy: 500 ms).
    pub base: Duration,
    /// Largest delay (Envoy: 30 s).
    pub max: Duration,
}

// === impl ClientConfig ===

impl ClientConfig {
    /// An ADS client with wildcard CDS and LDS, Envoy's defaults otherwise.
    pub fn ads(transport: Transport, api_type: ApiType, node: Node) -> Self {
        Self {
            transport,
            service: Service::Aggregated,
            api_type,
            node,
            set_node_on_first_message_only: false,
            wildcard: [ResourceType::Cluster, ResourceType::Listener].into(),
            initial_fetch_timeout: BTreeMap::new(),
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(5),
            max_message_size: None,
        }
    }

    /// An SDS client (state of the world on `SecretDiscoveryService.StreamSecrets`, as
    /// Istio's agent speaks); secrets are subscribed by name through the handle.
    pub fn sds(transport: Transport, node: Node) -> Self {
        Self {
            service: Service::Secret,
            wildcard: BTreeSet::new(),
            ..Self::ads(transport, ApiType::Grpc, node)
        }
    }

    /// The `initial_fetch_timeout` for a type; `None` means wait forever.
    pub(crate) fn fetch_timeout(&self, resource_type: ResourceType) -> Option<Duration> {
        let timeout = self
            .initial_fetch_timeout
            .get(&resource_type)
            .copied()
            .unwrap_or(DEFAULT_INITIAL_FETCH_TIMEOUT);
        (!timeout.is_zero()).then_some(timeout)
    }
}

// === impl Transport ===

impl std::fmt::Display for Transport {
    /// The address only, safe to log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Uds(path) => write!(f, "unix:{}", path.display()),
            Transport::Tcp {
                authority,
                tls: None,
            } => write!(f, "http://{authority}"),
            Transport::Tcp {
                authority,
                tls: Some(_),
            } => write!(f, "https://{authority}"),
        }
    }
}

// === impl PemSource ===

impl std::fmt::Debug for PemSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PemSource::File(path) => f.debug_tuple("File").field(path).finish(),
            PemSource::Inline(bytes) => write!(f, "Inline(<{} bytes>)", bytes.len()),
        }
    }
}

// === impl Backoff ===

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logging_a_transport_never_shows_key_material() {
        let transport = Transport::Tcp {
            authority: "istiod:15012".into(),
            tls: Some(TlsConfig {
                ca: Some(PemSource::File("/etc/certs/root-cert.pem".into())),
                identity: Some(Identity {
                    cert_chain: PemSource::Inline(b"-----BEGIN CERTIFICATE-----".to_vec()),
                    private_key: PemSource::Inline(b"-----BEGIN PRIVATE KEY-----".to_vec()),
                }),
                server_name: None,
            }),
        };
        assert_eq!(transport.to_string(), "https://istiod:15012");
        let debug = format!("{transport:?}");
        assert!(!debug.contains("BEGIN"), "{debug}");
        assert!(debug.contains("Inline(<27 bytes>)"), "{debug}");
    }

    #[test]
    fn zero_fetch_timeout_means_forever_and_unset_means_envoy_default() {
        let mut config = ClientConfig::ads(
            Transport::Uds("x".into()),
            ApiType::Grpc,
            Default::default(),
        );
        config
            .initial_fetch_timeout
            .insert(ResourceType::Listener, Duration::ZERO);
        assert_eq!(config.fetch_timeout(ResourceType::Listener), None);
        assert_eq!(
            config.fetch_timeout(ResourceType::Cluster),
            Some(DEFAULT_INITIAL_FETCH_TIMEOUT)
        );
    }
}
