//! Envoy's RBAC (`envoy.config.rbac.v3`), shared by the network filter
//! (`envoy.filters.network.rbac`) and the HTTP filter (`envoy.filters.http.rbac`), with the
//! semantics istiod relies on for AuthorizationPolicy.
//!
//! A config is compiled once: string matchers, regexes, CIDRs, header names and URI templates
//! are all prepared, so a decision walks a tree of plain enums and allocates nothing.
//! Every field is implemented or refused with an error naming it: a matcher silently skipped
//! could turn a DENY into nothing.
//!
//! - [`Engine`]: one `RBAC` message (ALLOW, DENY or LOG, and named policies) and its
//!   [`Decision`];
//! - [`Input`]: what a decision reads: the [`Downstream`](crate::conn::Downstream) (addresses,
//!   SNI, the verified peer certificate: the only source of identity), for HTTP the request
//!   head, the remote address the connection manager settled on, dynamic metadata;
//! - [`NetworkRbac`]: the network filter, decided on the first data of a connection;
//! - [`HttpRbac`] and [`HttpRbacPerRoute`]: the HTTP filter and its per-route override, with
//!   the `403 RBAC: access denied` local reply; [`HttpRbacFactory`] plugs them into the
//!   HTTP connection manager;
//! - [`RbacStats`]: Envoy's `rbac.allowed`, `rbac.denied`, `rbac.shadow_allowed` and
//!   `rbac.shadow_denied` counters under Envoy's names.
//!
//! Istio layers several filters (AUDIT/LOG, then DENY, then ALLOW): each is its own
//! [`HttpRbac`] or [`NetworkRbac`], run in order; the first denial stops the request.

mod cidr;
mod compile;
mod engine;
mod error;
mod hcm;
mod header;
mod http_filter;
mod input;
mod metadata;
mod network;
mod rule;
mod stats;
mod uri_template;

use std::collections::HashMap;

use envoy_types::pb::google::protobuf::{Any, Value};
use prost::{Message, Name};

pub use engine::{Action, Decision, Engine};
pub use error::RbacError;
pub use hcm::HttpRbacFactory;
pub use http_filter::{
    ACCESS_DENIED_BODY, HTTP_FILTER_NAME, HttpRbac, HttpRbacPerRoute, HttpVerdict, LocalReply,
};
pub use input::Input;
pub use network::{
    EnforcementType, NETWORK_FILTER_NAME, NetworkAction, NetworkRbac, NetworkRbacState,
    NetworkVerdict,
};
pub use stats::RbacStats;

use crate::config::ConfigError;
use crate::config::any::{UDPA_TYPED_STRUCT, XDS_TYPED_STRUCT};
use crate::proto::UnknownFields;

/// Decodes a filter config Any (or a TypedStruct of it), refusing fields this build does not
/// know: a newer matcher we silently dropped could turn a DENY into nothing.
fn decode_any<T: Message + Name + Default>(any: &Any) -> Result<T, ConfigError> {
    let decoded = if any.type_url == UDPA_TYPED_STRUCT || any.type_url == XDS_TYPED_STRUCT {
        let inner = crate::proto::unwrap_typed_struct(any, UnknownFields::Reject)
            .map_err(|e| ConfigError::new(e.to_string()))?;
        return decode_any(&inner.message);
    } else if any.type_url == T::type_url() {
        crate::proto::decode_binary::<T>(&any.value, UnknownFields::Reject)
    } else {
        return Err(ConfigError::from(RbacError::Type {
            expected: T::type_url(),
            got: any.type_url.clone(),
        }));
    };
    decoded
        .map(|d| d.message)
        .map_err(|e| ConfigError::new(e.to_string()))
}

/// The shadow engine's metadata fields, as both filters set them.
fn shadow_fields(fields: &mut HashMap<String, Value>, prefix: &str, shadow: &Decision<'_>) {
    if let Some(p) = shadow.matched_policy {
        fields.insert(
            format!("{prefix}shadow_effective_policy_id"),
            http_filter::string(p),
        );
    }
    let result = if shadow.allowed { "allowed" } else { "denied" };
    fields.insert(
        format!("{prefix}shadow_engine_result"),
        http_filter::string(result),
    );
}

#[cfg(test)]
mod tests;
