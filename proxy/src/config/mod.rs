//! From Envoy protos to a typed, validated, immutable model. Every check happens here, once;
//! the data path never re-validates. A conversion error is exactly the text a bootstrap
//! error or an xDS NACK carries, so it names the resource and the field.

pub mod any;
pub mod cluster;
pub mod endpoint;
pub mod extension;
pub mod listener;
pub mod tcp_proxy;

use std::fmt;
use std::time::Duration;

use envoy_types::pb::google::protobuf::Duration as ProtoDuration;

/// A configuration that cannot be used, and where the problem is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Outermost first, e.g. `["cluster \"backend\"", "load_assignment", "endpoints[0]"]`.
    path: Vec<String>,
    reason: String,
}

// === impl ConfigError ===

impl ConfigError {
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            path: Vec::new(),
            reason: reason.into(),
        }
    }

    /// Adds an enclosing path segment (a field name, an index, a resource name).
    pub fn at(mut self, segment: impl fmt::Display) -> Self {
        self.path.insert(0, segment.to_string());
        self
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            return f.write_str(&self.reason);
        }
        let mut path = String::new();
        for (i, seg) in self.path.iter().enumerate() {
            if i > 0 && !seg.starts_with('[') {
                // The outermost segment may name a resource (`cluster "x"`): a space follows
                // it; fields are joined by dots.
                let resource = i == 1 && self.path[0].contains(' ');
                path.push(if resource { ' ' } else { '.' });
            }
            path.push_str(seg);
        }
        write!(f, "{path}: {}", self.reason)
    }
}

/// Adds path context to conversion results.
pub trait Context<T> {
    fn at(self, segment: impl fmt::Display) -> Result<T, ConfigError>;
}

impl<T> Context<T> for Result<T, ConfigError> {
    fn at(self, segment: impl fmt::Display) -> Result<T, ConfigError> {
        self.map_err(|e| e.at(segment))
    }
}

/// A protobuf Duration as a std Duration; negative values are an error.
pub fn duration(d: &ProtoDuration) -> Result<Duration, ConfigError> {
    if d.seconds < 0 || d.nanos < 0 {
        return Err(ConfigError::new(format!(
            "duration must not be negative ({}s {}ns)",
            d.seconds, d.nanos
        )));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// An optional Duration with a default.
pub fn duration_or(d: Option<&ProtoDuration>, default: Duration) -> Result<Duration, ConfigError> {
    d.map_or(Ok(default), duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_paths() {
        let e = ConfigError::new("unknown address")
            .at("[1]")
            .at("lb_endpoints")
            .at("[0]")
            .at("endpoints")
            .at("load_assignment")
            .at("cluster \"backend\"");
        assert_eq!(
            e.to_string(),
            "cluster \"backend\" load_assignment.endpoints[0].lb_endpoints[1]: unknown address"
        );
    }
}
