//! Listener-side connection classification, as Envoy does it.
//!
//! An accepted connection is classified in three steps, each a pure function here so the
//! accept loop only does I/O:
//!
//! 1. [`tls_inspector`] peeks at the first bytes and decides `tls` or `raw_buffer`, pulling
//!    SNI and ALPN out of a TLS ClientHello (`envoy.filters.listener.tls_inspector`);
//! 2. [`http_inspector`] recognises plaintext HTTP/1.x and the HTTP/2 preface
//!    (`envoy.filters.listener.http_inspector`);
//! 3. [`filter_chain_match`] selects the filter chain with Envoy's `FilterChainMatch`
//!    precedence, from tables compiled once per listener config.
//!
//! [`peek`] runs the two inspectors in Envoy's order and hands the result to the matcher as
//! a [`ConnectionInfo`].

pub mod active;
mod app_protocols;
pub mod connection;
pub mod filter_chain_match;
pub mod http_inspector;
pub mod manager;
pub mod peek;
pub mod rbac_gate;
mod reader;
pub mod socket;
pub mod tls_inspector;

pub use app_protocols::{AlpnList, AppProtocols};
pub use filter_chain_match::{
    ChainSpec, ConnectionInfo, FilterChainMatchError, FilterChainMatcher, TransportProtocol,
};
pub use http_inspector::{HttpInspection, HttpProtocol};
pub use manager::ListenerManager;
pub use peek::{Inspectors, Peek, PeekClose, PeekedProtocols};
pub use tls_inspector::{ClientHello, TlsCloseReason, TlsInspection, TlsInspector};
