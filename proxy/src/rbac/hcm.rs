//! The RBAC engine plugged into the HTTP connection manager: [`HttpRbacFactory`] fills the
//! HCM's RBAC slot, so `envoy.filters.http.rbac` in `http_filters` is compiled with the
//! HCM's `http.<stat_prefix>.` stats and decided on each request with the downstream
//! connection (peer certificate included) and the request head as filters see it.

use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;

use super::http_filter::HttpRbac;
use super::input::Input;
use crate::config::ConfigError;
use crate::http::filter::{AuthzDecision, AuthzRequest, HttpAuthorizer, RbacFactory};
use crate::stats::Store;

/// Builds [`HttpRbac`] filters for connection managers; one per process.
#[derive(Debug, Clone)]
pub struct HttpRbacFactory {
    store: Store,
}

// === impl HttpRbacFactory ===

impl HttpRbacFactory {
    pub fn new(store: Store) -> Arc<Self> {
        Arc::new(Self { store })
    }
}

impl RbacFactory for HttpRbacFactory {
    fn http_filter(
        &self,
        config: &Any,
        stat_prefix: &str,
    ) -> Result<Arc<dyn HttpAuthorizer>, ConfigError> {
        Ok(Arc::new(HttpRbac::from_any(
            config,
            &self.store,
            stat_prefix,
        )?))
    }
}

// === impl HttpRbac ===

impl HttpAuthorizer for HttpRbac {
    fn authorize(&self, req: &AuthzRequest<'_>) -> AuthzDecision {
        let input = Input::request(req.downstream, req.parts)
            .with_request_line(req.request.path, req.request.authority)
            .with_remote(req.remote.ip());
        let verdict = self.decide(&input, None);
        if verdict.allowed {
            return AuthzDecision::Allow;
        }
        AuthzDecision::Deny {
            policy: verdict
                .enforced
                .and_then(|d| d.matched_policy)
                .map(str::to_string),
        }
    }
}
