//! The admin views of the stats: `/stats` (text and JSON) and `/stats/prometheus`, in Envoy's
//! formats: text is `name: value` for counters and gauges sorted by name, then histograms;
//! Prometheus groups counters, then gauges, then histograms, named `envoy_<tag-extracted
//! name>` with the extracted tags as labels.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::{External, HistogramCell, Registry, Store, TagProducer, Tagged};

/// The quantiles Envoy reports for histograms.
const QUANTILES: &[f64] = &[0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 100.0];

/// Output format of `/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
    Prometheus,
}

/// Which stats to show, from the admin query string.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// `usedonly`: only stats that were ever written.
    pub used_only: bool,
    /// `filter=<regex>`: stats whose name contains a match (RE2 partial match).
    pub filter: Option<regex::Regex>,
    pub format: Format,
    /// `type=Counters|Gauges|Histograms` (default all).
    pub kinds: Kinds,
}

/// The `type=` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds {
    pub counters: bool,
    pub gauges: bool,
    pub histograms: bool,
}

impl Default for Kinds {
    fn default() -> Self {
        Self {
            counters: true,
            gauges: true,
            histograms: true,
        }
    }
}

// === impl Query ===

impl Query {
    /// Parses `/stats` query parameters (`usedonly`, `filter`, `format`, `type`). The values
    /// are taken raw: pilot-agent sends regexes unencoded.
    pub fn parse(query: &str, prometheus: bool) -> Result<Self, String> {
        let mut q = Self {
            format: if prometheus {
                Format::Prometheus
            } else {
                Format::Text
            },
            ..Self::default()
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value);
            match key {
                "usedonly" => q.used_only = true,
                "filter" if !value.is_empty() => {
                    let re = regex::Regex::new(&value)
                        .map_err(|e| format!("Invalid re2 regex {value:?}: {e}"))?;
                    q.filter = Some(re);
                }
                "format" => {
                    q.format = match value.as_str() {
                        "json" => Format::Json,
                        "prometheus" => Format::Prometheus,
                        "text" | "" => Format::Text,
                        other => {
                            return Err(format!(
                                "usage: /stats?format=(html|active-html|json|prometheus|text); got {other:?}"
                            ));
                        }
                    }
                }
                "type" => {
                    q.kinds = match value.as_str() {
                        "All" | "" => Kinds::default(),
                        "Counters" => Kinds {
                            counters: true,
                            gauges: false,
                            histograms: false,
                        },
                        "Gauges" => Kinds {
                            counters: false,
                            gauges: true,
                            histograms: false,
                        },
                        "Histograms" => Kinds {
                            counters: false,
                            gauges: false,
                            histograms: true,
                        },
                        "TextReadouts" => Kinds {
                            counters: false,
                            gauges: false,
                            histograms: false,
                        },
                        other => return Err(format!("invalid type {other:?}")),
                    }
                }
                _ => {}
            }
        }
        Ok(q)
    }

    fn wants(&self, name: &str) -> bool {
        self.filter.as_ref().is_none_or(|re| re.is_match(name))
    }
}

/// `%XX` decoding (lossy), for values that clients did encode.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied(),
            bytes.get(i + 2).copied(),
        ) {
            (b'%', Some(a), Some(b)) if hex(a).is_some() && hex(b).is_some() => {
                let v = hex(a).unwrap_or(0) * 16 + hex(b).unwrap_or(0);
                out.push(v as u8);
                i += 3;
            }
            (b, ..) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A snapshot of one histogram: cumulative counts per bucket.
struct HistogramValues<'a> {
    cell: &'a HistogramCell,
    cumulative: Vec<u64>,
    count: u64,
    sum: u64,
}

impl<'a> HistogramValues<'a> {
    fn read(cell: &'a HistogramCell) -> Self {
        let mut running = 0;
        let cumulative = cell
            .buckets
            .iter()
            .map(|b| {
                running += b.load(Ordering::Relaxed);
                running
            })
            .collect();
        Self {
            cell,
            cumulative,
            count: cell.count.load(Ordering::Relaxed),
            sum: cell.sum.load(Ordering::Relaxed),
        }
    }

    /// An estimate of quantile `q` (0-100) by linear interpolation within buckets.
    fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q / 100.0) * self.count as f64;
        let bounds = self.cell.bounds;
        let mut lower = 0.0;
        let mut below = 0u64;
        for (i, &cum) in self.cumulative.iter().enumerate() {
            let upper = bounds.get(i).copied().unwrap_or(lower * 2.0 + 1.0);
            if cum as f64 >= rank && cum > below {
                let frac = (rank - below as f64) / (cum - below) as f64;
                return Some(lower + (upper - lower) * frac.clamp(0.0, 1.0));
            }
            below = cum;
            lower = upper;
        }
        Some(lower)
    }
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

// === impl Store ===

impl Store {
    /// Renders the stats as `/stats` or `/stats/prometheus` would.
    pub fn render(&self, query: &Query) -> String {
        let external = self.external();
        let ext: Vec<Scalar> = external
            .iter()
            .filter_map(|e| match e {
                External::Counter(n, v) if query.kinds.counters => {
                    Some(Scalar::counter(n, *v, self))
                }
                External::Gauge(n, v) if query.kinds.gauges => Some(Scalar::gauge(n, *v, self)),
                _ => None,
            })
            .filter(|s| query.wants(&s.name))
            .collect();
        let texts: Vec<(&str, &str)> = external
            .iter()
            .filter_map(|e| match e {
                External::Text(n, v) if query.wants(n) => Some((n.as_str(), v.as_str())),
                _ => None,
            })
            .collect();
        let reg = self.registry();
        match query.format {
            Format::Text => render_text(&reg, query, &ext, &texts),
            Format::Json => render_json(&reg, query, &ext, &texts),
            Format::Prometheus => render_prometheus(&reg, &self.0.tags, query, &ext),
        }
    }

    /// The current value of a counter or gauge, if it exists (for tests and readiness).
    pub fn value(&self, name: &str) -> Option<u64> {
        let reg = self.registry();
        reg.counters
            .get(name)
            .map(|c| c.value.load(Ordering::Relaxed))
            .or_else(|| {
                reg.gauges
                    .get(name)
                    .map(|g| g.value.load(Ordering::Relaxed))
            })
    }
}

/// An external counter or gauge, with its tag-extracted form for Prometheus.
struct Scalar {
    name: String,
    value: u64,
    counter: bool,
    tagged: Tagged,
}

impl Scalar {
    fn counter(name: &str, value: u64, store: &Store) -> Self {
        Self {
            name: name.to_string(),
            value,
            counter: true,
            tagged: store.0.tags.produce(name),
        }
    }

    fn gauge(name: &str, value: u64, store: &Store) -> Self {
        Self {
            counter: false,
            ..Self::counter(name, value, store)
        }
    }
}

/// Counters and gauges that pass the query, merged and sorted by name.
fn scalars<'a>(reg: &'a Registry, query: &'a Query, ext: &'a [Scalar]) -> Vec<(&'a str, u64)> {
    let mut out: Vec<(&str, u64)> = Vec::new();
    if query.kinds.counters {
        for (name, c) in &reg.counters {
            if (!query.used_only || c.used.load(Ordering::Relaxed)) && query.wants(name) {
                out.push((name, c.value.load(Ordering::Relaxed)));
            }
        }
    }
    if query.kinds.gauges {
        for (name, g) in &reg.gauges {
            if (!query.used_only || g.used.load(Ordering::Relaxed)) && query.wants(name) {
                out.push((name, g.value.load(Ordering::Relaxed)));
            }
        }
    }
    out.extend(ext.iter().map(|s| (s.name.as_str(), s.value)));
    out.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out
}

fn histograms<'a>(reg: &'a Registry, query: &Query) -> Vec<HistogramValues<'a>> {
    if !query.kinds.histograms {
        return Vec::new();
    }
    reg.histograms
        .iter()
        .filter(|(name, _)| query.wants(name))
        .map(|(_, h)| HistogramValues::read(h))
        .filter(|h| !query.used_only || h.count > 0)
        .collect()
}

fn render_text(reg: &Registry, query: &Query, ext: &[Scalar], texts: &[(&str, &str)]) -> String {
    let mut out = String::new();
    let mut lines: Vec<(&str, String)> = scalars(reg, query, ext)
        .into_iter()
        .map(|(n, v)| (n, v.to_string()))
        .collect();
    lines.extend(texts.iter().map(|(n, v)| (*n, format!("{v:?}"))));
    lines.sort_by(|a, b| a.0.cmp(b.0));
    for (name, value) in lines {
        let _ = writeln!(out, "{name}: {value}");
    }
    for h in histograms(reg, query) {
        let _ = write!(out, "{}: ", h.cell.meta.name);
        if h.count == 0 {
            out.push_str("No recorded values\n");
            continue;
        }
        let parts: Vec<String> = QUANTILES
            .iter()
            .map(|&q| {
                let v = h.quantile(q).map_or_else(|| "nan".to_string(), fmt_num);
                format!("P{}({v},{v})", fmt_num(q))
            })
            .collect();
        out.push_str(&parts.join(" "));
        out.push('\n');
    }
    out
}

fn render_json(reg: &Registry, query: &Query, ext: &[Scalar], texts: &[(&str, &str)]) -> String {
    let mut rows: Vec<(&str, serde_json::Value)> = scalars(reg, query, ext)
        .into_iter()
        .map(|(name, value)| (name, serde_json::json!({ "name": name, "value": value })))
        .collect();
    rows.extend(
        texts
            .iter()
            .map(|(name, value)| (*name, serde_json::json!({ "name": name, "value": value }))),
    );
    rows.sort_by(|a, b| a.0.cmp(b.0));
    let mut stats: Vec<serde_json::Value> = rows.into_iter().map(|(_, v)| v).collect();
    let hists = histograms(reg, query);
    if query.kinds.histograms {
        let computed: Vec<serde_json::Value> = hists
            .iter()
            .map(|h| {
                let values: Vec<serde_json::Value> = QUANTILES
                    .iter()
                    .map(|&q| {
                        let v = h.quantile(q);
                        serde_json::json!({ "interval": v, "cumulative": v })
                    })
                    .collect();
                serde_json::json!({ "name": &*h.cell.meta.name, "values": values })
            })
            .collect();
        stats.push(serde_json::json!({
            "histograms": { "supported_quantiles": QUANTILES, "computed_quantiles": computed }
        }));
    }
    serde_json::json!({ "stats": stats }).to_string()
}

/// `[a-zA-Z0-9_]` kept, everything else `_`, as Envoy's Prometheus formatter does.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn labels(tags: &[(String, String)], extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = tags
        .iter()
        .map(|(k, v)| format!("{}=\"{}\"", sanitize(k), escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    format!("{{{}}}", parts.join(","))
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn external_row(s: &Scalar, metric: &dyn Fn(&Tagged) -> String) -> (String, String) {
    let m = metric(&s.tagged);
    let line = format!("{m}{} {}\n", labels(&s.tagged.tags, None), s.value);
    (m, line)
}

fn render_prometheus(reg: &Registry, tags: &TagProducer, query: &Query, ext: &[Scalar]) -> String {
    let mut out = String::new();
    let mut section = |kind: &str, rows: Vec<(String, String)>| {
        // Group by metric name; keep one TYPE line per name.
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (metric, line) in rows {
            groups.entry(metric).or_default().push(line);
        }
        for (metric, lines) in groups {
            let _ = writeln!(out, "# TYPE {metric} {kind}");
            for line in lines {
                out.push_str(&line);
            }
        }
    };
    let metric = |tagged: &Tagged| {
        if tagged.custom_namespace {
            sanitize(&tagged.name)
        } else {
            format!("envoy_{}", sanitize(&tagged.name))
        }
    };
    let keep = |used: bool, name: &str| (!query.used_only || used) && query.wants(name);

    if query.kinds.counters {
        let rows = reg
            .counters
            .values()
            .filter(|c| keep(c.used.load(Ordering::Relaxed), &c.meta.name))
            .map(|c| {
                let tagged = c.meta.tagged(tags);
                let m = metric(tagged);
                let v = c.value.load(Ordering::Relaxed);
                (
                    m.clone(),
                    format!("{m}{} {v}\n", labels(&tagged.tags, None)),
                )
            })
            .chain(
                ext.iter()
                    .filter(|s| s.counter)
                    .map(|s| external_row(s, &metric)),
            )
            .collect();
        section("counter", rows);
    }
    if query.kinds.gauges {
        let rows = reg
            .gauges
            .values()
            .filter(|g| keep(g.used.load(Ordering::Relaxed), &g.meta.name))
            .map(|g| {
                let tagged = g.meta.tagged(tags);
                let m = metric(tagged);
                let v = g.value.load(Ordering::Relaxed);
                (
                    m.clone(),
                    format!("{m}{} {v}\n", labels(&tagged.tags, None)),
                )
            })
            .chain(
                ext.iter()
                    .filter(|s| !s.counter)
                    .map(|s| external_row(s, &metric)),
            )
            .collect();
        section("gauge", rows);
    }
    let rows = histograms(reg, query)
        .into_iter()
        .map(|h| {
            let tagged = h.cell.meta.tagged(tags);
            let m = metric(tagged);
            let tags = &tagged.tags;
            let mut text = String::new();
            for (i, cum) in h.cumulative.iter().enumerate() {
                let le = h
                    .cell
                    .bounds
                    .get(i)
                    .map_or_else(|| "+Inf".to_string(), |b| fmt_num(*b));
                let _ = writeln!(text, "{m}_bucket{} {cum}", labels(tags, Some(("le", &le))));
            }
            let _ = writeln!(text, "{m}_sum{} {}", labels(tags, None), h.sum);
            let _ = writeln!(text, "{m}_count{} {}", labels(tags, None), h.count);
            (m, text)
        })
        .collect();
    section("histogram", rows);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        let s = Store::new(None).unwrap();
        s.counter("cluster.backend.upstream_cx_total").add(3);
        s.counter("cluster.backend.upstream_cx_connect_fail");
        s.gauge("server.state").set(0);
        s.gauge("cluster.backend.upstream_cx_active").set(2);
        let h = s.histogram("cluster.backend.upstream_cx_connect_ms");
        for v in [1, 2, 3, 40] {
            h.record(v);
        }
        s.histogram("cluster.backend.upstream_cx_length_ms");
        s
    }

    #[test]
    fn text_is_sorted_scalars_then_histograms() {
        let text = store().render(&Query::default());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "cluster.backend.upstream_cx_active: 2");
        assert_eq!(lines[1], "cluster.backend.upstream_cx_connect_fail: 0");
        assert_eq!(lines[2], "cluster.backend.upstream_cx_total: 3");
        assert_eq!(lines[3], "server.state: 0");
        assert!(lines[4].starts_with("cluster.backend.upstream_cx_connect_ms: P0("));
        assert_eq!(
            lines[5],
            "cluster.backend.upstream_cx_length_ms: No recorded values"
        );
    }

    #[test]
    fn usedonly_and_filter_like_pilot_agent_uses_them() {
        let s = store();
        let q = Query::parse(
            r"usedonly&filter=^(server\.state|listener_manager\.workers_started)",
            false,
        )
        .unwrap();
        assert_eq!(s.render(&q), "server.state: 0\n");
        let q = Query::parse("usedonly", false).unwrap();
        let text = s.render(&q);
        assert!(!text.contains("connect_fail"), "never written: {text}");
        assert!(!text.contains("length_ms"), "{text}");
        assert!(Query::parse("filter=(", false).is_err());
    }

    #[test]
    fn prometheus_names_labels_and_histograms() {
        let text = store().render(&Query::parse("", true).unwrap());
        assert!(
            text.starts_with("# TYPE envoy_cluster_upstream_cx_connect_fail counter\n"),
            "{text}"
        );
        assert!(
            text.contains("envoy_cluster_upstream_cx_total{envoy_cluster_name=\"backend\"} 3\n")
        );
        assert!(text.contains("# TYPE envoy_server_state gauge\nenvoy_server_state{} 0\n"));
        assert!(text.contains(
            "envoy_cluster_upstream_cx_connect_ms_bucket{envoy_cluster_name=\"backend\",le=\"0.5\"} 0\n"
        ));
        assert!(text.contains(
            "envoy_cluster_upstream_cx_connect_ms_bucket{envoy_cluster_name=\"backend\",le=\"5\"} 3\n"
        ));
        assert!(text.contains(
            "envoy_cluster_upstream_cx_connect_ms_bucket{envoy_cluster_name=\"backend\",le=\"+Inf\"} 4\n"
        ));
        assert!(text.contains(
            "envoy_cluster_upstream_cx_connect_ms_sum{envoy_cluster_name=\"backend\"} 46\n"
        ));
        let counters = text.find("counter").unwrap();
        let gauges = text.find(" gauge").unwrap();
        let hist = text.find(" histogram").unwrap();
        assert!(counters < gauges && gauges < hist);
    }

    #[test]
    fn external_stats_are_rendered_with_the_rest() {
        let s = store();
        s.add_source(Box::new(|| {
            vec![
                External::Counter("cluster_manager.cds.update_success".into(), 2),
                External::Text("cluster_manager.cds.version_text".into(), "v7".into()),
            ]
        }));
        let text = s.render(&Query::parse(r"filter=^cluster_manager\.cds", false).unwrap());
        assert_eq!(
            text,
            "cluster_manager.cds.update_success: 2\ncluster_manager.cds.version_text: \"v7\"\n"
        );
        let prom = s.render(&Query::parse("", true).unwrap());
        assert!(
            prom.contains("envoy_cluster_manager_cds_update_success{} 2\n"),
            "{prom}"
        );
    }

    #[test]
    fn json_shape() {
        let json: serde_json::Value =
            serde_json::from_str(&store().render(&Query::parse("format=json", false).unwrap()))
                .unwrap();
        let stats = json["stats"].as_array().unwrap();
        assert_eq!(stats[0]["name"], "cluster.backend.upstream_cx_active");
        let h = &stats.last().unwrap()["histograms"];
        assert_eq!(h["supported_quantiles"].as_array().unwrap().len(), 10);
        assert_eq!(
            h["computed_quantiles"][1]["values"][0]["cumulative"],
            serde_json::Value::Null
        );
    }
}
