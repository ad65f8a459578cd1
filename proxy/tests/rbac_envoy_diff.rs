#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Differential test: our RBAC decisions against the real Envoy's, for the same configs and
//! the same traffic.
//!
//! Envoy runs one HTTP connection manager per HTTP RBAC config, on three listeners
//! (127.0.0.1:A, 127.0.0.1:B, 127.0.0.2:C), whose route is a `direct_response` 200; a denied
//! request gets Envoy's 403. mTLS configs run on TLS listeners that require (or merely
//! accept) client certificates from a test CA with SPIFFE URI SANs. Network RBAC configs
//! sit in front of a connection manager on TCP listeners: a denied connection is closed
//! before any response. A matrix of requests (methods, paths with queries and odd
//! encodings, hosts, repeated and absent headers, `x-forwarded-for`, client addresses
//! 127.0.0.x, destination addresses and ports, client certificates and SNI) goes to Envoy,
//! and the same inputs go through `HttpRbac::decide` / `NetworkRbac::on_data`: every
//! allow/deny must agree, and so must every `rbac` stat Envoy reports.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpProto;
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkProto;
use prost::Name;
use proxy::conn::{Direction, Downstream, PeerCertificate, PeerTls};
use proxy::proto::{Format, UnknownFields, decode, encode};
use proxy::rbac::{HttpRbac, Input, NetworkRbac, NetworkRbacState};
use proxy::stats::{Query, Store};
use rcgen::{CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::{Value, json};

// --- configs ------------------------------------------------------------------------------
// `{A}`, `{B}`, `{C}` are the listeners' ports.

const HTTP_CONFIGS: &[(&str, &str)] = &[
    (
        "methods-paths",
        r#"{rules: {policies: {
        read: {permissions: [{and_rules: {rules: [
            {or_rules: {rules: [{header: {name: ":method", exact_match: GET}}, {header: {name: ":method", string_match: {exact: PUT, ignore_case: true}}}]}},
            {or_rules: {rules: [{url_path: {path: {prefix: /api/}}}, {url_path: {path: {exact: /info}}}]}}]}}],
          principals: [{any: true}]},
        admin-delete: {permissions: [{and_rules: {rules: [{header: {name: ":method", exact_match: DELETE}}, {url_path: {path: {prefix: /admin}}}]}}], principals: [{any: true}]}}}}"#,
    ),
    (
        "deny-admin",
        r#"{rules: {action: DENY, policies: {
        no-admin: {permissions: [{url_path: {path: {prefix: /admin, ignore_case: true}}}], principals: [{any: true}]},
        "no debug": {permissions: [{header: {name: x-debug, present_match: true}}], principals: [{any: true}]}}},
      track_per_rule_stats: true}"#,
    ),
    (
        "hosts",
        r#"{rules: {policies: {
        exact: {permissions: [{header: {name: ":authority", string_match: {exact: svc.ns.svc.cluster.local, ignore_case: true}}}], principals: [{any: true}]},
        port: {permissions: [{header: {name: host, string_match: {suffix: ".local:8080"}}}], principals: [{any: true}]},
        ip: {permissions: [{header: {name: Host, prefix_match: "127.0.0."}}], principals: [{any: true}]}}}}"#,
    ),
    (
        "headers",
        r#"{rules: {policies: {
        a-tenant: {permissions: [{header: {name: x-tenant, exact_match: a}}], principals: [{any: true}]},
        b-joined: {permissions: [{header: {name: X-Tenant, string_match: {exact: "a,b"}}}], principals: [{any: true}]},
        c-range: {permissions: [{header: {name: x-n, range_match: {start: 0, end: 10}}}], principals: [{any: true}]},
        d-inverted: {permissions: [{and_rules: {rules: [{header: {name: x-tenant, exact_match: a, invert_match: true}}, {header: {name: x-n, present_match: true}}]}}], principals: [{any: true}]},
        e-missing-empty: {permissions: [{header: {name: x-debug, string_match: {exact: ""}, treat_missing_header_as_empty: true}}], principals: [{header: {name: x-n, contains_match: "1"}}]},
        f-regex: {permissions: [{header: {name: x-tenant, safe_regex_match: {regex: "t[0-9]+"}}}], principals: [{any: true}]},
        g-absent-inverted: {permissions: [{header: {name: x-debug, present_match: true, invert_match: true}}], principals: [{header: {name: x-tenant, suffix_match: "z"}}]}}}}"#,
    ),
    (
        "addresses",
        r#"{rules: {policies: {
        direct: {permissions: [{any: true}], principals: [{direct_remote_ip: {address_prefix: 127.0.0.5, prefix_len: 32}}]},
        remote: {permissions: [{any: true}], principals: [{remote_ip: {address_prefix: 192.168.0.0, prefix_len: 16}}]},
        source: {permissions: [{any: true}], principals: [{source_ip: {address_prefix: 127.0.0.9, prefix_len: 32}}]},
        dest: {permissions: [{destination_ip: {address_prefix: 127.0.0.2, prefix_len: 32}}], principals: [{any: true}]},
        v6-never: {permissions: [{any: true}], principals: [{direct_remote_ip: {address_prefix: "::", prefix_len: 0}}]}}}}"#,
    ),
    (
        "ports",
        r#"{rules: {action: DENY, policies: {
        b: {permissions: [{destination_port: {B}}], principals: [{any: true}]},
        c: {permissions: [{destination_port_range: {start: {C}, end: {C1}}}], principals: [{not_id: {direct_remote_ip: {address_prefix: 127.0.0.1, prefix_len: 32}}}]}}}}"#,
    ),
    (
        "nesting",
        r#"{rules: {action: DENY, policies: {
        p: {permissions: [{and_rules: {rules: [
              {not_rule: {or_rules: {rules: [{header: {name: ":method", exact_match: GET}}, {header: {name: ":method", exact_match: HEAD}}]}}},
              {or_rules: {rules: [{url_path: {path: {suffix: /items}}}, {not_rule: {url_path: {path: {prefix: /api}}}}]}}]}}],
            principals: [{or_ids: {ids: [{and_ids: {ids: [{direct_remote_ip: {address_prefix: 127.0.0.0, prefix_len: 24}}, {not_id: {direct_remote_ip: {address_prefix: 127.0.0.9, prefix_len: 32}}}]}}]}}]}}}}"#,
    ),
    (
        "spec-empty",
        r#"{rules: {policies: {"ns[foo]-policy[allow-none]-rule[0]": {permissions: [{not_rule: {any: true}}], principals: [{not_id: {any: true}}]}}}, shadow_rules_stat_prefix: istio_dry_run_}"#,
    ),
    (
        "dry-run",
        r#"{rules: {policies: {all: {permissions: [{any: true}], principals: [{any: true}]}}},
      shadow_rules: {action: DENY, policies: {"ns[foo]-policy[dry]-rule[0]": {permissions: [{url_path: {path: {prefix: /admin}}}], principals: [{any: true}]}}},
      shadow_rules_stat_prefix: istio_dry_run_deny_, track_per_rule_stats: true}"#,
    ),
    (
        "uri-templates",
        r#"{rules: {policies: {t: {permissions: [
        {uri_template: {name: a, typed_config: {"@type": type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig, path_template: "/api/*/items"}}},
        {uri_template: {name: b, typed_config: {"@type": type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig, path_template: "/**/template"}}},
        {uri_template: {name: c, typed_config: {"@type": type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig, path_template: "/info/{id}"}}}],
      principals: [{any: true}]}}}}"#,
    ),
    (
        "pseudo-headers",
        r#"{rules: {policies: {
        scheme: {permissions: [{and_rules: {rules: [{header: {name: ":scheme", exact_match: http}}, {header: {name: ":path", string_match: {contains: "x=1"}}}]}}], principals: [{any: true}]},
        path-regex: {permissions: [{header: {name: ":path", safe_regex_match: {regex: "/api/v[0-9]+/.*"}}}], principals: [{any: true}]},
        authority-absent: {permissions: [{header: {name: ":authority", present_match: false}}], principals: [{any: true}]}}}}"#,
    ),
    (
        "shadow-only",
        r#"{shadow_rules: {policies: {p: {permissions: [{header: {name: ":method", exact_match: POST}}], principals: [{any: true}]}}}, shadow_rules_stat_prefix: istio_dry_run_allow_}"#,
    ),
    (
        "audit-log",
        r#"{rules: {action: LOG, policies: {p: {permissions: [{url_path: {path: {prefix: /admin}}}], principals: [{any: true}]}}}}"#,
    ),
    (
        "metadata-absent",
        r#"{rules: {policies: {
        jwt: {permissions: [{any: true}], principals: [{metadata: {filter: envoy.filters.http.jwt_authn, path: [{key: payload}, {key: iss}], value: {string_match: {exact: issuer}}}}]},
        not-jwt: {permissions: [{url_path: {path: {prefix: /api}}}], principals: [{metadata: {filter: istio_authn, path: [{key: request.auth.principal}], value: {present_match: true}, invert: true}}]}}}}"#,
    ),
    (
        "rules-prefix",
        r#"{rules: {action: DENY, policies: {p: {permissions: [{url_path: {path: {exact: /info}}}], principals: [{any: true}]}}},
      rules_stat_prefix: custom_, track_per_rule_stats: true}"#,
    ),
];

const TLS_CONFIGS: &[(&str, &str)] = &[(
    "principals",
    r#"{rules: {policies: {
        guestbook-post: {permissions: [{header: {name: ":method", exact_match: POST}}], principals: [{authenticated: {principal_name: {exact: "spiffe://cluster.local/ns/default/sa/guestbook"}}}]},
        prod-get: {permissions: [{header: {name: ":method", exact_match: GET}}], principals: [{authenticated: {principal_name: {safe_regex: {regex: ".*/ns/prod/.*"}}}}]},
        subject: {permissions: [{url_path: {path: {exact: /subject}}}], principals: [{authenticated: {principal_name: {exact: "CN=guestbook,O=mesh"}}}]},
        dns: {permissions: [{url_path: {path: {exact: /dns}}}], principals: [{authenticated: {principal_name: {suffix: ".example.com"}}}]},
        sni: {permissions: [{requested_server_name: {prefix: "outbound_"}}], principals: [{authenticated: {}}]},
        scheme: {permissions: [{header: {name: ":scheme", exact_match: https}}, {url_path: {path: {exact: /scheme}}}], principals: [{not_id: {authenticated: {principal_name: {safe_regex: {regex: ".+"}}}}}]}}}}"#,
)];

const NETWORK_CONFIGS: &[(&str, &str)] = &[
    (
        "port-or-client",
        r#"{rules: {policies: {p: {permissions: [{destination_port: {B}}], principals: [{any: true}]}, q: {permissions: [{any: true}], principals: [{direct_remote_ip: {address_prefix: 127.0.0.5, prefix_len: 32}}]}}}}"#,
    ),
    (
        "deny-source",
        r#"{rules: {action: DENY, policies: {p: {permissions: [{not_rule: {destination_ip: {address_prefix: 127.0.0.2, prefix_len: 32}}}], principals: [{source_ip: {address_prefix: 127.0.0.9, prefix_len: 32}}]}}},
      shadow_rules: {policies: {s: {permissions: [{destination_port_range: {start: {A}, end: {A1}}}], principals: [{any: true}]}}}, shadow_rules_stat_prefix: istio_dry_run_allow_}"#,
    ),
    (
        "deny-all",
        r#"{rules: {}, shadow_rules_stat_prefix: istio_dry_run_allow_}"#,
    ),
    (
        "no-request",
        r#"{rules: {policies: {p: {permissions: [{url_path: {path: {prefix: /}}}], principals: [{any: true}]}, q: {permissions: [{not_rule: {url_path: {path: {prefix: /}}}}], principals: [{not_id: {direct_remote_ip: {address_prefix: 127.0.0.9, prefix_len: 32}}}]}}}}"#,
    ),
];

const TLS_NETWORK_CONFIGS: &[(&str, &str)] = &[(
    "mesh-tcp",
    r#"{rules: {policies: {"ns[foo]-policy[tcp]-rule[0]": {permissions: [{and_rules: {rules: [{requested_server_name: {prefix: outbound_}}]}}], principals: [{and_ids: {ids: [{or_ids: {ids: [{authenticated: {principal_name: {safe_regex: {regex: ".*/ns/default/.*"}}}}]}}]}}]}}}}"#,
)];

// --- the matrix ---------------------------------------------------------------------------

const METHODS: &[&str] = &["GET", "POST", "DELETE", "PUT", "HEAD", "OPTIONS"];
const PATHS: &[&str] = &[
    "/",
    "/info",
    "/info?x=1",
    "/info/42",
    "/api/v1/items",
    "/api/v1/items?x=1",
    "/api/v1/items/",
    "/admin",
    "/ADMIN/x",
    "/Admin",
    "/a/../admin",
    "/api%2Fv1%2Fitems",
    "/%61dmin",
    "//admin",
    "/info?q=/admin",
    "/info;x=/admin",
    "/v1/%2e%2e/admin",
    "/x/y/template",
    "/template",
    "/api/a/b/items",
    "/api/v9/x?x=1",
];
const HOSTS: &[&str] = &[
    "svc.ns.svc.cluster.local",
    "SVC.NS.svc.cluster.local:8080",
    "127.0.0.1",
    "evil.example",
];
const HEADER_SETS: &[&[(&str, &str)]] = &[
    &[],
    &[("x-tenant", "a")],
    &[("x-tenant", "a"), ("x-tenant", "b")],
    &[("x-tenant", "t42"), ("x-n", "5")],
    &[("x-n", " 7 ")],
    &[("x-n", "12"), ("x-tenant", "zz")],
    &[("x-debug", "1")],
    &[("x-debug", ""), ("x-n", "1")],
    &[("x-forwarded-for", "192.168.3.4")],
    &[("x-forwarded-for", "10.0.0.1, 192.168.9.9"), ("x-n", "-1")],
    &[("x-forwarded-for", "garbage")],
];
const CLIENTS: &[&str] = &["127.0.0.1", "127.0.0.5", "127.0.0.9"];

/// A request to send: every field indexes the lists above.
#[derive(Debug, Clone, Copy)]
struct Req {
    method: usize,
    path: usize,
    host: usize,
    headers: usize,
    client: usize,
    listener: usize,
}

/// Every value of every dimension at least once, then a deterministic pseudo-random sample
/// of the rest of the cartesian product.
fn matrix(n: usize, seed: u64) -> Vec<Req> {
    let dims = [
        METHODS.len(),
        PATHS.len(),
        HOSTS.len(),
        HEADER_SETS.len(),
        CLIENTS.len(),
        3,
    ];
    let mut out = Vec::new();
    let widest = *dims.iter().max().unwrap();
    for i in 0..widest {
        let at = |d: usize| i % dims[d];
        out.push(Req {
            method: at(0),
            path: at(1),
            host: at(2),
            headers: at(3),
            client: at(4),
            listener: at(5),
        });
    }
    let mut x = seed;
    let mut next = |m: usize| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((x >> 33) as usize) % m
    };
    while out.len() < n {
        out.push(Req {
            method: next(dims[0]),
            path: next(dims[1]),
            host: next(dims[2]),
            headers: next(dims[3]),
            client: next(dims[4]),
            listener: next(dims[5]),
        });
    }
    out
}

// --- PKI ----------------------------------------------------------------------------------

struct Pki {
    ca: CertificateDer<'static>,
    ca_pem: String,
    server_pem: String,
    server_key_pem: String,
    clients: Vec<Client>,
}

/// A client identity: its certificate as Envoy will see it, and its key.
struct Client {
    cert: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
    uri_sans: Vec<String>,
    dns_sans: Vec<String>,
    subject: String,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "rbac diff CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec![
        "server.local".to_string(),
        "outbound_.8080_._.backend.default.svc.cluster.local".to_string(),
    ])
    .unwrap()
    .signed_by(&server_key, &issuer)
    .unwrap();
    let client = |uris: &[&str], dns: &[&str], org_cn: Option<(&str, &str)>| {
        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        for u in uris {
            p.subject_alt_names
                .push(SanType::URI((*u).try_into().unwrap()));
        }
        p.distinguished_name = DistinguishedName::new();
        let mut subject = String::new();
        if let Some((o, cn)) = org_cn {
            p.distinguished_name.push(DnType::OrganizationName, o);
            p.distinguished_name.push(DnType::CommonName, cn);
            subject = format!("CN={cn},O={o}");
        }
        let cert = p.signed_by(&key, &issuer).unwrap();
        Client {
            cert: Some((
                cert.der().clone(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )),
            uri_sans: uris.iter().map(|s| s.to_string()).collect(),
            dns_sans: dns.iter().map(|s| s.to_string()).collect(),
            subject,
        }
    };
    let clients = vec![
        client(
            &["spiffe://cluster.local/ns/default/sa/guestbook"],
            &[],
            Some(("mesh", "guestbook")),
        ),
        client(
            &["spiffe://cluster.local/ns/prod/sa/api"],
            &[],
            Some(("mesh", "api")),
        ),
        client(&[], &["client.example.com"], None),
        Client {
            cert: None,
            uri_sans: vec![],
            dns_sans: vec![],
            subject: String::new(),
        },
    ];
    Pki {
        ca: ca.der().clone(),
        ca_pem: ca.pem(),
        server_pem: server.pem(),
        server_key_pem: server_key.serialize_pem(),
        clients,
    }
}

// --- Envoy --------------------------------------------------------------------------------

struct Ports {
    a: u16,
    b: u16,
    c: u16,
}

/// Distinct free ports: the probing sockets stay open until all are chosen, so the kernel
/// cannot hand the same port out twice.
struct PortPool(Vec<TcpListener>);

// === impl PortPool ===

impl PortPool {
    fn port(&mut self) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        self.0.push(l);
        port
    }
}

fn listener_addrs(p: &Ports) -> [SocketAddr; 3] {
    [
        SocketAddr::from(([127, 0, 0, 1], p.a)),
        SocketAddr::from(([127, 0, 0, 1], p.b)),
        SocketAddr::from(([127, 0, 0, 2], p.c)),
    ]
}

fn fill(config: &str, p: &Ports) -> String {
    config
        .replace("{A1}", &(p.a + 1).to_string())
        .replace("{A}", &p.a.to_string())
        .replace("{B}", &p.b.to_string())
        .replace("{C1}", &(p.c + 1).to_string())
        .replace("{C}", &p.c.to_string())
}

fn with_type(mut v: Value, type_url: String) -> Value {
    v.as_object_mut()
        .unwrap()
        .insert("@type".into(), json!(type_url));
    v
}

fn hcm(stat_prefix: &str, http_filters: Vec<Value>) -> Value {
    let mut filters = http_filters;
    filters.push(
        json!({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}),
    );
    json!({"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_prefix,
        "delayed_close_timeout": "0s",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": ""}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]}]},
        "http_filters": filters}})
}

fn tls_socket(pki: &Pki, require_client_cert: bool) -> Value {
    json!({"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": require_client_cert,
        "common_tls_context": {
            "tls_certificates": [{"certificate_chain": {"inline_string": pki.server_pem},
                                   "private_key": {"inline_string": pki.server_key_pem}}],
            "validation_context": {"trusted_ca": {"inline_string": pki.ca_pem}}}}})
}

fn listener(name: String, addr: SocketAddr, filters: Vec<Value>, tls: Option<Value>) -> Value {
    let mut chain = json!({"filters": filters});
    let mut listener = json!({"name": name, "address": {"socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()}}});
    if let Some(t) = tls {
        chain["transport_socket"] = t;
        // As on Istio's inbound listener: the SNI reaches RBAC through the TLS inspector.
        listener["listener_filters"] = json!([{"name": "envoy.filters.listener.tls_inspector", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}]);
    }
    listener["filter_chains"] = json!([chain]);
    listener
}

// --- clients ------------------------------------------------------------------------------

fn connect(client_ip: &str, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::new(client_ip.parse().unwrap(), 0).into())
        .unwrap();
    socket
        .connect_timeout(&to.into(), Duration::from_secs(5))
        .unwrap();
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

fn raw_request(method: &str, path: &str, host: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("Connection: close\r\n\r\n");
    r.into_bytes()
}

/// Envoy's answer: `Some((status, body))`, or `None` if it closed without one. Stops at the
/// end of the body (Envoy delays its close of a `Connection: close` stream by a second).
fn read_response(stream: &mut dyn Read, head_request: bool) -> Option<(u16, String)> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let head_only = head_request || head.contains(" 304 ");
            if head_only || raw.len() >= end + 4 + len {
                let status = head.split_whitespace().nth(1)?.parse().ok()?;
                let body = String::from_utf8_lossy(&raw[end + 4..]).to_string();
                return Some((status, body));
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

fn tls_client(pki: &Pki, client: &Client, sni: &str) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let _ = sni;
    Arc::new(match &client.cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(vec![cert.clone()], key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    })
}

/// Sends one request (over TLS when `tls` is set); returns the peer address used and the
/// answer.
fn send(
    client_ip: &str,
    to: SocketAddr,
    bytes: &[u8],
    tls: Option<(&Arc<rustls::ClientConfig>, &str)>,
) -> (SocketAddr, Option<(u16, String)>) {
    let mut tcp = connect(client_ip, to);
    let peer = tcp.local_addr().unwrap();
    match tls {
        None => {
            tcp.write_all(bytes).unwrap();
            (peer, read_response(&mut tcp, bytes.starts_with(b"HEAD ")))
        }
        Some((config, sni)) => {
            let name = ServerName::try_from(sni.to_string()).unwrap();
            let mut conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
            let mut stream = rustls::Stream::new(&mut conn, &mut tcp);
            if stream.write_all(bytes).is_err() {
                return (peer, None);
            }
            (
                peer,
                read_response(&mut stream, bytes.starts_with(b"HEAD ")),
            )
        }
    }
}

// --- our side -----------------------------------------------------------------------------

fn downstream(local: SocketAddr, peer: SocketAddr, tls: Option<(&Client, &str)>) -> Downstream {
    Downstream {
        local,
        peer,
        listener: Arc::from("diff"),
        direction: Direction::Inbound,
        filter_chain: Arc::from("diff"),
        requested_server_name: tls.map(|(_, sni)| Arc::from(sni)),
        tls: tls.map(|(c, _)| {
            Arc::new(PeerTls {
                peer_certificate: c.cert.as_ref().map(|_| PeerCertificate {
                    uri_sans: c.uri_sans.clone(),
                    dns_sans: c.dns_sans.clone(),
                    subject: c.subject.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
        }),
        original_src_mark: None,
    }
}

fn parts(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
) -> Option<http::request::Parts> {
    let mut b = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).ok().map(|r| r.into_parts().0)
}

/// The connection manager's remote address with Envoy's defaults (`use_remote_address:
/// false`, no trusted hops): the last `x-forwarded-for` entry if it parses, else the peer.
fn remote(peer: SocketAddr, headers: &[(&str, &str)]) -> IpAddr {
    headers
        .iter()
        .rev()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-forwarded-for"))
        .and_then(|(_, v)| v.rsplit(',').next()?.trim().parse().ok())
        .unwrap_or(peer.ip())
}

fn http_proto(config: &str) -> HttpProto {
    decode::<HttpProto>(config, Format::Yaml, UnknownFields::Reject)
        .unwrap_or_else(|e| panic!("{e}\n{config}"))
        .message
}

fn network_proto(name: &str, config: &str) -> NetworkProto {
    let mut p = decode::<NetworkProto>(config, Format::Yaml, UnknownFields::Reject)
        .unwrap_or_else(|e| panic!("{e}\n{config}"))
        .message;
    p.stat_prefix = format!("tcp_{name}.");
    p
}

/// Outcome counts for the report.
#[derive(Default)]
struct Tally {
    compared: usize,
    allowed: usize,
    skipped: Vec<String>,
    mismatches: Vec<String>,
}

/// Compares Envoy's answer with our decision, which `ours` makes (and counts in our stats)
/// only when Envoy's answer came from RBAC: a request its codec refused never reached it.
fn compare(
    tally: &mut Tally,
    what: String,
    envoy: Option<(u16, String)>,
    head: bool,
    ours: impl FnOnce() -> bool,
) {
    let envoy_allowed = match &envoy {
        Some((200, _)) => true,
        Some((403, body)) if body == "RBAC: access denied" || (head && body.is_empty()) => false,
        None => false,
        Some((status, body)) => {
            tally
                .skipped
                .push(format!("{what}: Envoy answered {status} {body:?}"));
            return;
        }
    };
    let ours = ours();
    tally.compared += 1;
    tally.allowed += usize::from(envoy_allowed);
    if envoy_allowed != ours {
        tally.mismatches.push(format!(
            "{what}: envoy allowed={envoy_allowed} ({envoy:?}), ours allowed={ours}"
        ));
    }
}

fn rbac_stats(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| l.contains(".rbac."))
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn rbac_decisions_match_envoy() {
    let Some(bin) = e2e::require_envoy("rbac_decisions_match_envoy") else {
        return;
    };
    let pki = pki();
    let store = Store::new(None).unwrap();
    let mut listeners = Vec::new();
    let mut pool = PortPool(Vec::new());

    // HTTP configs: three plaintext listeners each.
    let mut http = Vec::new();
    for (name, config) in HTTP_CONFIGS {
        let ports = Ports {
            a: pool.port(),
            b: pool.port(),
            c: pool.port(),
        };
        let proto = http_proto(&fill(config, &ports));
        let filter = json!({"name": "envoy.filters.http.rbac",
            "typed_config": with_type(encode(&proto).unwrap(), HttpProto::type_url())});
        for (i, addr) in listener_addrs(&ports).into_iter().enumerate() {
            listeners.push(listener(
                format!("{name}-{i}"),
                addr,
                vec![hcm(&format!("h_{name}"), vec![filter.clone()])],
                None,
            ));
        }
        let ours = HttpRbac::new(&proto, &store, &format!("http.h_{name}.")).unwrap();
        http.push((*name, listener_addrs(&ports), ours));
    }
    // mTLS configs: one listener requiring client certificates, one accepting clients without.
    let mut tls = Vec::new();
    for (name, config) in TLS_CONFIGS {
        let proto = http_proto(config);
        let filter = json!({"name": "envoy.filters.http.rbac",
            "typed_config": with_type(encode(&proto).unwrap(), HttpProto::type_url())});
        let required = SocketAddr::from(([127, 0, 0, 1], pool.port()));
        let optional = SocketAddr::from(([127, 0, 0, 1], pool.port()));
        for (addr, require) in [(required, true), (optional, false)] {
            listeners.push(listener(
                format!("{name}-{require}"),
                addr,
                vec![hcm(&format!("h_{name}"), vec![filter.clone()])],
                Some(tls_socket(&pki, require)),
            ));
        }
        let ours = HttpRbac::new(&proto, &store, &format!("http.h_{name}.")).unwrap();
        tls.push((*name, required, optional, ours));
    }
    // Network configs in front of a connection manager that allows everything.
    let mut network = Vec::new();
    for (name, config) in NETWORK_CONFIGS.iter().chain(TLS_NETWORK_CONFIGS) {
        let secure = TLS_NETWORK_CONFIGS.iter().any(|(n, _)| n == name);
        let ports = Ports {
            a: pool.port(),
            b: pool.port(),
            c: pool.port(),
        };
        let proto = network_proto(name, &fill(config, &ports));
        let filter = json!({"name": "envoy.filters.network.rbac",
            "typed_config": with_type(encode(&proto).unwrap(), NetworkProto::type_url())});
        for (i, addr) in listener_addrs(&ports).into_iter().enumerate() {
            let socket = secure.then(|| tls_socket(&pki, false));
            listeners.push(listener(
                format!("{name}-{i}"),
                addr,
                vec![filter.clone(), hcm(&format!("n_{name}"), vec![])],
                socket,
            ));
        }
        let ours = NetworkRbac::new(&proto, &store).unwrap();
        network.push((*name, listener_addrs(&ports), ours, secure));
    }

    let bootstrap = json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": listeners},
    });
    drop(pool);
    if let Ok(path) = std::env::var("RBAC_DIFF_BOOTSTRAP") {
        std::fs::write(path, bootstrap.to_string()).unwrap();
    }
    let started = std::time::Instant::now();
    let envoy = e2e::EnvoyProcess::start(&bin, &bootstrap.to_string(), &[]).unwrap();
    eprintln!("envoy up after {:?}", started.elapsed());
    let mut tally = Tally::default();

    for (ci, (name, addrs, ours)) in http.iter().enumerate() {
        for r in matrix(90, 17 + ci as u64) {
            let (method, path, host) = (METHODS[r.method], PATHS[r.path], HOSTS[r.host]);
            let headers = HEADER_SETS[r.headers];
            let to = addrs[r.listener];
            let what = format!(
                "{name}: {method} {path} host={host} {headers:?} from {} to {to}",
                CLIENTS[r.client]
            );
            let Some(p) = parts(method, path, host, headers) else {
                tally
                    .skipped
                    .push(format!("{what}: not a valid http::Request"));
                continue;
            };
            let (peer, answer) = send(
                CLIENTS[r.client],
                to,
                &raw_request(method, path, host, headers),
                None,
            );
            let ds = downstream(to, peer, None);
            let input = Input::request(&ds, &p).with_remote(remote(peer, headers));
            compare(&mut tally, what, answer, method == "HEAD", || {
                ours.decide(&input, None).allowed
            });
        }
    }

    eprintln!("http done after {:?}", started.elapsed());
    let snis = [
        "server.local",
        "outbound_.8080_._.backend.default.svc.cluster.local",
    ];
    for (name, required, optional, ours) in &tls {
        for (ci, client) in pki.clients.iter().enumerate() {
            let to = if client.cert.is_some() {
                *required
            } else {
                *optional
            };
            for sni in snis {
                let config = tls_client(&pki, client, sni);
                for (method, path) in [
                    ("POST", "/"),
                    ("GET", "/"),
                    ("GET", "/subject"),
                    ("GET", "/dns"),
                    ("PUT", "/scheme"),
                ] {
                    let what = format!("{name}: client {ci} sni {sni} {method} {path}");
                    let bytes = raw_request(method, path, "backend", &[]);
                    let (peer, answer) = send("127.0.0.1", to, &bytes, Some((&config, sni)));
                    let ds = downstream(to, peer, Some((client, sni)));
                    let p = parts(method, path, "backend", &[]).unwrap();
                    compare(&mut tally, what, answer, false, || {
                        ours.decide(&Input::request(&ds, &p), None).allowed
                    });
                }
            }
        }
    }

    eprintln!("tls done after {:?}", started.elapsed());
    for (name, addrs, ours, secure) in &network {
        for client_ip in CLIENTS {
            for to in addrs {
                let clients: Vec<(Option<&Client>, &str)> = if *secure {
                    pki.clients
                        .iter()
                        .flat_map(|c| snis.iter().map(move |s| (Some(c), *s)))
                        .collect()
                } else {
                    vec![(None, "")]
                };
                for (client, sni) in clients {
                    let what = format!("network {name}: from {client_ip} to {to} sni {sni:?}");
                    let bytes = raw_request("GET", "/", "backend", &[]);
                    let config = client.map(|c| tls_client(&pki, c, sni));
                    let (peer, answer) =
                        send(client_ip, *to, &bytes, config.as_ref().map(|c| (c, sni)));
                    let ds = downstream(*to, peer, client.map(|c| (c, sni)));
                    compare(&mut tally, what, answer, false, || {
                        let mut state = NetworkRbacState::default();
                        ours.on_data(&mut state, &Input::connection(&ds)).allowed()
                    });
                }
            }
        }
    }

    // Every rbac stat Envoy has, we have with the same value, and no more.
    let (status, text) = e2e::http::get(envoy.admin, "/stats?filter=rbac").unwrap();
    assert_eq!(status, 200);
    let theirs = rbac_stats(&text);
    let mine = rbac_stats(&store.render(&Query::default()));
    let stat_diff: Vec<_> = theirs
        .iter()
        .filter(|(k, v)| mine.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}: envoy {v}, ours {:?}", mine.get(k)))
        .chain(
            mine.keys()
                .filter(|k| !theirs.contains_key(*k))
                .map(|k| format!("{k}: only ours")),
        )
        .collect();

    eprintln!(
        "rbac differential: {} compared ({} allowed, {} denied), {} skipped, {} mismatches, {} rbac stats compared",
        tally.compared,
        tally.allowed,
        tally.compared - tally.allowed,
        tally.skipped.len(),
        tally.mismatches.len(),
        theirs.len()
    );
    for s in &tally.skipped {
        eprintln!("skipped: {s}");
    }
    assert!(
        tally.mismatches.is_empty() && stat_diff.is_empty(),
        "decisions differ from Envoy:\n{}\nstats differ:\n{}",
        tally.mismatches.join("\n"),
        stat_diff.join("\n")
    );
    assert!(
        tally.compared > 1000,
        "too few comparisons: {}",
        tally.compared
    );
}
