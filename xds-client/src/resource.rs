//! The five Envoy resource types this client speaks, and how they are decoded from the wire.
//!
//! Decoding follows Envoy: every `Any` must carry the response's own type URL, names must be
//! unique within a response, and any failure rejects the whole response (nothing from it
//! reaches the consumer), because for LDS/CDS a partial state of the world would read as
//! removals.

use std::collections::BTreeSet;
use std::fmt;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::envoy::service::discovery::v3::Resource as WireResource;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

/// Type URL of [`Cluster`] (CDS).
pub const CLUSTER_TYPE_URL: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// Type URL of [`ClusterLoadAssignment`] (EDS).
pub const CLUSTER_LOAD_ASSIGNMENT_TYPE_URL: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// Type URL of [`Listener`] (LDS).
pub const LISTENER_TYPE_URL: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// Type URL of [`RouteConfiguration`] (RDS).
pub const ROUTE_CONFIGURATION_TYPE_URL: &str =
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// Type URL of [`Secret`] (SDS).
pub const SECRET_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// Type URL of the `Resource` wrapper some servers use inside SotW responses (TTL support).
const WIRE_RESOURCE_TYPE_URL: &str = "type.googleapis.com/envoy.service.discovery.v3.Resource";

/// One of the xDS resource types the client subscribes to.
///
/// The declaration order is Istio's push order (CDS, EDS, LDS, RDS, SDS); the client sends its
/// initial requests in this order, as Envoy does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    /// `envoy.config.cluster.v3.Cluster` (CDS).
    Cluster,
    /// `envoy.config.endpoint.v3.ClusterLoadAssignment` (EDS).
    ClusterLoadAssignment,
    /// `envoy.config.listener.v3.Listener` (LDS).
    Listener,
    /// `envoy.config.route.v3.RouteConfiguration` (RDS).
    RouteConfiguration,
    /// `envoy.extensions.transport_sockets.tls.v3.Secret` (SDS).
    Secret,
}

/// A decoded resource of one of the five types.
#[derive(Clone, Debug, PartialEq)]
pub enum Resource {
    /// A CDS resource.
    Cluster(Box<Cluster>),
    /// An EDS resource.
    ClusterLoadAssignment(Box<ClusterLoadAssignment>),
    /// An LDS resource.
    Listener(Box<Listener>),
    /// An RDS resource.
    RouteConfiguration(Box<RouteConfiguration>),
    /// An SDS resource.
    Secret(Box<Secret>),
}

/// A resource as delivered to the consumer: its name, its version and the decoded message.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedResource {
    /// The resource name (for EDS, the cluster name).
    pub name: String,
    /// Per-resource version (delta) or the response's `version_info` (state of the world).
    pub version: String,
    /// The decoded message.
    pub resource: Resource,
}

/// Why a response could not be decoded. Each message names the resource and the problem, and
/// becomes the NACK's `error_detail.message`.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum DecodeError {
    /// The response's own `type_url` is not one this client knows.
    #[error(
        "unsupported resource type {type_url}: this client only handles Cluster, \
         ClusterLoadAssignment, Listener, RouteConfiguration and Secret"
    )]
    UnknownType {
        /// The response's type URL.
        type_url: String,
    },
    /// An `Any` inside the response carries another type than the response says.
    #[error(
        "resource #{index} has type URL {found}, which does not match the response's type URL \
         {expected}"
    )]
    TypeMismatch {
        /// Position of the resource in the response.
        index: usize,
        /// Type URL found in the `Any`.
        found: String,
        /// The response's type URL.
        expected: &'static str,
    },
    /// The bytes of a resource are not a valid message of its type.
    #[error("resource #{index} is not a valid {type_url}: {reason}")]
    Malformed {
        /// Position of the resource in the response.
        index: usize,
        /// The type it was decoded as.
        type_url: &'static str,
        /// What protobuf decoding reported.
        reason: String,
    },
    /// A resource has no name.
    #[error("resource #{index} ({type_url}) has an empty name")]
    EmptyName {
        /// Position of the resource in the response.
        index: usize,
        /// The resource's type.
        type_url: &'static str,
    },
    /// A name appears twice in one response (the xDS spec requires a NACK).
    #[error("duplicate resource name {name} in one response")]
    Duplicate {
        /// The repeated name.
        name: String,
    },
}

// === impl ResourceType ===

impl ResourceType {
    /// All types, in Istio's push order.
    pub const ALL: [ResourceType; 5] = [
        ResourceType::Cluster,
        ResourceType::ClusterLoadAssignment,
        ResourceType::Listener,
        ResourceType::RouteConfiguration,
        ResourceType::Secret,
    ];

    /// The `type.googleapis.com/...` URL used on the wire.
    pub fn type_url(self) -> &'static str {
        match self {
            ResourceType::Cluster => CLUSTER_TYPE_URL,
            ResourceType::ClusterLoadAssignment => CLUSTER_LOAD_ASSIGNMENT_TYPE_URL,
            ResourceType::Listener => LISTENER_TYPE_URL,
            ResourceType::RouteConfiguration => ROUTE_CONFIGURATION_TYPE_URL,
            ResourceType::Secret => SECRET_TYPE_URL,
        }
    }

    /// The type for a wire type URL, if it is one of the five.
    pub fn from_type_url(type_url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.type_url() == type_url)
    }

    /// Envoy's short API name: `cds`, `eds`, `lds`, `rds` or `sds`.
    pub fn api_name(self) -> &'static str {
        match self {
            ResourceType::Cluster => "cds",
            ResourceType::ClusterLoadAssignment => "eds",
            ResourceType::Listener => "lds",
            ResourceType::RouteConfiguration => "rds",
            ResourceType::Secret => "sds",
        }
    }

    /// The noun Envoy uses in rejection messages ("Error adding/updating cluster(s) ...").
    pub(crate) fn noun(self) -> &'static str {
        match self {
            ResourceType::Cluster => "cluster",
            ResourceType::ClusterLoadAssignment => "cluster load assignment",
            ResourceType::Listener => "listener",
            ResourceType::RouteConfiguration => "route configuration",
            ResourceType::Secret => "secret",
        }
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.type_url())
    }
}

// === impl Resource ===

impl Resource {
    /// Decodes one `Any`, which must carry `resource_type`'s type URL.
    pub fn decode(resource_type: ResourceType, any: &Any) -> Result<Self, DecodeError> {
        decode_any(0, resource_type, any)
    }

    /// The type of this resource.
    pub fn resource_type(&self) -> ResourceType {
        match self {
            Resource::Cluster(_) => ResourceType::Cluster,
            Resource::ClusterLoadAssignment(_) => ResourceType::ClusterLoadAssignment,
            Resource::Listener(_) => ResourceType::Listener,
            Resource::RouteConfiguration(_) => ResourceType::RouteConfiguration,
            Resource::Secret(_) => ResourceType::Secret,
        }
    }

    /// The name the resource gives itself (`cluster_name` for a `ClusterLoadAssignment`).
    pub fn name(&self) -> &str {
        match self {
            Resource::Cluster(c) => &c.name,
            Resource::ClusterLoadAssignment(c) => &c.cluster_name,
            Resource::Listener(l) => &l.name,
            Resource::RouteConfiguration(r) => &r.name,
            Resource::Secret(s) => &s.name,
        }
    }

    /// Packs the resource into an `Any` (for `/config_dump`, tests and fake servers).
    pub fn to_any(&self) -> Any {
        let value = match self {
            Resource::Cluster(m) => m.encode_to_vec(),
            Resource::ClusterLoadAssignment(m) => m.encode_to_vec(),
            Resource::Listener(m) => m.encode_to_vec(),
            Resource::RouteConfiguration(m) => m.encode_to_vec(),
            Resource::Secret(m) => m.encode_to_vec(),
        };
        Any {
            type_url: self.resource_type().type_url().to_string(),
            value,
        }
    }
}

impl From<Cluster> for Resource {
    fn from(m: Cluster) -> Self {
        Resource::Cluster(Box::new(m))
    }
}

impl From<ClusterLoadAssignment> for Resource {
    fn from(m: ClusterLoadAssignment) -> Self {
        Resource::ClusterLoadAssignment(Box::new(m))
    }
}

impl From<Listener> for Resource {
    fn from(m: Listener) -> Self {
        Resource::Listener(Box::new(m))
    }
}

impl From<RouteConfiguration> for Resource {
    fn from(m: RouteConfiguration) -> Self {
        Resource::RouteConfiguration(Box::new(m))
    }
}

impl From<Secret> for Resource {
    fn from(m: Secret) -> Self {
        Resource::Secret(Box::new(m))
    }
}

// === decoding responses ===

/// Decodes the resources of a state-of-the-world response. Every resource gets the response's
/// `version_info`. `Resource` wrappers (sent by servers that support TTLs) are unwrapped and a
/// wrapper without a resource (a TTL heartbeat) is skipped.
pub(crate) fn decode_sotw(
    resource_type: ResourceType,
    version_info: &str,
    resources: &[Any],
) -> Result<Vec<DecodedResource>, DecodeError> {
    let mut decoded = Vec::with_capacity(resources.len());
    let mut names = BTreeSet::new();
    for (index, any) in resources.iter().enumerate() {
        let (wrapper_name, inner) = if any.type_url == WIRE_RESOURCE_TYPE_URL {
            let wrapper =
                WireResource::decode(any.value.as_slice()).map_err(|e| DecodeError::Malformed {
                    index,
                    type_url: WIRE_RESOURCE_TYPE_URL,
                    reason: e.to_string(),
                })?;
            match wrapper.resource {
                Some(inner) => (wrapper.name, inner),
                None => continue,
            }
        } else {
            (String::new(), any.clone())
        };
        let resource = decode_any(index, resource_type, &inner)?;
        let name = pick_name(index, resource_type, wrapper_name, &resource)?;
        if !names.insert(name.clone()) {
            return Err(DecodeError::Duplicate { name });
        }
        decoded.push(DecodedResource {
            name,
            version: version_info.to_string(),
            resource,
        });
    }
    Ok(decoded)
}

/// Decodes the resources of a delta response, each with its own version. Entries without a
/// resource (TTL heartbeats, unresolved aliases) are skipped; `removed` names take part in the
/// duplicate check, as in Envoy.
pub(crate) fn decode_delta(
    resource_type: ResourceType,
    resources: &[WireResource],
    removed: &[String],
) -> Result<Vec<DecodedResource>, DecodeError> {
    let mut decoded = Vec::with_capacity(resources.len());
    let mut names = BTreeSet::new();
    for (index, wire) in resources.iter().enumerate() {
        let Some(any) = &wire.resource else {
            if !wire.name.is_empty() && !names.insert(wire.name.clone()) {
                return Err(DecodeError::Duplicate {
                    name: wire.name.clone(),
                });
            }
            continue;
        };
        let resource = decode_any(index, resource_type, any)?;
        let name = pick_name(index, resource_type, wire.name.clone(), &resource)?;
        if !names.insert(name.clone()) {
            return Err(DecodeError::Duplicate { name });
        }
        decoded.push(DecodedResource {
            name,
            version: wire.version.clone(),
            resource,
        });
    }
    for name in removed {
        if !names.insert(name.clone()) {
            return Err(DecodeError::Duplicate { name: name.clone() });
        }
    }
    Ok(decoded)
}

/// The wrapper's name when there is one (delta, wrapped SotW), else the message's own name.
fn pick_name(
    index: usize,
    resource_type: ResourceType,
    wrapper_name: String,
    resource: &Resource,
) -> Result<String, DecodeError> {
    let name = if wrapper_name.is_empty() {
        resource.name().to_string()
    } else {
        wrapper_name
    };
    if name.is_empty() {
        return Err(DecodeError::EmptyName {
            index,
            type_url: resource_type.type_url(),
        });
    }
    Ok(name)
}

fn decode_any(
    index: usize,
    resource_type: ResourceType,
    any: &Any,
) -> Result<Resource, DecodeError> {
    let expected = resource_type.type_url();
    if any.type_url != expected {
        return Err(DecodeError::TypeMismatch {
            index,
            found: any.type_url.clone(),
            expected,
        });
    }
    let bytes = any.value.as_slice();
    let decoded = match resource_type {
        ResourceType::Cluster => Cluster::decode(bytes).map(Resource::from),
        ResourceType::ClusterLoadAssignment => {
            ClusterLoadAssignment::decode(bytes).map(Resource::from)
        }
        ResourceType::Listener => Listener::decode(bytes).map(Resource::from),
        ResourceType::RouteConfiguration => RouteConfiguration::decode(bytes).map(Resource::from),
        ResourceType::Secret => Secret::decode(bytes).map(Resource::from),
    };
    decoded.map_err(|e| DecodeError::Malformed {
        index,
        type_url: expected,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Name;

    #[test]
    fn type_urls_match_the_generated_messages() {
        assert_eq!(CLUSTER_TYPE_URL, Cluster::type_url());
        assert_eq!(
            CLUSTER_LOAD_ASSIGNMENT_TYPE_URL,
            ClusterLoadAssignment::type_url()
        );
        assert_eq!(LISTENER_TYPE_URL, Listener::type_url());
        assert_eq!(ROUTE_CONFIGURATION_TYPE_URL, RouteConfiguration::type_url());
        assert_eq!(SECRET_TYPE_URL, Secret::type_url());
        assert_eq!(WIRE_RESOURCE_TYPE_URL, WireResource::type_url());
        for t in ResourceType::ALL {
            assert_eq!(ResourceType::from_type_url(t.type_url()), Some(t));
        }
        assert_eq!(ResourceType::from_type_url("type.googleapis.com/foo"), None);
    }

    fn listener(name: &str) -> Any {
        Resource::from(Listener {
            name: name.into(),
            ..Default::default()
        })
        .to_any()
    }

    #[test]
    fn sotw_decodes_names_and_versions() {
        let out = decode_sotw(
            ResourceType::Listener,
            "v1",
            &[listener("a"), listener("b")],
        )
        .unwrap();
        let got: Vec<_> = out
            .iter()
            .map(|r| (r.name.as_str(), r.version.as_str()))
            .collect();
        assert_eq!(got, [("a", "v1"), ("b", "v1")]);
    }

    #[test]
    fn sotw_unwraps_resource_wrappers_and_skips_heartbeats() {
        let wrapped = WireResource {
            name: "a".into(),
            version: "ignored".into(),
            resource: Some(listener("a")),
            ..Default::default()
        };
        let heartbeat = WireResource {
            name: "b".into(),
            ..Default::default()
        };
        let anys = [
            envoy_types::util::pack_any(wrapped),
            envoy_types::util::pack_any(heartbeat),
        ];
        let out = decode_sotw(ResourceType::Listener, "v1", &anys).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].name, "a");
    }

    #[test]
    fn mismatched_type_url_is_named() {
        let mut any = listener("a");
        any.type_url = CLUSTER_TYPE_URL.into();
        let err = decode_sotw(ResourceType::Listener, "v1", &[listener("ok"), any]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "resource #1 has type URL type.googleapis.com/envoy.config.cluster.v3.Cluster, which \
             does not match the response's type URL \
             type.googleapis.com/envoy.config.listener.v3.Listener"
        );
    }

    #[test]
    fn garbage_bytes_are_a_decode_error() {
        let any = Any {
            type_url: LISTENER_TYPE_URL.into(),
            value: vec![0xff, 0xff, 0xff],
        };
        let err = decode_sotw(ResourceType::Listener, "v1", &[any]).unwrap_err();
        assert!(
            matches!(err, DecodeError::Malformed { index: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().starts_with("resource #0 is not a valid"));
    }

    #[test]
    fn empty_name_and_duplicates_are_rejected() {
        let err = decode_sotw(ResourceType::Listener, "v1", &[listener("")]).unwrap_err();
        assert!(matches!(err, DecodeError::EmptyName { index: 0, .. }));
        let err = decode_sotw(
            ResourceType::Listener,
            "v1",
            &[listener("a"), listener("a")],
        )
        .unwrap_err();
        assert_eq!(err, DecodeError::Duplicate { name: "a".into() });
    }

    #[test]
    fn delta_uses_per_resource_versions_and_checks_removed_for_duplicates() {
        let wire = |name: &str, version: &str| WireResource {
            name: name.into(),
            version: version.into(),
            resource: Some(listener(name)),
            ..Default::default()
        };
        let out = decode_delta(
            ResourceType::Listener,
            &[wire("a", "1"), wire("b", "7")],
            &[],
        )
        .unwrap();
        let got: Vec<_> = out
            .iter()
            .map(|r| (r.name.as_str(), r.version.as_str()))
            .collect();
        assert_eq!(got, [("a", "1"), ("b", "7")]);

        let err =
            decode_delta(ResourceType::Listener, &[wire("a", "1")], &["a".into()]).unwrap_err();
        assert_eq!(err, DecodeError::Duplicate { name: "a".into() });
    }
}
