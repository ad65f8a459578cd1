//! Secrets that live in files: remember what the files held, re-read them, and re-parse only
//! when their contents changed. Comparing contents (not mtimes) also catches Kubernetes'
//! symlink swaps of mounted secrets.

use std::path::PathBuf;

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};

use super::SecretError;
use super::material::{self, FileStamp, SecretValue};

/// A secret defined by files.
#[derive(Debug, Clone)]
pub enum Spec {
    Certificate(TlsCertificate),
    Validation(CertificateValidationContext),
}

/// What a reload found.
#[derive(Debug)]
pub enum Reload {
    Unchanged,
    Changed(SecretValue),
    Failed(SecretError),
}

/// A file-backed secret and the file contents it was last parsed from.
#[derive(Debug)]
pub struct FileWatch {
    spec: Spec,
    paths: Vec<PathBuf>,
    stamp: Option<FileStamp>,
}

// === impl Spec ===

impl Spec {
    fn paths(&self) -> Vec<PathBuf> {
        match self {
            Self::Certificate(c) => material::files_of_certificate(c),
            Self::Validation(v) => material::files_of_validation(v),
        }
    }

    fn parse(&self) -> Result<SecretValue, SecretError> {
        match self {
            Self::Certificate(c) => Ok(SecretValue::Certificate(std::sync::Arc::new(
                material::certificate(c)?,
            ))),
            Self::Validation(v) => Ok(SecretValue::Validation(std::sync::Arc::new(
                material::validation(v)?,
            ))),
        }
    }
}

// === impl FileWatch ===

impl FileWatch {
    pub fn new(spec: Spec) -> Self {
        let paths = spec.paths();
        Self {
            spec,
            paths,
            stamp: None,
        }
    }

    /// A watch for a parsed secret that reads files; `None` if it reads none. The stamp is
    /// taken now, right after the secret was parsed from the same files.
    pub fn for_secret(s: &Secret) -> Option<Self> {
        let spec = match &s.r#type {
            Some(secret::Type::TlsCertificate(c)) => Spec::Certificate(c.clone()),
            Some(secret::Type::ValidationContext(v)) => Spec::Validation(v.clone()),
            _ => return None,
        };
        let mut watch = Self::new(spec);
        if watch.paths.is_empty() {
            return None;
        }
        watch.stamp = Some(FileStamp::read(&watch.paths));
        Some(watch)
    }

    /// Reads and parses the files now.
    pub fn load(&mut self) -> Result<SecretValue, SecretError> {
        let stamp = FileStamp::read(&self.paths);
        self.stamp = Some(stamp);
        self.spec.parse()
    }

    /// Re-parses the secret if any file changed since the last look.
    pub fn reload(&mut self) -> Reload {
        let stamp = FileStamp::read(&self.paths);
        if self.stamp.as_ref() == Some(&stamp) {
            return Reload::Unchanged;
        }
        self.stamp = Some(stamp);
        match self.spec.parse() {
            Ok(v) => Reload::Changed(v),
            Err(e) => Reload::Failed(e),
        }
    }
}
