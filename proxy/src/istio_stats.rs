//! Istio's standard metrics, as the `istio.stats` filter (`stats.PluginConfig`) reports them:
//! `istio_requests_total`, `istio_request_duration_milliseconds`, `istio_request_bytes`,
//! `istio_response_bytes` for HTTP, and `istio_tcp_connections_opened_total`,
//! `istio_tcp_connections_closed_total`, `istio_tcp_sent_bytes_total`,
//! `istio_tcp_received_bytes_total` for TCP, with Istio's labels.
//!
//! They live in the stats store in Istio's custom namespace (`istiocustom`), so
//! `/stats/prometheus` shows them under their own names, e.g.
//! `istio_requests_total{reporter="destination",source_workload="sleep",...} 3`, where
//! Prometheus, Grafana's Istio dashboards and Kiali read them.
//!
//! The reporter follows the listener's direction (inbound: `destination`, outbound:
//! `source`). This proxy's side comes from the bootstrap node's metadata; the peer's from
//! Istio's metadata exchange when it happened, else from the endpoint's `istio.workload`
//! metadata (outbound), else `unknown`. Principals come only from verified certificates.
//!
//! TCP connections are reported while they live, every [`TCP_REPORTING_DURATION`] (the
//! open, and the bytes moved since the last report), and when they close, as Istio does.
//!
//! Not yet: `tcp_reporting_duration` from the plugin config (Istio's default applies);
//! gRPC message counts.

use std::sync::{Arc, OnceLock, PoisonError};

use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::google::protobuf::{Struct, value::Kind};

use crate::conn::Direction;
use crate::stats::Store;
use crate::tls::PeerMetadata;

/// How often a live TCP connection is reported: Istio's default `tcp_reporting_duration`.
pub const TCP_REPORTING_DURATION: std::time::Duration = std::time::Duration::from_secs(5);

/// The filter's config type.
pub const TYPE_URL: &str = "type.googleapis.com/stats.PluginConfig";

/// `istio_request_duration_milliseconds` buckets (Istio's defaults).
const DURATION_BUCKETS: &[f64] = &[
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];
/// `istio_request_bytes` / `istio_response_bytes` buckets.
const BYTES_BUCKETS: &[f64] = &[
    1.0,
    10.0,
    100.0,
    1000.0,
    10000.0,
    100000.0,
    1000000.0,
    10000000.0,
    100000000.0,
    1000000000.0,
];

const UNKNOWN: &str = "unknown";

/// A workload as the labels describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    pub app: String,
    pub version: String,
    pub canonical_service: String,
    pub canonical_revision: String,
    pub cluster: String,
}

/// Who reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter {
    Source,
    Destination,
}

/// The other side of a connection or request, as far as it is known.
#[derive(Debug, Clone, Default)]
pub struct Peer<'a> {
    /// From the metadata exchange.
    pub exchanged: Option<&'a PeerMetadata>,
    /// The upstream endpoint's metadata (`istio.workload`), outbound only.
    pub endpoint: Option<&'a Metadata>,
    /// The URI SAN of the peer's verified certificate.
    pub principal: Option<&'a str>,
}

/// The facts of one TCP connection when it closes.
#[derive(Debug, Clone)]
pub struct TcpRecord<'a> {
    pub direction: Direction,
    pub peer: Peer<'a>,
    /// Our own certificate's URI SAN on the mTLS side, if any.
    pub local_principal: Option<&'a str>,
    /// The cluster the connection went to (`outbound|9000||svc.ns.svc.cluster.local`).
    pub cluster: &'a str,
    /// Whether the downstream side was mutual TLS (inbound).
    pub mutual_tls: bool,
    pub response_flags: &'a str,
    /// Bytes the client sent (received by us) and bytes sent back to it, since the
    /// connection's last report.
    pub received: u64,
    pub sent: u64,
    /// Whether this report counts the connection as opened (its first report after the
    /// upstream connection was established).
    pub opened: bool,
    /// Whether the connection has closed (its last report).
    pub closed: bool,
}

/// The facts of one HTTP request when it completes.
#[derive(Debug, Clone)]
pub struct HttpRecord<'a> {
    pub direction: Direction,
    pub peer: Peer<'a>,
    pub local_principal: Option<&'a str>,
    pub cluster: &'a str,
    /// The request's host, for `destination_service` inbound.
    pub authority: Option<&'a str>,
    pub mutual_tls: bool,
    pub grpc: bool,
    pub response_code: u16,
    pub response_flags: &'a str,
    pub duration_ms: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

/// The process's Istio telemetry: this proxy's workload, and the store the series go in.
#[derive(Debug)]
pub struct IstioStats {
    store: Store,
    local: Workload,
    /// The series by label set: a request or connection costs one lookup, and holding them
    /// keeps the store from pruning them (Prometheus counters must not reset).
    http: std::sync::Mutex<std::collections::HashMap<Box<str>, Arc<HttpSeries>>>,
    tcp: std::sync::Mutex<std::collections::HashMap<Box<str>, Arc<TcpSeries>>>,
}

/// The four TCP metrics of one label set.
#[derive(Debug)]
struct TcpSeries {
    opened: crate::stats::Counter,
    closed: crate::stats::Counter,
    sent: crate::stats::Counter,
    received: crate::stats::Counter,
}

/// The four HTTP metrics of one label set.
#[derive(Debug)]
struct HttpSeries {
    requests: crate::stats::Counter,
    duration: crate::stats::Histogram,
    request_bytes: crate::stats::Histogram,
    response_bytes: crate::stats::Histogram,
}

static GLOBAL: OnceLock<Arc<IstioStats>> = OnceLock::new();

// === impl Workload ===

impl Workload {
    fn unknown() -> Self {
        Self {
            name: UNKNOWN.into(),
            namespace: UNKNOWN.into(),
            app: UNKNOWN.into(),
            version: UNKNOWN.into(),
            canonical_service: UNKNOWN.into(),
            canonical_revision: "latest".into(),
            cluster: UNKNOWN.into(),
        }
    }

    /// From node metadata (`WORKLOAD_NAME`, `NAMESPACE`, `CLUSTER_ID`, `LABELS`), ours or
    /// the exchanged peer's, with Istio's fallbacks.
    pub fn from_node_metadata(md: &Struct) -> Self {
        let get = |k: &str| string(md, k);
        let labels = match md.fields.get("LABELS").and_then(|v| v.kind.as_ref()) {
            Some(Kind::StructValue(s)) => Some(s),
            _ => None,
        };
        let label = |k: &str| labels.and_then(|l| string(l, k));
        Self::from_parts(
            get("WORKLOAD_NAME").or_else(|| get("NAME")),
            get("NAMESPACE"),
            label("app"),
            label("version"),
            label("service.istio.io/canonical-name"),
            label("service.istio.io/canonical-revision"),
            get("CLUSTER_ID"),
        )
    }

    fn from_peer(p: &PeerMetadata) -> Self {
        Self::from_parts(
            p.get("WORKLOAD_NAME").or_else(|| p.get("NAME")),
            p.get("NAMESPACE"),
            p.label("app"),
            p.label("version"),
            p.label("service.istio.io/canonical-name"),
            p.label("service.istio.io/canonical-revision"),
            p.get("CLUSTER_ID"),
        )
    }

    /// From an endpoint's `istio.workload` metadata: `name;namespace;canonical
    /// service;canonical revision;cluster`, as istiod writes it in EDS.
    pub fn from_endpoint(md: &Metadata) -> Option<Self> {
        let istio = md.filter_metadata.get("istio")?;
        let raw = string(istio, "workload")?;
        let mut parts = raw.split(';');
        let mut next = || parts.next().filter(|s| !s.is_empty());
        let (name, ns, canonical, revision, cluster) = (next(), next(), next(), next(), next());
        Some(Self::from_parts(
            name, ns, canonical, revision, canonical, revision, cluster,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn from_parts(
        name: Option<&str>,
        namespace: Option<&str>,
        app: Option<&str>,
        version: Option<&str>,
        canonical: Option<&str>,
        revision: Option<&str>,
        cluster: Option<&str>,
    ) -> Self {
        let or = |v: Option<&str>, d: &str| v.filter(|s| !s.is_empty()).unwrap_or(d).to_string();
        Self {
            name: or(name, UNKNOWN),
            namespace: or(namespace, UNKNOWN),
            app: or(app, UNKNOWN),
            version: or(version, UNKNOWN),
            canonical_service: or(canonical.or(app).or(name), UNKNOWN),
            canonical_revision: or(revision.or(version), "latest"),
            cluster: or(cluster, UNKNOWN),
        }
    }
}

fn string<'a>(s: &'a Struct, key: &str) -> Option<&'a str> {
    match s.fields.get(key)?.kind.as_ref()? {
        Kind::StringValue(v) => Some(v),
        _ => None,
    }
}

// === impl Peer ===

impl Peer<'_> {
    fn workload(&self) -> Workload {
        if let Some(p) = self.exchanged {
            return Workload::from_peer(p);
        }
        self.endpoint
            .and_then(Workload::from_endpoint)
            .unwrap_or_else(Workload::unknown)
    }
}

// === impl IstioStats ===

impl IstioStats {
    pub fn new(store: Store, local: Workload) -> Self {
        Self {
            store,
            local,
            http: Default::default(),
            tcp: Default::default(),
        }
    }

    /// Installs the process's telemetry (once, at start, from the bootstrap node).
    pub fn install(stats: IstioStats) {
        let _ = GLOBAL.set(Arc::new(stats));
    }

    /// The installed telemetry, if the server installed one.
    pub fn get() -> Option<&'static Arc<IstioStats>> {
        GLOBAL.get()
    }

    pub fn local(&self) -> &Workload {
        &self.local
    }

    /// Reports a TCP connection: periodically while it lives, and when it closes.
    pub fn tcp_report(&self, r: &TcpRecord<'_>) {
        let mut labels = self.peer_labels(
            r.direction,
            &r.peer,
            r.local_principal,
            r.cluster,
            None,
            r.mutual_tls,
        );
        labels.push(("request_protocol", "tcp".into()));
        labels.push(("response_flags", r.response_flags.into()));
        labels.push((
            "connection_security_policy",
            security(r.direction, r.mutual_tls),
        ));
        let tags: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let key = series_key(&tags);
        let series = {
            let mut cache = self.tcp.lock().unwrap_or_else(PoisonError::into_inner);
            match cache.get(key.as_str()) {
                Some(s) => s.clone(),
                None => {
                    let counter = |metric: &str| {
                        self.store.custom_counter(
                            &format!("istiocustom.{metric}{key}"),
                            metric,
                            &tags,
                        )
                    };
                    let s = Arc::new(TcpSeries {
                        opened: counter("istio_tcp_connections_opened_total"),
                        closed: counter("istio_tcp_connections_closed_total"),
                        sent: counter("istio_tcp_sent_bytes_total"),
                        received: counter("istio_tcp_received_bytes_total"),
                    });
                    cache.insert(key.into_boxed_str(), s.clone());
                    s
                }
            }
        };
        if r.opened {
            series.opened.inc();
        }
        if r.closed {
            series.closed.inc();
        }
        // Istio's "sent" is what the reporting proxy sent on towards the destination.
        series.sent.add(r.received);
        series.received.add(r.sent);
    }

    /// Reports a completed HTTP request.
    pub fn http_completed(&self, r: &HttpRecord<'_>) {
        let mut labels = self.peer_labels(
            r.direction,
            &r.peer,
            r.local_principal,
            r.cluster,
            r.authority,
            r.mutual_tls,
        );
        labels.push((
            "request_protocol",
            if r.grpc { "grpc" } else { "http" }.into(),
        ));
        labels.push(("response_code", r.response_code.to_string()));
        labels.push(("grpc_response_status", String::new()));
        labels.push(("response_flags", r.response_flags.into()));
        labels.push((
            "connection_security_policy",
            security(r.direction, r.mutual_tls),
        ));
        let tags: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let key = series_key(&tags);
        let series = {
            let mut cache = self.http.lock().unwrap_or_else(PoisonError::into_inner);
            match cache.get(key.as_str()) {
                Some(s) => s.clone(),
                None => {
                    let s = Arc::new(self.http_series(&key, &tags));
                    cache.insert(key.into_boxed_str(), s.clone());
                    s
                }
            }
        };
        series.requests.inc();
        series.duration.record(r.duration_ms);
        series.request_bytes.record(r.request_bytes);
        series.response_bytes.record(r.response_bytes);
    }

    fn http_series(&self, key: &str, tags: &[(&str, &str)]) -> HttpSeries {
        let name = |metric: &str| format!("istiocustom.{metric}{key}");
        let histogram = |metric: &str, bounds: &'static [f64]| {
            self.store
                .custom_histogram(&name(metric), metric, tags, bounds)
        };
        HttpSeries {
            requests: self.store.custom_counter(
                &name("istio_requests_total"),
                "istio_requests_total",
                tags,
            ),
            duration: histogram("istio_request_duration_milliseconds", DURATION_BUCKETS),
            request_bytes: histogram("istio_request_bytes", BYTES_BUCKETS),
            response_bytes: histogram("istio_response_bytes", BYTES_BUCKETS),
        }
    }

    /// The reporter and workload labels, in Istio's order.
    fn peer_labels(
        &self,
        direction: Direction,
        peer: &Peer<'_>,
        local_principal: Option<&str>,
        cluster: &str,
        authority: Option<&str>,
        mutual_tls: bool,
    ) -> Vec<(&'static str, String)> {
        let reporter = match direction {
            Direction::Inbound => Reporter::Destination,
            _ => Reporter::Source,
        };
        let remote = peer.workload();
        let peer_principal = peer.principal.unwrap_or(UNKNOWN).to_string();
        let local_principal = local_principal.unwrap_or(UNKNOWN).to_string();
        let (source, destination, source_principal, destination_principal) = match reporter {
            Reporter::Source => (&self.local, &remote, local_principal, peer_principal),
            Reporter::Destination => (&remote, &self.local, peer_principal, local_principal),
        };
        // Inbound, the source's principal is known only from a verified client certificate.
        let source_principal = if reporter == Reporter::Destination && !mutual_tls {
            UNKNOWN.to_string()
        } else {
            source_principal
        };
        let service = destination_service(cluster, authority, destination);
        let (service_name, service_namespace) = service_parts(&service, destination);
        vec![
            (
                "reporter",
                match reporter {
                    Reporter::Source => "source",
                    Reporter::Destination => "destination",
                }
                .into(),
            ),
            ("source_workload", source.name.clone()),
            ("source_canonical_service", source.canonical_service.clone()),
            (
                "source_canonical_revision",
                source.canonical_revision.clone(),
            ),
            ("source_workload_namespace", source.namespace.clone()),
            ("source_principal", source_principal),
            ("source_app", source.app.clone()),
            ("source_version", source.version.clone()),
            ("source_cluster", source.cluster.clone()),
            ("destination_workload", destination.name.clone()),
            (
                "destination_workload_namespace",
                destination.namespace.clone(),
            ),
            ("destination_principal", destination_principal),
            ("destination_app", destination.app.clone()),
            ("destination_version", destination.version.clone()),
            ("destination_service", service),
            (
                "destination_canonical_service",
                destination.canonical_service.clone(),
            ),
            (
                "destination_canonical_revision",
                destination.canonical_revision.clone(),
            ),
            ("destination_service_name", service_name),
            ("destination_service_namespace", service_namespace),
            ("destination_cluster", destination.cluster.clone()),
        ]
    }
}

/// `mutual_tls` when the destination proxy saw a verified client certificate; the source
/// proxy cannot know what the destination enforced and reports `unknown`.
fn security(direction: Direction, mutual_tls: bool) -> String {
    match (direction, mutual_tls) {
        (Direction::Inbound, true) => "mutual_tls",
        (Direction::Inbound, false) => "none",
        _ => UNKNOWN,
    }
    .into()
}

/// The service host: from an `outbound|port|subset|host` cluster, else the request's
/// authority (without port), else `unknown`.
fn destination_service(cluster: &str, authority: Option<&str>, destination: &Workload) -> String {
    let from_cluster = cluster
        .split('|')
        .nth(3)
        .filter(|h| !h.is_empty() && cluster.starts_with("outbound|"));
    if let Some(host) = from_cluster {
        return host.to_string();
    }
    if let Some(host) = authority.map(strip_port).filter(|h| !h.is_empty()) {
        return host.to_string();
    }
    let _ = destination;
    UNKNOWN.into()
}

fn strip_port(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(']') => {
            host
        }
        _ => authority,
    }
}

/// `destination_service_name` and `_namespace`: the first two labels of a
/// `<name>.<namespace>.svc...` host; else the canonical service and workload namespace.
fn service_parts(service: &str, destination: &Workload) -> (String, String) {
    let mut labels = service.split('.');
    match (labels.next(), labels.next(), labels.next()) {
        (Some(name), Some(ns), Some("svc")) => (name.into(), ns.into()),
        _ if service != UNKNOWN => (service.into(), destination.namespace.clone()),
        _ => (
            destination.canonical_service.clone(),
            destination.namespace.clone(),
        ),
    }
}

/// The series' full stat name suffix: `.<label>.<value>` for every label (Envoy's tagged
/// name form; the bootstrap's `istio` prefix inclusion keeps these stats).
fn series_key(tags: &[(&str, &str)]) -> String {
    let mut key = String::with_capacity(512);
    for (k, v) in tags {
        key.push('.');
        key.push_str(k);
        key.push('.');
        key.push_str(v);
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::Value;

    fn s(v: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(v.into())),
        }
    }

    fn node(workload: &str, ns: &str, app: &str, version: &str) -> Struct {
        let labels = Struct {
            fields: [
                ("app".to_string(), s(app)),
                ("version".to_string(), s(version)),
            ]
            .into(),
        };
        Struct {
            fields: [
                ("WORKLOAD_NAME".to_string(), s(workload)),
                ("NAMESPACE".to_string(), s(ns)),
                ("CLUSTER_ID".to_string(), s("Kubernetes")),
                (
                    "LABELS".to_string(),
                    Value {
                        kind: Some(Kind::StructValue(labels)),
                    },
                ),
            ]
            .into(),
        }
    }

    fn prometheus(store: &Store) -> String {
        store.render(&crate::stats::Query::parse("", true).unwrap())
    }

    #[test]
    fn inbound_http_request_has_istio_labels() {
        let store = Store::new(None).unwrap();
        let stats = IstioStats::new(
            store.clone(),
            Workload::from_node_metadata(&node("httpbin", "full", "httpbin", "v1")),
        );
        let peer_md = PeerMetadata::from_headers(
            Some(
                crate::tls::LocalNode::from_parts(
                    "sidecar~1".into(),
                    crate::tls::peer_exchange::filter_node_metadata(&node(
                        "sleep", "full", "sleep", "v2",
                    )),
                )
                .header_value()
                .as_bytes(),
            ),
            None,
        )
        .unwrap();
        let record = HttpRecord {
            direction: Direction::Inbound,
            peer: Peer {
                exchanged: Some(&peer_md),
                endpoint: None,
                principal: Some("spiffe://cluster.local/ns/full/sa/sleep"),
            },
            local_principal: Some("spiffe://cluster.local/ns/full/sa/httpbin"),
            cluster: "inbound|8080||",
            authority: Some("httpbin.full.svc.cluster.local:8000"),
            mutual_tls: true,
            grpc: false,
            response_code: 200,
            response_flags: "-",
            duration_ms: 3,
            request_bytes: 120,
            response_bytes: 450,
        };
        stats.http_completed(&record);
        stats.http_completed(&record);
        let text = prometheus(&store);
        let line = text
            .lines()
            .find(|l| l.starts_with("istio_requests_total{"))
            .unwrap_or_else(|| panic!("{text}"));
        for want in [
            "reporter=\"destination\"",
            "source_workload=\"sleep\"",
            "source_workload_namespace=\"full\"",
            "source_principal=\"spiffe://cluster.local/ns/full/sa/sleep\"",
            "source_app=\"sleep\"",
            "source_version=\"v2\"",
            "destination_workload=\"httpbin\"",
            "destination_principal=\"spiffe://cluster.local/ns/full/sa/httpbin\"",
            "destination_service=\"httpbin.full.svc.cluster.local\"",
            "destination_service_name=\"httpbin\"",
            "destination_service_namespace=\"full\"",
            "destination_canonical_revision=\"v1\"",
            "request_protocol=\"http\"",
            "response_code=\"200\"",
            "connection_security_policy=\"mutual_tls\"",
        ] {
            assert!(line.contains(want), "{want} missing in {line}");
        }
        assert!(line.ends_with(" 2"), "{line}");
        assert!(text.contains("# TYPE istio_request_duration_milliseconds histogram"));
        assert!(!text.contains("envoy_istio"), "{text}");
    }

    #[test]
    fn outbound_tcp_uses_endpoint_metadata_without_exchange() {
        let store = Store::new(None).unwrap();
        let stats = IstioStats::new(
            store.clone(),
            Workload::from_node_metadata(&node("sleep", "full", "sleep", "v1")),
        );
        let endpoint = Metadata {
            filter_metadata: [(
                "istio".to_string(),
                Struct {
                    fields: [(
                        "workload".to_string(),
                        s("tcp-echo;rot;tcp-echo;v3;Kubernetes"),
                    )]
                    .into(),
                },
            )]
            .into(),
            ..Default::default()
        };
        stats.tcp_report(&TcpRecord {
            direction: Direction::Outbound,
            peer: Peer {
                exchanged: None,
                endpoint: Some(&endpoint),
                principal: None,
            },
            local_principal: None,
            cluster: "outbound|9000||tcp-echo.rot.svc.cluster.local",
            mutual_tls: false,
            response_flags: "-",
            received: 11,
            sent: 22,
            opened: true,
            closed: true,
        });
        // A listener or cluster change prunes unheld stats; Istio's counters must survive it.
        store.prune();
        let text = prometheus(&store);
        let sent = text
            .lines()
            .find(|l| l.starts_with("istio_tcp_sent_bytes_total{"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(sent.contains("reporter=\"source\""), "{sent}");
        assert!(sent.contains("destination_workload=\"tcp-echo\""), "{sent}");
        assert!(
            sent.contains("destination_canonical_revision=\"v3\""),
            "{sent}"
        );
        assert!(
            sent.contains("destination_service_namespace=\"rot\""),
            "{sent}"
        );
        assert!(
            sent.contains("connection_security_policy=\"unknown\""),
            "{sent}"
        );
        assert!(sent.ends_with(" 11"), "{sent}");
        assert!(text.contains("istio_tcp_connections_opened_total{"));
    }

    #[test]
    fn authority_port_is_stripped() {
        assert_eq!(strip_port("a.b:8000"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }
}
