//! Process limits a proxy needs: every proxied connection costs two file descriptors (three
//! with a pooled upstream), so the default soft limit of 1024 would cap a sidecar at a few
//! hundred connections.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. Returns the (old, new) soft limits.
pub fn raise_nofile() -> nix::Result<(u64, u64)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok((soft, hard))
}
