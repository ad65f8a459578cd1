//! Test PKI for the TLS integration tests: a CA per trust domain and SPIFFE workload
//! certificates as Istio's CA issues them (ECDSA P-256, URI SAN, server+client auth).

use std::path::{Path, PathBuf};

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pub pem: String,
}

pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

// === impl Ca ===

impl Ca {
    pub fn new(org: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self { params, key, pem }
    }

    pub fn leaf(&self, uri: &str) -> Leaf {
        self.leaf_until(uri, rcgen::date_time_ymd(2100, 1, 1))
    }

    /// A leaf for `uri` that expires at `not_after` (valid since 2020).
    pub fn leaf_until(&self, uri: &str, not_after: time::OffsetDateTime) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = not_after;
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    pub fn root_secret(&self, name: &str) -> Secret {
        Secret {
            name: name.into(),
            r#type: Some(secret::Type::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(inline(&self.pem)),
                    ..Default::default()
                },
            )),
        }
    }

    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.pem).unwrap();
        path
    }
}

// === impl Leaf ===

impl Leaf {
    pub fn secret(&self, name: &str) -> Secret {
        Secret {
            name: name.into(),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: Some(inline(&self.cert_pem)),
                private_key: Some(inline(&self.key_pem)),
                ..Default::default()
            })),
        }
    }

    /// Writes `<name>.pem` and `<name>-key.pem`; returns both paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }
}

pub fn inline(s: &str) -> DataSource {
    DataSource {
        specifier: Some(Specifier::InlineString(s.to_string())),
        ..Default::default()
    }
}

/// An `SdsSecretConfig` as YAML: over `sds_source` (e.g. `{ads: {}}`), or a bootstrap
/// secret when `STATIC`.
fn sds_ref(name: &str, sds_source: &str) -> String {
    if sds_source == STATIC {
        format!("{{name: {name}}}")
    } else {
        format!("{{name: {name}, sds_config: {sds_source}}}")
    }
}

/// `sds_source` for secrets from the bootstrap's `static_resources.secrets`.
pub const STATIC: &str = "STATIC";

/// Istio's ISTIO_MUTUAL `UpstreamTlsContext` (as in the conformance dump
/// `describe-http_config.json`), secrets `default` and `ROOTCA` over SDS (`sds_source`
/// is YAML for the `sds_config`, e.g. `{ads: {}}`, or [`STATIC`]), as YAML.
pub fn istio_mutual(expected_sans: &[&str], alpn: &[&str], sds_source: &str) -> String {
    let sans: Vec<String> = expected_sans
        .iter()
        .map(|s| format!("{{exact: \"{s}\"}}"))
        .collect();
    format!(
        "common_tls_context:\n  tls_params: {{tls_minimum_protocol_version: TLSv1_2, tls_maximum_protocol_version: TLSv1_3}}\n  alpn_protocols: [{}]\n  tls_certificate_sds_secret_configs: [{}]\n  combined_validation_context:\n    default_validation_context: {{match_subject_alt_names: [{}]}}\n    validation_context_sds_secret_config: {}\nsni: outbound_.9080_.v1_.productpage.default.svc.cluster.local\n",
        alpn.join(", "),
        sds_ref("default", sds_source),
        sans.join(", "),
        sds_ref("ROOTCA", sds_source),
    )
}

/// Istio's inbound `DownstreamTlsContext` (`BuildInboundTLS`), as YAML.
pub fn istio_inbound(alpn: &[&str], sds_source: &str) -> String {
    format!(
        "common_tls_context:\n  tls_params:\n    tls_minimum_protocol_version: TLSv1_2\n    tls_maximum_protocol_version: TLSv1_3\n    cipher_suites: [ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-RSA-AES256-GCM-SHA384, ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256, AES256-GCM-SHA384, AES128-GCM-SHA256]\n  alpn_protocols: [{}]\n  tls_certificate_sds_secret_configs: [{}]\n  combined_validation_context:\n    default_validation_context: {{match_subject_alt_names: [{{prefix: \"spiffe://cluster.local/\"}}]}}\n    validation_context_sds_secret_config: {}\nrequire_client_certificate: true\n",
        alpn.join(", "),
        sds_ref("default", sds_source),
        sds_ref("ROOTCA", sds_source),
    )
}

/// Indents every line of `yaml` by `n` spaces.
pub fn indent(yaml: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    yaml.lines().map(|l| format!("{pad}{l}\n")).collect()
}
