//! Test helpers: Envoy protos from YAML.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;

use crate::proto::{Format, UnknownFields, decode};

/// Parses YAML as the proto `T` (proto3 JSON mapping), panicking on errors.
pub fn from_yaml<T: prost::Message + prost::Name + Default>(yaml: &str) -> T {
    decode::<T>(yaml, Format::Yaml, UnknownFields::Reject)
        .unwrap_or_else(|e| panic!("invalid {}: {e}", T::full_name()))
        .message
}

pub fn cluster_yaml(yaml: &str) -> Cluster {
    from_yaml(yaml)
}
