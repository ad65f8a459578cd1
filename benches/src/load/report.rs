//! The Markdown table (long format: one row per scenario and metric) and the JSON report.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::client::Work;
use super::run::Measured;
use super::scenario::{Scenario, Unit};

/// One scenario's results: direct (no proxy), or Envoy and ours.
#[derive(Debug, Clone, Default)]
pub struct Results {
    /// The direct measurement (for direct scenarios).
    pub direct: Option<Result<Measured, String>>,
    /// Envoy's.
    pub envoy: Option<Result<Measured, String>>,
    /// Ours.
    pub ours: Option<Result<Measured, String>>,
}

/// Whether a bigger value is better.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
    /// Not a figure of merit (the rate a fixed-rate run achieved): no ratio.
    Neither,
}

struct Row {
    metric: String,
    better: Better,
    value: fn(&Measured, Unit) -> Option<f64>,
    digits: usize,
}

const MIB: f64 = 1024.0 * 1024.0;

fn rows(sc: &Scenario) -> Vec<Row> {
    let mut rows = Vec::new();
    let row = |metric: &str,
               better: Better,
               value: fn(&Measured, Unit) -> Option<f64>,
               digits: usize| Row {
        metric: metric.to_string(),
        better,
        value,
        digits,
    };
    if matches!(sc.work, Work::EchoHold { .. }) {
        // Only memory matters here; say how many connections were really held open.
        rows.push(row(
            "connections opened",
            Better::Neither,
            |m, _| Some(m.outcome.requests as f64),
            0,
        ));
    } else if !sc.fixed_rate {
        match sc.unit {
            Unit::Requests => {
                rows.push(row(
                    "req/s",
                    Better::Higher,
                    |m, _| Some(m.outcome.rps()),
                    0,
                ));
                rows.push(row(
                    "proxy CPU ms / 1k req",
                    Better::Lower,
                    |m, _| {
                        (m.outcome.requests > 0)
                            .then(|| m.cpu_seconds * 1e6 / m.outcome.requests as f64)
                    },
                    1,
                ));
            }
            Unit::Bytes => {
                rows.push(row(
                    "Gbit/s",
                    Better::Higher,
                    |m, _| Some(m.outcome.gbps()),
                    2,
                ));
                rows.push(row(
                    "proxy CPU s / GB",
                    Better::Lower,
                    |m, _| {
                        (m.outcome.bytes > 0).then(|| m.cpu_seconds * 1e9 / m.outcome.bytes as f64)
                    },
                    2,
                ));
            }
        }
        rows.push(row(
            "p50 µs",
            Better::Lower,
            |m, _| Some(m.outcome.quantile_us(0.5)),
            0,
        ));
        rows.push(row(
            "p99 µs",
            Better::Lower,
            |m, _| Some(m.outcome.quantile_us(0.99)),
            0,
        ));
    } else {
        rows.push(row(
            "req/s achieved",
            Better::Neither,
            |m, _| Some(m.outcome.rps()),
            0,
        ));
        rows.push(row(
            "p50 µs",
            Better::Lower,
            |m, _| Some(m.outcome.quantile_us(0.5)),
            0,
        ));
        rows.push(row(
            "p90 µs",
            Better::Lower,
            |m, _| Some(m.outcome.quantile_us(0.9)),
            0,
        ));
        rows.push(row(
            "p99 µs",
            Better::Lower,
            |m, _| Some(m.outcome.quantile_us(0.99)),
            0,
        ));
        rows.push(row(
            "p99.9 µs",
            Better::Lower,
            |m, _| Some(m.outcome.quantile_us(0.999)),
            0,
        ));
        rows.push(row(
            "proxy CPU ms / 1k req",
            Better::Lower,
            |m, _| {
                (m.outcome.requests > 0).then(|| m.cpu_seconds * 1e6 / m.outcome.requests as f64)
            },
            1,
        ));
    }
    if sc.topology.proxies() > 0 {
        rows.push(row(
            "RSS idle MiB (max per proxy)",
            Better::Lower,
            |m, _| Some(m.idle_rss as f64 / MIB),
            1,
        ));
        rows.push(row(
            "RSS under load MiB",
            Better::Lower,
            |m, _| Some(m.load_rss as f64 / MIB),
            1,
        ));
        rows.push(row(
            "RSS peak MiB (VmHWM)",
            Better::Lower,
            |m, _| Some(m.peak_rss as f64 / MIB),
            1,
        ));
    }
    rows.push(row(
        "errors",
        Better::Lower,
        |m, _| Some(m.outcome.errors as f64),
        0,
    ));
    rows
}

fn fmt_num(v: f64, digits: usize) -> String {
    let s = format!("{v:.digits$}");
    // Thousands separators on the integer part, for readability.
    let (int, frac) = s
        .split_once('.')
        .map_or((s.as_str(), None), |(i, f)| (i, Some(f)));
    let (sign, int) = int.strip_prefix('-').map_or(("", int), |i| ("-", i));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

fn cell(r: &Option<Result<Measured, String>>, row: &Row, unit: Unit) -> (String, Option<f64>) {
    match r {
        None => ("".into(), None),
        Some(Err(_)) => ("—".into(), None),
        Some(Ok(m)) => match (row.value)(m, unit) {
            Some(v) => (fmt_num(v, row.digits), Some(v)),
            None => ("n/a".into(), None),
        },
    }
}

/// The Markdown report: a header, then one table row per scenario and metric. For
/// fixed-rate scenarios with a direct baseline it adds the latency the proxies add.
pub fn markdown(header: &str, results: &[(Scenario, Results)]) -> String {
    let by_id: BTreeMap<&str, &Results> = results.iter().map(|(s, r)| (s.id, r)).collect();
    let mut out = String::new();
    let _ = writeln!(out, "{header}");
    let _ = writeln!(
        out,
        "| scenario | metric | direct | Envoy | ours | ours/Envoy |"
    );
    let _ = writeln!(out, "|---|---|--:|--:|--:|--:|");
    for (sc, r) in results {
        let _ = writeln!(out, "| **{}** | {} | | | | |", sc.id, sc.what);
        // A proxy that cannot run the scenario: one row saying why, not a row per metric.
        for (col, (who, slot)) in [
            ("direct", &r.direct),
            ("Envoy", &r.envoy),
            ("ours", &r.ours),
        ]
        .into_iter()
        .enumerate()
        {
            if let Some(Err(e)) = slot {
                let mut cells = ["", "", ""];
                let e = e.replace('|', "/");
                cells[col] = &e;
                let [d, en, o] = cells;
                let _ = writeln!(
                    out,
                    "| {} | {who} could not run it | {d} | {en} | {o} | |",
                    sc.id
                );
            }
        }
        let only_errors = [&r.direct, &r.envoy, &r.ours]
            .iter()
            .all(|s| !matches!(s, Some(Ok(_))));
        if only_errors {
            continue;
        }
        for row in rows(sc) {
            let (d, _) = cell(&r.direct, &row, sc.unit);
            let (e, ev) = cell(&r.envoy, &row, sc.unit);
            let (o, ov) = cell(&r.ours, &row, sc.unit);
            let ratio = match (ov, ev) {
                (Some(o), Some(e)) if e > 0.0 && row.better != Better::Neither => {
                    let ratio = o / e;
                    let good = match row.better {
                        Better::Higher => ratio >= 1.0,
                        Better::Lower | Better::Neither => ratio <= 1.0,
                    };
                    format!("{ratio:.2}{}", if good { "" } else { " ⚠" })
                }
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {d} | {e} | {o} | {ratio} |",
                sc.id, row.metric
            );
        }
        // Latency added over the direct baseline, the figure the targets are stated in.
        if let Some(base) = sc.baseline.and_then(|b| by_id.get(b))
            && let Some(Ok(direct)) = &base.direct
        {
            for (label, q) in [("added p50 µs", 0.5), ("added p99 µs", 0.99)] {
                let d = direct.outcome.quantile_us(q);
                let added = |r: &Option<Result<Measured, String>>| match r {
                    Some(Ok(m)) => Some(m.outcome.quantile_us(q) - d),
                    _ => None,
                };
                let (e, o) = (added(&r.envoy), added(&r.ours));
                let show = |v: Option<f64>| v.map(|v| fmt_num(v, 0)).unwrap_or_default();
                let ratio = match (o, e) {
                    (Some(o), Some(e)) if e > 0.0 && o >= 0.0 => format!("{:.2}", o / e),
                    _ => String::new(),
                };
                let _ = writeln!(
                    out,
                    "| {} | {label} (over {}) | 0 | {} | {} | {ratio} |",
                    sc.id,
                    sc.baseline.unwrap_or_default(),
                    show(e),
                    show(o)
                );
            }
        }
    }
    out
}

/// The same results as JSON, for tools.
pub fn json(results: &[(Scenario, Results)]) -> serde_json::Value {
    let one = |r: &Option<Result<Measured, String>>| match r {
        None => serde_json::Value::Null,
        Some(Err(e)) => serde_json::json!({ "error": e }),
        Some(Ok(m)) => serde_json::json!({
            "requests": m.outcome.requests,
            "errors": m.outcome.errors,
            "bytes": m.outcome.bytes,
            "seconds": m.outcome.elapsed.as_secs_f64(),
            "rps": m.outcome.rps(),
            "gbps": m.outcome.gbps(),
            "latency_us": {
                "p50": m.outcome.quantile_us(0.5),
                "p90": m.outcome.quantile_us(0.9),
                "p99": m.outcome.quantile_us(0.99),
                "p999": m.outcome.quantile_us(0.999),
                "max": m.outcome.latency.max() as f64 / 1000.0,
            },
            "proxy_cpu_seconds": m.cpu_seconds,
            "rss_idle_bytes": m.idle_rss,
            "rss_load_bytes": m.load_rss,
            "rss_peak_bytes": m.peak_rss,
            "first_error": m.outcome.first_error,
        }),
    };
    serde_json::Value::Array(
        results
            .iter()
            .map(|(sc, r)| {
                serde_json::json!({
                    "scenario": sc.id,
                    "what": sc.what,
                    "direct": one(&r.direct),
                    "envoy": one(&r.envoy),
                    "ours": one(&r.ours),
                })
            })
            .collect(),
    )
}
