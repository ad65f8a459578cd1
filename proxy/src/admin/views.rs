//! The simple admin views: help, `/server_info`, `/clusters`, `/listeners`, `/memory`,
//! `/logging`, in Envoy's text and JSON shapes.

use std::net::SocketAddr;

use clap::ValueEnum;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Reply, post_only, text};
use crate::cli::LogLevel;
use crate::server::Shared;
use crate::upstream::host::HostAddr;

const ENDPOINTS: &[(&str, &str)] = &[
    ("/", "this help"),
    ("/certs", "print certs on machine"),
    ("/clusters", "upstream cluster status"),
    ("/config_dump", "dump current Envoy configs"),
    (
        "/drain_listeners",
        "drain listeners (POST; ?inboundonly, ?graceful)",
    ),
    (
        "/healthcheck/fail",
        "cause the server to fail health checks (POST)",
    ),
    (
        "/healthcheck/ok",
        "cause the server to pass health checks (POST)",
    ),
    ("/listeners", "print listener info"),
    ("/logging", "query/change logging levels"),
    ("/memory", "print current allocation/heap usage"),
    ("/quitquitquit", "exit the server (POST)"),
    (
        "/ready",
        "print server state, return 200 if LIVE, otherwise return 503",
    ),
    ("/runtime", "print runtime values"),
    ("/server_info", "print server version/status information"),
    (
        "/stats",
        "print server stats (?usedonly, ?filter=<regex>, ?format=json)",
    ),
    (
        "/stats/prometheus",
        "print server stats in prometheus format",
    ),
];

pub fn help() -> String {
    ENDPOINTS
        .iter()
        .map(|(path, what)| format!("  {path}: {what}\n"))
        .collect()
}

fn duration_json(d: std::time::Duration) -> String {
    format!("{}s", d.as_secs())
}

pub fn server_info(shared: &Shared) -> Value {
    let o = &shared.options;
    let node = shared
        .bootstrap
        .node
        .as_ref()
        .and_then(|n| crate::proto::encode(n).ok())
        .unwrap_or_else(|| json!({}));
    let uptime = format!("{}s", shared.state.uptime_secs());
    json!({
        "version": crate::cli::version_line("").trim_start().trim_start_matches("version: "),
        "state": shared.state.get().name(),
        "uptime_current_epoch": uptime,
        "uptime_all_epochs": uptime,
        "hot_restart_version": "disabled",
        "command_line_options": command_line_options(o),
        "node": node,
        "hot_restart_initializing": false,
    })
}

/// Envoy's `CommandLineOptions` as `/server_info` shows them. Hot restart, mutex tracing
/// and core dumps do not exist here; they show Envoy's values for a process without them.
fn command_line_options(o: &crate::cli::Options) -> Value {
    let path = |p: &Option<std::path::PathBuf>| {
        p.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    let node = &o.bootstrap.node;
    let components = o
        .log
        .components
        .iter()
        .map(|(c, l)| format!("{c}:{}", level_name(*l)))
        .collect::<Vec<_>>()
        .join(",");
    json!({
        "base_id": "0",
        "concurrency": o.concurrency,
        "config_path": path(&o.bootstrap.config_path),
        "config_yaml": o.bootstrap.config_yaml.clone().unwrap_or_default(),
        "allow_unknown_static_fields": o.bootstrap.unknown_fields == crate::proto::UnknownFields::Ignore,
        "admin_address_path": path(&o.admin_address_path),
        "local_address_ip_version": match o.local_address_ip_version {
            crate::cli::IpVersion::V4 => "v4",
            crate::cli::IpVersion::V6 => "v6",
        },
        "log_level": level_name(o.log.level),
        "component_log_level": components,
        "log_format": o.log.format.clone().unwrap_or_else(|| "[%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v".into()),
        "log_path": path(&o.log.path),
        "service_cluster": node.cluster.clone().unwrap_or_default(),
        "service_node": node.id.clone().unwrap_or_default(),
        "service_zone": node.zone.clone().unwrap_or_default(),
        "file_flush_interval": duration_json(o.file_flush_interval),
        "drain_time": duration_json(o.drain_time),
        "parent_shutdown_time": duration_json(o.parent_shutdown_time),
        "mode": match o.mode {
            crate::cli::Mode::Serve => "Serve",
            crate::cli::Mode::Validate => "Validate",
            crate::cli::Mode::InitOnly => "InitOnly",
        },
        "disable_hot_restart": true,
        "enable_mutex_tracing": false,
        "restart_epoch": 0,
        "cpuset_threads": false,
        "reject_unknown_dynamic_fields": o.dynamic_unknown_fields == crate::cli::DynamicUnknownFields::Reject,
        "log_format_escaped": o.log.format_escaped,
        "disabled_extensions": [],
        "ignore_unknown_dynamic_fields": o.dynamic_unknown_fields == crate::cli::DynamicUnknownFields::Ignore,
        "use_dynamic_base_id": false,
        "base_id_path": "",
        "drain_strategy": match o.drain_strategy {
            crate::cli::DrainStrategy::Gradual => "Gradual",
            crate::cli::DrainStrategy::Immediate => "Immediate",
        },
        "enable_fine_grain_logging": false,
        "socket_path": "@envoy_domain_socket",
        "socket_mode": 0,
        "enable_core_dump": false,
        "stats_tag": o.stats_tags.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>(),
        "skip_hot_restart_on_no_parent": false,
        "skip_hot_restart_parent_stats": false,
        "skip_deprecated_logs": false,
        "file_flush_min_size": o.file_flush_min_size_kb.unwrap_or(0),
        "log_stacktrace_single_entry": false,
    })
}

fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Trace => "trace",
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warning => "warning",
        LogLevel::Error => "error",
        LogLevel::Critical => "critical",
        LogLevel::Off => "off",
    }
}

fn addr_json(addr: &HostAddr) -> Value {
    match addr {
        HostAddr::Ip(a) => {
            json!({ "socket_address": { "address": a.ip().to_string(), "port_value": a.port() } })
        }
        HostAddr::Pipe(p) => json!({ "pipe": { "path": p.display().to_string() } }),
    }
}

/// `/clusters` as text: thresholds, then one block of lines per host.
pub fn clusters_text(shared: &Shared) -> String {
    let mut out = String::new();
    for c in shared.clusters.all() {
        let name = c.name();
        let t = &c.config.thresholds;
        out.push_str(&format!(
            "{name}::observability_name::{}\n",
            c.config.stat_name
        ));
        for prio in ["default_priority", "high_priority"] {
            out.push_str(&format!(
                "{name}::{prio}::max_connections::{}\n",
                t.max_connections
            ));
            out.push_str(&format!(
                "{name}::{prio}::max_pending_requests::{}\n",
                t.max_pending_requests
            ));
            out.push_str(&format!(
                "{name}::{prio}::max_requests::{}\n",
                t.max_requests
            ));
            out.push_str(&format!("{name}::{prio}::max_retries::{}\n", t.max_retries));
        }
        out.push_str(&format!(
            "{name}::added_via_api::{}\n",
            !shared.clusters.is_static(name)
        ));
        for h in &c.hosts().all {
            let a = &h.addr;
            let line = |k: &str, v: String| format!("{name}::{a}::{k}::{v}\n");
            for (stat, value, _) in h.stats.snapshot(h.active()) {
                out.push_str(&line(stat, value.to_string()));
            }
            out.push_str(&line("hostname", h.hostname.clone()));
            out.push_str(&line("health_flags", health_flags(h.health).into()));
            out.push_str(&line("weight", h.weight.to_string()));
            let loc = h.locality.as_deref();
            out.push_str(&line("region", loc.map_or("", |l| &l.region).into()));
            out.push_str(&line("zone", loc.map_or("", |l| &l.zone).into()));
            out.push_str(&line("sub_zone", loc.map_or("", |l| &l.sub_zone).into()));
            out.push_str(&line("canary", "false".into()));
            out.push_str(&line("priority", h.priority.to_string()));
            // No outlier detection yet: Envoy reports -1 when success rate is not computed.
            out.push_str(&line("success_rate", "-1".into()));
            out.push_str(&line("local_origin_success_rate", "-1".into()));
        }
    }
    out
}

fn health_flags(h: crate::config::endpoint::Health) -> &'static str {
    match h {
        crate::config::endpoint::Health::Healthy => "healthy",
        crate::config::endpoint::Health::Degraded => "/degraded_eds_health",
        crate::config::endpoint::Health::Unhealthy => "/failed_eds_health",
    }
}

/// A host's stats as Envoy's JSON lists them: counters, then gauges (zero values omitted).
fn host_stats_json(h: &crate::upstream::host::Host) -> Value {
    let snapshot = h.stats.snapshot(h.active());
    let mut out = Vec::new();
    for (name, value, gauge) in snapshot
        .iter()
        .filter(|s| !s.2)
        .chain(snapshot.iter().filter(|s| s.2))
    {
        let mut stat = serde_json::Map::new();
        if *gauge {
            stat.insert("type".into(), "GAUGE".into());
        }
        stat.insert("name".into(), (*name).into());
        if *value != 0 {
            stat.insert("value".into(), (*value).into());
        }
        out.push(Value::Object(stat));
    }
    Value::Array(out)
}

/// A locality as proto JSON (empty fields omitted).
fn locality_json(l: Option<&envoy_types::pb::envoy::config::core::v3::Locality>) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(l) = l {
        for (k, v) in [
            ("region", &l.region),
            ("zone", &l.zone),
            ("sub_zone", &l.sub_zone),
        ] {
            if !v.is_empty() {
                out.insert(k.into(), v.as_str().into());
            }
        }
    }
    Value::Object(out)
}

/// `/clusters?format=json`: Envoy's `ClusterStatuses`.
pub fn clusters_json(shared: &Shared) -> Value {
    let statuses: Vec<Value> = shared
        .clusters
        .all()
        .iter()
        .map(|c| {
            let t = &c.config.thresholds;
            let hosts: Vec<Value> = c
                .hosts()
                .all
                .iter()
                .map(|h| {
                    let mut host = json!({
                        "address": addr_json(&h.addr),
                        "stats": host_stats_json(h),
                        "health_status": { "eds_health_status": match h.health {
                            crate::config::endpoint::Health::Healthy => "HEALTHY",
                            crate::config::endpoint::Health::Degraded => "DEGRADED",
                            crate::config::endpoint::Health::Unhealthy => "UNHEALTHY",
                        } },
                        "weight": h.weight,
                        "locality": locality_json(h.locality.as_deref()),
                    });
                    // Proto JSON leaves out default values, as Envoy's output does.
                    if !h.hostname.is_empty() {
                        host["hostname"] = h.hostname.clone().into();
                    }
                    if h.priority != 0 {
                        host["priority"] = h.priority.into();
                    }
                    host
                })
                .collect();
            json!({
                "name": c.name(),
                "added_via_api": !shared.clusters.is_static(c.name()),
                "host_statuses": hosts,
                "circuit_breakers": { "thresholds": [
                    { "max_connections": t.max_connections, "max_pending_requests": t.max_pending_requests,
                      "max_requests": t.max_requests, "max_retries": t.max_retries },
                    { "priority": "HIGH", "max_connections": t.max_connections, "max_pending_requests": t.max_pending_requests,
                      "max_requests": t.max_requests, "max_retries": t.max_retries },
                ] },
                "observability_name": c.config.stat_name,
            })
        })
        .collect();
    json!({ "cluster_statuses": statuses })
}

fn listener_addresses(shared: &Shared) -> Vec<(String, SocketAddr)> {
    shared
        .listeners
        .all()
        .iter()
        .map(|l| (l.name().to_string(), l.config.address))
        .collect()
}

pub fn listeners_text(shared: &Shared) -> String {
    listener_addresses(shared)
        .into_iter()
        .map(|(name, addr)| format!("{name}::{addr}\n"))
        .collect()
}

pub fn listeners_json(shared: &Shared) -> Value {
    let statuses: Vec<Value> = listener_addresses(shared)
        .into_iter()
        .map(
            |(name, addr)| json!({ "name": name, "local_address": addr_json(&HostAddr::Ip(addr)) }),
        )
        .collect();
    json!({ "listener_statuses": statuses })
}

/// `/memory`: this process's resident memory (we use the system allocator, so the tcmalloc
/// breakdown Envoy reports is not available; the totals are).
pub fn memory() -> Value {
    let resident = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096);
    json!({
        "allocated": resident.to_string(),
        "heap_size": resident.to_string(),
        "pageheap_unmapped": "0",
        "pageheap_free": "0",
        "total_thread_cache": "0",
        "total_physical_bytes": resident.to_string(),
    })
}

/// `/logging`: lists the level; `POST /logging?level=<level>` changes it.
pub fn logging(shared: &Shared, method: &Method, query: &str) -> Reply {
    let requested = super::query_value(query, "level");
    if let Some(level) = requested {
        if let Some(r) = post_only(method) {
            return r;
        }
        let Ok(parsed) = LogLevel::from_str(&level, true) else {
            return text(
                StatusCode::BAD_REQUEST,
                format!("error: unknown log level {level:?}\n"),
            );
        };
        if let Some(log) = &shared.log
            && let Err(e) = log.set_level(parsed)
        {
            return text(StatusCode::INTERNAL_SERVER_ERROR, format!("error: {e}\n"));
        }
    }
    let level = shared
        .log
        .as_ref()
        .map_or(shared.options.log.level, |l| l.level());
    let mut out = String::from("active loggers:\n");
    for name in [
        "admin",
        "config",
        "connection",
        "main",
        "misc",
        "pool",
        "router",
        "upstream",
    ] {
        out.push_str(&format!("  {name}: {}\n", level_name(level)));
    }
    text(StatusCode::OK, out)
}
