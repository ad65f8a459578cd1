//! Running one scenario with one proxy: start the chain, verify it, warm it up, measure.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use super::bootstrap::{Pki, bootstraps};
use super::client::{self, Load, Outcome, Work};
use super::process::{Kind, Proxy};
use super::scenario::Scenario;
use super::upstream::Upstreams;
use super::verify;

/// Settings shared by every scenario of a run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Our proxy's binary.
    pub ours: PathBuf,
    /// Envoy's binary.
    pub envoy: PathBuf,
    /// Measured time per scenario and proxy per round.
    pub duration: Duration,
    /// Unmeasured load before measuring.
    pub warmup: Duration,
    /// Connections for scenarios that do not fix their own.
    pub connections: usize,
    /// Total requests per second of fixed-rate scenarios.
    pub rate: f64,
    /// `taskset -c` list for the proxies, if pinning.
    pub proxy_cpus: Option<String>,
    /// The backends.
    pub upstreams: Upstreams,
    /// Certificates.
    pub pki: Pki,
}

/// What one scenario measured for one proxy (or direct), summed over rounds.
#[derive(Debug, Clone)]
pub struct Measured {
    /// The load generator's view.
    pub outcome: Outcome,
    /// CPU seconds all proxies in the path used during the measured window.
    pub cpu_seconds: f64,
    /// Largest per-proxy RSS after start-up and verification, before load (bytes).
    pub idle_rss: u64,
    /// Largest per-proxy RSS at the end of the load (bytes).
    pub load_rss: u64,
    /// Largest per-proxy peak RSS, VmHWM (bytes).
    pub peak_rss: u64,
}

impl Measured {
    /// Adds another round.
    pub fn merge(&mut self, other: Measured) {
        self.outcome.requests += other.outcome.requests;
        self.outcome.errors += other.outcome.errors;
        self.outcome.bytes += other.outcome.bytes;
        self.outcome.elapsed += other.outcome.elapsed;
        let _ = self.outcome.latency.add(&other.outcome.latency);
        if self.outcome.first_error.is_none() {
            self.outcome.first_error = other.outcome.first_error;
        }
        self.cpu_seconds += other.cpu_seconds;
        self.idle_rss = self.idle_rss.max(other.idle_rss);
        self.load_rss = self.load_rss.max(other.load_rss);
        self.peak_rss = self.peak_rss.max(other.peak_rss);
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The backend a workload talks to.
fn backend(work: Work, up: &Upstreams) -> SocketAddr {
    match work {
        Work::Echo { .. } | Work::EchoHold { .. } | Work::EchoNewConn { .. } => up.echo,
        Work::Bulk { .. } => up.bulk,
        Work::Http1 { .. } | Work::Http2 { .. } => up.http,
    }
}

fn load(sc: &Scenario, set: &Settings, target: SocketAddr, duration: Duration) -> Load {
    Load {
        work: sc.work,
        target,
        connections: if sc.connections == 0 {
            set.connections
        } else {
            sc.connections
        },
        duration,
        rate: sc.fixed_rate.then_some(set.rate),
    }
}

/// Runs `sc` once with `kind` (ignored for direct scenarios). `Err` is the one-line reason
/// the proxy could not run it (unsupported config, failed verification, crash).
pub fn measure(sc: &Scenario, kind: Kind, set: &Settings) -> Result<Measured, String> {
    let backend = backend(sc.work, &set.upstreams);
    let n = sc.topology.proxies();
    let ports = (0..n)
        .map(|_| free_port())
        .collect::<std::io::Result<Vec<u16>>>()
        .map_err(|e| e.to_string())?;
    let configs = bootstraps(sc.topology, &ports, backend.port(), &set.pki);
    let binary = match kind {
        Kind::Envoy => &set.envoy,
        Kind::Ours => &set.ours,
    };
    // Start from the backend side so each hop's upstream is listening.
    let mut proxies = Vec::with_capacity(n);
    for config in configs.iter().rev() {
        let proxy = Proxy::start(binary, config, set.proxy_cpus.as_deref())
            .map_err(|e| format!("unsupported config: {}", e.summary))?;
        proxies.push(proxy);
    }
    let target = match ports.first() {
        Some(&port) => SocketAddr::from(([127, 0, 0, 1], port)),
        None => backend,
    };

    // Prove the path carries requests correctly, and for mTLS that it is really mTLS + RBAC.
    verify::carries(sc.work, target).map_err(|e| format!("failed verification: {e}"))?;
    if sc.topology.mtls() {
        let server = SocketAddr::from(([127, 0, 0, 1], ports[1]));
        verify::enforces_mtls(server, sc.work, &set.pki)
            .map_err(|e| format!("failed verification: {e}"))?;
    }

    let idle_rss = proxies.iter().map(|p| p.memory().rss).max().unwrap_or(0);
    if !set.warmup.is_zero() {
        client::run(load(sc, set, target, set.warmup)).map_err(|e| e.to_string())?;
    }
    let cpu_before: f64 = proxies.iter().map(Proxy::cpu_seconds).sum();
    let outcome = client::run(load(sc, set, target, set.duration)).map_err(|e| e.to_string())?;
    let cpu_seconds = proxies.iter().map(Proxy::cpu_seconds).sum::<f64>() - cpu_before;
    let load_rss = proxies.iter().map(|p| p.memory().rss).max().unwrap_or(0);
    let peak_rss = proxies.iter().map(|p| p.memory().hwm).max().unwrap_or(0);
    for p in &mut proxies {
        if !p.alive() {
            return Err(format!(
                "{} exited under load: {}",
                kind.name(),
                p.log().lines().last().unwrap_or_default()
            ));
        }
    }
    Ok(Measured {
        outcome,
        cpu_seconds,
        idle_rss,
        load_rss,
        peak_rss,
    })
}
