//! The sidecar process: Envoy or our proxy, started the way pilot-agent starts Envoy (same
//! argv, cwd at the pod root so `./etc/istio/proxy/...` paths resolve) as uid/gid 1337
//! inside the pod's network namespace. Killed on drop.

use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cp::PROXY_UID;
use crate::cp::istiod::bootstrap::BOOTSTRAP_PATH;
use crate::netns::Netns;

/// Which binary a sidecar runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyKind {
    /// The real Envoy from the pip package.
    Envoy,
    /// Our `proxy`.
    Ours,
}

/// A sidecar that did not come up.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("cannot start {kind:?} sidecar in {pod}: {error}")]
    Spawn {
        kind: ProxyKind,
        pod: String,
        error: std::io::Error,
    },
    #[error("{kind:?} sidecar in {pod} exited ({status}) before it was LIVE; its log:\n{log}")]
    Exited {
        kind: ProxyKind,
        pod: String,
        status: String,
        log: String,
    },
    #[error("{kind:?} sidecar in {pod} was not LIVE within {timeout:?}; its log:\n{log}")]
    NotLive {
        kind: ProxyKind,
        pod: String,
        timeout: Duration,
        log: String,
    },
}

/// pilot-agent's `-l warning`, or `E2E_PROXY_LOG_LEVEL` when debugging a scenario.
fn log_level() -> String {
    std::env::var("E2E_PROXY_LOG_LEVEL").unwrap_or_else(|_| "warning".to_string())
}

/// A running sidecar.
#[derive(Debug)]
pub struct Sidecar {
    child: Child,
    pub kind: ProxyKind,
    pod: String,
    log: PathBuf,
}

/// Where Envoy's admin listens inside the pod.
pub const ADMIN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 15000);

// === impl Sidecar ===

impl Sidecar {
    /// Starts `bin` in `ns` with the bootstrap already written under `root`.
    pub fn start(
        kind: ProxyKind,
        bin: &Path,
        ns: &Netns,
        pod: &str,
        root: &Path,
    ) -> Result<Self, SidecarError> {
        let spawn_err = |error| SidecarError::Spawn {
            kind,
            pod: pod.to_string(),
            error,
        };
        let log = root.join("proxy.log");
        let out = File::create(&log).map_err(spawn_err)?;
        // The bootstrap reopens /dev/stdout (the outlier event log): the proxy's user must
        // own its output, as it owns a container's.
        std::os::unix::fs::chown(&log, Some(PROXY_UID), Some(PROXY_UID)).map_err(spawn_err)?;
        let err = out.try_clone().map_err(spawn_err)?;
        let mut cmd = Command::new(bin);
        cmd.current_dir(root)
            .args(["-c", BOOTSTRAP_PATH])
            .args(["--drain-time-s", "45", "--drain-strategy", "immediate"])
            .args(["--local-address-ip-version", "v4"])
            .args(["--file-flush-interval-msec", "1000"])
            .args(["--disable-hot-restart", "--allow-unknown-static-fields"])
            .args(["-l", &log_level(), "--component-log-level", "misc:error"])
            .args(["--concurrency", "2"])
            .uid(PROXY_UID)
            .gid(PROXY_UID)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // Forked from a thread inside the pod's namespace, the child lives there too.
        let child = ns.enter(move || cmd.spawn()).map_err(spawn_err)?;
        Ok(Self {
            child,
            kind,
            pod: pod.to_string(),
            log,
        })
    }

    /// Waits until the admin endpoint answers `LIVE` (Envoy is LIVE once its first CDS
    /// and LDS arrived).
    pub fn wait_live(&mut self, ns: &Netns, timeout: Duration) -> Result<(), SidecarError> {
        let deadline = Instant::now() + timeout;
        loop {
            let ready = ns
                .enter(|| crate::http::get(ADMIN, "/ready"))
                .is_ok_and(|(status, body)| status == 200 && body.trim() == "LIVE");
            if ready {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(SidecarError::Exited {
                    kind: self.kind,
                    pod: self.pod.clone(),
                    status: status.to_string(),
                    log: self.log(),
                });
            }
            if Instant::now() > deadline {
                return Err(SidecarError::NotLive {
                    kind: self.kind,
                    pod: self.pod.clone(),
                    timeout,
                    log: self.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET` on the admin API from inside the pod.
    pub fn admin(&self, ns: &Netns, path: &str) -> std::io::Result<(u16, String)> {
        let path = path.to_string();
        ns.enter(move || crate::http::get(ADMIN, &path))
    }

    /// The log so far (the last 60 lines).
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        if std::env::var_os("E2E_KEEP_LOGS").is_some() {
            return text;
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
