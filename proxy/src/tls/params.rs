//! `tls_params`: protocol versions, cipher suites and key exchange groups, mapped from
//! Envoy's (BoringSSL's) names onto what rustls implements.
//!
//! rustls speaks TLS 1.2 and 1.3 with AEAD suites and ECDHE only. A version below 1.2 or a
//! name nobody knows is an error. A real BoringSSL suite that rustls lacks (e.g. Istio's
//! default `AES256-GCM-SHA384`, which has no forward secrecy) is skipped, as long as some
//! listed suite remains: refusing Istio's default list would refuse every inbound listener.

use std::sync::Arc;

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    TlsParameters, tls_parameters::TlsProtocol,
};
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::{CipherSuite, SupportedCipherSuite, SupportedProtocolVersion};

use crate::config::ConfigError;

/// Which side of the connection we are: Envoy's defaults differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

/// Validated `tls_params`.
#[derive(Debug, Clone)]
pub struct TlsParams {
    pub versions: Vec<&'static SupportedProtocolVersion>,
    /// The provider with only the configured suites and groups.
    pub provider: Arc<CryptoProvider>,
}

/// (Envoy name, rustls suite) for the TLS 1.2 suites rustls implements.
const TLS12_SUITES: &[(&str, CipherSuite)] = &[
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// TLS 1.3 suite names as Envoy reports them.
const TLS13_SUITES: &[(&str, CipherSuite)] = &[
    (
        "TLS_AES_128_GCM_SHA256",
        CipherSuite::TLS13_AES_128_GCM_SHA256,
    ),
    (
        "TLS_AES_256_GCM_SHA384",
        CipherSuite::TLS13_AES_256_GCM_SHA384,
    ),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    ),
];

/// BoringSSL suites that Envoy accepts and rustls does not implement (no forward secrecy,
/// CBC mode, PSK or 3DES).
const BORINGSSL_ONLY: &[&str] = &[
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "DES-CBC3-SHA",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-RSA-AES256-SHA",
    "ECDHE-PSK-AES128-CBC-SHA",
    "ECDHE-PSK-AES256-CBC-SHA",
    "ECDHE-PSK-CHACHA20-POLY1305",
    "PSK-AES128-CBC-SHA",
    "PSK-AES256-CBC-SHA",
];

/// Groups Envoy knows that *ring* does not implement.
const UNSUPPORTED_GROUPS: &[&str] = &["P-224", "P-521", "X25519MLKEM768", "X25519Kyber768Draft00"];

/// The Envoy (OpenSSL) name of a suite, e.g. `TLS_AES_128_GCM_SHA256` or
/// `ECDHE-ECDSA-AES128-GCM-SHA256`.
pub fn suite_name(suite: CipherSuite) -> String {
    TLS12_SUITES
        .iter()
        .chain(TLS13_SUITES)
        .find(|(_, s)| *s == suite)
        .map_or_else(|| format!("{suite:?}"), |(n, _)| (*n).to_string())
}

/// `TLSv1.2` / `TLSv1.3`, as Envoy reports versions.
pub fn version_name(v: rustls::ProtocolVersion) -> &'static str {
    match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "unknown",
    }
}

// === impl TlsParams ===

impl TlsParams {
    /// Validates `tls_params` (absent means Envoy's defaults: TLS 1.2 only for clients,
    /// TLS 1.2 to 1.3 for servers).
    pub fn from_proto(proto: Option<&TlsParameters>, side: Side) -> Result<Self, ConfigError> {
        let default = TlsParameters::default();
        let p = proto.unwrap_or(&default);
        let at = |e: ConfigError| e.at("tls_params");
        let versions = versions(p, side).map_err(at)?;
        if !p.signature_algorithms.is_empty() {
            return Err(at(ConfigError::new(
                "is not supported; rustls picks signature algorithms itself",
            )
            .at("signature_algorithms")));
        }
        if !p.compliance_policies.is_empty() {
            return Err(at(
                ConfigError::new("are not supported").at("compliance_policies")
            ));
        }
        let base = crate::tls::provider();
        let tls12 = versions.contains(&&rustls::version::TLS12);
        let cipher_suites = suites(&p.cipher_suites, &base, tls12).map_err(at)?;
        let kx_groups = groups(&p.ecdh_curves, &base).map_err(at)?;
        Ok(Self {
            versions,
            provider: Arc::new(CryptoProvider {
                cipher_suites,
                kx_groups,
                ..(*base).clone()
            }),
        })
    }
}

fn versions(
    p: &TlsParameters,
    side: Side,
) -> Result<Vec<&'static SupportedProtocolVersion>, ConfigError> {
    let level = |v: i32, field: &str, default: u8| -> Result<u8, ConfigError> {
        match TlsProtocol::try_from(v) {
            Ok(TlsProtocol::TlsAuto) => Ok(default),
            Ok(TlsProtocol::TlSv12) => Ok(2),
            Ok(TlsProtocol::TlSv13) => Ok(3),
            Ok(old @ (TlsProtocol::TlSv10 | TlsProtocol::TlSv11)) => {
                Err(ConfigError::new(format!(
                    "{} is not supported; rustls implements TLSv1_2 and TLSv1_3 only",
                    old.as_str_name()
                ))
                .at(field.to_string()))
            }
            Err(_) => {
                Err(ConfigError::new(format!("unknown TLS version {v}")).at(field.to_string()))
            }
        }
    };
    let min = level(
        p.tls_minimum_protocol_version,
        "tls_minimum_protocol_version",
        2,
    )?;
    let max_default = if side == Side::Client { 2 } else { 3 };
    let max = level(
        p.tls_maximum_protocol_version,
        "tls_maximum_protocol_version",
        max_default,
    )?;
    // A client whose only bound is a TLSv1_3 minimum means 1.3.
    let max = max.max(if p.tls_maximum_protocol_version == 0 {
        min
    } else {
        0
    });
    if min > max {
        return Err(ConfigError::new(
            "tls_minimum_protocol_version is above tls_maximum_protocol_version",
        ));
    }
    let mut out = Vec::new();
    if max >= 3 {
        out.push(&rustls::version::TLS13);
    }
    if min <= 2 {
        out.push(&rustls::version::TLS12);
    }
    Ok(out)
}

fn suites(
    names: &[String],
    base: &CryptoProvider,
    tls12: bool,
) -> Result<Vec<SupportedCipherSuite>, ConfigError> {
    if names.is_empty() {
        return Ok(base.cipher_suites.clone());
    }
    let mut out: Vec<SupportedCipherSuite> = base
        .cipher_suites
        .iter()
        .filter(|s| s.tls13().is_some())
        .copied()
        .collect();
    let mut tls12_count = 0;
    for entry in names {
        for name in entry.trim_matches(|c| c == '[' || c == ']').split('|') {
            if let Some((_, id)) = TLS12_SUITES.iter().find(|(n, _)| *n == name) {
                if let Some(s) = base.cipher_suites.iter().find(|s| s.suite() == *id)
                    && !out.iter().any(|o| o.suite() == *id)
                {
                    out.push(*s);
                    tls12_count += 1;
                }
            } else if BORINGSSL_ONLY.contains(&name) {
                tracing::debug!(
                    "tls_params.cipher_suites: {name} is not implemented by rustls; skipped"
                );
            } else {
                return Err(ConfigError::new(format!(
                    "unknown cipher suite {name:?}; supported: {}",
                    supported_suites()
                ))
                .at("cipher_suites"));
            }
        }
    }
    if tls12 && tls12_count == 0 {
        return Err(ConfigError::new(format!(
            "none of {names:?} is implemented by rustls; TLS 1.2 needs one of: {}",
            supported_suites()
        ))
        .at("cipher_suites"));
    }
    Ok(out)
}

fn supported_suites() -> String {
    TLS12_SUITES
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

fn groups(
    names: &[String],
    base: &CryptoProvider,
) -> Result<Vec<&'static dyn SupportedKxGroup>, ConfigError> {
    use rustls::NamedGroup;
    if names.is_empty() {
        return Ok(base.kx_groups.clone());
    }
    let mut out: Vec<&'static dyn SupportedKxGroup> = Vec::new();
    for name in names {
        let group = match name.as_str() {
            "X25519" => NamedGroup::X25519,
            "P-256" => NamedGroup::secp256r1,
            "P-384" => NamedGroup::secp384r1,
            n if UNSUPPORTED_GROUPS.contains(&n) => {
                tracing::debug!("tls_params.ecdh_curves: {n} is not implemented; skipped");
                continue;
            }
            n => {
                return Err(ConfigError::new(format!(
                    "unknown curve {n:?}; supported: X25519, P-256, P-384"
                ))
                .at("ecdh_curves"));
            }
        };
        if let Some(g) = base.kx_groups.iter().find(|g| g.name() == group) {
            out.push(*g);
        }
    }
    if out.is_empty() {
        return Err(ConfigError::new(format!(
            "none of {names:?} is implemented; supported: X25519, P-256, P-384"
        ))
        .at("ecdh_curves"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(yaml: &str, side: Side) -> Result<TlsParams, ConfigError> {
        let p: TlsParameters = crate::proto_test_util::from_yaml(yaml);
        TlsParams::from_proto(Some(&p), side)
    }

    #[test]
    fn istio_inbound_params_are_accepted() {
        let p = params(
            "tls_minimum_protocol_version: TLSv1_2\ntls_maximum_protocol_version: TLSv1_3\n\
             cipher_suites: [ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-RSA-AES256-GCM-SHA384, \
             ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256, AES256-GCM-SHA384, AES128-GCM-SHA256]",
            Side::Server,
        )
        .unwrap();
        assert_eq!(p.versions.len(), 2);
        let tls12: Vec<String> = p
            .provider
            .cipher_suites
            .iter()
            .filter(|s| s.tls13().is_none())
            .map(|s| suite_name(s.suite()))
            .collect();
        assert_eq!(
            tls12,
            [
                "ECDHE-ECDSA-AES256-GCM-SHA384",
                "ECDHE-RSA-AES256-GCM-SHA384",
                "ECDHE-ECDSA-AES128-GCM-SHA256",
                "ECDHE-RSA-AES128-GCM-SHA256"
            ]
        );
    }

    #[test]
    fn envoy_defaults_per_side() {
        let client = TlsParams::from_proto(None, Side::Client).unwrap();
        assert_eq!(client.versions, [&rustls::version::TLS12]);
        let server = TlsParams::from_proto(None, Side::Server).unwrap();
        assert_eq!(server.versions.len(), 2);
        let only13 = params("tls_minimum_protocol_version: TLSv1_3", Side::Client).unwrap();
        assert_eq!(only13.versions, [&rustls::version::TLS13]);
    }

    #[test]
    fn unsupported_params_say_what_is_supported() {
        let err = |y: &str| params(y, Side::Server).unwrap_err().to_string();
        assert_eq!(
            err("tls_minimum_protocol_version: TLSv1_0"),
            "tls_params.tls_minimum_protocol_version: TLSv1_0 is not supported; rustls implements TLSv1_2 and TLSv1_3 only"
        );
        assert!(err("cipher_suites: [ECDHE-RSA-AES128-GCM-SHA257]").starts_with(
            "tls_params.cipher_suites: unknown cipher suite \"ECDHE-RSA-AES128-GCM-SHA257\"; supported: ECDHE-ECDSA-AES128-GCM-SHA256"
        ));
        assert!(
            err("cipher_suites: [AES128-SHA]")
                .contains("none of [\"AES128-SHA\"] is implemented by rustls")
        );
        // Only TLS 1.3 enabled: the TLS 1.2 list does not matter.
        assert!(
            params(
                "tls_minimum_protocol_version: TLSv1_3\ncipher_suites: [AES128-SHA]",
                Side::Server
            )
            .is_ok()
        );
        assert!(err("ecdh_curves: [P-521]").contains("none of [\"P-521\"] is implemented"));
        assert!(err("ecdh_curves: [brainpool]").contains("unknown curve"));
        assert!(
            err("signature_algorithms: [ecdsa_secp256r1_sha256]")
                .starts_with("tls_params.signature_algorithms")
        );
        assert!(
            err("tls_minimum_protocol_version: TLSv1_3\ntls_maximum_protocol_version: TLSv1_2")
                .contains("above")
        );
    }

    #[test]
    fn bracketed_groups_are_split() {
        let p = params(
            "cipher_suites: [\"[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]\"]",
            Side::Server,
        )
        .unwrap();
        assert_eq!(
            p.provider
                .cipher_suites
                .iter()
                .filter(|s| s.tls13().is_none())
                .count(),
            2
        );
    }
}
