//! Test PKI: a CA per trust domain and SPIFFE leaf certificates, as Istio's CA issues them.

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::CertificateDer;

/// A certificate authority.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pub pem: String,
}

/// A leaf certificate and its key.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

// === impl Ca ===

impl Ca {
    pub fn new(trust_domain: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::OrganizationName, trust_domain);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self { params, key, pem }
    }

    /// A workload certificate with one URI SAN, valid 2020..2100.
    pub fn leaf(&self, uri: &str) -> Leaf {
        self.leaf_with(uri, |_| {})
    }

    /// A workload certificate, with `edit` applied to its parameters first.
    pub fn leaf_with(&self, uri: &str, edit: impl FnOnce(&mut CertificateParams)) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            DnType::OrganizationName,
            self.params
                .distinguished_name
                .get(&DnType::OrganizationName)
                .cloned()
                .unwrap(),
        );
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        edit(&mut params);
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// `ROOTCA`-style validation secret.
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
}

// === impl Leaf ===

impl Leaf {
    pub fn der(&self) -> CertificateDer<'static> {
        use rustls_pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).unwrap()
    }

    /// `default`-style certificate secret.
    pub fn secret(&self, name: &str) -> Secret {
        Secret {
            name: name.into(),
            r#type: Some(secret::Type::TlsCertificate(self.tls_certificate())),
        }
    }

    pub fn tls_certificate(&self) -> TlsCertificate {
        TlsCertificate {
            certificate_chain: Some(inline(&self.cert_pem)),
            private_key: Some(inline(&self.key_pem)),
            ..Default::default()
        }
    }
}

pub fn inline(s: &str) -> DataSource {
    DataSource {
        specifier: Some(Specifier::InlineString(s.to_string())),
        ..Default::default()
    }
}

/// Istio's inbound `DownstreamTlsContext` (`BuildInboundTLS`), secrets over ADS.
pub const ISTIO_INBOUND: &str = r#"
common_tls_context:
  tls_params:
    tls_minimum_protocol_version: TLSv1_2
    tls_maximum_protocol_version: TLSv1_3
    cipher_suites: [ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-RSA-AES256-GCM-SHA384, ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256, AES256-GCM-SHA384, AES128-GCM-SHA256]
  alpn_protocols: [istio-peer-exchange, h2, http/1.1]
  tls_certificate_sds_secret_configs: [{name: default, sds_config: {ads: {}, resource_api_version: V3}}]
  combined_validation_context:
    default_validation_context: {match_subject_alt_names: [{prefix: "spiffe://cluster.local/"}]}
    validation_context_sds_secret_config: {name: ROOTCA, sds_config: {ads: {}, resource_api_version: V3}}
require_client_certificate: true
"#;

/// Istio's ISTIO_MUTUAL `UpstreamTlsContext` for a destination with service account
/// `server`, secrets over ADS.
pub fn istio_mutual(expected_san: &str) -> String {
    format!(
        r#"
common_tls_context:
  tls_params: {{tls_minimum_protocol_version: TLSv1_2, tls_maximum_protocol_version: TLSv1_3}}
  alpn_protocols: [istio-peer-exchange, istio]
  tls_certificate_sds_secret_configs: [{{name: default, sds_config: {{ads: {{}}, resource_api_version: V3}}}}]
  combined_validation_context:
    default_validation_context: {{match_subject_alt_names: [{{exact: "{expected_san}"}}]}}
    validation_context_sds_secret_config: {{name: ROOTCA, sds_config: {{ads: {{}}, resource_api_version: V3}}}}
sni: outbound_.9080_.v1_.productpage.default.svc.cluster.local
"#
    )
}

/// A store holding `default` (a leaf for `spiffe`) and `ROOTCA` (the CA), as SDS delivers them.
pub fn mesh_store(ca: &Ca, spiffe: &str) -> crate::tls::SecretStore {
    let store = crate::tls::SecretStore::new();
    store
        .apply(&[ca.leaf(spiffe).secret("default"), ca.root_secret("ROOTCA")])
        .unwrap();
    store
}

pub const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/server";
pub const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";
