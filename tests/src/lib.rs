//! The end-to-end harness: pods are network namespaces that a test creates (and removes),
//! linked by veth pairs, with addresses that exist only inside them.
//!
//! Everything here needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN). Tests call
//! [`require_root`] first, which prints why a test is skipped when it cannot run.
#![forbid(unsafe_code)]

pub mod echo;
pub mod netns;

pub use echo::{AddrServer, connect_as, connect_from};
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
