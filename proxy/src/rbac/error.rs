//! Why an RBAC config is refused. Each error becomes a [`ConfigError`] whose path names the
//! field, so the text is what a bootstrap error or an xDS NACK reports.

use crate::config::ConfigError;
use crate::matcher::MatcherError;

/// What is wrong with one RBAC field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RbacError {
    /// A field we do not implement. Ignoring it could turn a DENY into nothing, so it fails.
    #[error(
        "{0} is not supported; refusing the config rather than ignoring a rule that decides \
         who is allowed"
    )]
    Unsupported(&'static str),
    /// A required oneof is unset: empty in the config, or a variant newer than this proxy.
    #[error("{0} must be set (it is empty, or uses a field this proxy does not know)")]
    Unset(&'static str),
    #[error(
        "header rules are not supported by the RBAC network filter (a connection has no headers)"
    )]
    NetworkHeader,
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("`any` must be true when set")]
    AnyFalse,
    #[error("unknown {what} value {value}")]
    UnknownEnum { what: &'static str, value: i32 },
    #[error("destination_port {0} is out of range (at most 65535)")]
    Port(u32),
    #[error("range start {0} is out of bounds")]
    RangeStart(i32),
    #[error("range end {0} is out of bounds")]
    RangeEnd(i32),
    #[error("range start {start} cannot be greater or equal than range end {end}")]
    RangeOrder { start: i64, end: i64 },
    #[error("malformed IP address: {0:?}")]
    Address(String),
    #[error("prefix_len {0} is out of range (at most 128)")]
    PrefixLen(u32),
    #[error("{0}")]
    Matcher(#[from] MatcherError),
    #[error("invalid path_template {template:?}: {reason}")]
    UriTemplate { template: String, reason: String },
    #[error("expected {expected}, got {got}")]
    Type { expected: String, got: String },
    #[error("{0}")]
    Decode(String),
}

// === impl RbacError ===

impl From<RbacError> for ConfigError {
    fn from(e: RbacError) -> Self {
        ConfigError::new(e.to_string())
    }
}

/// Shorthand: an [`RbacError`] as a [`ConfigError`] at `field`.
pub(crate) fn at(e: RbacError, field: &str) -> ConfigError {
    ConfigError::from(e).at(field)
}
