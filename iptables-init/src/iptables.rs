//! Running iptables: which binaries (nft or legacy, as istio-iptables chooses them) and how
//! commands are executed.

use std::fmt;
use std::io::Write;
use std::process::{Command, Stdio};

use crate::builder::Family;
use crate::config::IptablesFlavor;

/// A command that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{command}` failed: {reason}")]
pub struct CommandError {
    /// The command line, for the user to reproduce.
    pub command: String,
    /// Exit status and stderr, or why it could not start.
    pub reason: String,
    /// The program was not found at all.
    pub not_found: bool,
}

/// Runs external programs. The real implementation spawns processes; tests and dry runs can
/// substitute their own.
pub trait Runner {
    /// Runs `program args...` with `stdin`, returning its stdout.
    fn run(
        &self,
        program: &str,
        args: &[String],
        stdin: Option<&str>,
    ) -> Result<String, CommandError>;
}

/// Spawns real processes.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessRunner;

// === impl ProcessRunner ===

impl Runner for ProcessRunner {
    fn run(
        &self,
        program: &str,
        args: &[String],
        stdin: Option<&str>,
    ) -> Result<String, CommandError> {
        let command = display_command(program, args);
        tracing::debug!(%command, "running");
        let fail = |reason: String, not_found: bool| CommandError {
            command: command.clone(),
            reason,
            not_found,
        };
        let mut child = Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                let not_found = e.kind() == std::io::ErrorKind::NotFound;
                let reason = if not_found {
                    format!("{program} is not installed or not in PATH")
                } else {
                    e.to_string()
                };
                fail(reason, not_found)
            })?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .map_err(|e| fail(format!("writing stdin: {e}"), false))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| fail(e.to_string(), false))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            Err(fail(format!("{}: {}", out.status, stderr.trim()), false))
        }
    }
}

/// `program arg arg`, quoting arguments with spaces.
pub fn display_command(program: &str, args: &[String]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        if a.is_empty() || a.contains(char::is_whitespace) {
            s.push_str(&format!("{a:?}"));
        } else {
            s.push_str(a);
        }
    }
    s
}

/// The iptables implementation chosen for one family, with its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub family: Family,
    /// `iptables-nft`, `ip6tables-legacy`, `iptables`...
    pub base: String,
    /// Legacy (xtables lock) rather than nf_tables.
    pub legacy: bool,
    /// (major, minor, patch) from `--version`.
    pub version: (u32, u32, u32),
}

// === impl Backend ===

impl Backend {
    pub fn iptables(&self) -> &str {
        &self.base
    }

    pub fn save(&self) -> String {
        format!("{}-save", self.base)
    }

    pub fn restore(&self) -> String {
        format!("{}-restore", self.base)
    }

    /// Legacy iptables since 1.6.2 serialises writers with a lock; wait for it like Istio
    /// (`--wait=30`). nf_tables needs no lock.
    pub fn wait_args(&self) -> Vec<String> {
        if self.legacy && self.version >= (1, 6, 2) {
            vec!["--wait=30".to_string()]
        } else {
            Vec::new()
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b, c) = self.version;
        let kind = if self.legacy { "legacy" } else { "nf_tables" };
        write!(f, "{} v{a}.{b}.{c} ({kind})", self.base)
    }
}

/// Chooses the iptables binaries for a family the way istio-iptables does: the nft variant
/// if rules already exist there, else the legacy variant if rules exist there, else plain
/// `iptables` (then `-nft`, then `-legacy`, whichever is installed). Mixing the two in one
/// network namespace would make rules that cannot see each other.
pub fn detect(
    runner: &dyn Runner,
    family: Family,
    forced: Option<IptablesFlavor>,
) -> Result<Backend, CommandError> {
    let prefix = match family {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    };
    let name = |flavor: IptablesFlavor| match flavor {
        IptablesFlavor::Nft => format!("{prefix}-nft"),
        IptablesFlavor::Legacy => format!("{prefix}-legacy"),
        IptablesFlavor::Plain => prefix.to_string(),
    };
    if let Some(flavor) = forced {
        return probe(runner, family, &name(flavor));
    }
    for flavor in [IptablesFlavor::Nft, IptablesFlavor::Legacy] {
        let base = name(flavor);
        if let Ok(backend) = probe(runner, family, &base) {
            let rules = runner.run(&backend.save(), &[], None).unwrap_or_default();
            if rules.lines().filter(|l| l.starts_with('-')).count() > 0 {
                return Ok(backend);
            }
        }
    }
    let mut last_err = None;
    for flavor in [
        IptablesFlavor::Plain,
        IptablesFlavor::Nft,
        IptablesFlavor::Legacy,
    ] {
        match probe(runner, family, &name(flavor)) {
            Ok(backend) => return Ok(backend),
            Err(e) => last_err = Some(e),
        }
    }
    Err(CommandError {
        command: format!("{prefix} --version"),
        reason: format!(
            "no {prefix} binary found (looked for {prefix}, {prefix}-nft, {prefix}-legacy): \
             install iptables (Debian: apt-get install iptables){}",
            last_err
                .map(|e| format!("; last error: {}", e.reason))
                .unwrap_or_default()
        ),
        not_found: true,
    })
}

/// Runs `<base>-save --version` and reads the flavor and version from it.
fn probe(runner: &dyn Runner, family: Family, base: &str) -> Result<Backend, CommandError> {
    let save = format!("{base}-save");
    let out = runner.run(&save, &["--version".to_string()], None)?;
    let (legacy, version) = parse_version(&out).ok_or_else(|| CommandError {
        command: format!("{save} --version"),
        reason: format!("cannot read an iptables version from {:?}", out.trim()),
        not_found: false,
    })?;
    Ok(Backend {
        family,
        base: base.to_string(),
        legacy,
        version,
    })
}

/// Parses `iptables-save v1.8.9 (nf_tables)` into (legacy, version).
pub fn parse_version(text: &str) -> Option<(bool, (u32, u32, u32))> {
    let v = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix('v'))
        .filter(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some((!text.contains("nf_tables"), (major, minor, patch)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            parse_version("iptables-save v1.8.9 (nf_tables)\n"),
            Some((false, (1, 8, 9)))
        );
        assert_eq!(
            parse_version("iptables-legacy-save v1.6.1"),
            Some((true, (1, 6, 1)))
        );
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn legacy_waits_for_the_lock_nft_does_not() {
        let mut b = Backend {
            family: Family::V4,
            base: "iptables-legacy".into(),
            legacy: true,
            version: (1, 8, 9),
        };
        assert_eq!(b.wait_args(), vec!["--wait=30"]);
        b.version = (1, 6, 1);
        assert!(b.wait_args().is_empty());
        b.legacy = false;
        b.version = (1, 8, 9);
        assert!(b.wait_args().is_empty());
    }
}
