//! Envoy's route `retry_policy`: which outcomes are retried, how often, after what back-off,
//! and on which host.

use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3::{
    RetryPolicy as RetryPolicyProto, retry_policy::retry_host_predicate,
};
use http::{HeaderMap, StatusCode};

use super::route::matcher::{HeaderMatcher, RequestView};
use crate::config::{ConfigError, Context, duration};

const PREVIOUS_HOSTS: &str = "envoy.retry_host_predicates.previous_hosts";
const PREVIOUS_HOSTS_TYPE: &str =
    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";

/// The `retry_on` conditions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn(u32);

impl RetryOn {
    pub const FIVE_XX: Self = Self(1);
    pub const GATEWAY_ERROR: Self = Self(1 << 1);
    pub const RESET: Self = Self(1 << 2);
    pub const CONNECT_FAILURE: Self = Self(1 << 3);
    pub const RETRIABLE_4XX: Self = Self(1 << 4);
    pub const REFUSED_STREAM: Self = Self(1 << 5);
    pub const RETRIABLE_STATUS_CODES: Self = Self(1 << 6);
    pub const RETRIABLE_HEADERS: Self = Self(1 << 7);
    pub const RESET_BEFORE_REQUEST: Self = Self(1 << 8);
    pub const ENVOY_RATELIMITED: Self = Self(1 << 9);
    pub const GRPC_CANCELLED: Self = Self(1 << 10);
    pub const GRPC_DEADLINE_EXCEEDED: Self = Self(1 << 11);
    pub const GRPC_INTERNAL: Self = Self(1 << 12);
    pub const GRPC_RESOURCE_EXHAUSTED: Self = Self(1 << 13);
    pub const GRPC_UNAVAILABLE: Self = Self(1 << 14);

    /// Parses a comma-separated `retry_on` (or `x-envoy-retry-on`) value. Unknown tokens are
    /// ignored, as Envoy does.
    pub fn parse(s: &str) -> Self {
        let mut on = Self::default();
        for token in s.split(',').map(str::trim) {
            on.0 |= match token {
                "5xx" => Self::FIVE_XX.0,
                "gateway-error" => Self::GATEWAY_ERROR.0,
                "reset" => Self::RESET.0,
                "reset-before-request" => Self::RESET_BEFORE_REQUEST.0,
                "connect-failure" => Self::CONNECT_FAILURE.0,
                "retriable-4xx" => Self::RETRIABLE_4XX.0,
                "refused-stream" => Self::REFUSED_STREAM.0,
                "retriable-status-codes" => Self::RETRIABLE_STATUS_CODES.0,
                "retriable-headers" => Self::RETRIABLE_HEADERS.0,
                "envoy-ratelimited" => Self::ENVOY_RATELIMITED.0,
                "cancelled" => Self::GRPC_CANCELLED.0,
                "deadline-exceeded" => Self::GRPC_DEADLINE_EXCEEDED.0,
                "internal" => Self::GRPC_INTERNAL.0,
                "resource-exhausted" => Self::GRPC_RESOURCE_EXHAUSTED.0,
                "unavailable" => Self::GRPC_UNAVAILABLE.0,
                _ => 0,
            };
        }
        on
    }

    pub fn has(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for RetryOn {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// Why an attempt failed without a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetKind {
    ConnectFailure,
    /// The request was never written to the connection.
    BeforeRequest,
    Reset,
    RefusedStream,
    /// The per-try timeout fired.
    Timeout,
    Overflow,
}

/// A compiled retry policy.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub on: RetryOn,
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub per_try_idle_timeout: Option<Duration>,
    pub retriable_status_codes: Vec<u16>,
    pub retriable_headers: Vec<HeaderMatcher>,
    pub retriable_request_headers: Vec<HeaderMatcher>,
    /// `previous_hosts`: retries avoid hosts already tried.
    pub avoid_previous_hosts: bool,
    pub host_selection_max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            on: RetryOn::default(),
            num_retries: 1,
            per_try_timeout: None,
            per_try_idle_timeout: None,
            retriable_status_codes: Vec::new(),
            retriable_headers: Vec::new(),
            retriable_request_headers: Vec::new(),
            avoid_previous_hosts: false,
            host_selection_max_attempts: 1,
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
        }
    }
}

// === impl RetryPolicy ===

impl RetryPolicy {
    pub fn new(p: &RetryPolicyProto) -> Result<Self, ConfigError> {
        if p.retry_priority.is_some() {
            return Err(ConfigError::new("retry priorities are not supported").at("retry_priority"));
        }
        if !p.retry_options_predicates.is_empty() {
            return Err(
                ConfigError::new("retry options predicates are not supported")
                    .at("retry_options_predicates"),
            );
        }
        if p.rate_limited_retry_back_off.is_some() {
            return Err(
                ConfigError::new("rate-limited retry back-off is not supported")
                    .at("rate_limited_retry_back_off"),
            );
        }
        let mut avoid_previous_hosts = false;
        for (i, pred) in p.retry_host_predicate.iter().enumerate() {
            let type_url = match &pred.config_type {
                Some(retry_host_predicate::ConfigType::TypedConfig(a)) => a.type_url.as_str(),
                None => "",
            };
            if pred.name == PREVIOUS_HOSTS || type_url == PREVIOUS_HOSTS_TYPE {
                avoid_previous_hosts = true;
            } else {
                return Err(ConfigError::new(format!(
                    "retry host predicate {:?} is not supported",
                    pred.name
                ))
                .at(format!("retry_host_predicate[{i}]")));
            }
        }
        let mut policy = Self {
            on: RetryOn::parse(&p.retry_on),
            num_retries: p.num_retries.map_or(1, |n| n.value),
            per_try_timeout: p
                .per_try_timeout
                .as_ref()
                .map(duration)
                .transpose()
                .at("per_try_timeout")?
                .filter(|d| !d.is_zero()),
            per_try_idle_timeout: p
                .per_try_idle_timeout
                .as_ref()
                .map(duration)
                .transpose()
                .at("per_try_idle_timeout")?
                .filter(|d| !d.is_zero()),
            retriable_status_codes: p
                .retriable_status_codes
                .iter()
                .map(|c| u16::try_from(*c).unwrap_or(0))
                .collect(),
            retriable_headers: matchers(&p.retriable_headers).at("retriable_headers")?,
            retriable_request_headers: matchers(&p.retriable_request_headers)
                .at("retriable_request_headers")?,
            avoid_previous_hosts,
            host_selection_max_attempts: u32::try_from(p.host_selection_retry_max_attempts)
                .unwrap_or(1)
                .max(1),
            ..Self::default()
        };
        if let Some(b) = &p.retry_back_off {
            let base = b
                .base_interval
                .as_ref()
                .map(duration)
                .transpose()
                .at("retry_back_off.base_interval")?
                .ok_or_else(|| {
                    ConfigError::new("base_interval is required").at("retry_back_off")
                })?;
            if base.is_zero() {
                return Err(ConfigError::new("base_interval must be greater than zero")
                    .at("retry_back_off"));
            }
            let max = b
                .max_interval
                .as_ref()
                .map(duration)
                .transpose()
                .at("retry_back_off.max_interval")?
                .unwrap_or(base * 10);
            if max < base {
                return Err(ConfigError::new(
                    "max_interval must be greater than or equal to the base_interval",
                )
                .at("retry_back_off"));
            }
            policy.backoff_base = base;
            policy.backoff_max = max;
        }
        Ok(policy)
    }

    /// Whether this request may be retried at all (`retriable_request_headers`).
    pub fn request_retriable(&self, req: &RequestView<'_>) -> bool {
        self.retriable_request_headers.is_empty()
            || self
                .retriable_request_headers
                .iter()
                .any(|m| m.matches(req))
    }

    /// Whether a response with these headers should be retried.
    pub fn retry_response(
        &self,
        on: RetryOn,
        status: StatusCode,
        headers: &HeaderMap,
        req: &RequestView<'_>,
    ) -> bool {
        let code = status.as_u16();
        if on.has(RetryOn::FIVE_XX) && code >= 500 {
            return true;
        }
        if on.has(RetryOn::GATEWAY_ERROR) && matches!(code, 502..=504) {
            return true;
        }
        if on.has(RetryOn::RETRIABLE_4XX) && code == 409 {
            return true;
        }
        if on.has(RetryOn::RETRIABLE_STATUS_CODES) && self.retriable_status_codes.contains(&code) {
            return true;
        }
        if on.has(RetryOn::ENVOY_RATELIMITED) && headers.contains_key("x-envoy-ratelimited") {
            return true;
        }
        if on.has(RetryOn::RETRIABLE_HEADERS) && !self.retriable_headers.is_empty() {
            let view = RequestView { headers, ..*req };
            if self.retriable_headers.iter().any(|m| m.matches(&view)) {
                return true;
            }
        }
        if let Some(grpc) = headers.get("grpc-status").and_then(|v| v.to_str().ok()) {
            let hit = match grpc {
                "1" => RetryOn::GRPC_CANCELLED,
                "4" => RetryOn::GRPC_DEADLINE_EXCEEDED,
                "8" => RetryOn::GRPC_RESOURCE_EXHAUSTED,
                "13" => RetryOn::GRPC_INTERNAL,
                "14" => RetryOn::GRPC_UNAVAILABLE,
                _ => RetryOn::default(),
            };
            if on.has(hit) {
                return true;
            }
        }
        false
    }

    /// Whether a failed attempt should be retried (Envoy's `wouldRetryFromReset`).
    pub fn retry_reset(on: RetryOn, kind: ResetKind) -> bool {
        match kind {
            ResetKind::Overflow => false,
            ResetKind::ConnectFailure if on.has(RetryOn::CONNECT_FAILURE) => true,
            ResetKind::ConnectFailure | ResetKind::BeforeRequest
                if on.has(RetryOn::RESET_BEFORE_REQUEST) =>
            {
                true
            }
            _ if on.has(RetryOn::FIVE_XX)
                || on.has(RetryOn::GATEWAY_ERROR)
                || on.has(RetryOn::RESET) =>
            {
                true
            }
            ResetKind::RefusedStream => on.has(RetryOn::REFUSED_STREAM),
            _ => false,
        }
    }

    /// The back-off before retry number `retry` (1-based): fully jittered, doubling from the
    /// base interval up to the max, as Envoy's JitteredExponentialBackOffStrategy.
    pub fn backoff(&self, retry: u32, random: u64) -> Duration {
        let base = self.backoff_base.as_millis().max(1) as u64;
        let max = self.backoff_max.as_millis().max(1) as u64;
        let mut interval = base;
        for _ in 1..retry {
            interval = if interval < max / 2 {
                interval * 2
            } else {
                max
            };
        }
        Duration::from_millis((random % interval).min(max))
    }
}

fn matchers(
    list: &[envoy_types::pb::envoy::config::route::v3::HeaderMatcher],
) -> Result<Vec<HeaderMatcher>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, h)| HeaderMatcher::new(h).map_err(|e| e.at(format!("[{i}]"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto_test_util::from_yaml;

    fn policy(yaml: &str) -> RetryPolicy {
        RetryPolicy::new(&from_yaml::<RetryPolicyProto>(yaml)).unwrap()
    }

    fn view(headers: &HeaderMap) -> RequestView<'_> {
        RequestView {
            method: &http::Method::GET,
            scheme: "http",
            authority: "a",
            path: "/",
            headers,
            tls: None,
            internal: false,
        }
    }

    #[test]
    fn istio_default_policy() {
        let p = policy(
            r#"
retry_on: connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes
num_retries: 2
retry_host_predicate: [{ name: envoy.retry_host_predicates.previous_hosts }]
host_selection_retry_max_attempts: "5"
retriable_status_codes: [503]
"#,
        );
        assert_eq!(p.num_retries, 2);
        assert!(p.avoid_previous_hosts);
        assert_eq!(p.host_selection_max_attempts, 5);
        let h = HeaderMap::new();
        assert!(p.retry_response(p.on, StatusCode::SERVICE_UNAVAILABLE, &h, &view(&h)));
        assert!(!p.retry_response(p.on, StatusCode::BAD_GATEWAY, &h, &view(&h)));
        let mut grpc = HeaderMap::new();
        grpc.insert("grpc-status", "14".parse().unwrap());
        assert!(p.retry_response(p.on, StatusCode::OK, &grpc, &view(&h)));
        assert!(RetryPolicy::retry_reset(p.on, ResetKind::ConnectFailure));
        assert!(RetryPolicy::retry_reset(p.on, ResetKind::RefusedStream));
        assert!(!RetryPolicy::retry_reset(p.on, ResetKind::Reset));
        assert!(!RetryPolicy::retry_reset(p.on, ResetKind::Overflow));
    }

    #[test]
    fn five_xx_covers_resets_and_timeouts() {
        let p = policy("retry_on: 5xx");
        assert_eq!(p.num_retries, 1);
        assert!(RetryPolicy::retry_reset(p.on, ResetKind::Reset));
        assert!(RetryPolicy::retry_reset(p.on, ResetKind::Timeout));
        assert!(RetryPolicy::retry_reset(p.on, ResetKind::ConnectFailure));
        let h = HeaderMap::new();
        assert!(p.retry_response(p.on, StatusCode::INTERNAL_SERVER_ERROR, &h, &view(&h)));
        assert!(!p.retry_response(p.on, StatusCode::CONFLICT, &h, &view(&h)));
        let g = policy("retry_on: gateway-error,retriable-4xx");
        assert!(!g.retry_response(g.on, StatusCode::INTERNAL_SERVER_ERROR, &h, &view(&h)));
        assert!(g.retry_response(g.on, StatusCode::GATEWAY_TIMEOUT, &h, &view(&h)));
        assert!(g.retry_response(g.on, StatusCode::CONFLICT, &h, &view(&h)));
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let p = policy(
            "{ retry_on: 5xx, retry_back_off: { base_interval: 0.1s, max_interval: 0.3s } }",
        );
        assert_eq!(p.backoff(1, 99), Duration::from_millis(99));
        assert_eq!(p.backoff(1, 100), Duration::ZERO);
        assert_eq!(p.backoff(2, 199), Duration::from_millis(199));
        assert_eq!(p.backoff(5, 299), Duration::from_millis(299));
        assert_eq!(p.backoff(5, 300), Duration::ZERO);
    }

    #[test]
    fn unsupported_options_are_rejected() {
        for yaml in [
            "{ retry_on: 5xx, retry_host_predicate: [{ name: envoy.retry_host_predicates.omit_canary_hosts }] }",
            "{ retry_on: 5xx, retry_priority: { name: envoy.retry_priorities.previous_priorities } }",
        ] {
            assert!(
                RetryPolicy::new(&from_yaml::<RetryPolicyProto>(yaml)).is_err(),
                "{yaml}"
            );
        }
    }
}
