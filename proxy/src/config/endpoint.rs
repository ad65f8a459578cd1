//! Endpoints: `ClusterLoadAssignment` (from a cluster's `load_assignment` or from EDS) as a
//! flat list of typed endpoints.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{
    Address, HealthStatus, Locality, Metadata, address, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::google::protobuf::{Struct, Value};

use super::{ConfigError, Context};

/// The metadata namespace a cluster's `transport_socket_matches` look at.
pub const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";

/// Where an endpoint (or a listener) is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostAddress {
    /// An IP address and port.
    Ip(SocketAddr),
    /// A name resolved by DNS (STRICT_DNS and LOGICAL_DNS clusters).
    Dns { host: String, port: u16 },
    /// A Unix domain socket (`pipe`), e.g. Istio's `./etc/istio/proxy/XDS`.
    Pipe(PathBuf),
}

// === impl HostAddress ===

impl HostAddress {
    /// Converts a core `Address`. Names are only allowed where `allow_dns` says so.
    pub fn from_proto(addr: &Address, allow_dns: bool) -> Result<Self, ConfigError> {
        match addr.address.as_ref() {
            Some(address::Address::SocketAddress(sa)) => {
                if sa.protocol != 0 {
                    return Err(ConfigError::new("only TCP socket addresses are supported")
                        .at("socket_address.protocol"));
                }
                if !sa.resolver_name.is_empty() {
                    return Err(ConfigError::new("custom resolvers are not supported")
                        .at("socket_address.resolver_name"));
                }
                let port = match sa.port_specifier {
                    Some(socket_address::PortSpecifier::PortValue(p)) => {
                        u16::try_from(p).map_err(|_| {
                            ConfigError::new(format!("port {p} is out of range"))
                                .at("socket_address.port_value")
                        })?
                    }
                    Some(socket_address::PortSpecifier::NamedPort(ref name)) => {
                        return Err(ConfigError::new(format!(
                            "named port {name:?} is not supported"
                        ))
                        .at("socket_address.named_port"));
                    }
                    None => 0,
                };
                match sa.address.parse::<IpAddr>() {
                    Ok(ip) => Ok(Self::Ip(SocketAddr::new(ip, port))),
                    Err(_) if allow_dns && !sa.address.is_empty() => Ok(Self::Dns {
                        host: sa.address.clone(),
                        port,
                    }),
                    Err(_) => Err(ConfigError::new(format!(
                        "{:?} is not an IP address",
                        sa.address
                    ))
                    .at("socket_address.address")),
                }
            }
            Some(address::Address::Pipe(pipe)) => {
                if pipe.path.is_empty() {
                    return Err(ConfigError::new("pipe path is empty").at("pipe.path"));
                }
                Ok(Self::Pipe(PathBuf::from(&pipe.path)))
            }
            Some(address::Address::EnvoyInternalAddress(_)) => Err(ConfigError::new(
                "internal addresses (envoy_internal_address) are not supported",
            )),
            None => Err(ConfigError::new("address is empty")),
        }
    }
}

impl std::fmt::Display for HostAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ip(addr) => write!(f, "{addr}"),
            Self::Dns { host, port } => write!(f, "{host}:{port}"),
            Self::Pipe(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

/// An endpoint's health as the control plane reports it (`core.v3.HealthStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Degraded,
    Unhealthy,
}

/// One endpoint of a cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    pub address: HostAddress,
    /// `load_balancing_weight`, 1 if unset.
    pub weight: u32,
    pub health: Health,
    pub priority: u32,
    pub hostname: String,
    /// The whole metadata, for transport socket matching, telemetry and config dumps.
    /// Endpoints with equal metadata (replicas of a workload) share one.
    pub metadata: Option<Arc<Metadata>>,
    /// The locality of its `LocalityLbEndpoints` (region, zone, sub-zone).
    pub locality: Option<Arc<Locality>>,
}

// === impl EndpointConfig ===

impl EndpointConfig {
    /// `filter_metadata["envoy.transport_socket_match"]`, which picks the cluster's
    /// transport socket for this endpoint (Istio: `{tlsMode: istio}` means mTLS).
    pub fn socket_match(&self) -> Option<&Struct> {
        self.metadata
            .as_deref()?
            .filter_metadata
            .get(TRANSPORT_SOCKET_MATCH)
    }
}

/// Converts a `ClusterLoadAssignment` into endpoints. `allow_dns` permits host names
/// (STRICT_DNS / LOGICAL_DNS clusters); EDS and STATIC clusters need IPs or pipes.
pub fn endpoints_from_assignment(
    cla: &ClusterLoadAssignment,
    allow_dns: bool,
) -> Result<Vec<EndpointConfig>, ConfigError> {
    let mut out = Vec::with_capacity(cla.endpoints.iter().map(|l| l.lb_endpoints.len()).sum());
    // Replicas of a workload carry the same metadata: keep one copy of each.
    let mut metadata: HashMap<Vec<u8>, Arc<Metadata>> = HashMap::new();
    for (i, locality) in cla.endpoints.iter().enumerate() {
        let shared_locality = locality.locality.clone().map(Arc::new);
        for (j, lb) in locality.lb_endpoints.iter().enumerate() {
            let md = lb.metadata.as_ref().map(|m| {
                metadata
                    .entry(metadata_key(m))
                    .or_insert_with(|| Arc::new(m.clone()))
                    .clone()
            });
            let endpoint = endpoint(lb, locality, allow_dns, md, shared_locality.clone())
                .at(format!("[{j}]"))
                .at("lb_endpoints")
                .at(format!("[{i}]"))
                .at("endpoints")?;
            out.push(endpoint);
        }
    }
    Ok(out)
}

/// Equal metadata gives an equal key, and different metadata different keys: every entry
/// length-prefixed, in key order (protobuf map encoding follows the map's iteration order,
/// which differs between equal maps). Nested maps of several fields may still come out in
/// different orders: that only costs sharing.
fn metadata_key(m: &Metadata) -> Vec<u8> {
    use prost::Message;
    fn section<V: Message>(out: &mut Vec<u8>, map: &HashMap<String, V>) {
        let mut entries: Vec<_> = map.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        for (k, v) in entries {
            out.extend_from_slice(&(k.len() as u64).to_le_bytes());
            out.extend_from_slice(k.as_bytes());
            let value = v.encode_to_vec();
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
            out.extend_from_slice(&value);
        }
    }
    let mut out = Vec::new();
    section(&mut out, &m.filter_metadata);
    section(&mut out, &m.typed_filter_metadata);
    out
}

fn endpoint(
    lb: &LbEndpoint,
    group: &LocalityLbEndpoints,
    allow_dns: bool,
    metadata: Option<Arc<Metadata>>,
    locality: Option<Arc<Locality>>,
) -> Result<EndpointConfig, ConfigError> {
    let ep = match &lb.host_identifier {
        Some(lb_endpoint::HostIdentifier::Endpoint(ep)) => ep,
        Some(lb_endpoint::HostIdentifier::EndpointName(name)) => {
            return Err(ConfigError::new(format!(
                "named endpoints ({name:?}) are not supported"
            )));
        }
        None => return Err(ConfigError::new("endpoint is empty")),
    };
    let address = ep
        .address
        .as_ref()
        .ok_or_else(|| ConfigError::new("address is required").at("endpoint"))?;
    let address = HostAddress::from_proto(address, allow_dns)
        .at("address")
        .at("endpoint")?;
    let weight = match lb.load_balancing_weight.as_ref().map(|w| w.value) {
        None => 1,
        Some(0) => {
            return Err(ConfigError::new("must be at least 1").at("load_balancing_weight"));
        }
        Some(w) => w,
    };
    let health = match HealthStatus::try_from(lb.health_status) {
        Ok(HealthStatus::Unknown | HealthStatus::Healthy) => Health::Healthy,
        Ok(HealthStatus::Degraded) => Health::Degraded,
        Ok(HealthStatus::Unhealthy | HealthStatus::Draining | HealthStatus::Timeout) => {
            Health::Unhealthy
        }
        Err(_) => {
            return Err(
                ConfigError::new(format!("unknown value {}", lb.health_status)).at("health_status"),
            );
        }
    };
    Ok(EndpointConfig {
        address,
        weight,
        health,
        priority: group.priority,
        hostname: ep.hostname.clone(),
        metadata,
        locality,
    })
}

/// Whether an endpoint's `envoy.transport_socket_match` metadata satisfies a match criterion:
/// every field of `criterion` must be present with an equal value. An empty criterion
/// matches every endpoint.
pub fn socket_match_applies(criterion: &Struct, endpoint: Option<&Struct>) -> bool {
    criterion.fields.iter().all(|(key, want)| {
        endpoint
            .and_then(|e| e.fields.get(key))
            .is_some_and(|have: &Value| have == want)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{Pipe, SocketAddress};
    use envoy_types::pb::envoy::config::endpoint::v3::{Endpoint, LocalityLbEndpoints};
    use envoy_types::pb::google::protobuf::{UInt32Value, value::Kind};

    fn socket(addr: &str, port: u32) -> Address {
        Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: addr.into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..SocketAddress::default()
            })),
        }
    }

    fn lb(addr: Address) -> LbEndpoint {
        LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(addr),
                ..Endpoint::default()
            })),
            ..LbEndpoint::default()
        }
    }

    fn tls_mode(v: &str) -> Struct {
        Struct {
            fields: [(
                "tlsMode".to_string(),
                Value {
                    kind: Some(Kind::StringValue(v.into())),
                },
            )]
            .into(),
        }
    }

    #[test]
    fn assignment_with_weights_health_and_tls_mode() {
        let mut istio = lb(socket("10.0.0.1", 8080));
        istio.load_balancing_weight = Some(UInt32Value { value: 3 });
        istio.health_status = HealthStatus::Draining as i32;
        istio.metadata = Some(Metadata {
            filter_metadata: [(TRANSPORT_SOCKET_MATCH.to_string(), tls_mode("istio"))].into(),
            ..Metadata::default()
        });
        let cla = ClusterLoadAssignment {
            cluster_name: "c".into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![istio, lb(socket("10.0.0.2", 8080))],
                priority: 1,
                ..LocalityLbEndpoints::default()
            }],
            ..ClusterLoadAssignment::default()
        };
        let eps = endpoints_from_assignment(&cla, false).unwrap();
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0].weight, 3);
        assert_eq!(eps[0].health, Health::Unhealthy);
        assert_eq!(eps[0].priority, 1);
        assert!(socket_match_applies(
            &tls_mode("istio"),
            eps[0].socket_match()
        ));
        assert!(!socket_match_applies(
            &tls_mode("istio"),
            eps[1].socket_match()
        ));
        assert!(socket_match_applies(
            &Struct::default(),
            eps[1].socket_match()
        ));
    }

    #[test]
    fn bad_endpoints_are_named() {
        let cla = ClusterLoadAssignment {
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![lb(socket("10.0.0.1", 1)), lb(socket("backend.svc", 80))],
                ..LocalityLbEndpoints::default()
            }],
            ..ClusterLoadAssignment::default()
        };
        let err = endpoints_from_assignment(&cla, false)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "endpoints[0].lb_endpoints[1].endpoint.address.socket_address.address: \
             \"backend.svc\" is not an IP address"
        );
        let eps = endpoints_from_assignment(&cla, true).unwrap();
        assert_eq!(
            eps[1].address,
            HostAddress::Dns {
                host: "backend.svc".into(),
                port: 80
            }
        );
        let pipe = Address {
            address: Some(address::Address::Pipe(Pipe {
                path: "./etc/istio/proxy/XDS".into(),
                mode: 0,
            })),
        };
        assert_eq!(
            HostAddress::from_proto(&pipe, false).unwrap(),
            HostAddress::Pipe("./etc/istio/proxy/XDS".into())
        );
        assert!(HostAddress::from_proto(&socket("10.0.0.1", 70000), false).is_err());
    }

    #[test]
    fn replicas_share_metadata_and_different_metadata_stays_apart() {
        let with = |tls: &str, workload: &str| {
            let mut lb = lb(socket("10.0.0.1", 80));
            lb.metadata = Some(crate::proto_test_util::from_yaml(&format!(
                "filter_metadata: {{envoy.transport_socket_match: {{tlsMode: {tls}}}, istio: {{workload: '{workload}'}}}}"
            )));
            lb
        };
        let cla = ClusterLoadAssignment {
            cluster_name: "c".into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![
                    with("istio", "a;ns"),
                    with("istio", "a;ns"),
                    with("disabled", "a;ns"),
                    with("istio", "b;ns"),
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let eps = endpoints_from_assignment(&cla, false).unwrap();
        let md = |i: usize| eps[i].metadata.clone().unwrap();
        assert!(Arc::ptr_eq(&md(0), &md(1)), "replicas share one copy");
        assert!(!Arc::ptr_eq(&md(0), &md(2)) && !Arc::ptr_eq(&md(0), &md(3)));
        let tls = |i: usize| eps[i].socket_match().unwrap().fields["tlsMode"].clone();
        assert_ne!(tls(0), tls(2));
        assert_eq!(
            md(3).filter_metadata["istio"],
            cla.endpoints[0].lb_endpoints[3]
                .metadata
                .as_ref()
                .unwrap()
                .filter_metadata["istio"]
        );
    }
}
