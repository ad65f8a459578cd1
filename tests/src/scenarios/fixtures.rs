//! Small builders for the scenarios' mesh descriptions.

use std::net::Ipv4Addr;

use crate::cp::model::{
    Action, AuthorizationPolicy, MtlsMode, Operation, PeerAuthentication, Protocol, Rule, Service,
    ServicePort, Source, Workload,
};

/// The `i`th pod's address: each pod has its own /24 with the node at `.1`.
pub fn pod_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, i, 2)
}

/// The `i`th service VIP.
pub fn vip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 96, 0, i)
}

/// httpbin's service: port 8000 (`http`) to the pods' 8080.
pub fn http_service(name: &str, ns: &str, app: &str, vip: Ipv4Addr) -> Service {
    Service {
        name: name.into(),
        namespace: ns.into(),
        vip,
        ports: vec![ServicePort {
            name: "http".into(),
            port: 8000,
            target_port: 8080,
            protocol: Protocol::Http,
        }],
        selector: app.into(),
    }
}

/// A TCP echo service on 9000 (`tcp`).
pub fn tcp_service(name: &str, ns: &str, app: &str, vip: Ipv4Addr) -> Service {
    Service {
        name: name.into(),
        namespace: ns.into(),
        vip,
        ports: vec![ServicePort {
            name: "tcp".into(),
            port: 9000,
            target_port: 9000,
            protocol: Protocol::Tcp,
        }],
        selector: app.into(),
    }
}

/// A server workload (app ports 8080, 8081, 9000) with a sidecar.
pub fn server(name: &str, ns: &str, app: &str, i: u8) -> Workload {
    Workload::new(name, ns, app, pod_ip(i))
}

/// A client-only workload (`sleep`) with a sidecar; its service account is its name.
pub fn client(name: &str, ns: &str, i: u8) -> Workload {
    Workload::new(name, ns, name, pod_ip(i)).client()
}

/// A PeerAuthentication; `selector: None` is namespace-wide.
pub fn peer_authn(
    name: &str,
    ns: &str,
    selector: Option<&str>,
    mode: MtlsMode,
) -> PeerAuthentication {
    PeerAuthentication {
        name: name.into(),
        namespace: ns.into(),
        selector: selector.map(Into::into),
        mode,
        port_level: Vec::new(),
    }
}

/// An AuthorizationPolicy with the given rules (empty: `spec: {}`).
pub fn authz(
    name: &str,
    ns: &str,
    selector: Option<&str>,
    action: Action,
    rules: Vec<Rule>,
) -> AuthorizationPolicy {
    AuthorizationPolicy {
        name: name.into(),
        namespace: ns.into(),
        selector: selector.map(Into::into),
        action,
        rules,
    }
}

/// A rule: from these principals (`cluster.local/ns/x/sa/y`), to these methods.
pub fn rule(principals: &[&str], methods: &[&str]) -> Rule {
    let from = if principals.is_empty() {
        Vec::new()
    } else {
        vec![Source {
            principals: principals.iter().map(|p| (*p).to_string()).collect(),
            namespaces: Vec::new(),
        }]
    };
    let to = if methods.is_empty() {
        Vec::new()
    } else {
        vec![Operation {
            methods: methods.iter().map(|m| (*m).to_string()).collect(),
            ..Operation::default()
        }]
    };
    Rule { from, to }
}
