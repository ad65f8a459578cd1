// Shared by the config targets (included with `#[path]`, not a target).
use envoy_types::pb::envoy::config::metrics::v3::StatsConfig;
use envoy_types::pb::google::protobuf::BoolValue;
use proxy::stats::Store;

/// A fresh stats store per input, without Envoy's default tag regexes (they are the same for
/// every input and would dominate the time per execution).
pub fn store() -> Store {
    let config = StatsConfig {
        use_all_default_tags: Some(BoolValue { value: false }),
        ..Default::default()
    };
    Store::new(Some(&config)).expect("a stats config without tags is valid")
}
