//! SDS from a file (`sds_config: {path_config_source: {path, watched_directory}}`), the way
//! VMs and static sidecars get their certificates: the file holds a `DiscoveryResponse`
//! (YAML or JSON) whose `resources` are `Secret`s, usually pointing at certificate files.
//!
//! The file, and every certificate file its secrets name, are polled; a change re-applies
//! the secrets (new handshakes use them, open connections keep theirs). A file that does not
//! parse is logged and the last good secrets stay.

use std::path::{Path, PathBuf};
use std::time::Duration;

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use xds_client::{Resource, ResourceType};

use crate::proto::{Format, UnknownFields, decode};
use crate::tls::SecretStore;
use crate::tls::secrets::secret_files;

/// How often the files are checked.
const POLL: Duration = Duration::from_millis(500);

/// Watches `path` until the task is aborted.
pub async fn watch(path: PathBuf, secrets: SecretStore) {
    let mut last: Option<Vec<Vec<u8>>> = None;
    loop {
        if let Some(snapshot) = read_all(&path)
            && last.as_ref() != Some(&snapshot)
        {
            apply(&path, &snapshot[0], &secrets);
            last = Some(snapshot);
        }
        tokio::time::sleep(POLL).await;
    }
}

fn apply(path: &Path, bytes: &[u8], secrets: &SecretStore) {
    let list = match parse(path, bytes) {
        Ok(list) => list,
        Err(e) => return tracing::warn!(path = %path.display(), "sds: {e}"),
    };
    match secrets.apply(&list) {
        Ok(()) => tracing::info!(path = %path.display(), "sds: {} secrets from file", list.len()),
        Err(rejected) => {
            for r in rejected {
                tracing::warn!(path = %path.display(), secret = r.name, "sds: {}", r.error);
            }
        }
    }
}

/// The SDS file's bytes followed by those of every file its secrets name, so that a change
/// to any of them is seen; `None` if the SDS file cannot be read.
fn read_all(path: &Path) -> Option<Vec<Vec<u8>>> {
    let main = std::fs::read(path).ok()?;
    let mut all = vec![main.clone()];
    if let Ok(list) = parse(path, &main) {
        for s in &list {
            for f in secret_files(s) {
                all.push(std::fs::read(f).unwrap_or_default());
            }
        }
    }
    Some(all)
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<Secret>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => Format::Json,
        _ => Format::Yaml,
    };
    let response = decode::<DiscoveryResponse>(text, format, UnknownFields::Reject)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .message;
    response
        .resources
        .iter()
        .enumerate()
        .map(
            |(i, any)| match Resource::decode(ResourceType::Secret, any) {
                Ok(Resource::Secret(s)) => Ok(*s),
                Ok(_) => Err(format!(
                    "{}: resources[{i}] is not a Secret",
                    path.display()
                )),
                Err(e) => Err(format!("{}: resources[{i}]: {e}", path.display())),
            },
        )
        .collect()
}
