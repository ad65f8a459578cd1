//! Bootstrap loading from arbitrary text: `--config-yaml` through `bootstrap::load` (parse,
//! proto3 JSON mapping, validation), and a JSON `-c` file through the same decoder and
//! checks; the static listeners and clusters of a bootstrap that loads are then converted.
//!
//! Input: one selector byte (even: YAML, odd: JSON), then the text.
#![no_main]

#[path = "common.rs"]
mod common;

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use libfuzzer_sys::fuzz_target;
use proxy::bootstrap::{self, Config};
use proxy::config::cluster::ClusterConfig;
use proxy::config::listener::ListenerConfig;
use proxy::listener::active::ActiveListener;
use proxy::proto::{self, Format, UnknownFields};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let unknown = if selector & 2 == 0 {
        UnknownFields::Reject
    } else {
        UnknownFields::Ignore
    };
    let loaded = if selector & 1 == 0 {
        let config = Config {
            config_yaml: Some(text.to_string()),
            unknown_fields: unknown,
            ..Config::default()
        };
        bootstrap::load(&config).ok().map(|l| l.bootstrap)
    } else {
        proto::decode::<Bootstrap>(text, Format::Json, unknown)
            .ok()
            .and_then(|d| proto::validate(&d.message, unknown).ok().map(|_| d.message))
    };
    let Some(bootstrap) = loaded else {
        return;
    };
    if let Some(statics) = &bootstrap.static_resources {
        for l in &statics.listeners {
            if let Ok(cfg) = ListenerConfig::from_proto(l) {
                let _ = ActiveListener::build(cfg, None, &common::store(), "");
            }
        }
        for c in &statics.clusters {
            let _ = ClusterConfig::from_proto(c);
        }
    }
});
