//! The mesh description the test control plane turns into xDS: a few Kubernetes and Istio
//! objects, reduced to the fields the scenarios need (Istio's names and semantics).

use std::net::Ipv4Addr;

/// The mesh trust domain (`meshConfig.trustDomain` default).
pub const TRUST_DOMAIN: &str = "cluster.local";
/// Istio's root namespace: a PeerAuthentication there without a selector is mesh-wide.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// Protocol of a service port, as Istio infers it from an explicit port name (`http-*`,
/// `tcp-*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Tcp,
}

/// A Kubernetes Service port.
#[derive(Clone, Debug)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    pub target_port: u16,
    pub protocol: Protocol,
}

/// A Kubernetes Service with a cluster IP; it selects workloads by their `app` label.
#[derive(Clone, Debug)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    pub vip: Ipv4Addr,
    pub ports: Vec<ServicePort>,
    pub selector: String,
}

/// A pod: one workload instance, with or without a sidecar.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Pod name (also the deployment name here: one replica each).
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    /// The `app` label services and policies select on.
    pub app: String,
    pub ip: Ipv4Addr,
    pub sidecar: bool,
    /// Ports the app serves HTTP on (declared or not in a service).
    pub http_ports: Vec<u16>,
    /// Ports the app serves the TCP echo on.
    pub tcp_ports: Vec<u16>,
}

/// `PeerAuthentication.spec.mtls.mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MtlsMode {
    Unset,
    Disable,
    Permissive,
    Strict,
}

/// A PeerAuthentication: mesh-wide (root namespace, no selector), namespace-wide (no
/// selector) or for the workloads whose `app` label matches `selector`.
#[derive(Clone, Debug)]
pub struct PeerAuthentication {
    pub name: String,
    pub namespace: String,
    pub selector: Option<String>,
    pub mode: MtlsMode,
    /// `portLevelMtls`, keyed by container (target) port; only honoured with a selector.
    pub port_level: Vec<(u16, MtlsMode)>,
}

/// `DestinationRule.spec.trafficPolicy.tls.mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientTlsMode {
    Disable,
    IstioMutual,
}

/// A DestinationRule for one service host with a TLS setting.
#[derive(Clone, Debug)]
pub struct DestinationRule {
    pub name: String,
    pub namespace: String,
    /// The service FQDN (`httpbin.full.svc.cluster.local`).
    pub host: String,
    pub tls: ClientTlsMode,
}

/// `AuthorizationPolicy.spec.action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
}

/// One `rules[]` entry: every listed field must match (`from` and `to` are ORed lists).
#[derive(Clone, Debug, Default)]
pub struct Rule {
    pub from: Vec<Source>,
    pub to: Vec<Operation>,
}

/// `rules[].from[].source`.
#[derive(Clone, Debug, Default)]
pub struct Source {
    /// `cluster.local/ns/<ns>/sa/<sa>` (without `spiffe://`).
    pub principals: Vec<String>,
    pub namespaces: Vec<String>,
}

/// `rules[].to[].operation`.
#[derive(Clone, Debug, Default)]
pub struct Operation {
    pub methods: Vec<String>,
    pub paths: Vec<String>,
    pub ports: Vec<u16>,
}

/// An AuthorizationPolicy. `rules` empty is `spec: {}` (for ALLOW: deny everything).
#[derive(Clone, Debug)]
pub struct AuthorizationPolicy {
    pub name: String,
    pub namespace: String,
    pub selector: Option<String>,
    pub action: Action,
    pub rules: Vec<Rule>,
}

/// Everything the control plane knows.
#[derive(Clone, Debug, Default)]
pub struct MeshSpec {
    pub services: Vec<Service>,
    pub workloads: Vec<Workload>,
    pub peer_authentications: Vec<PeerAuthentication>,
    pub destination_rules: Vec<DestinationRule>,
    pub authorization_policies: Vec<AuthorizationPolicy>,
}

// === impl Service ===

impl Service {
    /// `<name>.<namespace>.svc.cluster.local`.
    pub fn hostname(&self) -> String {
        format!("{}.{}.svc.{TRUST_DOMAIN}", self.name, self.namespace)
    }

    /// Whether the service selects `w`.
    pub fn selects(&self, w: &Workload) -> bool {
        w.namespace == self.namespace && w.app == self.selector
    }
}

// === impl Workload ===

impl Workload {
    /// A workload with a sidecar serving HTTP on 8080 (and 8081, declared by no service) and
    /// the TCP echo on 9000.
    pub fn new(name: &str, namespace: &str, app: &str, ip: Ipv4Addr) -> Self {
        Self {
            name: name.to_string(),
            namespace: namespace.to_string(),
            service_account: app.to_string(),
            app: app.to_string(),
            ip,
            sidecar: true,
            http_ports: vec![8080, 8081],
            tcp_ports: vec![9000],
        }
    }

    /// The same workload without a sidecar (and labelled so by the injector's absence).
    pub fn without_sidecar(mut self) -> Self {
        self.sidecar = false;
        self
    }

    /// A client-only workload (`sleep`): no app ports.
    pub fn client(mut self) -> Self {
        self.http_ports.clear();
        self.tcp_ports.clear();
        self
    }

    /// `spiffe://cluster.local/ns/<ns>/sa/<sa>`.
    pub fn spiffe_id(&self) -> String {
        spiffe_id(&self.namespace, &self.service_account)
    }

    /// `<pod>.<namespace>`, how the harness names a pod.
    pub fn key(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }

    /// Istio's xDS node id for this pod's sidecar.
    pub fn node_id(&self) -> String {
        format!(
            "sidecar~{}~{}.{ns}~{ns}.svc.{TRUST_DOMAIN}",
            self.ip,
            self.name,
            ns = self.namespace
        )
    }
}

/// The SPIFFE id of a service account.
pub fn spiffe_id(namespace: &str, service_account: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}")
}

// === impl MeshSpec ===

impl MeshSpec {
    /// The workload with this pod key (`<pod>.<ns>`).
    pub fn workload(&self, key: &str) -> Option<&Workload> {
        self.workloads.iter().find(|w| w.key() == key)
    }

    /// Workloads a service selects, in description order.
    pub fn endpoints<'a>(&'a self, svc: &'a Service) -> impl Iterator<Item = &'a Workload> {
        self.workloads.iter().filter(move |w| svc.selects(w))
    }

    /// Services that select `w`.
    pub fn services_of<'a>(&'a self, w: &'a Workload) -> impl Iterator<Item = &'a Service> {
        self.services.iter().filter(move |s| s.selects(w))
    }

    /// The service with this FQDN.
    pub fn service(&self, host: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.hostname() == host)
    }

    /// Replaces (by namespace and name) or adds a PeerAuthentication.
    pub fn set_peer_authentication(&mut self, pa: PeerAuthentication) {
        self.peer_authentications
            .retain(|p| !(p.namespace == pa.namespace && p.name == pa.name));
        self.peer_authentications.push(pa);
    }

    /// Replaces (by namespace and name) or adds a DestinationRule.
    pub fn set_destination_rule(&mut self, dr: DestinationRule) {
        self.destination_rules
            .retain(|d| !(d.namespace == dr.namespace && d.name == dr.name));
        self.destination_rules.push(dr);
    }

    /// Replaces (by namespace and name) or adds an AuthorizationPolicy.
    pub fn set_authorization_policy(&mut self, ap: AuthorizationPolicy) {
        self.authorization_policies
            .retain(|p| !(p.namespace == ap.namespace && p.name == ap.name));
        self.authorization_policies.push(ap);
    }

    /// Removes the AuthorizationPolicy `namespace/name`, if present.
    pub fn remove_authorization_policy(&mut self, namespace: &str, name: &str) {
        self.authorization_policies
            .retain(|p| !(p.namespace == namespace && p.name == name));
    }
}
