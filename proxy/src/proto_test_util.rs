//! Test helpers: Envoy protos from YAML, through the committed descriptor set.

use std::sync::OnceLock;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(&include_bytes!("../proto/descriptor_set.bin")[..])
            .expect("descriptor set")
    })
}

/// Parses YAML as the proto `T` (proto3 JSON mapping).
pub fn from_yaml<T: Message + prost::Name + Default>(yaml: &str) -> T {
    let desc = pool()
        .get_message_by_name(&T::full_name())
        .unwrap_or_else(|| panic!("{} not in the descriptor set", T::full_name()));
    let value: serde_json::Value = serde_saphyr::from_str(yaml).expect("valid YAML");
    let dynamic = DynamicMessage::deserialize(desc, value).expect("valid proto JSON");
    T::decode(dynamic.encode_to_vec().as_slice()).expect("decodes")
}

pub fn cluster_yaml(yaml: &str) -> Cluster {
    from_yaml(yaml)
}
