//! Building a [`ClientConfig`] from an Envoy bootstrap, the way Envoy resolves
//! `dynamic_resources.ads_config`: `envoy_grpc.cluster_name` names a static cluster whose
//! endpoint is a pipe or a socket address (with the cluster's TLS transport socket, if any),
//! or `google_grpc.target_uri` names the server directly.

use std::time::Duration;

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::api_config_source::ApiType as WireApiType;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::grpc_service::TargetSpecifier;
use envoy_types::pb::envoy::config::core::v3::grpc_service::google_grpc::ChannelCredentials;
use envoy_types::pb::envoy::config::core::v3::grpc_service::google_grpc::channel_credentials::CredentialSpecifier;
use envoy_types::pb::envoy::config::core::v3::grpc_service::{EnvoyGrpc, GoogleGrpc};
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
use envoy_types::pb::envoy::config::core::v3::{
    ApiConfigSource, ConfigSource, DataSource, TransportSocket,
};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::ValidationContextType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, UpstreamTlsContext,
};
use envoy_types::pb::google::protobuf::Duration as ProtoDuration;
use prost::{Message, Name};

use crate::config::{
    ApiType, Backoff, ClientConfig, Identity, PemSource, Service, TlsConfig, Transport,
};
use crate::resource::ResourceType;

/// The `user_agent_name` Envoy reports; set when the bootstrap's node leaves it empty, because
/// control planes key Envoy-specific behaviour on it.
pub const USER_AGENT_NAME: &str = "envoy";

/// Envoy's default xDS cluster `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a bootstrap does not yield a usable client configuration.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BootstrapError {
    /// Without `dynamic_resources.ads_config` there is no ADS server.
    #[error(
        "the bootstrap has no dynamic_resources.ads_config; there is no ADS server to connect to"
    )]
    MissingAdsConfig,
    /// Only `GRPC` and `DELTA_GRPC` (and their `AGGREGATED_` forms) are streams.
    #[error("{field}: api_type {api_type} is not supported; use GRPC or DELTA_GRPC")]
    UnsupportedApiType {
        /// Where in the bootstrap.
        field: &'static str,
        /// The configured type.
        api_type: String,
    },
    /// An API config source must name at least one gRPC service.
    #[error(
        "{field} has no grpc_services; add an envoy_grpc cluster_name or a google_grpc target_uri"
    )]
    NoGrpcService {
        /// Where in the bootstrap.
        field: &'static str,
    },
    /// `envoy_grpc.cluster_name` must be a static cluster of the bootstrap.
    #[error("the xDS cluster {cluster} is not a static cluster in the bootstrap")]
    UnknownCluster {
        /// The cluster name.
        cluster: String,
    },
    /// The static cluster has no endpoint to connect to.
    #[error("the xDS cluster {cluster} has no endpoint in its load_assignment")]
    NoEndpoint {
        /// The cluster name.
        cluster: String,
    },
    /// The endpoint's address is neither a pipe nor a socket address with a port.
    #[error("the xDS cluster {cluster} has an unsupported address: {reason}")]
    UnsupportedAddress {
        /// The cluster name.
        cluster: String,
        /// What is wrong.
        reason: String,
    },
    /// The TLS settings cannot be honoured (e.g. SDS-provided certificates for the xDS
    /// cluster itself, or no CA to verify the server).
    #[error("the xDS cluster {cluster} has unsupported TLS settings: {reason}")]
    UnsupportedTls {
        /// The cluster (or google_grpc target).
        cluster: String,
        /// What is wrong.
        reason: String,
    },
    /// LDS/CDS must come over ADS; files and other servers are not supported.
    #[error("dynamic_resources.{field} must use ads {{}}; {reason}")]
    UnsupportedConfigSource {
        /// `lds_config` or `cds_config`.
        field: &'static str,
        /// What it uses instead.
        reason: String,
    },
    /// `google_grpc.target_uri` is empty or not usable.
    #[error("google_grpc target_uri {target:?} is not usable: {reason}")]
    InvalidTarget {
        /// The configured target.
        target: String,
        /// What is wrong.
        reason: String,
    },
    /// A `DataSource` names an environment variable that is not set.
    #[error("the TLS data source environment variable {name} is not set")]
    MissingEnvironmentVariable {
        /// The variable.
        name: String,
    },
}

/// Where the secrets of an `sds_config` come from.
#[derive(Clone, Debug)]
pub enum SdsSource {
    /// `ads {}`: subscribe the names on the ADS client.
    Ads,
    /// A separate SDS stream (Istio's `sds-grpc` cluster): run a client with this config.
    Stream(Box<ClientConfig>),
}

// === impl ClientConfig ===

impl ClientConfig {
    /// The ADS client an Envoy would run for this bootstrap: `ads_config` gives the server
    /// and protocol, `cds_config`/`lds_config` (which must be `ads {}`) give the wildcard
    /// types and their `initial_fetch_timeout`.
    pub fn from_bootstrap(bootstrap: &Bootstrap) -> Result<Self, BootstrapError> {
        let dynamic = bootstrap.dynamic_resources.as_ref();
        let ads = dynamic
            .and_then(|d| d.ads_config.as_ref())
            .ok_or(BootstrapError::MissingAdsConfig)?;
        let mut config = api_config_source(bootstrap, ads, Service::Aggregated, "ads_config")?;
        config.wildcard.clear();
        let sources = [
            (
                ResourceType::Cluster,
                "cds_config",
                dynamic.and_then(|d| d.cds_config.as_ref()),
            ),
            (
                ResourceType::Listener,
                "lds_config",
                dynamic.and_then(|d| d.lds_config.as_ref()),
            ),
        ];
        for (resource_type, field, source) in sources {
            let Some(source) = source else { continue };
            match &source.config_source_specifier {
                Some(ConfigSourceSpecifier::Ads(_)) => {}
                other => {
                    return Err(BootstrapError::UnsupportedConfigSource {
                        field,
                        reason: format!("found {}", describe_specifier(other.as_ref())),
                    });
                }
            }
            config.wildcard.insert(resource_type);
            if let Some(timeout) = &source.initial_fetch_timeout {
                config
                    .initial_fetch_timeout
                    .insert(resource_type, duration(timeout));
            }
        }
        Ok(config)
    }

    /// Where an `SdsSecretConfig.sds_config` gets its secrets: over ADS, or from a separate
    /// SDS stream (Istio: `api_config_source { api_type: GRPC, envoy_grpc: sds-grpc }` on the
    /// agent's socket), with the source's `initial_fetch_timeout` for secrets.
    pub fn from_sds_config(
        bootstrap: &Bootstrap,
        sds_config: &ConfigSource,
    ) -> Result<SdsSource, BootstrapError> {
        let api = match &sds_config.config_source_specifier {
            Some(ConfigSourceSpecifier::Ads(_)) => return Ok(SdsSource::Ads),
            Some(ConfigSourceSpecifier::ApiConfigSource(api)) => api,
            other => {
                return Err(BootstrapError::UnsupportedConfigSource {
                    field: "sds_config",
                    reason: format!("found {}", describe_specifier(other.as_ref())),
                });
            }
        };
        let mut config = api_config_source(bootstrap, api, Service::Secret, "sds_config")?;
        config.wildcard.clear();
        if let Some(timeout) = &sds_config.initial_fetch_timeout {
            config
                .initial_fetch_timeout
                .insert(ResourceType::Secret, duration(timeout));
        }
        Ok(SdsSource::Stream(Box::new(config)))
    }

    /// A client for one `ApiConfigSource` of the bootstrap (its server, protocol and
    /// `set_node_on_first_message_only`), calling `service`.
    pub fn from_api_config_source(
        bootstrap: &Bootstrap,
        source: &ApiConfigSource,
        service: Service,
    ) -> Result<Self, BootstrapError> {
        api_config_source(bootstrap, source, service, "api_config_source")
    }
}

/// [`ClientConfig::from_api_config_source`], naming `field` in errors.
fn api_config_source(
    bootstrap: &Bootstrap,
    source: &ApiConfigSource,
    service: Service,
    field: &'static str,
) -> Result<ClientConfig, BootstrapError> {
    let api_type = match WireApiType::try_from(source.api_type) {
        Ok(WireApiType::Grpc | WireApiType::AggregatedGrpc) => ApiType::Grpc,
        Ok(WireApiType::DeltaGrpc | WireApiType::AggregatedDeltaGrpc) => ApiType::DeltaGrpc,
        Ok(other) => {
            return Err(BootstrapError::UnsupportedApiType {
                field,
                api_type: other.as_str_name().to_string(),
            });
        }
        Err(_) => {
            return Err(BootstrapError::UnsupportedApiType {
                field,
                api_type: source.api_type.to_string(),
            });
        }
    };
    let grpc = source
        .grpc_services
        .first()
        .and_then(|g| g.target_specifier.as_ref())
        .ok_or(BootstrapError::NoGrpcService { field })?;
    let mut node = bootstrap.node.clone().unwrap_or_default();
    if node.user_agent_name.is_empty() {
        node.user_agent_name = USER_AGENT_NAME.to_string();
    }
    let mut config = match service {
        Service::Aggregated => {
            ClientConfig::ads(Transport::Uds(Default::default()), api_type, node)
        }
        Service::Secret => ClientConfig {
            api_type,
            ..ClientConfig::sds(Transport::Uds(Default::default()), node)
        },
    };
    config.set_node_on_first_message_only = source.set_node_on_first_message_only;
    match grpc {
        TargetSpecifier::EnvoyGrpc(envoy_grpc) => {
            apply_envoy_grpc(&mut config, bootstrap, envoy_grpc)?
        }
        TargetSpecifier::GoogleGrpc(google_grpc) => apply_google_grpc(&mut config, google_grpc)?,
    }
    Ok(config)
}

fn apply_envoy_grpc(
    config: &mut ClientConfig,
    bootstrap: &Bootstrap,
    envoy_grpc: &EnvoyGrpc,
) -> Result<(), BootstrapError> {
    let name = &envoy_grpc.cluster_name;
    let cluster = bootstrap
        .static_resources
        .as_ref()
        .and_then(|s| s.clusters.iter().find(|c| &c.name == name))
        .ok_or_else(|| BootstrapError::UnknownCluster {
            cluster: name.clone(),
        })?;
    config.transport = cluster_transport(cluster)?;
    config.connect_timeout = cluster
        .connect_timeout
        .as_ref()
        .map(duration)
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    config.max_message_size = envoy_grpc
        .max_receive_message_length
        .as_ref()
        .map(|v| v.value)
        .filter(|v| *v > 0)
        .and_then(|v| usize::try_from(v).ok());
    if let Some(back_off) = envoy_grpc
        .retry_policy
        .as_ref()
        .and_then(|r| r.retry_back_off.as_ref())
    {
        let defaults = Backoff::default();
        let base = back_off
            .base_interval
            .as_ref()
            .map_or(defaults.base, duration);
        let max = back_off.max_interval.as_ref().map_or(base * 10, duration);
        config.backoff = Backoff { base, max };
    }
    Ok(())
}

fn apply_google_grpc(
    config: &mut ClientConfig,
    google_grpc: &GoogleGrpc,
) -> Result<(), BootstrapError> {
    let target = google_grpc.target_uri.trim();
    let invalid = |reason: &str| BootstrapError::InvalidTarget {
        target: target.to_string(),
        reason: reason.to_string(),
    };
    if target.is_empty() {
        return Err(invalid("it is empty"));
    }
    if let Some(path) = target
        .strip_prefix("unix://")
        .or_else(|| target.strip_prefix("unix:"))
    {
        config.transport = Transport::Uds(path.into());
        return Ok(());
    }
    let authority = target.strip_prefix("dns:///").unwrap_or(target);
    if authority.contains('/') {
        return Err(invalid("expected host:port, dns:///host:port or unix:path"));
    }
    let tls = match google_grpc
        .channel_credentials
        .as_ref()
        .and_then(|c: &ChannelCredentials| c.credential_specifier.as_ref())
    {
        None | Some(CredentialSpecifier::LocalCredentials(_)) => None,
        Some(CredentialSpecifier::SslCredentials(ssl)) => {
            let ca = ssl.root_certs.as_ref().map(pem_source).transpose()?;
            let identity = match (&ssl.cert_chain, &ssl.private_key) {
                (Some(cert), Some(key)) => Some(Identity {
                    cert_chain: pem_source(cert)?,
                    private_key: pem_source(key)?,
                }),
                _ => None,
            };
            Some(TlsConfig {
                ca,
                identity,
                server_name: None,
            })
        }
        Some(CredentialSpecifier::GoogleDefault(_)) => {
            return Err(BootstrapError::UnsupportedTls {
                cluster: target.to_string(),
                reason: "google_default credentials are not supported; use ssl_credentials".into(),
            });
        }
    };
    config.transport = Transport::Tcp {
        authority: authority.to_string(),
        tls,
    };
    Ok(())
}

/// The transport of a static cluster: its first endpoint, with its TLS transport socket.
fn cluster_transport(cluster: &Cluster) -> Result<Transport, BootstrapError> {
    let name = &cluster.name;
    let address = cluster
        .load_assignment
        .as_ref()
        .and_then(|la| la.endpoints.first())
        .and_then(|l| l.lb_endpoints.first())
        .and_then(|e| match &e.host_identifier {
            Some(HostIdentifier::Endpoint(endpoint)) => endpoint.address.as_ref(),
            _ => None,
        })
        .and_then(|a| a.address.as_ref())
        .ok_or_else(|| BootstrapError::NoEndpoint {
            cluster: name.clone(),
        })?;
    let unsupported = |reason: String| BootstrapError::UnsupportedAddress {
        cluster: name.clone(),
        reason,
    };
    let tls = cluster
        .transport_socket
        .as_ref()
        .map(|ts| cluster_tls(name, ts))
        .transpose()?
        .flatten();
    match address {
        AddressKind::Pipe(pipe) => {
            if tls.is_some() {
                return Err(BootstrapError::UnsupportedTls {
                    cluster: name.clone(),
                    reason: "TLS over a pipe is not supported".into(),
                });
            }
            Ok(Transport::Uds(pipe.path.clone().into()))
        }
        AddressKind::SocketAddress(socket) => {
            let port = match &socket.port_specifier {
                Some(PortSpecifier::PortValue(port)) => *port,
                Some(PortSpecifier::NamedPort(port)) => {
                    return Err(unsupported(format!("named port {port:?}; use port_value")));
                }
                None => return Err(unsupported("the socket address has no port".into())),
            };
            let host = &socket.address;
            let authority = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            Ok(Transport::Tcp { authority, tls })
        }
        AddressKind::EnvoyInternalAddress(_) => Err(unsupported(
            "internal listener addresses cannot reach a server".into(),
        )),
    }
}

/// TLS settings of a cluster's transport socket; `None` for a plaintext socket.
fn cluster_tls(
    cluster: &str,
    socket: &TransportSocket,
) -> Result<Option<TlsConfig>, BootstrapError> {
    let unsupported = |reason: String| BootstrapError::UnsupportedTls {
        cluster: cluster.to_string(),
        reason,
    };
    let Some(ConfigType::TypedConfig(any)) = &socket.config_type else {
        return if socket.name == "envoy.transport_sockets.tls" {
            Err(unsupported(
                "the TLS transport socket has no typed_config".into(),
            ))
        } else {
            Ok(None)
        };
    };
    if any.type_url
        == "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
    {
        return Ok(None);
    }
    if any.type_url != UpstreamTlsContext::type_url() {
        return Err(unsupported(format!(
            "transport socket type {}",
            any.type_url
        )));
    }
    let context = UpstreamTlsContext::decode(any.value.as_slice())
        .map_err(|e| unsupported(format!("invalid UpstreamTlsContext: {e}")))?;
    let common = context.common_tls_context.unwrap_or_default();
    let identity = tls_identity(&common).map_err(unsupported)?;
    let ca = trusted_ca(common.validation_context_type).map_err(unsupported)?;
    Ok(Some(TlsConfig {
        ca: Some(ca),
        identity,
        server_name: (!context.sni.is_empty()).then_some(context.sni),
    }))
}

/// The client certificate of an `UpstreamTlsContext`, from files or inline data only.
fn tls_identity(common: &CommonTlsContext) -> Result<Option<Identity>, String> {
    if !common.tls_certificate_sds_secret_configs.is_empty() {
        return Err(
            "certificates delivered over SDS cannot secure the xDS connection itself; \
                    use tls_certificates with files"
                .into(),
        );
    }
    let Some(cert) = common.tls_certificates.first() else {
        return Ok(None);
    };
    match (&cert.certificate_chain, &cert.private_key) {
        (Some(chain), Some(key)) => Ok(Some(Identity {
            cert_chain: pem_source(chain).map_err(|e| e.to_string())?,
            private_key: pem_source(key).map_err(|e| e.to_string())?,
        })),
        _ => Err("tls_certificates needs certificate_chain and private_key".into()),
    }
}

/// The CA that verifies the server; required, because an unverified control plane could
/// hand the proxy any configuration.
fn trusted_ca(validation: Option<ValidationContextType>) -> Result<PemSource, String> {
    let context = match validation {
        Some(ValidationContextType::ValidationContext(v)) => Some(v),
        Some(ValidationContextType::CombinedValidationContext(c)) => c.default_validation_context,
        Some(ValidationContextType::ValidationContextSdsSecretConfig(_)) => {
            return Err(
                "a validation context delivered over SDS cannot secure the xDS \
                        connection itself"
                    .into(),
            );
        }
        _ => None,
    };
    match context.and_then(|v| v.trusted_ca) {
        Some(ca) => pem_source(&ca).map_err(|e| e.to_string()),
        None => Err(
            "no validation_context.trusted_ca: the client will not connect to an xDS \
                     server it cannot verify"
                .into(),
        ),
    }
}

fn pem_source(source: &DataSource) -> Result<PemSource, BootstrapError> {
    match &source.specifier {
        Some(Specifier::Filename(path)) => Ok(PemSource::File(path.into())),
        Some(Specifier::InlineBytes(bytes)) => Ok(PemSource::Inline(bytes.clone())),
        Some(Specifier::InlineString(s)) => Ok(PemSource::Inline(s.clone().into_bytes())),
        Some(Specifier::EnvironmentVariable(name)) => std::env::var(name)
            .map(|v| PemSource::Inline(v.into_bytes()))
            .map_err(|_| BootstrapError::MissingEnvironmentVariable { name: name.clone() }),
        None => Ok(PemSource::Inline(Vec::new())),
    }
}

fn describe_specifier(specifier: Option<&ConfigSourceSpecifier>) -> &'static str {
    match specifier {
        None => "no config source",
        Some(ConfigSourceSpecifier::Ads(_)) => "ads",
        Some(ConfigSourceSpecifier::ApiConfigSource(_)) => "api_config_source",
        Some(ConfigSourceSpecifier::PathConfigSource(_)) => "path_config_source",
        Some(ConfigSourceSpecifier::Self_(_)) => "self",
        #[allow(deprecated)]
        Some(ConfigSourceSpecifier::Path(_)) => "path",
    }
}

/// A protobuf `Duration` as a std one; negative values read as zero.
fn duration(d: &ProtoDuration) -> Duration {
    let seconds = u64::try_from(d.seconds).unwrap_or(0);
    let nanos = u32::try_from(d.nanos).unwrap_or(0);
    Duration::new(seconds, nanos)
}
