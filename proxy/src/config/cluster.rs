//! `config.cluster.v3.Cluster` as a typed, validated `ClusterConfig`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster, cluster::ClusterDiscoveryType, cluster::DiscoveryType, cluster::DnsLookupFamily,
    cluster::LbPolicy as LbPolicyProto,
};
use envoy_types::pb::envoy::config::core::v3::{Metadata, TransportSocket, transport_socket};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options::UpstreamProtocolOptions,
    http_protocol_options::explicit_http_config::ProtocolConfig,
};
use envoy_types::pb::google::protobuf::Struct;

use super::endpoint::{EndpointConfig, HostAddress, endpoints_from_assignment};
use super::{ConfigError, Context, any, duration_or, extension};

const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const DEFAULT_BUFFER_LIMIT: u32 = 1024 * 1024;

/// How a cluster learns its endpoints.
#[derive(Debug, Clone, PartialEq)]
pub enum Discovery {
    /// `STATIC`: the endpoints in `load_assignment`.
    Static(Vec<EndpointConfig>),
    /// `STRICT_DNS`: every address each name resolves to, re-resolved every `refresh`.
    StrictDns {
        endpoints: Vec<EndpointConfig>,
        refresh: Duration,
        family: IpFamily,
    },
    /// `LOGICAL_DNS`: the first address the single name resolves to.
    LogicalDns {
        endpoint: Box<EndpointConfig>,
        refresh: Duration,
        family: IpFamily,
    },
    /// `EDS`: endpoints from the control plane, under `service_name`.
    Eds { service_name: String },
    /// `ORIGINAL_DST`: the connection's original destination (Istio's PassthroughCluster
    /// and inbound clusters).
    OriginalDst { port_override: Option<u16> },
}

/// Which addresses a DNS lookup keeps (`dns_lookup_family`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpFamily {
    V4Only,
    V6Only,
    /// `AUTO`/`V4_PREFERRED`/`ALL`: both, IPv4 first for V4_PREFERRED.
    Any {
        prefer_v4: bool,
    },
}

/// Load balancing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    /// Power of `choice_count` choices on active requests.
    LeastRequest {
        choice_count: u32,
    },
    Random,
    /// The cluster picks (ORIGINAL_DST).
    ClusterProvided,
}

/// Circuit breaker thresholds of the DEFAULT priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub max_connections: u64,
    pub max_pending_requests: u64,
    pub max_requests: u64,
    pub max_retries: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
        }
    }
}

/// A transport socket for upstream connections.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamTransport {
    /// Plaintext (`envoy.transport_sockets.raw_buffer`, or none).
    Raw,
    /// TLS (`envoy.transport_sockets.tls`).
    Tls(Arc<UpstreamTlsContext>),
}

/// One entry of `transport_socket_matches`.
#[derive(Debug, Clone, PartialEq)]
pub struct TransportSocketMatch {
    pub name: String,
    /// Fields an endpoint's `envoy.transport_socket_match` metadata must have.
    pub criterion: Struct,
    pub transport: UpstreamTransport,
}

/// Which HTTP protocol upstream connections speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamHttp {
    #[default]
    Http1,
    Http2,
    /// The protocol the downstream request used.
    UseDownstream,
}

/// TCP keepalive on upstream connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    pub probes: Option<u32>,
    pub time: Option<Duration>,
    pub interval: Option<Duration>,
}

/// A validated cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub name: Arc<str>,
    /// The stats scope name: `alt_stat_name`, or the name.
    pub stat_name: String,
    pub discovery: Discovery,
    pub connect_timeout: Duration,
    pub lb_policy: LbPolicy,
    pub thresholds: Thresholds,
    /// `upstream_bind_config.source_address` (Istio: 127.0.0.6 for inbound passthrough).
    pub source_address: Option<IpAddr>,
    pub transport: UpstreamTransport,
    pub transport_socket_matches: Vec<TransportSocketMatch>,
    pub http: UpstreamHttp,
    pub max_requests_per_connection: Option<u32>,
    pub keepalive: Option<Keepalive>,
    pub per_connection_buffer_limit: u32,
    pub metadata: Option<Arc<Metadata>>,
    /// The cluster as received, for `/config_dump`.
    pub proto: Arc<Cluster>,
}

// === impl ClusterConfig ===

impl ClusterConfig {
    /// Validates and converts a cluster. Errors name the cluster and the field.
    pub fn from_proto(proto: &Cluster) -> Result<Self, ConfigError> {
        Self::convert(proto).at(format!("cluster {:?}", proto.name))
    }

    fn convert(proto: &Cluster) -> Result<Self, ConfigError> {
        if proto.name.is_empty() {
            return Err(ConfigError::new("name is required").at("name"));
        }
        let discovery = discovery(proto)?;
        let lb_policy = lb_policy(proto)?;
        match (&discovery, lb_policy) {
            (Discovery::OriginalDst { .. }, LbPolicy::ClusterProvided) => {}
            (Discovery::OriginalDst { .. }, _) => {
                let name = LbPolicyProto::try_from(proto.lb_policy)
                    .map_or("LOAD_BALANCING_POLICY_CONFIG", |p| p.as_str_name());
                return Err(ConfigError::new(format!(
                    "{name} is not valid for an ORIGINAL_DST cluster; only CLUSTER_PROVIDED is"
                ))
                .at("lb_policy"));
            }
            (_, LbPolicy::ClusterProvided) => {
                return Err(ConfigError::new(
                    "CLUSTER_PROVIDED is only valid for ORIGINAL_DST clusters",
                )
                .at("lb_policy"));
            }
            _ => {}
        }
        let connect_timeout = duration_or(proto.connect_timeout.as_ref(), Duration::from_secs(5))
            .at("connect_timeout")?;
        if connect_timeout.is_zero() {
            return Err(ConfigError::new("must be greater than 0").at("connect_timeout"));
        }
        for (i, f) in proto.filters.iter().enumerate() {
            let type_url = f
                .typed_config
                .as_ref()
                .map(any::effective_type_url)
                .transpose()
                .at(format!("filters[{i}]"))?
                .unwrap_or_default();
            if !extension::is_telemetry_only(&type_url) {
                return Err(
                    extension::unsupported("upstream filter", &f.name, &type_url)
                        .at(format!("filters[{i}]")),
                );
            }
        }
        let transport = match &proto.transport_socket {
            Some(ts) => transport_socket(ts).at("transport_socket")?,
            None => UpstreamTransport::Raw,
        };
        let transport_socket_matches = proto
            .transport_socket_matches
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let transport = match &m.transport_socket {
                    Some(ts) => transport_socket(ts).at("transport_socket")?,
                    None => UpstreamTransport::Raw,
                };
                Ok(TransportSocketMatch {
                    name: m.name.clone(),
                    criterion: m.r#match.clone().unwrap_or_default(),
                    transport,
                })
                .at(format!("transport_socket_matches[{i}]"))
            })
            .collect::<Result<_, ConfigError>>()?;
        let (http, max_requests_per_connection) = http_options(proto)?;
        Ok(Self {
            name: Arc::from(proto.name.as_str()),
            stat_name: if proto.alt_stat_name.is_empty() {
                proto.name.clone()
            } else {
                proto.alt_stat_name.clone()
            },
            discovery,
            connect_timeout,
            lb_policy,
            thresholds: thresholds(proto),
            source_address: source_address(proto)?,
            transport,
            transport_socket_matches,
            http,
            max_requests_per_connection,
            keepalive: keepalive(proto)?,
            per_connection_buffer_limit: proto
                .per_connection_buffer_limit_bytes
                .as_ref()
                .map_or(DEFAULT_BUFFER_LIMIT, |v| v.value),
            metadata: proto.metadata.clone().map(Arc::new),
            proto: Arc::new(proto.clone()),
        })
    }

    /// The EDS resource name this cluster subscribes to, if it is an EDS cluster.
    pub fn eds_service_name(&self) -> Option<&str> {
        match &self.discovery {
            Discovery::Eds { service_name } => Some(service_name),
            _ => None,
        }
    }
}

fn discovery(proto: &Cluster) -> Result<Discovery, ConfigError> {
    let kind = match &proto.cluster_discovery_type {
        None => DiscoveryType::Static,
        Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(*t)
            .map_err(|_| ConfigError::new(format!("unknown cluster type {t}")).at("type"))?,
        Some(ClusterDiscoveryType::ClusterType(custom)) => {
            return Err(ConfigError::new(format!(
                "custom cluster type {:?} is not supported",
                custom.name
            ))
            .at("cluster_type"));
        }
    };
    let assignment = |allow_dns: bool| -> Result<Vec<EndpointConfig>, ConfigError> {
        match &proto.load_assignment {
            Some(cla) => endpoints_from_assignment(cla, allow_dns).at("load_assignment"),
            None => Ok(Vec::new()),
        }
    };
    // Deprecated in favour of typed DNS resolver configs, but Istio's bootstrap uses it.
    #[allow(deprecated)]
    let refresh = || {
        duration_or(proto.dns_refresh_rate.as_ref(), Duration::from_secs(5)).at("dns_refresh_rate")
    };
    let family = || match DnsLookupFamily::try_from(proto.dns_lookup_family) {
        Ok(DnsLookupFamily::V4Only) => Ok(IpFamily::V4Only),
        Ok(DnsLookupFamily::V6Only) => Ok(IpFamily::V6Only),
        Ok(DnsLookupFamily::V4Preferred) => Ok(IpFamily::Any { prefer_v4: true }),
        Ok(DnsLookupFamily::Auto | DnsLookupFamily::All) => Ok(IpFamily::Any { prefer_v4: false }),
        Err(_) => Err(ConfigError::new("unknown value").at("dns_lookup_family")),
    };
    Ok(match kind {
        DiscoveryType::Static => {
            let endpoints = assignment(false)?;
            if endpoints
                .iter()
                .any(|e| matches!(e.address, HostAddress::Dns { .. }))
            {
                return Err(ConfigError::new("STATIC clusters need IP addresses"));
            }
            Discovery::Static(endpoints)
        }
        DiscoveryType::StrictDns => Discovery::StrictDns {
            endpoints: assignment(true)?,
            refresh: refresh()?,
            family: family()?,
        },
        DiscoveryType::LogicalDns => {
            let mut endpoints = assignment(true)?;
            if endpoints.len() != 1 {
                return Err(ConfigError::new(
                    "LOGICAL_DNS clusters must have exactly one endpoint",
                )
                .at("load_assignment"));
            }
            Discovery::LogicalDns {
                endpoint: Box::new(endpoints.remove(0)),
                refresh: refresh()?,
                family: family()?,
            }
        }
        DiscoveryType::Eds => {
            let eds = proto.eds_cluster_config.as_ref().ok_or_else(|| {
                ConfigError::new("EDS clusters need eds_cluster_config").at("eds_cluster_config")
            })?;
            Discovery::Eds {
                service_name: if eds.service_name.is_empty() {
                    proto.name.clone()
                } else {
                    eds.service_name.clone()
                },
            }
        }
        DiscoveryType::OriginalDst => {
            if proto
                .load_assignment
                .as_ref()
                .is_some_and(|cla| !cla.endpoints.is_empty())
            {
                return Err(
                    ConfigError::new("ORIGINAL_DST clusters must not have endpoints")
                        .at("load_assignment"),
                );
            }
            let port_override = match proto
                .lb_config
                .as_ref()
                .and_then(|c| match c {
                    envoy_types::pb::envoy::config::cluster::v3::cluster::LbConfig::OriginalDstLbConfig(o) => Some(o),
                    _ => None,
                })
                .and_then(|o| o.upstream_port_override.as_ref())
            {
                Some(p) => Some(u16::try_from(p.value).map_err(|_| {
                    ConfigError::new("port out of range")
                        .at("original_dst_lb_config.upstream_port_override")
                })?),
                None => None,
            };
            Discovery::OriginalDst { port_override }
        }
    })
}

fn lb_policy(proto: &Cluster) -> Result<LbPolicy, ConfigError> {
    use envoy_types::pb::envoy::extensions::load_balancing_policies::least_request::v3::LeastRequest;
    let policy = LbPolicyProto::try_from(proto.lb_policy).map_err(|_| {
        ConfigError::new(format!("unknown value {}", proto.lb_policy)).at("lb_policy")
    })?;
    match policy {
        LbPolicyProto::RoundRobin => Ok(LbPolicy::RoundRobin),
        LbPolicyProto::LeastRequest => Ok(LbPolicy::LeastRequest {
            choice_count: least_request_choices(proto),
        }),
        LbPolicyProto::Random => Ok(LbPolicy::Random),
        LbPolicyProto::ClusterProvided => Ok(LbPolicy::ClusterProvided),
        LbPolicyProto::RingHash | LbPolicyProto::Maglev => Err(ConfigError::new(format!(
            "{} load balancing is not supported yet",
            policy.as_str_name()
        ))
        .at("lb_policy")),
        LbPolicyProto::LoadBalancingPolicyConfig => {
            let policies = proto
                .load_balancing_policy
                .as_ref()
                .map(|p| p.policies.as_slice())
                .unwrap_or_default();
            for p in policies {
                let Some(ext) = &p.typed_extension_config else {
                    continue;
                };
                let Some(cfg) = &ext.typed_config else {
                    continue;
                };
                let url = any::effective_type_url(cfg)?;
                let base = "type.googleapis.com/envoy.extensions.load_balancing_policies.";
                match url.strip_prefix(base) {
                    Some("round_robin.v3.RoundRobin") => return Ok(LbPolicy::RoundRobin),
                    Some("random.v3.Random") => return Ok(LbPolicy::Random),
                    Some("least_request.v3.LeastRequest") => {
                        let lr: LeastRequest = any::decode(cfg)?;
                        return Ok(LbPolicy::LeastRequest {
                            choice_count: lr.choice_count.map_or(2, |c| c.value.max(2)),
                        });
                    }
                    Some("cluster_provided.v3.ClusterProvided") => {
                        return Ok(LbPolicy::ClusterProvided);
                    }
                    _ => continue,
                }
            }
            Err(
                ConfigError::new("no supported policy in load_balancing_policy")
                    .at("load_balancing_policy"),
            )
        }
    }
}

fn least_request_choices(proto: &Cluster) -> u32 {
    match &proto.lb_config {
        Some(
            envoy_types::pb::envoy::config::cluster::v3::cluster::LbConfig::LeastRequestLbConfig(c),
        ) => c.choice_count.as_ref().map_or(2, |v| v.value.max(2)),
        _ => 2,
    }
}

fn thresholds(proto: &Cluster) -> Thresholds {
    let d = Thresholds::default();
    let Some(t) = proto
        .circuit_breakers
        .as_ref()
        .and_then(|cb| cb.thresholds.iter().find(|t| t.priority == 0))
    else {
        return d;
    };
    let v = |x: &Option<envoy_types::pb::google::protobuf::UInt32Value>, def| {
        x.as_ref().map_or(def, |v| u64::from(v.value))
    };
    Thresholds {
        max_connections: v(&t.max_connections, d.max_connections),
        max_pending_requests: v(&t.max_pending_requests, d.max_pending_requests),
        max_requests: v(&t.max_requests, d.max_requests),
        max_retries: v(&t.max_retries, d.max_retries),
    }
}

fn source_address(proto: &Cluster) -> Result<Option<IpAddr>, ConfigError> {
    let Some(sa) = proto
        .upstream_bind_config
        .as_ref()
        .and_then(|b| b.source_address.as_ref())
    else {
        return Ok(None);
    };
    sa.address.parse::<IpAddr>().map(Some).map_err(|_| {
        ConfigError::new(format!("{:?} is not an IP address", sa.address))
            .at("upstream_bind_config.source_address.address")
    })
}

fn keepalive(proto: &Cluster) -> Result<Option<Keepalive>, ConfigError> {
    let Some(ka) = proto
        .upstream_connection_options
        .as_ref()
        .and_then(|o| o.tcp_keepalive.as_ref())
    else {
        return Ok(None);
    };
    let secs = |v: &Option<envoy_types::pb::google::protobuf::UInt32Value>| {
        v.as_ref().map(|v| Duration::from_secs(u64::from(v.value)))
    };
    Ok(Some(Keepalive {
        probes: ka.keepalive_probes.as_ref().map(|v| v.value),
        time: secs(&ka.keepalive_time),
        interval: secs(&ka.keepalive_interval),
    }))
}

/// The HTTP protocol and request limit, from `typed_extension_protocol_options` (or the
/// deprecated `http2_protocol_options` and `max_requests_per_connection` fields, which Istio's
/// bootstrap still uses).
#[allow(deprecated)]
fn http_options(proto: &Cluster) -> Result<(UpstreamHttp, Option<u32>), ConfigError> {
    let mut http = if proto.http2_protocol_options.is_some() {
        UpstreamHttp::Http2
    } else {
        UpstreamHttp::Http1
    };
    let mut max_requests = proto.max_requests_per_connection.as_ref().map(|v| v.value);
    if let Some(opts) = proto
        .typed_extension_protocol_options
        .get(HTTP_PROTOCOL_OPTIONS)
    {
        let opts: HttpProtocolOptions = any::decode(opts).at(format!(
            "typed_extension_protocol_options[{HTTP_PROTOCOL_OPTIONS:?}]"
        ))?;
        http = match &opts.upstream_protocol_options {
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => match &e.protocol_config {
                Some(ProtocolConfig::Http2ProtocolOptions(_)) => UpstreamHttp::Http2,
                Some(ProtocolConfig::Http3ProtocolOptions(_)) => {
                    return Err(ConfigError::new("HTTP/3 upstreams are not supported")
                        .at("typed_extension_protocol_options"));
                }
                _ => UpstreamHttp::Http1,
            },
            Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(_)) => {
                UpstreamHttp::UseDownstream
            }
            Some(UpstreamProtocolOptions::AutoConfig(_)) => UpstreamHttp::UseDownstream,
            None => http,
        };
        if let Some(m) = opts
            .common_http_protocol_options
            .as_ref()
            .and_then(|c| c.max_requests_per_connection.as_ref())
        {
            max_requests = Some(m.value);
        }
    }
    Ok((http, max_requests.filter(|m| *m > 0)))
}

fn transport_socket(ts: &TransportSocket) -> Result<UpstreamTransport, ConfigError> {
    let Some(transport_socket::ConfigType::TypedConfig(cfg)) = &ts.config_type else {
        return match ts.name.as_str() {
            "" | "envoy.transport_sockets.raw_buffer" | "raw_buffer" => Ok(UpstreamTransport::Raw),
            name => Err(ConfigError::new(format!(
                "transport socket {name:?} has no typed_config"
            ))),
        };
    };
    let url = any::effective_type_url(cfg)?;
    match url.as_str() {
        "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer" => {
            Ok(UpstreamTransport::Raw)
        }
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext" => {
            let ctx: UpstreamTlsContext = any::decode(cfg)?;
            crate::tls::upstream::validate(&ctx).at("typed_config")?;
            Ok(UpstreamTransport::Tls(Arc::new(ctx)))
        }
        other => Err(extension::unsupported("transport socket", &ts.name, other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto_test_util::cluster_yaml;

    #[test]
    fn istio_outbound_eds_cluster() {
        let c = ClusterConfig::from_proto(&cluster_yaml(
            r#"
name: "outbound|9080|v1|productpage.default.svc.cluster.local"
type: EDS
eds_cluster_config: { eds_config: { ads: {} }, service_name: "outbound|9080|v1|productpage.default.svc.cluster.local" }
connect_timeout: 10s
lb_policy: LEAST_REQUEST
circuit_breakers: { thresholds: [{ max_connections: 4294967295, max_pending_requests: 4294967295, max_requests: 4294967295, max_retries: 4294967295 }] }
transport_socket_matches:
- name: tlsMode-istio
  match: { tlsMode: istio }
  transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
      sni: outbound_.9080_.v1_.productpage.default.svc.cluster.local
- name: tlsMode-disabled
  match: {}
  transport_socket:
    name: envoy.transport_sockets.raw_buffer
    typed_config: { "@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer }
"#,
        ))
        .unwrap();
        assert_eq!(
            c.eds_service_name(),
            Some("outbound|9080|v1|productpage.default.svc.cluster.local")
        );
        assert_eq!(c.lb_policy, LbPolicy::LeastRequest { choice_count: 2 });
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.thresholds.max_connections, 4294967295);
        assert_eq!(c.transport_socket_matches.len(), 2);
        assert!(matches!(
            c.transport_socket_matches[0].transport,
            UpstreamTransport::Tls(_)
        ));
        assert_eq!(
            c.transport_socket_matches[1].transport,
            UpstreamTransport::Raw
        );
    }

    #[test]
    fn passthrough_and_inbound_clusters() {
        let c = ClusterConfig::from_proto(&cluster_yaml(
            "name: InboundPassthroughCluster\ntype: ORIGINAL_DST\nlb_policy: CLUSTER_PROVIDED\n\
             connect_timeout: 10s\nupstream_bind_config: { source_address: { address: 127.0.0.6, port_value: 0 } }\n",
        ))
        .unwrap();
        assert_eq!(
            c.discovery,
            Discovery::OriginalDst {
                port_override: None
            }
        );
        assert_eq!(c.source_address, Some("127.0.0.6".parse().unwrap()));
    }

    #[test]
    fn invalid_clusters_name_the_problem() {
        let err = |yaml: &str| {
            ClusterConfig::from_proto(&cluster_yaml(yaml))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("name: p\ntype: ORIGINAL_DST\nlb_policy: ROUND_ROBIN\n"),
            "cluster \"p\" lb_policy: ROUND_ROBIN is not valid for an ORIGINAL_DST cluster; only CLUSTER_PROVIDED is"
        );
        assert!(err("name: e\ntype: EDS\n").contains("eds_cluster_config"));
        assert!(
            err("name: r\nlb_policy: RING_HASH\n")
                .contains("RING_HASH load balancing is not supported")
        );
        assert!(
            err("name: t\nconnect_timeout: 0s\n")
                .contains("connect_timeout: must be greater than 0")
        );
        assert!(err(
            "name: f\nfilters: [{ name: envoy.filters.network.lua, typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC } }]\n"
        )
        .contains("is not supported; refusing"));
        assert!(err(
            "name: s\nload_assignment: { cluster_name: s, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: backend, port_value: 80 } } } }] }] }\n"
        )
        .contains("is not an IP address"));
    }

    #[test]
    fn http2_upstream_from_protocol_options() {
        let c = ClusterConfig::from_proto(&cluster_yaml(
            r#"
name: xds-grpc
type: STATIC
load_assignment: { cluster_name: xds-grpc, endpoints: [{ lb_endpoints: [{ endpoint: { address: { pipe: { path: ./etc/istio/proxy/XDS } } } }] }] }
typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    explicit_http_config: { http2_protocol_options: {} }
"#,
        ))
        .unwrap();
        assert_eq!(c.http, UpstreamHttp::Http2);
        let Discovery::Static(eps) = &c.discovery else {
            panic!()
        };
        assert_eq!(
            eps[0].address,
            HostAddress::Pipe("./etc/istio/proxy/XDS".into())
        );
    }
}
