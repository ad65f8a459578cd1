//! `iptables-init`: a drop-in replacement for Istio's `istio-iptables` (the `istio-init`
//! container). It programs the same iptables rules, from the same flags and environment
//! variables, so that a pod's TCP traffic reaches the sidecar proxy.
//!
//! The pieces, in the order data flows through them:
//!
//! - [`cli`]: flags and environment variables into a validated [`config::Config`];
//! - [`capture::plan`]: a pure function from the config to the rules ([`builder::RuleSet`])
//!   and host routing steps, identical to istio-iptables' output;
//! - [`run::run`]: applies the plan with `iptables-restore --noflush` per IP family, checks
//!   whether it is already in place, reconciles drift, cleans up, rolls back on failure;
//! - [`validation::validate`]: Istio's probe that redirection really works.
//!
//! ```
//! use iptables_init::capture::plan;
//! use iptables_init::builder::Family;
//! use iptables_init::config::{Config, InboundPorts};
//!
//! let cfg = Config { inbound_ports_include: InboundPorts::All, ..Config::default() };
//! let rules = plan(&cfg).rules.restore_input(Family::V4);
//! assert!(rules.contains("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT"));
//! ```
#![forbid(unsafe_code)]

pub mod builder;
pub mod capture;
pub mod cli;
pub mod config;
pub mod iptables;
pub mod run;
pub mod state;
pub mod system;
pub mod validation;
