//! The end-to-end harness: pods are network namespaces that a test creates (and removes),
//! linked by veth pairs, with addresses that exist only inside them.
//!
//! Everything here needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN). Tests call
//! [`require_root`] first, which prints why a test is skipped when it cannot run.
#![forbid(unsafe_code)]

pub mod cp;
pub mod echo;
pub mod envoy;
pub mod http;
pub mod mesh;
pub mod netns;
pub mod scenarios;
pub mod tls;

pub use echo::{AddrServer, connect_as, connect_from};
pub use envoy::{EnvoyProcess, ProxyProcess, envoy_binary, require_envoy};
pub use netns::{Netns, link};

/// Whether this process can create network namespaces and program iptables.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Returns true when the test may run. Otherwise prints, once per test, that it was
/// skipped and why, so a non-root `cargo test` says what it did not check.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    eprintln!("SKIPPED {test}: needs root (network namespaces, iptables); CI runs it as root");
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real Envoy starts from a minimal bootstrap and answers on its admin port.
    #[test]
    fn envoy_starts_and_reports_live() {
        let Some(bin) = require_envoy("envoy_starts_and_reports_live") else {
            return;
        };
        let envoy = EnvoyProcess::start(
            &bin,
            "admin:\n  address:\n    socket_address: { address: 127.0.0.1, port_value: 0 }\n",
            &[],
        )
        .unwrap();
        let (status, body) = http::get(envoy.admin, "/server_info").unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("\"state\": \"LIVE\""), "{body}");
    }
}
