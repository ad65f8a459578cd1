//! `/certs`: the certificates every TLS context presents and trusts, in Envoy's
//! `admin.v3.Certificates` shape (one entry per context whose secrets have arrived:
//! listener filter chains, then cluster transports).

use std::time::{SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::admin::v3::{
    Certificate, CertificateDetails, Certificates, SubjectAlternateName, subject_alternate_name,
};
use envoy_types::pb::google::protobuf::Timestamp;
use serde_json::Value;

use crate::server::Shared;
use crate::tls::cert::Leaf;
use crate::tls::{ContextCerts, SourcedCert};

/// Envoy's path for certificates that came inline or over SDS.
const INLINE: &str = "<inline>";

/// The `/certs` body.
pub fn certs(shared: &Shared) -> Value {
    let contexts = shared.tls_contexts();
    let message = Certificates {
        certificates: contexts.iter().map(certificate).collect(),
    };
    let mut json = crate::proto::encode(&message).unwrap_or_else(|e| {
        tracing::error!("/certs: {e}");
        serde_json::json!({ "certificates": [] })
    });
    print_defaults(&mut json);
    json
}

/// Envoy prints `/certs` with default values included: empty lists and zero days.
fn print_defaults(json: &mut Value) {
    let Some(obj) = json.as_object_mut() else {
        return;
    };
    let certificates = obj
        .entry("certificates")
        .or_insert_with(|| Value::Array(Vec::new()));
    for cert in certificates.as_array_mut().into_iter().flatten() {
        let Some(cert) = cert.as_object_mut() else {
            continue;
        };
        for key in ["ca_cert", "cert_chain"] {
            let list = cert.entry(key).or_insert_with(|| Value::Array(Vec::new()));
            for details in list.as_array_mut().into_iter().flatten() {
                if let Some(d) = details.as_object_mut() {
                    d.entry("subject_alt_names")
                        .or_insert_with(|| Value::Array(Vec::new()));
                    d.entry("days_until_expiration")
                        .or_insert_with(|| Value::String("0".into()));
                }
            }
        }
    }
}

fn certificate(ctx: &ContextCerts) -> Certificate {
    Certificate {
        ca_cert: ctx.ca.iter().filter_map(details).collect(),
        cert_chain: ctx.chain.iter().filter_map(details).collect(),
    }
}

fn details((path, der): &SourcedCert) -> Option<CertificateDetails> {
    let leaf = Leaf::parse(der).ok()?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let name = |n| SubjectAlternateName { name: Some(n) };
    // Envoy lists DNS, then URI, then IP SANs.
    let subject_alt_names = leaf
        .dns_sans
        .iter()
        .map(|d| name(subject_alternate_name::Name::Dns(d.clone())))
        .chain(
            leaf.uri_sans
                .iter()
                .map(|u| name(subject_alternate_name::Name::Uri(u.clone()))),
        )
        .chain(
            leaf.ip_sans
                .iter()
                .map(|i| name(subject_alternate_name::Name::IpAddress(i.clone()))),
        )
        .collect();
    Some(CertificateDetails {
        path: path.clone().unwrap_or_else(|| INLINE.to_string()),
        serial_number: leaf.serial_hex.clone(),
        subject_alt_names,
        days_until_expiration: u64::try_from((leaf.not_after - now) / 86_400).unwrap_or(0),
        valid_from: Some(Timestamp {
            seconds: leaf.not_before,
            nanos: 0,
        }),
        expiration_time: Some(Timestamp {
            seconds: leaf.not_after,
            nanos: 0,
        }),
        ocsp_details: None,
    })
}
