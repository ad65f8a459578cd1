//! RBAC config compilation from an arbitrary `typed_config`: the network filter, the HTTP
//! filter and the HTTP per-route override, each from its `Any`.
//!
//! Input: one selector byte, then the RBAC proto's encoding (the `Any` value).
#![no_main]

#[path = "common.rs"]
mod common;

use envoy_types::pb::google::protobuf::Any;
use libfuzzer_sys::fuzz_target;
use proxy::rbac::{HttpRbac, HttpRbacPerRoute, NetworkRbac};

const NETWORK: &str = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC";
const HTTP: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
const PER_ROUTE: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute";

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let any = |type_url: &str| Any {
        type_url: type_url.to_string(),
        value: bytes.to_vec(),
    };
    let store = common::store();
    match selector % 3 {
        0 => {
            let _ = NetworkRbac::from_any(&any(NETWORK), &store);
        }
        1 => {
            let _ = HttpRbac::from_any(&any(HTTP), &store, "http.inbound_0.0.0.0_80.");
        }
        _ => {
            let _ = HttpRbacPerRoute::from_any(&any(PER_ROUTE));
        }
    }
});
