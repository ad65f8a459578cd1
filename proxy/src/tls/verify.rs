//! Peer certificate verification as Envoy's default validator does it: the chain must lead to
//! `trusted_ca`, then a SAN must match (`match_*subject_alt_names`), then the certificate
//! must match a pinned hash (`verify_certificate_hash` / `verify_certificate_spki`), each
//! only when configured. Envoy never checks the SNI against the server certificate; the SAN
//! matchers are the identity check (Istio: the destination's SPIFFE IDs).

use std::sync::Arc;

use base64::Engine as _;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, certificate_validation_context::TrustChainVerification,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::cert::{self, Leaf};
use super::san::SanMatchers;
use super::stats::SslStats;
use crate::config::{ConfigError, Context};

/// Why a peer certificate was refused after its chain verified (carried inside a rustls
/// `CertificateError::Other`, so logs say it plainly).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("peer certificate SANs {sans:?} match none of the configured subject_alt_names")]
    San { sans: Vec<String> },
    #[error(
        "peer certificate hash matches none of verify_certificate_hash/verify_certificate_spki"
    )]
    Hash,
    #[error("peer certificate cannot be parsed: {0}")]
    Parse(String),
}

/// A compiled validation context.
#[derive(Debug)]
pub struct Validation {
    roots: Option<Arc<RootCertStore>>,
    sans: SanMatchers,
    /// SHA-256 of the DER certificate.
    cert_hashes: Vec<[u8; 32]>,
    /// SHA-256 of the DER SubjectPublicKeyInfo.
    spki_hashes: Vec<[u8; 32]>,
    algorithms: WebPkiSupportedAlgorithms,
    pub(crate) stats: Option<SslStats>,
}

/// Refuses fields of a validation context that we do not implement, so a config never means
/// less checking than it says.
pub fn check_fields(ctx: &CertificateValidationContext) -> Result<(), ConfigError> {
    let no = |field: &str, what: &str| {
        Err(ConfigError::new(format!("{what} is not supported")).at(field.to_string()))
    };
    if ctx.ca_certificate_provider_instance.is_some() {
        return no("ca_certificate_provider_instance", "a certificate provider");
    }
    if ctx.system_root_certs.is_some() {
        return no("system_root_certs", "using the system trust store");
    }
    if ctx.crl.is_some() {
        return no(
            "crl",
            "certificate revocation lists are not implemented; CRL checking",
        );
    }
    if ctx.allow_expired_certificate {
        return no(
            "allow_expired_certificate",
            "accepting expired certificates",
        );
    }
    if TrustChainVerification::try_from(ctx.trust_chain_verification)
        != Ok(TrustChainVerification::VerifyTrustChain)
    {
        return no(
            "trust_chain_verification",
            "anything but VERIFY_TRUST_CHAIN",
        );
    }
    if ctx.custom_validator_config.is_some() {
        return no(
            "custom_validator_config",
            "a custom certificate validator (e.g. SPIFFE bundles)",
        );
    }
    if ctx.max_verify_depth.is_some() {
        return no("max_verify_depth", "limiting the chain depth");
    }
    if ctx
        .require_signed_certificate_timestamp
        .as_ref()
        .is_some_and(|v| v.value)
    {
        return no(
            "require_signed_certificate_timestamp",
            "requiring certificate transparency",
        );
    }
    for (i, h) in ctx.verify_certificate_hash.iter().enumerate() {
        parse_hex_hash(h).at(format!("verify_certificate_hash[{i}]"))?;
    }
    for (i, h) in ctx.verify_certificate_spki.iter().enumerate() {
        parse_b64_hash(h).at(format!("verify_certificate_spki[{i}]"))?;
    }
    SanMatchers::new(ctx)?;
    Ok(())
}

/// Merges an SDS validation context into the default one of a `combined_validation_context`,
/// with protobuf `MergeFrom` rules: repeated fields concatenate, set singular fields win.
pub fn merge(
    default: &CertificateValidationContext,
    dynamic: &CertificateValidationContext,
) -> CertificateValidationContext {
    let mut out = default.clone();
    if dynamic.trusted_ca.is_some() {
        out.trusted_ca = dynamic.trusted_ca.clone();
    }
    out.verify_certificate_hash
        .extend(dynamic.verify_certificate_hash.iter().cloned());
    out.verify_certificate_spki
        .extend(dynamic.verify_certificate_spki.iter().cloned());
    out.match_typed_subject_alt_names
        .extend(dynamic.match_typed_subject_alt_names.iter().cloned());
    #[allow(deprecated)]
    out.match_subject_alt_names
        .extend(dynamic.match_subject_alt_names.iter().cloned());
    out.allow_expired_certificate |= dynamic.allow_expired_certificate;
    out
}

fn parse_hex_hash(s: &str) -> Result<[u8; 32], ConfigError> {
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect::<Option<Vec<u8>>>();
    bytes
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| ConfigError::new(format!("{s:?} is not a hex SHA-256 hash")))
}

fn parse_b64_hash(s: &str) -> Result<[u8; 32], ConfigError> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| ConfigError::new(format!("{s:?} is not a base64 SHA-256 hash")))
}

// === impl Validation ===

impl Validation {
    /// Compiles a (merged) validation context with its parsed trust roots. SAN matchers
    /// without trust roots would check names on certificates anyone can mint, so Envoy
    /// refuses them and so do we.
    pub fn new(
        ctx: &CertificateValidationContext,
        roots: &[CertificateDer<'static>],
    ) -> Result<Self, ConfigError> {
        check_fields(ctx)?;
        let sans = SanMatchers::new(ctx)?;
        let cert_hashes = ctx
            .verify_certificate_hash
            .iter()
            .map(|h| parse_hex_hash(h))
            .collect::<Result<Vec<_>, _>>()?;
        let spki_hashes = ctx
            .verify_certificate_spki
            .iter()
            .map(|h| parse_b64_hash(h))
            .collect::<Result<Vec<_>, _>>()?;
        let roots = if roots.is_empty() {
            if !sans.is_empty() {
                return Err(ConfigError::new(
                    "SAN-based verification of peer certificates without trusted CA is insecure \
                     and not allowed",
                ));
            }
            None
        } else {
            let mut store = RootCertStore::empty();
            for (i, r) in roots.iter().enumerate() {
                store.add(r.clone()).map_err(|e| {
                    ConfigError::new(format!("certificate {i}: {e}")).at("trusted_ca")
                })?;
            }
            Some(Arc::new(store))
        };
        Ok(Self {
            roots,
            sans,
            cert_hashes,
            spki_hashes,
            algorithms: crate::tls::provider().signature_verification_algorithms,
            stats: None,
        })
    }

    /// Whether anything is checked beyond the handshake signature.
    pub fn has_trust_roots(&self) -> bool {
        self.roots.is_some()
    }

    /// SAN and hash checks on a leaf whose chain already verified.
    fn check_leaf(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let leaf = Leaf::parse(end_entity).map_err(|e| other(VerifyError::Parse(e)))?;
        if !self.sans.allows(&leaf) {
            self.count(|s| s.fail_verify_san.inc());
            let mut sans = leaf.uri_sans.clone();
            sans.extend(leaf.dns_sans.iter().cloned());
            return Err(other(VerifyError::San { sans }));
        }
        if !self.cert_hashes.is_empty() || !self.spki_hashes.is_empty() {
            let cert_ok = self.cert_hashes.contains(&cert::sha256(end_entity));
            let spki_ok = self.spki_hashes.contains(&cert::sha256(&leaf.spki));
            if !cert_ok && !spki_ok {
                self.count(|s| s.fail_verify_cert_hash.inc());
                return Err(other(VerifyError::Hash));
            }
        }
        Ok(())
    }

    fn count(&self, f: impl FnOnce(&SslStats)) {
        if let Some(s) = &self.stats {
            f(s);
        }
    }

    fn count_chain_error<T>(&self, r: Result<T, rustls::Error>) -> Result<T, rustls::Error> {
        if r.is_err() {
            self.count(|s| s.fail_verify_error.inc());
        }
        r
    }
}

fn other(e: VerifyError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// Verifies server certificates for upstream connections.
#[derive(Debug)]
pub struct ServerVerifier(pub Arc<Validation>);

// === impl ServerVerifier ===

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let v = &self.0;
        if let Some(roots) = &v.roots {
            let parsed = ParsedCertificate::try_from(end_entity);
            let chain = parsed.and_then(|p| {
                rustls::client::verify_server_cert_signed_by_trust_anchor(
                    &p,
                    roots,
                    intermediates,
                    now,
                    v.algorithms.all,
                )
            });
            v.count_chain_error(chain)?;
        }
        v.check_leaf(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.algorithms.supported_schemes()
    }
}

/// Verifies client certificates when terminating TLS.
#[derive(Debug)]
pub struct ClientVerifier {
    validation: Arc<Validation>,
    chain: Option<Arc<dyn ClientCertVerifier>>,
    mandatory: bool,
}

// === impl ClientVerifier ===

impl ClientVerifier {
    /// Requests client certificates; `mandatory` refuses clients without one
    /// (`require_client_certificate`).
    pub fn new(validation: Arc<Validation>, mandatory: bool) -> Result<Self, ConfigError> {
        let chain = match &validation.roots {
            Some(roots) => {
                let mut b = WebPkiClientVerifier::builder_with_provider(
                    roots.clone(),
                    crate::tls::provider(),
                );
                if !mandatory {
                    b = b.allow_unauthenticated();
                }
                Some(b.build().map_err(|e| ConfigError::new(e.to_string()))?)
            }
            None => None,
        };
        Ok(Self {
            validation,
            chain,
            mandatory,
        })
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.as_ref().map_or(&[], |c| c.root_hint_subjects())
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if let Some(chain) = &self.chain {
            self.validation.count_chain_error(chain.verify_client_cert(
                end_entity,
                intermediates,
                now,
            ))?;
        }
        self.validation.check_leaf(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.validation.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.validation.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.validation.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(yaml: &str) -> CertificateValidationContext {
        crate::proto_test_util::from_yaml(yaml)
    }

    #[test]
    fn unsupported_fields_are_refused_by_name() {
        let err = |y: &str| check_fields(&ctx(y)).unwrap_err().to_string();
        assert_eq!(
            err("allow_expired_certificate: true"),
            "allow_expired_certificate: accepting expired certificates is not supported"
        );
        assert!(
            err("trust_chain_verification: ACCEPT_UNTRUSTED")
                .starts_with("trust_chain_verification:")
        );
        assert!(err("crl: {inline_string: x}").starts_with("crl:"));
        assert!(err("max_verify_depth: 2").starts_with("max_verify_depth:"));
        assert!(err("verify_certificate_hash: [zz]").contains("is not a hex SHA-256 hash"));
        assert!(err("verify_certificate_spki: [\"!!\"]").contains("is not a base64 SHA-256 hash"));
    }

    #[test]
    fn san_matchers_need_a_trusted_ca() {
        let e = Validation::new(
            &ctx("match_subject_alt_names: [{prefix: \"spiffe://cluster.local/\"}]"),
            &[],
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("without trusted CA is insecure"),
            "{e}"
        );
    }

    #[test]
    fn combined_context_merges_like_protobuf() {
        let default = ctx("match_subject_alt_names: [{exact: a}]");
        let dynamic = ctx("match_subject_alt_names: [{exact: b}]\ntrusted_ca: {inline_string: x}");
        let merged = merge(&default, &dynamic);
        #[allow(deprecated)]
        let n = merged.match_subject_alt_names.len();
        assert_eq!(n, 2);
        assert!(merged.trusted_ca.is_some());
    }

    #[test]
    fn hex_hashes_accept_colons() {
        let h = "DF:6F:F7:2F:E9:11:65:21:26:8F:64:71:73:3E:2F:E9:71:82:44:3F:24:E2:85:7A:92:E1:E0:F5:45:C1:55:C5";
        assert!(parse_hex_hash(h).is_ok());
        assert!(parse_hex_hash(&h.replace(':', "").to_lowercase()).is_ok());
        assert!(parse_hex_hash("abcd").is_err());
    }
}
