//! The mesh's test CA (what istiod's self-signed CA is to a real mesh): an ECDSA P-256 root
//! for `cluster.local` that issues workload certificates carrying only a SPIFFE URI SAN,
//! as Istio's are.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};

use crate::cp::model::TRUST_DOMAIN;

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot create the test CA or a workload certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{0:?} is not a valid URI SAN")]
    BadUri(String),
}

/// The root CA. Its key never leaves the process.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    root_pem: String,
}

/// A workload's key and certificate chain, as SDS serves them in the `default` secret.
#[derive(Clone, Debug)]
pub struct WorkloadCert {
    /// Leaf then root, PEM.
    pub chain_pem: String,
    /// PKCS#8 PEM.
    pub key_pem: String,
    /// The leaf, DER (its SHA-256 is the `Hash=` of an XFCC element).
    pub leaf_der: Vec<u8>,
    /// The SPIFFE id in the URI SAN.
    pub spiffe_id: String,
    /// When it was issued (its `notBefore` is a minute earlier, for clock skew).
    pub issued_at: SystemTime,
    pub not_after: SystemTime,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

// === impl Ca ===

impl Ca {
    /// A fresh self-signed root (`O=cluster.local`), valid for a day.
    pub fn new() -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, TRUST_DOMAIN);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::days(1);
        let root = params.self_signed(&key)?;
        Ok(Self {
            root_pem: root.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The root certificate, PEM (the `ROOTCA` secret).
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// Issues a certificate for `spiffe_id`, valid from a minute ago for `ttl`.
    pub fn issue(&self, spiffe_id: &str, ttl: Duration) -> Result<WorkloadCert, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let uri = spiffe_id
            .to_string()
            .try_into()
            .map_err(|_| CaError::BadUri(spiffe_id.to_string()))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(1);
        let ttl = time::Duration::try_from(ttl).unwrap_or(time::Duration::hours(1));
        params.not_after = now + ttl;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(WorkloadCert {
            chain_pem: format!("{}{}", cert.pem(), self.root_pem),
            key_pem: key.serialize_pem(),
            leaf_der: cert.der().to_vec(),
            spiffe_id: spiffe_id.to_string(),
            issued_at: SystemTime::now(),
            not_after: SystemTime::now() + Duration::try_from(ttl).unwrap_or_default(),
        })
    }
}

fn random_serial() -> [u8; 16] {
    use ring::rand::SecureRandom;
    let mut serial = [0u8; 16];
    // A failing system RNG leaves a zero serial; certificates still differ by key.
    let _ = ring::rand::SystemRandom::new().fill(&mut serial);
    serial[0] &= 0x7f;
    serial
}

// === impl WorkloadCert ===

impl WorkloadCert {
    /// Lowercase hex SHA-256 of the leaf: what Envoy writes as `Hash=` in XFCC.
    pub fn sha256_hex(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.leaf_der);
        digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }
}
