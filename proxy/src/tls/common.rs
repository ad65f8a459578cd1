//! What downstream and upstream contexts share: `CommonTlsContext` validation, the secrets it
//! refers to, and a rustls config cache that is rebuilt when (and only when) those secrets
//! change.

use std::io;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use envoy_types::pb::envoy::config::core::v3::ConfigSource;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SdsSecretConfig, TlsCertificate,
    common_tls_context::ValidationContextType,
};
use rustls_pki_types::CertificateDer;
use tokio::sync::watch;

use super::params::{Side, TlsParams};
use super::secrets::{CertificateSecret, SecretSlot, SecretStore, SecretValue, material};
use crate::config::{ConfigError, Context};

/// A secret a context uses, for SDS subscriptions and readiness reports.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretRef {
    pub name: String,
    /// `None` for bootstrap secrets and ones we read from files.
    pub sds_config: Option<ConfigSource>,
}

/// Why a context cannot handshake yet. Handshakes fail with it; nothing falls back to
/// plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("secret {0:?} has not been received yet")]
    Missing(String),
    #[error("secret {name:?} is a {actual}, but a {expected} is needed here")]
    WrongKind {
        name: String,
        expected: &'static str,
        actual: &'static str,
    },
    #[error("the validation context built from secret {name:?} is unusable: {reason}")]
    Invalid { name: String, reason: String },
}

/// Why a TLS handshake did not produce a connection.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS context not ready: {0}")]
    NotReady(#[from] NotReady),
    #[error("TLS handshake failed: {}", describe(.0))]
    Tls(rustls::Error),
    #[error("TLS handshake failed: {0}")]
    Io(io::Error),
    #[error("TLS handshake refused: the client sent no SNI and require_sni is set")]
    NoSni,
}

/// A rustls error in words: our own verification errors travel as `OtherError`, whose
/// `Display` is its `Debug`.
fn describe(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
            format!("invalid peer certificate: {}", other.0)
        }
        other => other.to_string(),
    }
}

// === impl HandshakeError ===

impl HandshakeError {
    /// Classifies an error from tokio-rustls: rustls errors travel inside `io::Error`.
    pub fn from_io(e: io::Error) -> Self {
        let is_tls = e
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
        if is_tls {
            if let Some(tls) = e
                .into_inner()
                .and_then(|i| i.downcast::<rustls::Error>().ok())
            {
                return Self::Tls(*tls);
            }
            return Self::Io(io::Error::other("TLS error"));
        }
        Self::Io(e)
    }

    /// Whether the peer's certificate was refused.
    pub fn is_verify_failure(&self) -> bool {
        matches!(
            self,
            Self::Tls(
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            )
        )
    }
}

/// A certificate a context presents.
#[derive(Debug, Clone)]
pub enum CertRef {
    /// Parsed at config time; with the proto when it names files, to watch them.
    Inline(Arc<CertificateSecret>, Option<Box<TlsCertificate>>),
    Sds(Box<SdsSecretConfig>),
}

/// Where a context's validation context comes from.
#[derive(Debug, Clone)]
pub enum ValidationRef {
    Inline(Box<CertificateValidationContext>),
    Sds(SdsSecretConfig),
    Combined {
        default: Box<CertificateValidationContext>,
        sds: SdsSecretConfig,
    },
}

/// A validated `CommonTlsContext`, not yet bound to a secret store.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    pub certs: Vec<CertRef>,
    pub validation: Option<ValidationRef>,
    pub alpn: Vec<Vec<u8>>,
    pub params: TlsParams,
}

// === impl CommonConfig ===

impl CommonConfig {
    /// Validates every field; inline certificates are parsed now, so a bad one is a config
    /// error rather than a failing handshake.
    pub fn from_proto(proto: &CommonTlsContext, side: Side) -> Result<Self, ConfigError> {
        let unsupported =
            |field: &str| Err(ConfigError::new("is not supported").at(field.to_string()));
        if proto.custom_handshaker.is_some() {
            return unsupported("custom_handshaker");
        }
        if proto.key_log.is_some() {
            return unsupported("key_log");
        }
        if proto.tls_certificate_provider_instance.is_some() {
            return unsupported("tls_certificate_provider_instance");
        }
        if proto.custom_tls_certificate_selector.is_some() {
            return unsupported("custom_tls_certificate_selector");
        }
        #[allow(deprecated)]
        if proto.tls_certificate_certificate_provider.is_some()
            || proto
                .tls_certificate_certificate_provider_instance
                .is_some()
        {
            return unsupported("tls_certificate_certificate_provider");
        }
        let params = TlsParams::from_proto(proto.tls_params.as_ref(), side)?;
        let mut certs = Vec::new();
        for (i, c) in proto.tls_certificates.iter().enumerate() {
            let parsed = material::certificate(c).map_err(|e| {
                ConfigError::new(e.to_string()).at(format!("tls_certificates[{i}]"))
            })?;
            let files = !material::files_of_certificate(c).is_empty();
            certs.push(CertRef::Inline(
                Arc::new(parsed),
                files.then(|| Box::new(c.clone())),
            ));
        }
        for (i, s) in proto.tls_certificate_sds_secret_configs.iter().enumerate() {
            if s.name.is_empty() {
                return Err(ConfigError::new("name is required")
                    .at(format!("tls_certificate_sds_secret_configs[{i}].name")));
            }
            certs.push(CertRef::Sds(Box::new(s.clone())));
        }
        if side == Side::Client && certs.len() > 1 {
            return Err(
                ConfigError::new("an upstream context can present only one certificate")
                    .at("tls_certificates"),
            );
        }
        let validation = validation_ref(proto.validation_context_type.as_ref())?;
        let alpn = proto
            .alpn_protocols
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect::<Vec<_>>();
        if alpn.iter().any(|p| p.is_empty() || p.len() > 255) {
            return Err(
                ConfigError::new("protocol names must be 1 to 255 bytes").at("alpn_protocols")
            );
        }
        Ok(Self {
            certs,
            validation,
            alpn,
            params,
        })
    }

    /// The secrets this context needs by name.
    pub fn secret_refs(&self) -> Vec<SecretRef> {
        let sds = |s: &SdsSecretConfig| SecretRef {
            name: s.name.clone(),
            sds_config: s.sds_config.clone(),
        };
        let mut out: Vec<SecretRef> = self
            .certs
            .iter()
            .filter_map(|c| match c {
                CertRef::Sds(s) => Some(sds(s)),
                CertRef::Inline(..) => None,
            })
            .collect();
        if let Some(ValidationRef::Sds(s) | ValidationRef::Combined { sds: s, .. }) =
            &self.validation
        {
            out.push(sds(s));
        }
        out
    }
}

fn validation_ref(v: Option<&ValidationContextType>) -> Result<Option<ValidationRef>, ConfigError> {
    let check_sds = |s: &SdsSecretConfig, field: &str| {
        if s.name.is_empty() {
            Err(ConfigError::new("name is required").at(format!("{field}.name")))
        } else {
            Ok(())
        }
    };
    Ok(match v {
        None => None,
        Some(ValidationContextType::ValidationContext(ctx)) => {
            // Checks the fields and that trusted_ca parses.
            material::validation(ctx)
                .map_err(|e| ConfigError::new(e.to_string()).at("validation_context"))?;
            Some(ValidationRef::Inline(Box::new(ctx.clone())))
        }
        Some(ValidationContextType::ValidationContextSdsSecretConfig(s)) => {
            check_sds(s, "validation_context_sds_secret_config")?;
            Some(ValidationRef::Sds(s.clone()))
        }
        Some(ValidationContextType::CombinedValidationContext(c)) => {
            let default = c.default_validation_context.clone().unwrap_or_default();
            super::verify::check_fields(&default)
                .at("combined_validation_context.default_validation_context")?;
            let sds = c
                .validation_context_sds_secret_config
                .clone()
                .ok_or_else(|| {
                    ConfigError::new("is required")
                        .at("combined_validation_context.validation_context_sds_secret_config")
                })?;
            check_sds(
                &sds,
                "combined_validation_context.validation_context_sds_secret_config",
            )?;
            Some(ValidationRef::Combined {
                default: Box::new(default),
                sds,
            })
        }
        #[allow(deprecated)]
        Some(_) => {
            return Err(ConfigError::new("certificate providers are not supported")
                .at("validation_context_certificate_provider"));
        }
    })
}

/// One secret input of a bound context.
#[derive(Debug)]
enum Input {
    Fixed(Arc<SecretValue>),
    Watched {
        name: String,
        rx: watch::Receiver<SecretSlot>,
    },
}

// === impl Input ===

impl Input {
    fn current(&self) -> Result<Arc<SecretValue>, NotReady> {
        match self {
            Self::Fixed(v) => Ok(v.clone()),
            Self::Watched { name, rx } => rx
                .borrow()
                .clone()
                .ok_or_else(|| NotReady::Missing(name.clone())),
        }
    }

    fn name(&self) -> &str {
        match self {
            Self::Fixed(_) => "inline",
            Self::Watched { name, .. } => name,
        }
    }
}

/// The current secrets of a context.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub certs: Vec<Arc<CertificateSecret>>,
    /// The effective validation context and its roots.
    pub validation: Option<(CertificateValidationContext, Vec<CertificateDer<'static>>)>,
    /// The secret values themselves, to tell whether anything changed (held, so their
    /// addresses cannot be reused while we compare them).
    values: Vec<Arc<SecretValue>>,
}

// === impl Inputs ===

impl Inputs {
    fn same_as(&self, other: &[Arc<SecretValue>]) -> bool {
        self.values.len() == other.len()
            && self
                .values
                .iter()
                .zip(other)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

/// A context bound to a store: its inputs, and the config built from their current values.
/// A certificate and the file it was read from (`None`: inline or SDS bytes).
pub type SourcedCert = (Option<String>, CertificateDer<'static>);

/// What a context presents and trusts right now, for `/certs`.
#[derive(Debug, Clone, Default)]
pub struct ContextCerts {
    /// The first trust anchor of the validation context (Envoy shows one).
    pub ca: Option<SourcedCert>,
    /// The leaf of each certificate the context presents.
    pub chain: Vec<SourcedCert>,
}

#[derive(Debug)]
pub struct Bound<T> {
    store: SecretStore,
    certs: Vec<Input>,
    validation: Option<(Option<Arc<super::secrets::ValidationSecret>>, Input)>,
    cache: ArcSwapOption<Built<T>>,
}

#[derive(Debug)]
struct Built<T> {
    generation: u64,
    values: Vec<Arc<SecretValue>>,
    value: Result<Arc<T>, NotReady>,
}

// === impl Bound ===

impl<T> Bound<T> {
    /// Subscribes to the secrets of `config` in `store`.
    pub fn new(config: &CommonConfig, store: &SecretStore) -> Result<Self, ConfigError> {
        let mut certs = Vec::new();
        for (i, c) in config.certs.iter().enumerate() {
            certs.push(match c {
                CertRef::Inline(parsed, None) => {
                    Input::Fixed(Arc::new(SecretValue::Certificate(parsed.clone())))
                }
                CertRef::Inline(_, Some(files)) => {
                    let name = format!(
                        "inline:{}",
                        super::cert::sha256_hex(&prost::Message::encode_to_vec(files))
                    );
                    let rx = store.watch_files(
                        name.clone(),
                        super::secrets::files::Spec::Certificate((**files).clone()),
                    );
                    Input::Watched { name, rx }
                }
                CertRef::Sds(s) => Input::Watched {
                    name: s.name.clone(),
                    rx: store
                        .watch(s)
                        .at(format!("tls_certificate_sds_secret_configs[{i}]"))?,
                },
            });
        }
        let validation = match &config.validation {
            None => None,
            Some(ValidationRef::Inline(ctx)) => {
                let input = if material::files_of_validation(ctx).is_empty() {
                    let parsed =
                        material::validation(ctx).map_err(|e| ConfigError::new(e.to_string()))?;
                    Input::Fixed(Arc::new(SecretValue::Validation(Arc::new(parsed))))
                } else {
                    let name = format!(
                        "inline:{}",
                        super::cert::sha256_hex(&prost::Message::encode_to_vec(ctx))
                    );
                    let rx = store.watch_files(
                        name.clone(),
                        super::secrets::files::Spec::Validation((**ctx).clone()),
                    );
                    Input::Watched { name, rx }
                };
                Some((None, input))
            }
            Some(ValidationRef::Sds(s)) => Some((
                None,
                Input::Watched {
                    name: s.name.clone(),
                    rx: store.watch(s).at("validation_context_sds_secret_config")?,
                },
            )),
            Some(ValidationRef::Combined { default, sds }) => Some((
                Some(Arc::new(material::validation(default).map_err(|e| {
                    ConfigError::new(e.to_string())
                        .at("combined_validation_context.default_validation_context")
                })?)),
                Input::Watched {
                    name: sds.name.clone(),
                    rx: store
                        .watch(sds)
                        .at("combined_validation_context.validation_context_sds_secret_config")?,
                },
            )),
        };
        Ok(Self {
            store: store.clone(),
            certs,
            validation,
            cache: ArcSwapOption::empty(),
        })
    }

    /// The current secret values, or which one is missing.
    pub fn inputs(&self) -> Result<Inputs, NotReady> {
        let mut values = Vec::new();
        let mut certs = Vec::new();
        for input in &self.certs {
            let v = input.current()?;
            values.push(v.clone());
            match &*v {
                SecretValue::Certificate(c) => certs.push(c.clone()),
                other => {
                    return Err(NotReady::WrongKind {
                        name: input.name().to_string(),
                        expected: "tls_certificate",
                        actual: other.kind(),
                    });
                }
            }
        }
        let validation = match &self.validation {
            None => None,
            Some((default, input)) => {
                let v = input.current()?;
                values.push(v.clone());
                let SecretValue::Validation(dynamic) = &*v else {
                    return Err(NotReady::WrongKind {
                        name: input.name().to_string(),
                        expected: "validation_context",
                        actual: v.kind(),
                    });
                };
                let (ctx, roots) = match default {
                    Some(d) if dynamic.roots.is_empty() => (
                        super::verify::merge(&d.context, &dynamic.context),
                        d.roots.clone(),
                    ),
                    Some(d) => (
                        super::verify::merge(&d.context, &dynamic.context),
                        dynamic.roots.clone(),
                    ),
                    None => (dynamic.context.clone(), dynamic.roots.clone()),
                };
                Some((ctx, roots))
            }
        };
        Ok(Inputs {
            certs,
            validation,
            values,
        })
    }

    /// The current certificates; `None` while a secret is missing (Envoy has no context
    /// to show until then).
    pub fn certs(&self) -> Option<ContextCerts> {
        let mut chain = Vec::new();
        for input in &self.certs {
            if let SecretValue::Certificate(c) = &*input.current().ok()? {
                chain.push((c.path.clone(), c.key.cert.first()?.clone()));
            }
        }
        let ca = match &self.validation {
            None => None,
            Some((default, input)) => {
                let v = input.current().ok()?;
                let SecretValue::Validation(dynamic) = &*v else {
                    return None;
                };
                let source = match default {
                    Some(d) if dynamic.roots.is_empty() => d.as_ref(),
                    _ => dynamic.as_ref(),
                };
                source
                    .roots
                    .first()
                    .map(|r| (source.path.clone(), r.clone()))
            }
        };
        Some(ContextCerts { ca, chain })
    }

    /// The name of the validation secret, for error reports.
    pub fn validation_name(&self) -> &str {
        self.validation.as_ref().map_or("", |(_, i)| i.name())
    }

    /// The config for the current secrets: cached while no secret of the store changes,
    /// rebuilt by `build` when one of ours did.
    pub fn get(
        &self,
        build: impl FnOnce(&Inputs) -> Result<T, NotReady>,
    ) -> Result<Arc<T>, NotReady> {
        let generation = self.store.generation();
        let cached = self.cache.load();
        if let Some(b) = cached.as_deref()
            && b.generation == generation
        {
            return b.value.clone();
        }
        let inputs = match self.inputs() {
            Ok(i) => i,
            Err(e) => {
                self.store_built(generation, Vec::new(), Err(e.clone()));
                return Err(e);
            }
        };
        if let Some(b) = cached.as_deref()
            && inputs.same_as(&b.values)
            && b.value.is_ok()
        {
            let value = b.value.clone();
            self.store_built(generation, inputs.values, value.clone());
            return value;
        }
        let value = build(&inputs).map(Arc::new);
        self.store_built(generation, inputs.values, value.clone());
        value
    }

    fn store_built(
        &self,
        generation: u64,
        values: Vec<Arc<SecretValue>>,
        value: Result<Arc<T>, NotReady>,
    ) {
        self.cache.store(Some(Arc::new(Built {
            generation,
            values,
            value,
        })));
    }
}
