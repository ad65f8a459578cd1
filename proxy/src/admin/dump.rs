//! `/config_dump`: Envoy's `admin.v3.ConfigDump` in proto3 JSON, with the same top-level
//! shape (bootstrap, clusters, endpoints with `?include_eds`, listeners, scoped routes and
//! routes once an HTTP connection manager exists) so that
//! `istioctl proxy-config` can read it. `?mask=a,b` keeps only those fields of each config.

use std::time::{SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::admin::v3::{
    BootstrapConfigDump, ClustersConfigDump, ConfigDump, EndpointsConfigDump, ListenersConfigDump,
    RoutesConfigDump, ScopedRoutesConfigDump, SecretsConfigDump, clusters_config_dump,
    endpoints_config_dump, listeners_config_dump, routes_config_dump, secrets_config_dump,
};
use envoy_types::pb::envoy::config::core::v3::data_source;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use envoy_types::pb::google::protobuf::{Any, Timestamp, UInt32Value};
use prost::{Message, Name};
use serde_json::Value;

use crate::config::listener::NetworkFilterConfig;
use crate::server::Shared;
use crate::upstream::host::HostAddr;

fn timestamp(t: SystemTime) -> Option<Timestamp> {
    let d = t.duration_since(UNIX_EPOCH).ok()?;
    Some(Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    })
}

fn pack<T: Message + Name>(m: &T) -> Any {
    Any {
        type_url: T::type_url(),
        value: m.encode_to_vec(),
    }
}

/// Builds the dump for a raw query string.
pub fn config_dump(shared: &Shared, query: &str) -> Result<Value, String> {
    let include_eds = query
        .split('&')
        .any(|p| p == "include_eds" || p.starts_with("include_eds="));
    let mask: Option<Vec<String>> = super::query_value(query, "mask").map(|m| {
        m.split(',')
            .map(|f| f.split('.').next().unwrap_or_default().to_string())
            .collect()
    });
    let mut configs = vec![
        pack(&BootstrapConfigDump {
            bootstrap: Some((*shared.bootstrap).clone()),
            last_updated: timestamp(shared.bootstrap_loaded),
        }),
        pack(&clusters(shared)),
    ];
    if include_eds {
        configs.push(pack(&endpoints(shared)));
    }
    configs.push(pack(&listeners(shared)));
    if shared.listeners.http().rds.is_used() {
        configs.push(pack(&ScopedRoutesConfigDump::default()));
        configs.push(pack(&routes(shared)));
    }
    configs.push(pack(&secrets(shared)));
    let dump = crate::proto::encode(&ConfigDump { configs }).map_err(|e| e.to_string())?;
    let dump = match super::query_value(query, "resource") {
        None => dump,
        Some(resource) => only_resource(dump, &resource)?,
    };
    Ok(match mask {
        None => dump,
        Some(fields) => apply_mask(dump, &fields),
    })
}

/// The element message of each repeated resource field of the dumps (`?resource=`).
const RESOURCE_TYPES: &[(&str, &str)] = &[
    ("static_clusters", "ClustersConfigDump.StaticCluster"),
    (
        "dynamic_active_clusters",
        "ClustersConfigDump.DynamicCluster",
    ),
    (
        "dynamic_warming_clusters",
        "ClustersConfigDump.DynamicCluster",
    ),
    (
        "static_endpoint_configs",
        "EndpointsConfigDump.StaticEndpointConfig",
    ),
    (
        "dynamic_endpoint_configs",
        "EndpointsConfigDump.DynamicEndpointConfig",
    ),
    ("static_listeners", "ListenersConfigDump.StaticListener"),
    ("dynamic_listeners", "ListenersConfigDump.DynamicListener"),
    ("static_route_configs", "RoutesConfigDump.StaticRouteConfig"),
    (
        "dynamic_route_configs",
        "RoutesConfigDump.DynamicRouteConfig",
    ),
    ("static_secrets", "SecretsConfigDump.StaticSecret"),
    ("dynamic_active_secrets", "SecretsConfigDump.DynamicSecret"),
    ("dynamic_warming_secrets", "SecretsConfigDump.DynamicSecret"),
];

/// Envoy's `?resource=<field>`: the elements of that repeated field, from whichever dump has
/// it, each as an Any of its own message type.
fn only_resource(dump: Value, resource: &str) -> Result<Value, String> {
    let Some((_, element)) = RESOURCE_TYPES.iter().find(|(f, _)| *f == resource) else {
        return Err(format!("{resource} not found in config dump"));
    };
    let type_url = format!("type.googleapis.com/envoy.admin.v3.{element}");
    let mut out = Vec::new();
    for config in dump["configs"].as_array().into_iter().flatten() {
        for item in config[resource].as_array().into_iter().flatten() {
            let mut obj = serde_json::Map::new();
            obj.insert("@type".into(), Value::String(type_url.clone()));
            if let Some(fields) = item.as_object() {
                obj.extend(fields.clone());
            }
            out.push(Value::Object(obj));
        }
    }
    Ok(serde_json::json!({ "configs": out }))
}

/// Keeps `@type` and the masked fields of each config.
fn apply_mask(mut dump: Value, fields: &[String]) -> Value {
    if let Some(configs) = dump.get_mut("configs").and_then(Value::as_array_mut) {
        configs.retain_mut(|c| {
            let Some(obj) = c.as_object_mut() else {
                return false;
            };
            obj.retain(|k, _| k == "@type" || fields.iter().any(|f| f == k));
            obj.len() > 1
        });
    }
    dump
}

fn clusters(shared: &Shared) -> ClustersConfigDump {
    let version = shared.clusters.version_info();
    let mut dump = ClustersConfigDump {
        version_info: version.clone(),
        ..Default::default()
    };
    for c in shared.clusters.all() {
        let cluster = Some(pack(&*c.config.proto));
        let last_updated = timestamp(c.last_updated);
        if shared.clusters.is_static(c.name()) {
            dump.static_clusters
                .push(clusters_config_dump::StaticCluster {
                    cluster,
                    last_updated,
                });
        } else if c.is_warm() {
            dump.dynamic_active_clusters
                .push(clusters_config_dump::DynamicCluster {
                    version_info: version.clone(),
                    cluster,
                    last_updated,
                    ..Default::default()
                });
        } else {
            dump.dynamic_warming_clusters
                .push(clusters_config_dump::DynamicCluster {
                    version_info: version.clone(),
                    cluster,
                    last_updated,
                    ..Default::default()
                });
        }
    }
    dump
}

fn endpoints(shared: &Shared) -> EndpointsConfigDump {
    let mut dump = EndpointsConfigDump::default();
    for c in shared.clusters.all() {
        let lb_endpoints = c
            .hosts()
            .all
            .iter()
            .map(|h| LbEndpoint {
                health_status: match h.health {
                    crate::config::endpoint::Health::Healthy => 1,
                    crate::config::endpoint::Health::Degraded => 5,
                    crate::config::endpoint::Health::Unhealthy => 2,
                },
                metadata: h.metadata.as_deref().cloned(),
                load_balancing_weight: Some(UInt32Value { value: h.weight }),
                host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                    address: Some(host_address(&h.addr)),
                    hostname: h.hostname.clone(),
                    ..Default::default()
                })),
            })
            .collect();
        let cla = ClusterLoadAssignment {
            cluster_name: c.config.eds_service_name().unwrap_or(c.name()).to_string(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints,
                ..Default::default()
            }],
            ..Default::default()
        };
        let config = Some(pack(&cla));
        if shared.clusters.is_static(c.name()) {
            dump.static_endpoint_configs
                .push(endpoints_config_dump::StaticEndpointConfig {
                    endpoint_config: config,
                    last_updated: timestamp(c.last_updated),
                });
        } else {
            dump.dynamic_endpoint_configs
                .push(endpoints_config_dump::DynamicEndpointConfig {
                    endpoint_config: config,
                    last_updated: timestamp(c.last_updated),
                    ..Default::default()
                });
        }
    }
    dump
}

fn host_address(addr: &HostAddr) -> Address {
    Address {
        address: Some(match addr {
            HostAddr::Ip(a) => address::Address::SocketAddress(SocketAddress {
                address: a.ip().to_string(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                    a.port(),
                ))),
                ..Default::default()
            }),
            HostAddr::Pipe(p) => {
                address::Address::Pipe(envoy_types::pb::envoy::config::core::v3::Pipe {
                    path: p.display().to_string(),
                    mode: 0,
                })
            }
        }),
    }
}

fn listeners(shared: &Shared) -> ListenersConfigDump {
    let mut dump = ListenersConfigDump {
        version_info: shared.listeners.version_info(),
        ..Default::default()
    };
    for l in shared.listeners.all() {
        let listener = Some(pack(&*l.config.proto));
        let last_updated = timestamp(l.last_updated);
        if shared.listeners.is_static(l.name()) {
            dump.static_listeners
                .push(listeners_config_dump::StaticListener {
                    listener,
                    last_updated,
                });
        } else {
            let state = Some(listeners_config_dump::DynamicListenerState {
                version_info: l.version_info.clone(),
                listener,
                last_updated,
            });
            // Like Envoy, a listener whose TLS secrets have not arrived is warming.
            let (active_state, warming_state) = match l.tls_readiness() {
                Ok(()) => (state, None),
                Err(_) => (None, state),
            };
            dump.dynamic_listeners
                .push(listeners_config_dump::DynamicListener {
                    name: l.name().to_string(),
                    active_state,
                    warming_state,
                    ..Default::default()
                });
        }
    }
    // A warming listener shares the entry of the version it replaces, as in Envoy.
    for l in shared.listeners.warming() {
        let state = listeners_config_dump::DynamicListenerState {
            version_info: l.version_info.clone(),
            listener: Some(pack(&*l.config.proto)),
            last_updated: timestamp(l.last_updated),
        };
        match dump
            .dynamic_listeners
            .iter_mut()
            .find(|d| d.name == l.name())
        {
            Some(d) => d.warming_state = Some(state),
            None => dump
                .dynamic_listeners
                .push(listeners_config_dump::DynamicListener {
                    name: l.name().to_string(),
                    warming_state: Some(state),
                    ..Default::default()
                }),
        }
    }
    dump
}

/// Inline route configurations of HTTP connection managers are static (as Envoy lists
/// them); what RDS delivered is dynamic, with its version.
fn routes(shared: &Shared) -> RoutesConfigDump {
    let mut dump = RoutesConfigDump::default();
    for l in shared.listeners.all() {
        for chain in l.all_chains() {
            for f in &chain.config.filters {
                let NetworkFilterConfig::HttpConnectionManager(hcm) = f else {
                    continue;
                };
                if let Some(RouteSpecifier::RouteConfig(rc)) = &hcm.route_specifier {
                    dump.static_route_configs
                        .push(routes_config_dump::StaticRouteConfig {
                            route_config: Some(pack(rc)),
                            last_updated: timestamp(l.last_updated),
                        });
                }
            }
        }
    }
    for applied in shared.listeners.http().rds.applied() {
        dump.dynamic_route_configs
            .push(routes_config_dump::DynamicRouteConfig {
                version_info: applied.version_info.clone(),
                route_config: Some(pack(&*applied.proto)),
                last_updated: timestamp(applied.last_updated),
                ..Default::default()
            });
    }
    dump
}

/// Bootstrap and SDS secrets; SDS names a context waits for are warming. Private keys are
/// redacted as Envoy redacts them.
fn secrets(shared: &Shared) -> SecretsConfigDump {
    let mut dump = SecretsConfigDump::default();
    for entry in shared.tls.secrets.entries_snapshot() {
        let Some(published) = entry.published else {
            dump.dynamic_warming_secrets
                .push(secrets_config_dump::DynamicSecret {
                    name: entry.name,
                    ..Default::default()
                });
            continue;
        };
        let secret = Some(pack(&redact(published.proto)));
        if !entry.dynamic {
            dump.static_secrets.push(secrets_config_dump::StaticSecret {
                name: entry.name,
                last_updated: None,
                secret,
            });
        } else if entry.value.is_some() {
            dump.dynamic_active_secrets
                .push(secrets_config_dump::DynamicSecret {
                    name: entry.name,
                    version_info: published.version_info,
                    last_updated: timestamp(published.last_updated),
                    secret,
                    ..Default::default()
                });
        } else {
            // Removed by the server after it had arrived: waiting for it again.
            dump.dynamic_warming_secrets
                .push(secrets_config_dump::DynamicSecret {
                    name: entry.name,
                    ..Default::default()
                });
        }
    }
    dump
}

/// Envoy's redaction of sensitive fields: every specifier of the private key (inline bytes,
/// inline string, file name, environment variable) and the password become `[redacted]`.
fn redact(mut secret: Secret) -> Secret {
    if let Some(secret::Type::TlsCertificate(c)) = &mut secret.r#type {
        for ds in [&mut c.private_key, &mut c.password].into_iter().flatten() {
            ds.specifier = ds.specifier.take().map(|s| match s {
                data_source::Specifier::InlineBytes(_) => {
                    data_source::Specifier::InlineBytes(REDACTED.as_bytes().to_vec())
                }
                data_source::Specifier::InlineString(_) => {
                    data_source::Specifier::InlineString(REDACTED.into())
                }
                data_source::Specifier::Filename(_) => {
                    data_source::Specifier::Filename(REDACTED.into())
                }
                data_source::Specifier::EnvironmentVariable(_) => {
                    data_source::Specifier::EnvironmentVariable(REDACTED.into())
                }
            });
        }
    }
    secret
}

const REDACTED: &str = "[redacted]";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_keeps_type_and_listed_fields() {
        let dump = serde_json::json!({ "configs": [
            { "@type": "a", "static_clusters": [1], "dynamic_active_clusters": [2] },
            { "@type": "b", "static_listeners": [3] },
        ]});
        let masked = apply_mask(dump, &["static_clusters".to_string()]);
        assert_eq!(
            masked,
            serde_json::json!({ "configs": [ { "@type": "a", "static_clusters": [1] } ] })
        );
    }
}
