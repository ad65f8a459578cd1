//! Tag extraction: turning `cluster.foo.upstream_cx_total` into the tag-extracted name
//! `cluster.upstream_cx_total` with tag `envoy.cluster_name="foo"`, as Envoy does for its
//! Prometheus output. The rules are Envoy's: every extractor's regex is searched in the full
//! name; its first capture group is cut out of the name and its second (or first) group is
//! the tag value. Regexes use ECMAScript-like syntax with lookahead, as in Envoy's defaults
//! and Istio's bootstrap, hence `fancy_regex`. All of this runs when a stat is created, never
//! when it is updated.

use envoy_types::pb::envoy::config::metrics::v3::{StatsConfig, tag_specifier::TagValue};

use super::StatsError;

/// Envoy's default tag extractors (`source/common/config/well_known_names.cc`), in Envoy's
/// order, as (tag name, regex).
const DEFAULT_TAGS: &[(&str, &str)] = &[
    ("envoy.response_code", r"_rq(_(\d{3}))$"),
    ("envoy.response_code_class", r"_rq_(\d)xx$"),
    (
        "envoy.http_user_agent",
        r"^http(?=\.).*?\.user_agent\.((.*?)\.)\w+?$",
    ),
    (
        "envoy.virtual_cluster",
        r"^vhost(?=\.).*?\.vcluster\.((.*?)\.)\w+?$",
    ),
    (
        "envoy.fault_downstream_cluster",
        r"^http(?=\.).*?\.fault\.((.*?)\.)\w+?$",
    ),
    (
        "envoy.ssl_cipher",
        r"^listener(?=\.).*?\.ssl\.cipher(\.(.*?))$",
    ),
    (
        "envoy.ssl_cipher_suite",
        r"^cluster(?=\.).*?\.ssl\.ciphers(\.(.*?))$",
    ),
    ("envoy.tcp_prefix", r"^tcp\.((.*?)\.)\w+?$"),
    ("envoy.udp_prefix", r"^udp\.((.*?)\.)\w+?$"),
    ("envoy.cluster_name", r"^cluster\.(([^\.]+)\.).*"),
    (
        "envoy.http_conn_manager_prefix",
        r"^listener(?=\.).*?\.http\.((.*?)\.)",
    ),
    ("envoy.http_conn_manager_prefix", r"^http\.((.*?)\.)"),
    (
        "envoy.listener_address",
        r"^listener\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)",
    ),
    ("envoy.virtual_host", r"^vhost\.((.*?)\.)"),
    (
        "envoy.rds_route_config",
        r"^http(?=\.).*?\.rds\.((.*?)\.)\w+?$",
    ),
    ("envoy.worker_id", r"^listener_manager\.((worker_\d+)\.)"),
];

/// One tag extractor.
#[derive(Debug)]
struct Extractor {
    name: String,
    regex: fancy_regex::Regex,
}

/// All tag extractors of a stats configuration, plus constant tags.
#[derive(Debug)]
pub struct TagProducer {
    extractors: Vec<Extractor>,
    fixed: Vec<(String, String)>,
}

/// A stat's name after tag extraction, with its tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged {
    pub name: String,
    pub tags: Vec<(String, String)>,
    /// In a custom stat namespace (Istio's `istiocustom`): Prometheus shows the name as it
    /// is, without Envoy's `envoy_` prefix.
    pub custom_namespace: bool,
}

// === impl TagProducer ===

impl TagProducer {
    /// Builds the producer as Envoy's `TagProducerImpl`: Envoy's defaults unless
    /// `use_all_default_tags` is false, then the bootstrap's `stats_tags` (a tag name used
    /// twice is an error; a tag without regex must be one of the default names).
    pub fn new(config: Option<&StatsConfig>) -> Result<Self, StatsError> {
        let mut producer = Self {
            extractors: Vec::new(),
            fixed: Vec::new(),
        };
        let use_defaults = config
            .and_then(|c| c.use_all_default_tags)
            .is_none_or(|v| v.value);
        let mut names: Vec<String> = Vec::new();
        if use_defaults {
            for (name, re) in DEFAULT_TAGS {
                producer.add(name, re)?;
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_string());
                }
            }
        }
        for spec in config.map(|c| c.stats_tags.as_slice()).unwrap_or_default() {
            let name = &spec.tag_name;
            if names.contains(name) {
                return Err(StatsError::Tag(format!(
                    "tag name '{name}' specified twice"
                )));
            }
            names.push(name.clone());
            match &spec.tag_value {
                Some(TagValue::FixedValue(value)) => {
                    producer.fixed.push((name.clone(), value.clone()));
                }
                Some(TagValue::Regex(re)) if !re.is_empty() => producer.add(name, re)?,
                _ => {
                    let defaults: Vec<&str> = DEFAULT_TAGS
                        .iter()
                        .filter(|(n, _)| n == name)
                        .map(|(_, re)| *re)
                        .collect();
                    if defaults.is_empty() {
                        return Err(StatsError::Tag(format!(
                            "no regex specified for tag '{name}' and it has no default regex"
                        )));
                    }
                    for re in defaults {
                        producer.add(name, re)?;
                    }
                }
            }
        }
        Ok(producer)
    }

    fn add(&mut self, name: &str, regex: &str) -> Result<(), StatsError> {
        let compiled = fancy_regex::Regex::new(regex)
            .map_err(|e| StatsError::Tag(format!("invalid regex for tag '{name}': {e}")))?;
        self.extractors.push(Extractor {
            name: name.to_string(),
            regex: compiled,
        });
        Ok(())
    }

    /// The tag-extracted name and tags of a stat.
    pub fn produce(&self, stat: &str) -> Tagged {
        let mut tags = self.fixed.clone();
        let mut removed: Vec<(usize, usize)> = Vec::new();
        for ex in &self.extractors {
            // A tag name yields one value per stat.
            if tags.iter().any(|(n, _)| *n == ex.name) {
                continue;
            }
            let Ok(Some(caps)) = ex.regex.captures(stat) else {
                continue;
            };
            let Some(remove) = caps.get(1) else { continue };
            let value = caps.get(2).unwrap_or(remove);
            tags.push((ex.name.clone(), value.as_str().to_string()));
            removed.push((remove.start(), remove.end()));
        }
        let mut name = String::with_capacity(stat.len());
        for (i, c) in stat.char_indices() {
            if !removed.iter().any(|&(a, b)| i >= a && i < b) {
                name.push(c);
            }
        }
        Tagged {
            name,
            tags,
            custom_namespace: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::metrics::v3::TagSpecifier;
    use envoy_types::pb::google::protobuf::BoolValue;

    fn tagged(producer: &TagProducer, stat: &str) -> (String, Vec<(String, String)>) {
        let t = producer.produce(stat);
        (t.name, t.tags)
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn envoy_default_tags() {
        let p = TagProducer::new(None).unwrap();
        assert_eq!(
            tagged(
                &p,
                "cluster.outbound|80||svc.ns.svc.cluster.local.upstream_cx_total"
            )
            .0,
            // Envoy's default cluster_name regex stops at the first dot.
            "cluster.ns.svc.cluster.local.upstream_cx_total"
        );
        assert_eq!(
            tagged(&p, "cluster.backend.upstream_rq_200"),
            (
                "cluster.upstream_rq".to_string(),
                pairs(&[
                    ("envoy.response_code", "200"),
                    ("envoy.cluster_name", "backend")
                ])
            )
        );
        assert_eq!(
            tagged(&p, "listener.0.0.0.0_15001.downstream_cx_total"),
            (
                "listener.downstream_cx_total".to_string(),
                pairs(&[("envoy.listener_address", "0.0.0.0_15001")])
            )
        );
        assert_eq!(
            tagged(&p, "tcp.outbound_80.downstream_cx_total"),
            (
                "tcp.downstream_cx_total".to_string(),
                pairs(&[("envoy.tcp_prefix", "outbound_80")])
            )
        );
        assert_eq!(tagged(&p, "server.live").0, "server.live");
    }

    #[test]
    fn istio_bootstrap_tags() {
        // From Istio's bootstrap: `use_all_default_tags: false` and its own regexes, with the
        // `alt_stat_name: "<cluster>;"` convention.
        let spec = |name: &str, re: &str| TagSpecifier {
            tag_name: name.to_string(),
            tag_value: Some(TagValue::Regex(re.to_string())),
        };
        let config = StatsConfig {
            use_all_default_tags: Some(BoolValue { value: false }),
            stats_tags: vec![
                spec("cluster_name", r"^cluster(\.(.+);)"),
                spec("response_code", r"_rq(_(\d{3}))$"),
                spec(
                    "http_conn_manager_listener_prefix",
                    r"^listener(?=\.).*?\.http\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)",
                ),
                spec("authz_enforce_result", r"rbac(\.(allowed|denied))"),
            ],
            ..StatsConfig::default()
        };
        let p = TagProducer::new(Some(&config)).unwrap();
        assert_eq!(
            tagged(&p, "cluster.xds-grpc;.upstream_cx_total"),
            (
                "cluster.upstream_cx_total".to_string(),
                pairs(&[("cluster_name", "xds-grpc")])
            )
        );
        assert_eq!(
            tagged(&p, "tcp.rbac.denied").0,
            "tcp.rbac",
            "tag {:?}",
            tagged(&p, "tcp.rbac.denied").1
        );
    }

    #[test]
    fn bad_tag_configs_are_rejected() {
        let twice = StatsConfig {
            stats_tags: vec![TagSpecifier {
                tag_name: "envoy.cluster_name".into(),
                tag_value: None,
            }],
            ..StatsConfig::default()
        };
        assert!(
            TagProducer::new(Some(&twice)).is_err(),
            "a default tag named again"
        );
        let unknown = StatsConfig {
            use_all_default_tags: Some(BoolValue { value: false }),
            stats_tags: vec![TagSpecifier {
                tag_name: "made_up".into(),
                tag_value: None,
            }],
            ..StatsConfig::default()
        };
        assert!(TagProducer::new(Some(&unknown)).is_err());
        let bad_regex = StatsConfig {
            stats_tags: vec![TagSpecifier {
                tag_name: "x".into(),
                tag_value: Some(TagValue::Regex("(".into())),
            }],
            ..StatsConfig::default()
        };
        assert!(TagProducer::new(Some(&bad_regex)).is_err());
    }
}
