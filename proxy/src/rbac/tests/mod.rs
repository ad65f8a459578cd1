//! Engine and filter tests: each matcher kind and combinator, the actions, shadow rules,
//! stats, the filters' replies and metadata, and the exact error texts for refused configs.

mod filters;
mod matchers;
mod refusals;

use std::net::IpAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::envoy::config::rbac::v3::Rbac;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::{
    Rbac as HttpProto, RbacPerRoute,
};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkProto;
use envoy_types::pb::google::protobuf::{Any, Struct, Value, value::Kind};
use prost::{Message, Name};

use super::*;
use crate::conn::{Direction, Downstream, PeerCertificate, PeerTls};
use crate::proto::{Format, UnknownFields, decode};
use crate::stats::{Query, Store};

// --- helpers ------------------------------------------------------------------------------

pub(super) fn yaml<T: Message + Name + Default>(text: &str) -> T {
    decode::<T>(text, Format::Yaml, UnknownFields::Reject)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .message
}

pub(super) fn engine(text: &str) -> Engine {
    Engine::new(&yaml::<Rbac>(text)).unwrap()
}

pub(super) fn engine_err(text: &str) -> String {
    Engine::new(&yaml::<Rbac>(text)).unwrap_err().to_string()
}

/// An ALLOW engine with one policy `p` whose only permission is `permission` and whose
/// only principal is `principal`.
pub(super) fn allow(permission: &str, principal: &str) -> Engine {
    engine(&format!(
        "policies:\n  p:\n    permissions: [{permission}]\n    principals: [{principal}]\n"
    ))
}

pub(super) fn perm(permission: &str) -> Engine {
    allow(permission, "{any: true}")
}

pub(super) fn princ(principal: &str) -> Engine {
    allow("{any: true}", principal)
}

pub(super) fn downstream(local: &str, peer: &str) -> Downstream {
    Downstream {
        local: local.parse().unwrap(),
        peer: peer.parse().unwrap(),
        listener: Arc::from("virtualInbound"),
        direction: Direction::Inbound,
        filter_chain: Arc::from("0.0.0.0_8080"),
        requested_server_name: None,
        tls: None,
        original_src_mark: None,
    }
}

pub(super) fn plain() -> Downstream {
    downstream("10.0.0.1:8080", "10.1.0.5:40000")
}

pub(super) fn mtls(uri: &[&str], dns: &[&str], subject: &str) -> Downstream {
    Downstream {
        tls: Some(Arc::new(PeerTls {
            peer_certificate: Some(PeerCertificate {
                uri_sans: uri.iter().map(|s| s.to_string()).collect(),
                dns_sans: dns.iter().map(|s| s.to_string()).collect(),
                subject: subject.into(),
                ..Default::default()
            }),
            ..Default::default()
        })),
        ..plain()
    }
}

pub(super) fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

pub(super) fn get(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    req("GET", uri, headers)
}

pub(super) fn http_allows(e: &Engine, ds: &Downstream, parts: &http::request::Parts) -> bool {
    e.evaluate(&Input::request(ds, parts)).allowed
}

pub(super) fn conn_allows(e: &Engine, ds: &Downstream) -> bool {
    e.evaluate(&Input::connection(ds)).allowed
}

pub(super) fn metadata(filter: &str, fields: &[(&str, Value)]) -> Metadata {
    let mut m = Metadata::default();
    m.filter_metadata.insert(
        filter.into(),
        Struct {
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        },
    );
    m
}

pub(super) fn s(v: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(v.into())),
    }
}
