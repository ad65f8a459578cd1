//! What a certificate says, in the forms Envoy exposes: SANs by type, the RFC 2253 subject,
//! the SHA-256 fingerprint and PEM (RBAC, XFCC, access logs).

use std::fmt::Write as _;
use std::net::IpAddr;

use base64::Engine as _;
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate, X509Name};

use crate::conn::PeerCertificate;

/// The parts of a certificate that verification and identity need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leaf {
    pub uri_sans: Vec<String>,
    pub dns_sans: Vec<String>,
    pub email_sans: Vec<String>,
    pub ip_sans: Vec<String>,
    /// RFC 2253, e.g. `CN=foo,O=bar`.
    pub subject: String,
    /// Validity, seconds since the epoch.
    pub not_before: i64,
    pub not_after: i64,
    pub not_after_text: String,
    /// The serial number in lower-case hex, whole bytes (Envoy's `/certs`, from OpenSSL's
    /// `BN_bn2hex`).
    pub serial_hex: String,
    /// DER of the SubjectPublicKeyInfo (for `verify_certificate_spki`).
    pub spki: Vec<u8>,
}

// === impl Leaf ===

impl Leaf {
    /// Parses a DER certificate; the error says why it is not one.
    pub fn parse(der: &[u8]) -> Result<Self, String> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
        let mut leaf = Self {
            subject: rfc2253(cert.subject()),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            not_after_text: cert.validity().not_after.to_string(),
            serial_hex: serial_hex(&cert.serial.to_bytes_be()),
            spki: cert.public_key().raw.to_vec(),
            ..Self::default()
        };
        let san = cert
            .subject_alternative_name()
            .map_err(|e| format!("malformed subjectAltName: {e}"))?;
        for name in san.iter().flat_map(|s| s.value.general_names.iter()) {
            match name {
                GeneralName::URI(u) => leaf.uri_sans.push((*u).to_string()),
                GeneralName::DNSName(d) => leaf.dns_sans.push((*d).to_string()),
                GeneralName::RFC822Name(e) => leaf.email_sans.push((*e).to_string()),
                GeneralName::IPAddress(ip) => {
                    if let Some(ip) = ip_from_bytes(ip) {
                        leaf.ip_sans.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
        Ok(leaf)
    }
}

/// The peer certificate as RBAC and XFCC see it.
pub fn peer_certificate(der: &CertificateDer<'_>) -> Result<PeerCertificate, String> {
    let leaf = Leaf::parse(der)?;
    Ok(PeerCertificate {
        uri_sans: leaf.uri_sans,
        dns_sans: leaf.dns_sans,
        subject: leaf.subject,
        sha256_hex: sha256_hex(der),
        pem: pem(der),
    })
}

/// Lower-case hex SHA-256 of `der`, as Envoy prints certificate hashes.
pub fn sha256_hex(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = String::with_capacity(64);
    for b in digest.as_ref() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// A DER certificate as PEM, 64 characters a line.
pub fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Whole bytes of a big-endian number in lower-case hex; "0" for zero.
fn serial_hex(bytes: &[u8]) -> String {
    let bytes = match bytes.iter().position(|b| *b != 0) {
        Some(i) => &bytes[i..],
        None => return "0".to_string(),
    };
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

/// A name in RFC 2253 form, as OpenSSL's `XN_FLAG_RFC2253` prints it (Envoy's
/// `subjectPeerCertificate`): RDNs last to first, comma separated, multi-valued RDNs joined
/// with `+`, short attribute names, special characters escaped.
pub fn rfc2253(name: &X509Name<'_>) -> String {
    let mut rdns: Vec<String> = Vec::new();
    for rdn in name.iter() {
        let parts: Vec<String> = rdn
            .iter()
            .map(|attr| {
                let oid = attr.attr_type().to_id_string();
                let key = short_name(&oid).map_or(oid, str::to_string);
                let value = match attr.as_str() {
                    Ok(s) => escape(s),
                    Err(_) => {
                        let mut hex = String::from("#");
                        for b in attr.attr_value().data {
                            let _ = write!(hex, "{b:02X}");
                        }
                        hex
                    }
                };
                format!("{key}={value}")
            })
            .collect();
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    rdns.join(",")
}

fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.42" => "GN",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "emailAddress",
        _ => return None,
    })
}

fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::secrets::testing::Ca;

    #[test]
    fn peer_certificate_from_a_spiffe_cert() {
        let ca = Ca::new("cluster.local");
        let leaf = ca.leaf("spiffe://cluster.local/ns/default/sa/client");
        let der = leaf.der();
        let peer = peer_certificate(&der).unwrap();
        assert_eq!(
            peer.uri_sans,
            ["spiffe://cluster.local/ns/default/sa/client"]
        );
        assert_eq!(peer.subject, "O=cluster.local");
        assert_eq!(peer.sha256_hex.len(), 64);
        assert_eq!(peer.sha256_hex, sha256_hex(&der));
        assert!(peer.pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        let tls = crate::conn::PeerTls {
            peer_certificate: Some(peer),
            ..Default::default()
        };
        assert_eq!(
            tls.principal(),
            Some("spiffe://cluster.local/ns/default/sa/client")
        );
    }

    #[test]
    fn subject_is_rfc2253_last_rdn_first_and_escaped() {
        let mut params = rcgen::CertificateParams::new(vec!["a.example".into()]).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CountryName, "US");
        dn.push(rcgen::DnType::OrganizationName, "Acme, Inc");
        dn.push(rcgen::DnType::CommonName, "#web ");
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let leaf = Leaf::parse(cert.der()).unwrap();
        assert_eq!(leaf.subject, r"CN=\#web\ ,O=Acme\, Inc,C=US");
        assert_eq!(leaf.dns_sans, ["a.example"]);
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(
            Leaf::parse(b"not a certificate")
                .unwrap_err()
                .contains("not a valid X.509 certificate")
        );
    }
}
