//! Route tables: a `RouteConfiguration` compiled once into virtual hosts indexed by domain
//! and routes matched in order. A stream selects its route from the table current when it
//! started.

pub mod action;
pub mod config;
pub mod domain;
pub mod matcher;

use std::sync::Arc;

use http::HeaderName;

pub use action::{Action, ClusterSpec, DirectResponse, Redirect, RouteAction, WeightedClusters};
pub use matcher::{RequestView, RouteMatch};

use super::mutation::HeaderMutations;
use domain::DomainIndex;

/// `require_tls` of a virtual host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequireTls {
    None,
    ExternalOnly,
    All,
}

/// A compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// `name` (empty names are `None`), for `%ROUTE_NAME%`.
    pub name: Option<Arc<str>>,
    pub matcher: RouteMatch,
    pub action: Action,
    pub request_headers: HeaderMutations,
    pub response_headers: HeaderMutations,
}

/// A compiled virtual host.
#[derive(Debug, Clone)]
pub struct VirtualHost {
    pub name: Arc<str>,
    pub routes: Vec<Route>,
    pub require_tls: RequireTls,
    pub request_headers: HeaderMutations,
    pub response_headers: HeaderMutations,
    pub include_attempt_count_in_request: bool,
    pub include_attempt_count_in_response: bool,
}

/// A compiled `RouteConfiguration`.
#[derive(Debug, Clone)]
pub struct RouteTable {
    pub name: Arc<str>,
    domains: DomainIndex,
    vhosts: Vec<VirtualHost>,
    /// Removed from requests that are not internal.
    pub internal_only_headers: Vec<HeaderName>,
    pub request_headers: HeaderMutations,
    pub response_headers: HeaderMutations,
    /// `most_specific_header_mutations_wins`.
    pub most_specific_wins: bool,
}

/// A matched route with the virtual host and table it belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Matched<'a> {
    pub table: &'a RouteTable,
    pub vh: &'a VirtualHost,
    pub route: &'a Route,
}

// === impl Matched ===

impl<'a> Matched<'a> {
    /// The request header levels in application order (see [`RouteTable::request_levels`]).
    pub fn request_levels(&self) -> [&'a HeaderMutations; 3] {
        self.table.request_levels(self.vh, self.route)
    }

    pub fn response_levels(&self) -> [&'a HeaderMutations; 3] {
        self.table.response_levels(self.vh, self.route)
    }
}

/// The outcome of routing a request.
#[derive(Debug, Clone, Copy)]
pub enum Selected<'a> {
    /// No virtual host matches the authority.
    NoVirtualHost,
    NoRoute(&'a VirtualHost),
    /// The virtual host requires TLS and the request is plaintext.
    TlsRedirect(&'a VirtualHost),
    Route(&'a VirtualHost, &'a Route),
}

// === impl RouteTable ===

impl RouteTable {
    /// Routes a request; `random` decides runtime fractions.
    pub fn select(&self, req: &RequestView<'_>, random: u64) -> Selected<'_> {
        let Some(vh) = self
            .domains
            .find(req.authority)
            .and_then(|i| self.vhosts.get(i))
        else {
            return Selected::NoVirtualHost;
        };
        let needs_tls = match vh.require_tls {
            RequireTls::None => false,
            RequireTls::All => req.scheme != "https",
            RequireTls::ExternalOnly => req.scheme != "https" && !req.internal,
        };
        if needs_tls {
            return Selected::TlsRedirect(vh);
        }
        vh.routes
            .iter()
            .find(|r| r.matcher.matches(req, random))
            .map_or(Selected::NoRoute(vh), |r| Selected::Route(vh, r))
    }

    /// Header mutation levels in application order: by default the route's first, so the
    /// route configuration's win; with `most_specific_header_mutations_wins` the reverse.
    pub fn request_levels<'a>(
        &'a self,
        vh: &'a VirtualHost,
        route: &'a Route,
    ) -> [&'a HeaderMutations; 3] {
        self.order([
            &route.request_headers,
            &vh.request_headers,
            &self.request_headers,
        ])
    }

    pub fn response_levels<'a>(
        &'a self,
        vh: &'a VirtualHost,
        route: &'a Route,
    ) -> [&'a HeaderMutations; 3] {
        self.order([
            &route.response_headers,
            &vh.response_headers,
            &self.response_headers,
        ])
    }

    fn order<'a>(&self, mut levels: [&'a HeaderMutations; 3]) -> [&'a HeaderMutations; 3] {
        if self.most_specific_wins {
            levels.reverse();
        }
        levels
    }

    pub fn virtual_hosts(&self) -> &[VirtualHost] {
        &self.vhosts
    }
}
