//! Envoy-compatible stats: counters, gauges and histograms under Envoy's names, shown by the
//! admin endpoints `/stats` and `/stats/prometheus` exactly as Envoy shows them.
//!
//! Components create their stats once (when a listener or cluster is built) and keep the
//! handles; updating a stat is one or two relaxed atomic operations, no lookup. The bootstrap's
//! `stats_config.stats_matcher` decides which stats exist at all (a rejected stat still works
//! but is never shown), and its tag specifiers decide the Prometheus names and labels.

mod render;
mod tags;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use envoy_types::pb::envoy::config::metrics::v3::{StatsConfig, stats_matcher::StatsMatcher};

pub use render::{Format, Query};
pub use tags::{TagProducer, Tagged};

use crate::matcher::{MatcherError, StringMatchers};

/// Envoy's default histogram buckets (`supported_buckets`), in the unit recorded (usually ms).
pub const DEFAULT_BUCKETS: &[f64] = &[
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Why a stats configuration was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatsError {
    #[error("stats_config.stats_tags: {0}")]
    Tag(String),
    #[error("stats_config.stats_matcher: {0}")]
    Matcher(#[from] MatcherError),
}

/// Which stats are kept (`stats_config.stats_matcher`).
#[derive(Debug, Default)]
enum Inclusion {
    #[default]
    All,
    None,
    Only(StringMatchers),
    AllBut(StringMatchers),
}

// === impl Inclusion ===

impl Inclusion {
    fn new(config: Option<&StatsConfig>) -> Result<Self, StatsError> {
        let Some(m) = config.and_then(|c| c.stats_matcher.as_ref()) else {
            return Ok(Self::All);
        };
        Ok(match &m.stats_matcher {
            None => Self::All,
            Some(StatsMatcher::RejectAll(true)) => Self::None,
            Some(StatsMatcher::RejectAll(false)) => Self::All,
            Some(StatsMatcher::InclusionList(list)) => Self::Only(StringMatchers::new(list)?),
            Some(StatsMatcher::ExclusionList(list)) => Self::AllBut(StringMatchers::new(list)?),
        })
    }

    fn keeps(&self, name: &str) -> bool {
        match self {
            Self::All => true,
            Self::None => false,
            Self::Only(list) => list.matches_any(name),
            Self::AllBut(list) => !list.matches_any(name),
        }
    }
}

fn custom_meta(name: Arc<str>, metric: &str, tags: &[(&str, &str)]) -> Meta {
    Meta::with_tags(
        name,
        Tagged {
            name: metric.to_string(),
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
            custom_namespace: true,
        },
    )
}

/// A stat's identity: its full Envoy name, and its tag-extracted form, computed the first
/// time Prometheus output needs it (tag extraction runs regexes; a 10,000-cluster push
/// creates over a million stats, most never scraped).
#[derive(Debug)]
struct Meta {
    name: Arc<str>,
    tagged: std::sync::OnceLock<Tagged>,
}

// === impl Meta ===

impl Meta {
    fn new(name: Arc<str>) -> Self {
        Self {
            name,
            tagged: std::sync::OnceLock::new(),
        }
    }

    /// A stat whose tags are given, not extracted (custom stat namespaces).
    fn with_tags(name: Arc<str>, tagged: Tagged) -> Self {
        let meta = Self::new(name);
        let _ = meta.tagged.set(tagged);
        meta
    }

    fn tagged(&self, tags: &TagProducer) -> &Tagged {
        self.tagged.get_or_init(|| tags.produce(&self.name))
    }
}

#[derive(Debug)]
struct CounterCell {
    meta: Meta,
    value: AtomicU64,
    used: AtomicBool,
}

#[derive(Debug)]
struct GaugeCell {
    meta: Meta,
    value: AtomicU64,
    used: AtomicBool,
}

#[derive(Debug)]
struct HistogramCell {
    meta: Meta,
    bounds: &'static [f64],
    /// One per bound (values <= bound), plus one for larger values.
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum: AtomicU64,
}

/// A monotonically increasing count.
#[derive(Debug, Clone)]
pub struct Counter(Arc<CounterCell>);

/// A value that goes up and down (connections active, state).
#[derive(Debug, Clone)]
pub struct Gauge(Arc<GaugeCell>);

/// A distribution of recorded values.
#[derive(Debug, Clone)]
pub struct Histogram(Arc<HistogramCell>);

// === impl Counter ===

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.value.fetch_add(n, Ordering::Relaxed);
        if !self.0.used.load(Ordering::Relaxed) {
            self.0.used.store(true, Ordering::Relaxed);
        }
    }

    pub fn value(&self) -> u64 {
        self.0.value.load(Ordering::Relaxed)
    }
}

// === impl Gauge ===

impl Gauge {
    pub fn set(&self, v: u64) {
        self.0.value.store(v, Ordering::Relaxed);
        self.mark_used();
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn dec(&self) {
        self.sub(1);
    }

    pub fn add(&self, n: u64) {
        self.0.value.fetch_add(n, Ordering::Relaxed);
        self.mark_used();
    }

    pub fn sub(&self, n: u64) {
        self.0.value.fetch_sub(n, Ordering::Relaxed);
        self.mark_used();
    }

    pub fn value(&self) -> u64 {
        self.0.value.load(Ordering::Relaxed)
    }

    fn mark_used(&self) {
        if !self.0.used.load(Ordering::Relaxed) {
            self.0.used.store(true, Ordering::Relaxed);
        }
    }
}

// === impl Histogram ===

impl Histogram {
    /// Records one value (in the histogram's unit, usually milliseconds).
    pub fn record(&self, value: u64) {
        let v = value as f64;
        let i = self.0.bounds.partition_point(|b| *b < v);
        if let Some(bucket) = self.0.buckets.get(i) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.0.count.fetch_add(1, Ordering::Relaxed);
        self.0.sum.fetch_add(value, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
struct Registry {
    counters: BTreeMap<Arc<str>, Arc<CounterCell>>,
    gauges: BTreeMap<Arc<str>, Arc<GaugeCell>>,
    histograms: BTreeMap<Arc<str>, Arc<HistogramCell>>,
}

/// The one name all rejected stats share.
fn rejected() -> Arc<str> {
    static NAME: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    NAME.get_or_init(|| Arc::from("")).clone()
}

/// A stat kept by some other component (the xDS client), read when stats are rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum External {
    Counter(String, u64),
    Gauge(String, u64),
    /// A text readout, e.g. `cluster_manager.cds.version_text`.
    Text(String, String),
}

/// Produces external stats on demand.
pub type ExternalSource = Box<dyn Fn() -> Vec<External> + Send + Sync>;

struct Inner {
    tags: TagProducer,
    inclusion: Inclusion,
    registry: Mutex<Registry>,
    external: Mutex<Vec<ExternalSource>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("tags", &self.tags)
            .field("inclusion", &self.inclusion)
            .finish_non_exhaustive()
    }
}

/// The process's stats. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store(Arc<Inner>);

// === impl Store ===

impl Store {
    /// A store following the bootstrap's `stats_config`.
    pub fn new(config: Option<&StatsConfig>) -> Result<Self, StatsError> {
        Ok(Self(Arc::new(Inner {
            tags: TagProducer::new(config)?,
            inclusion: Inclusion::new(config)?,
            registry: Mutex::default(),
            external: Mutex::default(),
        })))
    }

    /// A scope whose stats are all named `<prefix><name>`; `prefix` ends with a dot.
    pub fn scope(&self, prefix: impl Into<String>) -> Scope {
        Scope {
            store: self.clone(),
            prefix: prefix.into(),
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.0
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The name a new stat gets: shared with the registry key when the stats matcher keeps
    /// it, else `None` (a rejected stat still counts, but is never shown or named).
    fn kept_name(&self, name: &str) -> Option<Arc<str>> {
        self.0.inclusion.keeps(name).then(|| Arc::from(name))
    }

    /// The counter with this full name, created on first use.
    pub fn counter(&self, name: &str) -> Counter {
        let mut reg = self.registry();
        if let Some(c) = reg.counters.get(name) {
            return Counter(c.clone());
        }
        let kept = self.kept_name(name);
        let cell = Arc::new(CounterCell {
            meta: Meta::new(kept.clone().unwrap_or_else(rejected)),
            value: AtomicU64::new(0),
            used: AtomicBool::new(false),
        });
        if let Some(key) = kept {
            reg.counters.insert(key, cell.clone());
        }
        Counter(cell)
    }

    /// The gauge with this full name, created on first use.
    pub fn gauge(&self, name: &str) -> Gauge {
        let mut reg = self.registry();
        if let Some(g) = reg.gauges.get(name) {
            return Gauge(g.clone());
        }
        let kept = self.kept_name(name);
        let cell = Arc::new(GaugeCell {
            meta: Meta::new(kept.clone().unwrap_or_else(rejected)),
            value: AtomicU64::new(0),
            used: AtomicBool::new(false),
        });
        if let Some(key) = kept {
            reg.gauges.insert(key, cell.clone());
        }
        Gauge(cell)
    }

    /// The histogram with this full name, created on first use, with Envoy's default buckets.
    pub fn histogram(&self, name: &str) -> Histogram {
        let mut reg = self.registry();
        if let Some(h) = reg.histograms.get(name) {
            return Histogram(h.clone());
        }
        let kept = self.kept_name(name);
        let bounds = DEFAULT_BUCKETS;
        let cell = Arc::new(HistogramCell {
            meta: Meta::new(kept.clone().unwrap_or_else(rejected)),
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        });
        if let Some(key) = kept {
            reg.histograms.insert(key, cell.clone());
        }
        Histogram(cell)
    }

    /// A counter in a custom stat namespace (Istio's `istiocustom`), with its tags given:
    /// `name` is the full stat name, `metric` and `tags` what Prometheus shows.
    pub fn custom_counter(&self, name: &str, metric: &str, tags: &[(&str, &str)]) -> Counter {
        let mut reg = self.registry();
        if let Some(c) = reg.counters.get(name) {
            return Counter(c.clone());
        }
        let kept = self.kept_name(name);
        let cell = Arc::new(CounterCell {
            meta: custom_meta(kept.clone().unwrap_or_else(rejected), metric, tags),
            value: AtomicU64::new(0),
            used: AtomicBool::new(false),
        });
        if let Some(key) = kept {
            reg.counters.insert(key, cell.clone());
        }
        Counter(cell)
    }

    /// A histogram in a custom stat namespace, with its tags and buckets given.
    pub fn custom_histogram(
        &self,
        name: &str,
        metric: &str,
        tags: &[(&str, &str)],
        bounds: &'static [f64],
    ) -> Histogram {
        let mut reg = self.registry();
        if let Some(h) = reg.histograms.get(name) {
            return Histogram(h.clone());
        }
        let kept = self.kept_name(name);
        let cell = Arc::new(HistogramCell {
            meta: custom_meta(kept.clone().unwrap_or_else(rejected), metric, tags),
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        });
        if let Some(key) = kept {
            reg.histograms.insert(key, cell.clone());
        }
        Histogram(cell)
    }

    /// Adds a source of stats kept elsewhere; they are shown with the others (subject to
    /// the stats matcher, like every stat).
    pub fn add_source(&self, source: ExternalSource) {
        self.0
            .external
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(source);
    }

    /// The current external stats that the stats matcher keeps.
    fn external(&self) -> Vec<External> {
        let sources = self
            .0
            .external
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        sources
            .iter()
            .flat_map(|s| s())
            .filter(|e| {
                let name = match e {
                    External::Counter(n, _) | External::Gauge(n, _) | External::Text(n, _) => n,
                };
                self.0.inclusion.keeps(name)
            })
            .collect()
    }

    /// Forgets stats nobody holds any more (those of removed listeners and clusters), as
    /// Envoy does when their scope is destroyed.
    pub fn prune(&self) {
        let mut reg = self.registry();
        reg.counters.retain(|_, c| Arc::strong_count(c) > 1);
        reg.gauges.retain(|_, g| Arc::strong_count(g) > 1);
        reg.histograms.retain(|_, h| Arc::strong_count(h) > 1);
    }
}

/// A name prefix within the store, e.g. `cluster.backend.`.
#[derive(Debug, Clone)]
pub struct Scope {
    store: Store,
    prefix: String,
}

// === impl Scope ===

impl Scope {
    pub fn counter(&self, name: &str) -> Counter {
        self.store.counter(&format!("{}{name}", self.prefix))
    }

    pub fn gauge(&self, name: &str) -> Gauge {
        self.store.gauge(&format!("{}{name}", self.prefix))
    }

    pub fn histogram(&self, name: &str) -> Histogram {
        self.store.histogram(&format!("{}{name}", self.prefix))
    }

    /// A nested scope: `<prefix><name>.`.
    pub fn scope(&self, name: &str) -> Scope {
        self.store.scope(format!("{}{name}.", self.prefix))
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::metrics::v3::StatsMatcher as StatsMatcherProto;
    use envoy_types::pb::envoy::r#type::matcher::v3::{
        ListStringMatcher, StringMatcher, string_matcher::MatchPattern,
    };

    #[test]
    fn same_name_same_stat() {
        let store = Store::new(None).unwrap();
        let a = store.counter("cluster.x.upstream_cx_total");
        let b = store.scope("cluster.x.").counter("upstream_cx_total");
        a.inc();
        b.add(2);
        assert_eq!(a.value(), 3);
    }

    #[test]
    fn inclusion_list_hides_other_stats_but_they_still_count() {
        let config = StatsConfig {
            stats_matcher: Some(StatsMatcherProto {
                stats_matcher: Some(StatsMatcher::InclusionList(ListStringMatcher {
                    patterns: vec![StringMatcher {
                        ignore_case: false,
                        match_pattern: Some(MatchPattern::Prefix("server".into())),
                    }],
                })),
            }),
            ..StatsConfig::default()
        };
        let store = Store::new(Some(&config)).unwrap();
        store.gauge("server.state").set(0);
        let hidden = store.counter("listener.0.0.0.0_15001.downstream_cx_total");
        hidden.inc();
        assert_eq!(hidden.value(), 1);
        let text = store.render(&Query::default());
        assert_eq!(text, "server.state: 0\n");
    }

    #[test]
    fn prune_forgets_unheld_stats() {
        let store = Store::new(None).unwrap();
        let kept = store.counter("a.kept");
        drop(store.counter("a.dropped"));
        store.prune();
        let text = store.render(&Query::default());
        assert!(text.contains("a.kept"), "{text}");
        assert!(!text.contains("a.dropped"), "{text}");
        drop(kept);
    }
}
