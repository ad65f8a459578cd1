//! Envoy's TLS stats (`<listener or cluster scope>.ssl.*`).

use crate::stats::{Counter, Scope};

/// The `ssl.*` counters of a listener (`listener.<address>.ssl.`) or a cluster
/// (`cluster.<name>.ssl.`).
#[derive(Debug, Clone)]
pub struct SslStats {
    pub handshake: Counter,
    pub connection_error: Counter,
    pub no_certificate: Counter,
    pub fail_verify_no_cert: Counter,
    pub fail_verify_error: Counter,
    pub fail_verify_san: Counter,
    pub fail_verify_cert_hash: Counter,
    scope: Scope,
}

// === impl SslStats ===

impl SslStats {
    /// Stats under `<scope>ssl.`.
    pub fn new(scope: &Scope) -> Self {
        let s = scope.scope("ssl");
        Self {
            handshake: s.counter("handshake"),
            connection_error: s.counter("connection_error"),
            no_certificate: s.counter("no_certificate"),
            fail_verify_no_cert: s.counter("fail_verify_no_cert"),
            fail_verify_error: s.counter("fail_verify_error"),
            fail_verify_san: s.counter("fail_verify_san"),
            fail_verify_cert_hash: s.counter("fail_verify_cert_hash"),
            scope: s,
        }
    }

    /// Counts a completed handshake with its version and cipher, as
    /// `ssl.versions.<v>` and `ssl.ciphers.<c>`.
    pub fn handshake_done(&self, version: &str, cipher: &str, peer_cert: bool) {
        self.handshake.inc();
        if !peer_cert {
            self.no_certificate.inc();
        }
        self.scope.scope("versions").counter(version).inc();
        self.scope.scope("ciphers").counter(cipher).inc();
    }
}
