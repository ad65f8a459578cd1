//! The secret store: every certificate and validation context the proxy's TLS contexts use,
//! by name, from the bootstrap (`static_resources.secrets`), from SDS (over ADS or a separate
//! SDS server such as Istio's agent) and from files (`filename` data sources, and Istio's
//! `file-cert:<chain>~<key>` / `file-root:<ca>` SDS names, which we read ourselves).
//!
//! Each name holds a `watch` channel: contexts read the current value when they build a
//! rustls config and subscribers are told of every change. A store-wide generation number
//! lets a context see in one atomic load that nothing changed since its last handshake, so a
//! rotated certificate is used by the very next handshake and live sessions are untouched.
//! A secret that has not arrived is `None`: whatever needs it is not ready, never plaintext.

pub(crate) mod files;
pub mod material;
#[cfg(test)]
pub(crate) mod testing;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{ConfigSource, DataSource, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, SdsSecretConfig, Secret, TlsCertificate, secret,
};
use tokio::sync::watch;

pub use material::{CertificateSecret, SecretValue, ValidationSecret};

use crate::config::ConfigError;
use files::FileWatch;

/// How often file-backed secrets are re-read.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Istio's SDS names for certificates its agent reads from files.
const FILE_CERT_PREFIX: &str = "file-cert:";
const FILE_ROOT_PREFIX: &str = "file-root:";

/// Why a secret was refused. The text is the NACK reason (prefixed with the secret name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("secret has no type; expected tls_certificate or validation_context")]
    NoType,
    #[error("{0} secrets are not supported; only tls_certificate and validation_context are")]
    UnsupportedType(&'static str),
    #[error("tls_certificate.{field} {reason}")]
    Unsupported { field: &'static str, reason: String },
    #[error("{field}: cannot read {path:?}: {reason}")]
    Read {
        field: &'static str,
        path: String,
        reason: String,
    },
    #[error("{field}: environment variable {name:?} is not set")]
    EnvVar { field: &'static str, name: String },
    #[error("{field}: is empty")]
    Empty { field: &'static str },
    #[error("{field}: not PEM: no \"-----BEGIN CERTIFICATE-----\" block found")]
    NotPem { field: &'static str },
    #[error("{field}: malformed PEM: {reason}")]
    BadPem { field: &'static str, reason: String },
    #[error(
        "private_key: no PEM private key found (expected a PRIVATE KEY, RSA PRIVATE KEY or \
         EC PRIVATE KEY block)"
    )]
    NoKey,
    #[error("private_key: unusable key: {0}")]
    BadKey(String),
    #[error(
        "private_key does not match the certificate: its public key differs from the first \
         certificate of certificate_chain"
    )]
    KeyMismatch,
    #[error("{field}: {reason}")]
    BadCertificate { field: &'static str, reason: String },
    #[error("certificate_chain: the certificate {subject:?} expired on {not_after}")]
    Expired { subject: String, not_after: String },
    #[error("trusted_ca: not a usable trust anchor: {0}")]
    BadCa(String),
    #[error("validation_context: {0}")]
    Invalid(String),
}

/// A refused SDS secret and why, for the NACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub name: String,
    pub error: SecretError,
}

/// A secret a live TLS context needs from SDS: the name to subscribe to, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct SdsSubscription {
    pub name: String,
    /// The context's `sds_config` (ADS, or an `api_config_source` such as Istio's
    /// `sds-grpc` cluster on the agent's socket).
    pub source: ConfigSource,
}

/// The current value of a secret; `None` until it arrives.
pub type SecretSlot = Option<Arc<SecretValue>>;

/// Which namespace a secret name lives in. Envoy keeps bootstrap secrets apart from SDS ones.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Static(String),
    Sds(String),
    /// Read from files by us: Istio's `file-cert:`/`file-root:` names, and contexts whose
    /// inline certificates name files.
    File(String),
}

#[derive(Debug)]
struct Entry {
    tx: watch::Sender<SecretSlot>,
    /// The last accepted proto, its xDS version and when it arrived (for `/config_dump`).
    published: Option<Published>,
    /// For SDS names: where the first context that asked for it wants it from.
    source: Option<ConfigSource>,
    /// For secrets that read files: what to re-read.
    files: Option<FileWatch>,
}

#[derive(Debug)]
struct Inner {
    entries: Mutex<HashMap<Key, Entry>>,
    generation: AtomicU64,
    changes: watch::Sender<u64>,
    poll_interval: Duration,
    poller: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The last accepted version of a secret, as `/config_dump` shows it.
#[derive(Debug, Clone)]
pub struct Published {
    pub proto: Secret,
    /// The xDS `version_info` it came with (empty for bootstrap secrets).
    pub version_info: String,
    pub last_updated: std::time::SystemTime,
}

/// One bootstrap or SDS secret, for the admin endpoints.
#[derive(Debug, Clone)]
pub struct SecretEntry {
    pub name: String,
    /// From SDS (else from the bootstrap).
    pub dynamic: bool,
    /// `None` for an SDS secret a context waits for (Envoy's warming secrets).
    pub published: Option<Published>,
    pub value: SecretSlot,
}

/// All secrets. Cheap to clone; clones share the secrets.
#[derive(Debug, Clone)]
pub struct SecretStore {
    inner: Arc<Inner>,
}

// === impl SecretStore ===

impl Default for SecretStore {
    fn default() -> Self {
        Self::with_poll_interval(DEFAULT_POLL_INTERVAL)
    }
}

impl SecretStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store that re-reads file-backed secrets every `interval`.
    pub fn with_poll_interval(interval: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                entries: Mutex::default(),
                generation: AtomicU64::new(0),
                changes: watch::Sender::new(0),
                poll_interval: interval,
                poller: Mutex::default(),
            }),
        }
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<Key, Entry>> {
        self.inner
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Bumped on every change of any secret.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Tells of every change (the value is the generation), e.g. to re-check readiness.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Adds the bootstrap's `static_resources.secrets`. Any bad secret fails the bootstrap,
    /// named by its index and name, as Envoy does.
    pub fn add_static(&self, secrets: &[Secret]) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        let mut parsed = Vec::with_capacity(secrets.len());
        for (i, s) in secrets.iter().enumerate() {
            let at = |e: ConfigError| e.at(format!("secrets[{i}]"));
            if s.name.is_empty() {
                return Err(at(ConfigError::new("name is required").at("name")));
            }
            if !seen.insert(s.name.as_str()) {
                return Err(at(ConfigError::new(format!(
                    "duplicate static secret name {:?}",
                    s.name
                ))));
            }
            let value = material::parse(s)
                .map_err(|e| at(ConfigError::new(format!("secret {:?}: {e}", s.name))))?;
            parsed.push((s, value));
        }
        for (s, value) in parsed {
            let watch = FileWatch::for_secret(s);
            self.publish(Key::Static(s.name.clone()), value, watch, published(s, ""));
        }
        Ok(())
    }

    /// Applies SDS secrets (added or updated). Each bad secret is refused on its own and
    /// keeps its previous value; the others are applied. The error list is the NACK.
    pub fn apply(&self, secrets: &[Secret]) -> Result<(), Vec<Rejected>> {
        self.apply_versioned(secrets, "")
    }

    /// [`apply`](Self::apply), recording the xDS `version_info` the secrets came with.
    pub fn apply_versioned(&self, secrets: &[Secret], version: &str) -> Result<(), Vec<Rejected>> {
        let mut rejected = Vec::new();
        for s in secrets {
            match material::parse(s) {
                Ok(value) => {
                    let watch = FileWatch::for_secret(s);
                    self.publish(
                        Key::Sds(s.name.clone()),
                        value,
                        watch,
                        published(s, version),
                    );
                }
                Err(error) => {
                    tracing::warn!(secret = s.name, "SDS secret rejected: {error}");
                    rejected.push(Rejected {
                        name: s.name.clone(),
                        error,
                    });
                }
            }
        }
        if rejected.is_empty() {
            Ok(())
        } else {
            Err(rejected)
        }
    }

    /// Removes SDS secrets. Contexts that use them stop being ready: their handshakes fail
    /// until the secret comes back (never plaintext).
    pub fn remove(&self, names: &[String]) {
        let mut changed = false;
        {
            let entries = self.entries();
            for name in names {
                if let Some(e) = entries.get(&Key::Sds(name.clone())) {
                    changed |= e.tx.send_replace(None).is_some();
                }
            }
        }
        if changed {
            self.bump();
        }
    }

    /// The current value of the secret a context refers to, and updates to it. An
    /// `SdsSecretConfig` without `sds_config` names a bootstrap secret, which must exist.
    pub fn watch(
        &self,
        config: &SdsSecretConfig,
    ) -> Result<watch::Receiver<SecretSlot>, ConfigError> {
        if config.name.is_empty() {
            return Err(ConfigError::new("name is required").at("name"));
        }
        let name = config.name.clone();
        if let Some(rest) = name.strip_prefix(FILE_CERT_PREFIX) {
            let (chain, key) = rest.split_once('~').ok_or_else(|| {
                ConfigError::new(format!(
                    "{name:?}: expected file-cert:<certificate chain path>~<private key path>"
                ))
            })?;
            let proto = TlsCertificate {
                certificate_chain: Some(file(chain)),
                private_key: Some(file(key)),
                ..Default::default()
            };
            return Ok(self.watch_files(name, files::Spec::Certificate(proto)));
        }
        if let Some(ca) = name.strip_prefix(FILE_ROOT_PREFIX) {
            let proto = CertificateValidationContext {
                trusted_ca: Some(file(ca)),
                ..Default::default()
            };
            return Ok(self.watch_files(name, files::Spec::Validation(proto)));
        }
        let mut entries = self.entries();
        let Some(source) = &config.sds_config else {
            return entries
                .get(&Key::Static(name.clone()))
                .map(|e| e.tx.subscribe())
                .ok_or_else(|| ConfigError::new(format!("unknown static secret: {name}")));
        };
        let entry = entries.entry(Key::Sds(name)).or_insert_with(|| Entry {
            tx: watch::Sender::new(None),
            published: None,
            source: None,
            files: None,
        });
        if entry.source.is_none() {
            entry.source = Some(source.clone());
        }
        Ok(entry.tx.subscribe())
    }

    /// A secret read from files and re-read when they change (inline contexts with
    /// `filename`s, Istio's `file-cert:`/`file-root:`). A file that cannot be read yet leaves
    /// it not ready until it can.
    pub(crate) fn watch_files(
        &self,
        name: String,
        spec: files::Spec,
    ) -> watch::Receiver<SecretSlot> {
        let key = Key::File(name.clone());
        if let Some(e) = self.entries().get(&key) {
            return e.tx.subscribe();
        }
        let mut watch = FileWatch::new(spec);
        let value = match watch.load() {
            Ok(v) => Some(Arc::new(v)),
            Err(e) => {
                tracing::warn!(secret = name, "file-backed secret not loaded yet: {e}");
                None
            }
        };
        let rx = {
            let mut entries = self.entries();
            let entry = entries.entry(key).or_insert_with(|| Entry {
                tx: watch::Sender::new(value),
                published: None,
                source: None,
                files: Some(watch),
            });
            entry.tx.subscribe()
        };
        self.bump();
        self.ensure_poller();
        rx
    }

    /// The SDS secrets that live contexts need, with where each should come from. Call it
    /// after building or dropping listeners and clusters to update SDS subscriptions.
    pub fn sds_subscriptions(&self) -> Vec<SdsSubscription> {
        let mut out: Vec<SdsSubscription> = self
            .entries()
            .iter()
            .filter_map(|(key, e)| match (key, &e.source) {
                (Key::Sds(name), Some(source)) if e.tx.receiver_count() > 0 => {
                    Some(SdsSubscription {
                        name: name.clone(),
                        source: source.clone(),
                    })
                }
                _ => None,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The current value of an SDS (or, with `sds == false`, bootstrap) secret.
    pub fn get(&self, name: &str, sds: bool) -> SecretSlot {
        let key = if sds {
            Key::Sds(name.into())
        } else {
            Key::Static(name.into())
        };
        self.entries().get(&key).and_then(|e| e.tx.borrow().clone())
    }

    /// Re-reads every file-backed secret now; a changed file that parses replaces the
    /// secret, one that does not is logged and the old value stays. Returns how many
    /// secrets changed. The poller calls this every poll interval.
    pub fn reload_files(&self) -> usize {
        let mut changed = 0;
        {
            let mut entries = self.entries();
            entries.retain(|key, e| !(matches!(key, Key::File(_)) && e.tx.receiver_count() == 0));
            for (key, e) in entries.iter_mut() {
                let Some(watch) = e.files.as_mut() else {
                    continue;
                };
                match watch.reload() {
                    files::Reload::Unchanged => {}
                    files::Reload::Changed(value) => {
                        tracing::info!(secret = ?key, "secret files changed; reloaded");
                        e.tx.send_replace(Some(Arc::new(value)));
                        changed += 1;
                    }
                    files::Reload::Failed(err) => {
                        tracing::warn!(secret = ?key, "secret files changed but are unusable; keeping the previous secret: {err}");
                    }
                }
            }
        }
        if changed > 0 {
            self.bump();
        }
        changed
    }

    fn publish(&self, key: Key, value: SecretValue, files: Option<FileWatch>, info: Published) {
        {
            let mut entries = self.entries();
            let entry = entries.entry(key).or_insert_with(|| Entry {
                tx: watch::Sender::new(None),
                published: None,
                source: None,
                files: None,
            });
            entry.files = files;
            entry.published = Some(info);
            entry.tx.send_replace(Some(Arc::new(value)));
            if entry.files.is_some() {
                drop(entries);
                self.ensure_poller();
            }
        }
        self.bump();
    }

    /// Every bootstrap and SDS secret (not those we read from files for inline contexts),
    /// sorted by name, bootstrap ones first.
    pub fn entries_snapshot(&self) -> Vec<SecretEntry> {
        let mut out: Vec<SecretEntry> = self
            .entries()
            .iter()
            .filter_map(|(key, e)| {
                let (name, dynamic) = match key {
                    Key::Static(n) => (n, false),
                    // Like Envoy, an SDS secret no context uses any more is gone.
                    Key::Sds(_) if e.tx.receiver_count() == 0 => return None,
                    Key::Sds(n) => (n, true),
                    Key::File(_) => return None,
                };
                Some(SecretEntry {
                    name: name.clone(),
                    dynamic,
                    published: e.published.clone(),
                    value: e.tx.borrow().clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| (a.dynamic, &a.name).cmp(&(b.dynamic, &b.name)));
        out
    }

    fn bump(&self) {
        let generation = self.inner.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.inner.changes.send_replace(generation);
    }

    /// Starts the file poller once, if there is a runtime to run it on. It stops when the
    /// store is dropped.
    fn ensure_poller(&self) {
        let mut poller = self
            .inner
            .poller
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if poller.is_some() {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::debug!("no runtime; file-backed secrets are re-read only on reload_files()");
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        let interval = self.inner.poll_interval;
        *poller = Some(handle.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                SecretStore { inner }.reload_files();
            }
        }));
    }
}

// === impl Inner ===

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self
            .poller
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

fn published(s: &Secret, version: &str) -> Published {
    Published {
        proto: s.clone(),
        version_info: version.to_string(),
        last_updated: std::time::SystemTime::now(),
    }
}

fn file(path: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::Filename(path.to_string())),
        ..Default::default()
    }
}

/// The paths a `Secret` reads.
pub fn secret_files(s: &Secret) -> Vec<PathBuf> {
    match &s.r#type {
        Some(secret::Type::TlsCertificate(c)) => material::files_of_certificate(c),
        Some(secret::Type::ValidationContext(v)) => material::files_of_validation(v),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests;
