//! Turning `Secret` protos into what handshakes use: a rustls `CertifiedKey` with our own
//! identity, or trust roots with the rest of a validation context. Every check that can fail
//! happens here, so a bad secret is refused when it arrives, not at a handshake.

use std::path::PathBuf;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::SecretError;
use crate::tls::cert;

/// A secret ready for use.
#[derive(Debug)]
pub enum SecretValue {
    Certificate(Arc<CertificateSecret>),
    Validation(Arc<ValidationSecret>),
}

/// Our certificate chain and key.
#[derive(Debug)]
pub struct CertificateSecret {
    pub key: Arc<CertifiedKey>,
    /// The leaf's URI SANs: our SPIFFE identity (XFCC `By=`).
    pub uri_sans: Vec<String>,
    /// The leaf's notAfter, seconds since the epoch.
    pub not_after: i64,
    /// The file the chain was read from (`None` for inline or SDS bytes), for `/certs`.
    pub path: Option<String>,
}

/// A validation context with its trust roots parsed. `context.trusted_ca` is cleared: the
/// roots are in `roots`.
#[derive(Debug, Clone)]
pub struct ValidationSecret {
    pub context: CertificateValidationContext,
    pub roots: Vec<CertificateDer<'static>>,
    /// The file the roots were read from (`None` for inline or SDS bytes), for `/certs`.
    pub path: Option<String>,
}

/// The files a secret reads, and what they held when it was last parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp(Vec<(PathBuf, Option<Vec<u8>>)>);

// === impl SecretValue ===

impl SecretValue {
    /// `tls_certificate` or `validation_context`, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Certificate(_) => "tls_certificate",
            Self::Validation(_) => "validation_context",
        }
    }
}

/// Parses an SDS or bootstrap `Secret`.
pub fn parse(secret: &Secret) -> Result<SecretValue, SecretError> {
    match &secret.r#type {
        Some(secret::Type::TlsCertificate(c)) => {
            Ok(SecretValue::Certificate(Arc::new(certificate(c)?)))
        }
        Some(secret::Type::ValidationContext(v)) => {
            Ok(SecretValue::Validation(Arc::new(validation(v)?)))
        }
        Some(secret::Type::SessionTicketKeys(_)) => {
            Err(SecretError::UnsupportedType("session_ticket_keys"))
        }
        Some(secret::Type::GenericSecret(_)) => Err(SecretError::UnsupportedType("generic_secret")),
        None => Err(SecretError::NoType),
    }
}

/// Parses and checks a `TlsCertificate`: a PEM chain, a PEM key that matches its leaf, and a
/// leaf that has not expired.
pub fn certificate(proto: &TlsCertificate) -> Result<CertificateSecret, SecretError> {
    let unsupported = |field: &'static str| SecretError::Unsupported {
        field,
        reason: "is not supported".into(),
    };
    if proto.private_key_provider.is_some() {
        return Err(unsupported("private_key_provider"));
    }
    if proto.password.is_some() {
        return Err(unsupported("password"));
    }
    if proto.pkcs12.is_some() {
        return Err(unsupported("pkcs12"));
    }
    if proto.ocsp_staple.is_some() {
        return Err(unsupported("ocsp_staple"));
    }
    if !proto.signed_certificate_timestamp.is_empty() {
        return Err(unsupported("signed_certificate_timestamp"));
    }
    let chain_pem = read(proto.certificate_chain.as_ref(), "certificate_chain")?;
    let chain = certificates(&chain_pem, "certificate_chain")?;
    let key_pem = read(proto.private_key.as_ref(), "private_key")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => SecretError::NoKey,
        other => SecretError::BadPem {
            field: "private_key",
            reason: other.to_string(),
        },
    })?;
    let leaf = cert::Leaf::parse(&chain[0]).map_err(|reason| SecretError::BadCertificate {
        field: "certificate_chain",
        reason,
    })?;
    if leaf.not_after < now() {
        return Err(SecretError::Expired {
            subject: leaf.subject.clone(),
            not_after: leaf.not_after_text.clone(),
        });
    }
    if leaf.not_before > now() {
        tracing::warn!(
            subject = leaf.subject,
            "certificate_chain: the certificate is not valid yet; peers will refuse it until \
             then (clock skew?)"
        );
    }
    let provider = crate::tls::provider();
    let key = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => SecretError::KeyMismatch,
        other => SecretError::BadKey(other.to_string()),
    })?;
    Ok(CertificateSecret {
        key: Arc::new(key),
        uri_sans: leaf.uri_sans,
        not_after: leaf.not_after,
        path: filename(proto.certificate_chain.as_ref()).map(|p| p.display().to_string()),
    })
}

/// Parses a `CertificateValidationContext`: its trust roots must be PEM certificates that can
/// anchor a chain, and its other fields must be ones we implement.
pub fn validation(proto: &CertificateValidationContext) -> Result<ValidationSecret, SecretError> {
    crate::tls::verify::check_fields(proto).map_err(|e| SecretError::Invalid(e.to_string()))?;
    let roots = match &proto.trusted_ca {
        Some(ds) => {
            let pem = read(Some(ds), "trusted_ca")?;
            let roots = certificates(&pem, "trusted_ca")?;
            let mut store = rustls::RootCertStore::empty();
            for (i, root) in roots.iter().enumerate() {
                store
                    .add(root.clone())
                    .map_err(|e| SecretError::BadCa(format!("certificate {i}: {e}")))?;
            }
            roots
        }
        None => Vec::new(),
    };
    let path = filename(proto.trusted_ca.as_ref()).map(|p| p.display().to_string());
    let mut context = proto.clone();
    context.trusted_ca = None;
    Ok(ValidationSecret {
        context,
        roots,
        path,
    })
}

/// Every PEM `CERTIFICATE` block in `pem`; at least one.
pub fn certificates(
    pem: &[u8],
    field: &'static str,
) -> Result<Vec<CertificateDer<'static>>, SecretError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SecretError::BadPem {
            field,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(SecretError::NotPem { field });
    }
    Ok(certs)
}

/// The bytes of a data source.
pub fn read(source: Option<&DataSource>, field: &'static str) -> Result<Vec<u8>, SecretError> {
    let bytes = match source.and_then(|s| s.specifier.as_ref()) {
        None => return Err(SecretError::Empty { field }),
        Some(Specifier::InlineBytes(b)) => b.clone(),
        Some(Specifier::InlineString(s)) => s.clone().into_bytes(),
        Some(Specifier::Filename(path)) => std::fs::read(path).map_err(|e| SecretError::Read {
            field,
            path: path.clone(),
            reason: e.to_string(),
        })?,
        Some(Specifier::EnvironmentVariable(name)) => std::env::var(name)
            .map_err(|_| SecretError::EnvVar {
                field,
                name: name.clone(),
            })?
            .into_bytes(),
    };
    if bytes.is_empty() {
        return Err(SecretError::Empty { field });
    }
    Ok(bytes)
}

/// The files a certificate or validation context reads.
pub fn files_of_certificate(proto: &TlsCertificate) -> Vec<PathBuf> {
    [&proto.certificate_chain, &proto.private_key]
        .into_iter()
        .filter_map(|ds| filename(ds.as_ref()))
        .collect()
}

pub fn files_of_validation(proto: &CertificateValidationContext) -> Vec<PathBuf> {
    filename(proto.trusted_ca.as_ref()).into_iter().collect()
}

fn filename(ds: Option<&DataSource>) -> Option<PathBuf> {
    match ds?.specifier.as_ref()? {
        Specifier::Filename(f) => Some(PathBuf::from(f)),
        _ => None,
    }
}

// === impl FileStamp ===

impl FileStamp {
    /// The current contents of `paths` (`None` for a file that cannot be read).
    pub fn read(paths: &[PathBuf]) -> Self {
        Self(
            paths
                .iter()
                .map(|p| (p.clone(), std::fs::read(p).ok()))
                .collect(),
        )
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
