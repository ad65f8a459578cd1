//! Istio's HTTP metadata exchange: the `istio.metadata_exchange` HTTP filter
//! (`io.istio.http.peer_metadata.Config`), which tells `istio.stats` who the peer workload
//! is.
//!
//! - Outbound (`upstream_propagation`, `upstream_discovery`): our node's id and metadata go
//!   to the upstream in `x-envoy-peer-metadata-id` / `x-envoy-peer-metadata`; the server
//!   sidecar's come back in the response headers, which are read and removed.
//! - Inbound (`downstream_discovery`, `downstream_propagation`): the client sidecar's
//!   headers are read and removed before anything else sees the request; our own go back
//!   on the response, only when the client sent them (a non-mesh client learns nothing).
//!
//! Only the `istio_headers` method runs: `workload_discovery` needs ambient's workload
//! xDS and `baggage` is deprecated upstream, and both only ever add telemetry, so they are
//! accepted and find nothing. The headers are read where the connection manager has
//! finished its own header processing, before any other filter, as Istio places the filter
//! first in the chain.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use envoy_types::pb::google::protobuf::{Any, Value, value::Kind};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{ConfigError, any};
use crate::tls::{LocalNode, PeerMetadata};
use crate::upstream::Cluster;

/// The filter's config type.
pub const TYPE_URL: &str = "type.googleapis.com/io.istio.http.peer_metadata.Config";

const METADATA: HeaderName = HeaderName::from_static("x-envoy-peer-metadata");
const METADATA_ID: HeaderName = HeaderName::from_static("x-envoy-peer-metadata-id");

/// How many decoded peers are kept; Istio's `max_peer_cache_size` default.
const CACHE_SIZE: usize = 500;

/// A configured `istio.metadata_exchange` HTTP filter.
#[derive(Debug)]
pub struct PeerMetadataFilter {
    downstream_discovery: bool,
    upstream_discovery: bool,
    downstream_propagation: bool,
    upstream_propagation: Option<Propagation>,
    /// Our node's `(id, metadata)` header values; without a bootstrap node nothing is sent.
    local: Option<(HeaderValue, HeaderValue)>,
    cache: PeerCache,
}

/// `upstream_propagation` with `istio_headers`.
#[derive(Debug, Clone, Copy)]
struct Propagation {
    /// `skip_external_clusters`: nothing is sent to `PassthroughCluster` or clusters marked
    /// `istio.external`.
    skip_external_clusters: bool,
}

/// What the client sent of the exchange (the response answers only what was asked).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerHeadersReceived {
    pub id: bool,
    pub metadata: bool,
}

/// Decoded peers by their header values, so a busy connection decodes each peer once.
#[derive(Debug, Default)]
struct PeerCache(Mutex<HashMap<Box<[u8]>, Arc<PeerMetadata>>>);

// === impl PeerMetadataFilter ===

impl PeerMetadataFilter {
    /// From the filter's config (plain or in a TypedStruct) and our node.
    pub fn from_any(cfg: &Any, node: Option<&LocalNode>) -> Result<Self, ConfigError> {
        let c: proto::Config = any::decode(cfg)?;
        let headers = |methods: &[proto::DiscoveryMethod]| {
            methods.iter().any(|m| {
                matches!(
                    m.method_specifier,
                    Some(proto::discovery_method::MethodSpecifier::IstioHeaders(_))
                )
            })
        };
        let propagation = |methods: &[proto::PropagationMethod]| {
            methods.iter().find_map(|m| {
                let proto::propagation_method::MethodSpecifier::IstioHeaders(h) =
                    m.method_specifier?;
                Some(Propagation {
                    skip_external_clusters: h.skip_external_clusters,
                })
            })
        };
        let local = match node {
            Some(n) => Some((
                HeaderValue::from_str(&n.id).map_err(|_| {
                    ConfigError::new("the node id cannot be sent in x-envoy-peer-metadata-id")
                })?,
                HeaderValue::try_from(n.header_value()).map_err(|_| {
                    ConfigError::new("the node metadata cannot be sent in x-envoy-peer-metadata")
                })?,
            )),
            None => None,
        };
        Ok(Self {
            downstream_discovery: headers(&c.downstream_discovery),
            upstream_discovery: headers(&c.upstream_discovery),
            downstream_propagation: propagation(&c.downstream_propagation).is_some(),
            upstream_propagation: propagation(&c.upstream_propagation),
            local,
            cache: PeerCache::default(),
        })
    }

    /// A request from downstream: reads and removes the client's exchange headers.
    pub fn on_request(
        &self,
        headers: &mut HeaderMap,
    ) -> (Option<Arc<PeerMetadata>>, PeerHeadersReceived) {
        if !self.downstream_discovery {
            return (None, PeerHeadersReceived::default());
        }
        let received = PeerHeadersReceived {
            id: headers.contains_key(METADATA_ID),
            metadata: headers.contains_key(METADATA),
        };
        (self.discover(headers), received)
    }

    /// The request on its way to `cluster`: our node's headers, unless the cluster is
    /// outside the mesh or opted out (`istio.disable_mx`).
    pub fn on_upstream_request(&self, headers: &mut HeaderMap, cluster: &Cluster) {
        let (Some(p), Some((id, value))) = (self.upstream_propagation, &self.local) else {
            return;
        };
        if skip_cluster(cluster, p.skip_external_clusters) {
            return;
        }
        headers.insert(METADATA_ID, id.clone());
        headers.insert(METADATA, value.clone());
    }

    /// A response from upstream: reads and removes the server's exchange headers.
    pub fn on_upstream_response(&self, headers: &mut HeaderMap) -> Option<Arc<PeerMetadata>> {
        if !self.upstream_discovery {
            return None;
        }
        self.discover(headers)
    }

    /// Any response going downstream (local replies too): our node's headers, as far as
    /// the client sent its own.
    pub fn on_response(&self, headers: &mut HeaderMap, received: PeerHeadersReceived) {
        let Some((id, value)) = self.local.as_ref().filter(|_| self.downstream_propagation) else {
            return;
        };
        if received.id {
            headers.insert(METADATA_ID, id.clone());
        }
        if received.metadata {
            headers.insert(METADATA, value.clone());
        }
    }

    fn discover(&self, headers: &mut HeaderMap) -> Option<Arc<PeerMetadata>> {
        let value = headers.remove(METADATA);
        let id = headers.remove(METADATA_ID);
        let value = value.filter(|v| !v.is_empty())?;
        let id = id.as_ref().and_then(|v| v.to_str().ok());
        self.cache.get_or_decode(value.as_bytes(), id)
    }
}

/// Istio's `skipMXHeaders`: a cluster named `PassthroughCluster` or with
/// `istio.external: true` is outside the mesh (when asked to skip those), and
/// `istio.disable_mx: true` always opts out.
fn skip_cluster(cluster: &Cluster, skip_external: bool) -> bool {
    if skip_external && &*cluster.config.name == "PassthroughCluster" {
        return true;
    }
    let Some(istio) = cluster
        .config
        .metadata
        .as_deref()
        .and_then(|m| m.filter_metadata.get("istio"))
    else {
        return false;
    };
    let flag = |key: &str| {
        matches!(
            istio.fields.get(key),
            Some(Value {
                kind: Some(Kind::BoolValue(true))
            })
        )
    };
    (skip_external && flag("external")) || flag("disable_mx")
}

// === impl PeerCache ===

impl PeerCache {
    fn get_or_decode(&self, value: &[u8], id: Option<&str>) -> Option<Arc<PeerMetadata>> {
        let mut cache = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(peer) = cache.get(value)
            && peer.id.as_deref() == id
        {
            return Some(peer.clone());
        }
        let peer = Arc::new(PeerMetadata::from_headers(Some(value), id)?);
        if cache.len() >= CACHE_SIZE {
            cache.clear();
        }
        cache.insert(value.into(), peer.clone());
        Some(peer)
    }
}

/// `io.istio.http.peer_metadata.Config` (istio/proxy
/// `source/extensions/filters/http/peer_metadata/config.proto`; field numbers match).
mod proto {
    use prost::Message;

    #[derive(Clone, PartialEq, Message)]
    pub struct Config {
        #[prost(message, repeated, tag = "1")]
        pub downstream_discovery: Vec<DiscoveryMethod>,
        #[prost(message, repeated, tag = "2")]
        pub upstream_discovery: Vec<DiscoveryMethod>,
        #[prost(message, repeated, tag = "3")]
        pub downstream_propagation: Vec<PropagationMethod>,
        #[prost(message, repeated, tag = "4")]
        pub upstream_propagation: Vec<PropagationMethod>,
        #[prost(bool, tag = "5")]
        pub shared_with_upstream: bool,
        #[prost(string, repeated, tag = "6")]
        pub additional_labels: Vec<String>,
    }

    #[derive(Clone, Copy, PartialEq, Message)]
    pub struct Empty {}

    #[derive(Clone, Copy, PartialEq, Message)]
    pub struct IstioHeaders {
        #[prost(bool, tag = "1")]
        pub skip_external_clusters: bool,
    }

    #[derive(Clone, PartialEq, Message)]
    pub struct DiscoveryMethod {
        #[prost(oneof = "discovery_method::MethodSpecifier", tags = "1, 2, 3")]
        pub method_specifier: Option<discovery_method::MethodSpecifier>,
    }

    pub mod discovery_method {
        #[derive(Clone, Copy, PartialEq, prost::Oneof)]
        pub enum MethodSpecifier {
            #[prost(message, tag = "1")]
            Baggage(super::Empty),
            #[prost(message, tag = "2")]
            WorkloadDiscovery(super::Empty),
            #[prost(message, tag = "3")]
            IstioHeaders(super::IstioHeaders),
        }
    }

    #[derive(Clone, PartialEq, Message)]
    pub struct PropagationMethod {
        #[prost(oneof = "propagation_method::MethodSpecifier", tags = "1")]
        pub method_specifier: Option<propagation_method::MethodSpecifier>,
    }

    pub mod propagation_method {
        #[derive(Clone, Copy, PartialEq, prost::Oneof)]
        pub enum MethodSpecifier {
            #[prost(message, tag = "1")]
            IstioHeaders(super::IstioHeaders),
        }
    }

    impl prost::Name for Config {
        const NAME: &'static str = "Config";
        const PACKAGE: &'static str = "io.istio.http.peer_metadata";
        fn type_url() -> String {
            super::TYPE_URL.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cluster::ClusterConfig;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpFilter as HttpFilterProto, http_filter::ConfigType,
    };
    use envoy_types::pb::google::protobuf::Struct;

    fn typed_struct(value: serde_json::Value) -> Any {
        let yaml = format!(
            "{{name: istio.metadata_exchange, typed_config: {{'@type': type.googleapis.com/udpa.type.v1.TypedStruct, type_url: {TYPE_URL}, value: {value}}}}}"
        );
        let f: HttpFilterProto = crate::proto_test_util::from_yaml(&yaml);
        match f.config_type {
            Some(ConfigType::TypedConfig(any)) => any,
            other => panic!("{other:?}"),
        }
    }

    fn node(name: &str) -> LocalNode {
        let mut md = Struct::default();
        for (k, v) in [
            ("NAME", format!("{name}-1")),
            ("WORKLOAD_NAME", name.into()),
        ] {
            md.fields.insert(
                k.into(),
                Value {
                    kind: Some(Kind::StringValue(v)),
                },
            );
        }
        LocalNode::from_parts(
            format!("sidecar~10.0.0.1~{name}-1.ns~ns.svc.cluster.local"),
            md,
        )
    }

    fn inbound(node: &LocalNode) -> PeerMetadataFilter {
        let cfg = typed_struct(serde_json::json!({
            "downstream_discovery": [{"istio_headers": {}}, {"workload_discovery": {}}],
            "downstream_propagation": [{"istio_headers": {}}],
        }));
        PeerMetadataFilter::from_any(&cfg, Some(node)).unwrap()
    }

    fn outbound(node: &LocalNode, skip_external: bool) -> PeerMetadataFilter {
        let cfg = typed_struct(serde_json::json!({
            "upstream_discovery": [{"istio_headers": {}}, {"workload_discovery": {}}],
            "upstream_propagation": [{"istio_headers": {"skip_external_clusters": skip_external}}],
        }));
        PeerMetadataFilter::from_any(&cfg, Some(node)).unwrap()
    }

    fn cluster(yaml: &str) -> Cluster {
        let proto = crate::proto_test_util::from_yaml(yaml);
        let config = ClusterConfig::from_proto(&proto).unwrap();
        Cluster::new(config, &crate::stats::Store::new(None).unwrap())
    }

    const MESH: &str =
        "{name: 'outbound|80||b.ns.svc.cluster.local', type: STATIC, connect_timeout: 1s}";

    #[test]
    fn a_request_and_its_response_carry_both_sides_metadata() {
        let (client, server) = (node("sleep"), node("httpbin"));
        let (out, inb) = (outbound(&client, true), inbound(&server));
        let mut req = HeaderMap::new();
        out.on_upstream_request(&mut req, &cluster(MESH));
        assert!(req.contains_key(METADATA) && req.contains_key(METADATA_ID));

        let (peer, received) = inb.on_request(&mut req);
        let peer = peer.unwrap();
        assert_eq!(peer.get("WORKLOAD_NAME"), Some("sleep"));
        assert_eq!(peer.id.as_deref(), Some(client.id.as_str()));
        assert!(req.is_empty(), "the app must not see the exchange: {req:?}");

        let mut resp = HeaderMap::new();
        inb.on_response(&mut resp, received);
        let peer = out.on_upstream_response(&mut resp).unwrap();
        assert_eq!(peer.get("WORKLOAD_NAME"), Some("httpbin"));
        assert!(resp.is_empty(), "the client app must not see the exchange");
    }

    #[test]
    fn a_client_that_sent_nothing_learns_nothing() {
        let inb = inbound(&node("httpbin"));
        let mut req = HeaderMap::new();
        let (peer, received) = inb.on_request(&mut req);
        assert!(peer.is_none());
        let mut resp = HeaderMap::new();
        inb.on_response(&mut resp, received);
        assert!(resp.is_empty());
    }

    #[test]
    fn garbage_metadata_is_removed_and_ignored() {
        let inb = inbound(&node("httpbin"));
        let mut req = HeaderMap::new();
        req.insert(METADATA, HeaderValue::from_static("%%% not base64"));
        let (peer, received) = inb.on_request(&mut req);
        assert!(peer.is_none());
        assert!(req.is_empty());
        assert!(received.metadata && !received.id);
    }

    #[test]
    fn unpadded_base64_is_accepted_as_istio_does() {
        let client = node("sleep");
        let inb = inbound(&node("httpbin"));
        let mut req = HeaderMap::new();
        let unpadded = client.header_value().trim_end_matches('=').to_string();
        req.insert(METADATA, HeaderValue::try_from(unpadded).unwrap());
        let (peer, _) = inb.on_request(&mut req);
        assert_eq!(peer.unwrap().get("WORKLOAD_NAME"), Some("sleep"));
    }

    #[test]
    fn external_and_opted_out_clusters_get_no_metadata() {
        let client = node("sleep");
        let external = "{name: 'outbound|443||example.com', type: STATIC, connect_timeout: 1s, metadata: {filter_metadata: {istio: {external: true}}}}";
        let disabled = "{name: 'outbound|80||legacy', type: STATIC, connect_timeout: 1s, metadata: {filter_metadata: {istio: {disable_mx: true}}}}";
        let passthrough = "{name: PassthroughCluster, type: ORIGINAL_DST, connect_timeout: 1s, lb_policy: CLUSTER_PROVIDED}";
        for (skip, yaml, sent) in [
            (true, external, false),
            (false, external, true),
            (true, passthrough, false),
            (false, passthrough, true),
            (false, disabled, false),
            (true, MESH, true),
        ] {
            let mut req = HeaderMap::new();
            outbound(&client, skip).on_upstream_request(&mut req, &cluster(yaml));
            assert_eq!(req.contains_key(METADATA), sent, "skip={skip} {yaml}");
        }
    }

    #[test]
    fn inbound_config_sends_nothing_upstream_and_outbound_answers_nobody() {
        let n = node("x");
        let mut req = HeaderMap::new();
        inbound(&n).on_upstream_request(&mut req, &cluster(MESH));
        assert!(req.is_empty());
        let mut resp = HeaderMap::new();
        let all = PeerHeadersReceived {
            id: true,
            metadata: true,
        };
        outbound(&n, false).on_response(&mut resp, all);
        assert!(resp.is_empty());
    }

    #[test]
    fn a_changed_id_is_not_served_from_the_cache() {
        let client = node("sleep");
        let inb = inbound(&node("httpbin"));
        for id in ["a", "b"] {
            let mut req = HeaderMap::new();
            req.insert(
                METADATA,
                HeaderValue::try_from(client.header_value()).unwrap(),
            );
            req.insert(METADATA_ID, HeaderValue::from_static(id).clone());
            let (peer, _) = inb.on_request(&mut req);
            assert_eq!(peer.unwrap().id.as_deref(), Some(id));
        }
    }
}
