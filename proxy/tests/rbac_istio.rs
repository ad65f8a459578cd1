#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The scenarios at the filter level, with the RBAC filters istiod really emits
//! (goldens from istio/istio, see `data/rbac/istio/SOURCE.md`): the workshop (deny-all, then
//! allow guestbook POST only), a namespace deny-all plus an allow-all for one workload, DENY
//! winning over ALLOW in Istio's LOG -> DENY -> ALLOW order, bypass attempts by pod IP or
//! another port, dry-run rules, path templates, and TCP services with network RBAC.

use std::sync::Arc;

use envoy_types::pb::envoy::config::listener::v3::Filter;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpProto;
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use proxy::conn::{Direction, Downstream, PeerCertificate, PeerTls};
use proxy::proto::{Format, UnknownFields, decode};
use proxy::rbac::{HttpRbac, HttpVerdict, Input, NetworkRbac, NetworkRbacState};
use proxy::stats::{Query, Store};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rbac/istio/");
const HCM_PREFIX: &str = "http.inbound_0.0.0.0_8080.";
const GUESTBOOK: &str = "spiffe://cluster.local/ns/default/sa/guestbook";
const OTHER_SA: &str = "spiffe://cluster.local/ns/default/sa/other";

fn read(file: &str) -> String {
    std::fs::read_to_string(format!("{DATA}{file}")).unwrap()
}

/// The typed config of an HTTP filter golden.
fn http_any(file: &str) -> Any {
    let f = decode::<HttpFilter>(&read(file), Format::Yaml, UnknownFields::Reject)
        .unwrap()
        .message;
    match f.config_type {
        Some(ConfigType::TypedConfig(any)) => any,
        other => panic!("{file}: no typed_config: {other:?}"),
    }
}

fn http_filter(file: &str, store: &Store) -> HttpRbac {
    HttpRbac::from_any(&http_any(file), store, HCM_PREFIX).unwrap()
}

fn network_filter(file: &str, store: &Store) -> NetworkRbac {
    let f = decode::<Filter>(&read(file), Format::Yaml, UnknownFields::Reject)
        .unwrap()
        .message;
    let Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(any)) =
        f.config_type
    else {
        panic!("{file}: no typed_config");
    };
    NetworkRbac::from_any(&any, store).unwrap()
}

/// A connection to the server's sidecar: `local` is the original destination (pod IP and
/// port), `peer` the client, `principal` the verified client certificate's URI SAN.
fn conn(local: &str, principal: Option<&str>) -> Downstream {
    Downstream {
        local: local.parse().unwrap(),
        peer: "10.244.0.9:51234".parse().unwrap(),
        listener: Arc::from("virtualInbound"),
        direction: Direction::Inbound,
        filter_chain: Arc::from("0.0.0.0_8080"),
        requested_server_name: principal
            .map(|_| Arc::from("outbound_.8080_._.backend.default.svc.cluster.local")),
        tls: principal.map(|p| {
            Arc::new(PeerTls {
                peer_certificate: Some(PeerCertificate {
                    uri_sans: vec![p.to_string()],
                    ..Default::default()
                }),
                ..Default::default()
            })
        }),
        original_src_mark: None,
    }
}

fn request(method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

/// Runs filters in order, as the connection manager runs Istio's chain; returns the
/// response code details of the first denial.
fn chain(filters: &[&HttpRbac], ds: &Downstream, parts: &http::request::Parts) -> Option<String> {
    filters.iter().find_map(|f| {
        f.decide(&Input::request(ds, parts), None)
            .local_reply()
            .map(|r| {
                assert_eq!(r.status, 403);
                assert_eq!(r.body, "RBAC: access denied");
                r.details
            })
    })
}

fn stat(store: &Store, name: &str) -> u64 {
    let text = store.render(&Query::default());
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no stat {name} in\n{text}"))
        .parse()
        .unwrap()
}

const SVC: &str = "backend.default.svc.cluster.local:8080";
const DENIED_NONE: &str = "rbac_access_denied_matched_policy[none]";

#[test]
fn workshop_deny_all_then_allow_guestbook_post() {
    let store = Store::new(None).unwrap();
    // Step 1: an AuthorizationPolicy with no rules on the service denies everything.
    let deny_all = http_filter("http/allow-nil-rule-out.yaml", &store);
    let guestbook = conn("10.244.1.7:8080", Some(GUESTBOOK));
    for method in ["GET", "POST"] {
        let parts = request(method, SVC, "/", &[]);
        assert_eq!(
            chain(&[&deny_all], &guestbook, &parts).as_deref(),
            Some(DENIED_NONE)
        );
    }

    // Step 2: an ALLOW from principal guestbook with methods [POST].
    let allow = http_filter("workshop-allow-guestbook-post.yaml", &store);
    let post = request("POST", SVC, "/entries", &[]);
    let v = allow.decide(&Input::request(&guestbook, &post), None);
    assert!(v.allowed);
    assert_eq!(
        v.enforced.unwrap().matched_policy,
        Some("ns[default]-policy[allow-guestbook-post]-rule[0]")
    );
    let get = request("GET", SVC, "/entries", &[]);
    assert_eq!(
        chain(&[&allow], &guestbook, &get).as_deref(),
        Some(DENIED_NONE)
    );
    let other = conn("10.244.1.7:8080", Some(OTHER_SA));
    assert_eq!(
        chain(&[&allow], &other, &post).as_deref(),
        Some(DENIED_NONE)
    );
    // Plaintext, claiming the identity in headers: still denied.
    let plain = conn("10.244.1.7:8080", None);
    let spoofed = request(
        "POST",
        SVC,
        "/entries",
        &[("x-forwarded-client-cert", &format!("URI={GUESTBOOK}"))],
    );
    assert_eq!(
        chain(&[&allow], &plain, &spoofed).as_deref(),
        Some(DENIED_NONE)
    );
    assert_eq!(stat(&store, "http.inbound_0.0.0.0_8080.rbac.allowed"), 1);
    assert_eq!(stat(&store, "http.inbound_0.0.0.0_8080.rbac.denied"), 5);
}

#[test]
fn bypass_by_pod_ip_or_another_port_is_still_denied() {
    // Policy is enforced by the server's sidecar on every inbound chain, whatever name or
    // port the client used: the decision depends on the peer identity and the request.
    let store = Store::new(None).unwrap();
    let allow = http_filter("workshop-allow-guestbook-post.yaml", &store);
    for local in ["10.244.1.7:8080", "10.244.1.7:9090", "10.244.1.7:15006"] {
        let other = conn(local, Some(OTHER_SA));
        for host in [SVC, "10.244.1.7:8080", "10.244.1.7:9090", "backend"] {
            let post = request("POST", host, "/entries", &[]);
            assert!(
                chain(&[&allow], &other, &post).is_some(),
                "{local} {host}: another service account must stay denied"
            );
            let guestbook = conn(local, Some(GUESTBOOK));
            assert!(chain(&[&allow], &guestbook, &post).is_none());
        }
    }
}

/// One ALLOW filter with the policies of several goldens, as istiod merges every ALLOW
/// policy that applies to a workload into a single filter.
fn merged(files: &[&str], store: &Store) -> HttpRbac {
    let mut merged = HttpProto::default();
    for file in files {
        let any = http_any(file);
        let proto = HttpProto::decode(any.value.as_slice()).unwrap();
        let rules = merged.rules.get_or_insert_with(Default::default);
        rules.policies.extend(proto.rules.unwrap().policies);
        merged.shadow_rules_stat_prefix = proto.shadow_rules_stat_prefix;
    }
    let any = Any {
        type_url: HttpProto::type_url(),
        value: merged.encode_to_vec(),
    };
    HttpRbac::from_any(&any, store, HCM_PREFIX).unwrap()
}

#[test]
fn namespace_deny_all_plus_allow_all_for_one_workload() {
    let store = Store::new(None).unwrap();
    // The selected workload gets both policies; every other workload only `spec: {}`.
    let selected = merged(
        &[
            "http/allow-nil-rule-out.yaml",
            "http/allow-empty-rule-out.yaml",
        ],
        &store,
    );
    let others = http_filter("http/allow-nil-rule-out.yaml", &store);
    for ds in [
        conn("10.244.1.7:8080", Some(OTHER_SA)),
        conn("10.244.1.7:8080", None),
    ] {
        for method in ["GET", "DELETE"] {
            let parts = request(method, SVC, "/x", &[]);
            let v = selected.decide(&Input::request(&ds, &parts), None);
            assert!(v.allowed);
            assert_eq!(
                v.enforced.unwrap().matched_policy,
                Some("ns[foo]-policy[allow-all]-rule[0]")
            );
            assert_eq!(chain(&[&others], &ds, &parts).as_deref(), Some(DENIED_NONE));
        }
    }
}

#[test]
fn deny_wins_over_allow_in_istios_filter_order() {
    let store = Store::new(None).unwrap();
    let audit = http_filter("http/audit-full-rule-out.yaml", &store);
    let deny = http_filter("http/deny-and-allow-out1.yaml", &store);
    let allow = http_filter("http/allow-empty-rule-out.yaml", &store);
    let filters = [&audit, &deny, &allow];
    let parts = request("GET", SVC, "/", &[]);
    let denied = conn("10.244.1.7:8080", Some("spiffe://deny"));
    assert_eq!(
        chain(&filters, &denied, &parts).as_deref(),
        Some("rbac_access_denied_matched_policy[ns[foo]-policy[httpbin-deny]-rule[0]]")
    );
    assert_eq!(
        chain(&filters, &conn("10.244.1.7:8080", Some(GUESTBOOK)), &parts),
        None
    );
    // The audit filter never denies, and asks the access log to record the request.
    let v: HttpVerdict<'_> = audit.decide(&Input::request(&denied, &parts), None);
    assert!(v.allowed);
    assert_eq!(v.access_log_hint(), Some(true));
}

#[test]
fn dry_run_policies_only_count() {
    let store = Store::new(None).unwrap();
    let f = http_filter("http/dry-run-mix-out.yaml", &store);
    let ds = conn("10.244.1.7:8080", Some(GUESTBOOK));
    let allow_path = request("GET", SVC, "/allow", &[]);
    let v = f.decide(&Input::request(&ds, &allow_path), None);
    assert!(!v.allowed, "only the enforced policy (/another) decides");
    let md = v.dynamic_metadata().unwrap();
    let s = |k: &str| match &md.fields[k].kind {
        Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(s)) => s.clone(),
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(s("istio_dry_run_allow_shadow_engine_result"), "allowed");
    assert_eq!(
        s("istio_dry_run_allow_shadow_effective_policy_id"),
        "ns[foo]-policy[httpbin-1]-rule[0]"
    );
    assert!(
        f.decide(
            &Input::request(&ds, &request("GET", SVC, "/another?x", &[])),
            None
        )
        .allowed
    );
    let p = "http.inbound_0.0.0.0_8080.rbac.";
    assert_eq!(
        stat(&store, &format!("{p}istio_dry_run_allow_.shadow_allowed")),
        1
    );
    assert_eq!(
        stat(&store, &format!("{p}istio_dry_run_allow_.shadow_denied")),
        1
    );
    assert_eq!(stat(&store, &format!("{p}allowed")), 1);
    assert_eq!(stat(&store, &format!("{p}denied")), 1);
}

#[test]
fn path_templates_from_istio_compile_and_match() {
    let store = Store::new(None).unwrap();
    // The golden as a whole: `not (... or .+)` never matches, so it allows nothing.
    let whole = http_filter("http/extended-allow-path-out.yaml", &store);
    let ds = conn("10.244.1.7:8080", Some(GUESTBOOK));
    assert!(
        !whole
            .decide(
                &Input::request(&ds, &request("GET", SVC, "/exact", &[])),
                None
            )
            .allowed
    );
    // Its two uri_template permissions on their own.
    let mut proto = HttpProto::decode(
        http_any("http/extended-allow-path-out.yaml")
            .value
            .as_slice(),
    )
    .unwrap();
    let rules = proto.rules.as_mut().unwrap();
    let policy = rules.policies.values_mut().next().unwrap();
    use envoy_types::pb::envoy::config::rbac::v3::permission::Rule;
    let Some(Rule::AndRules(and)) = &policy.permissions[0].rule else {
        panic!()
    };
    let Some(Rule::OrRules(or)) = &and.rules[0].rule else {
        panic!()
    };
    let templates: Vec<_> = or.rules[4..6].to_vec();
    assert!(
        templates
            .iter()
            .all(|p| matches!(p.rule, Some(Rule::UriTemplate(_))))
    );
    policy.permissions = templates;
    let f = HttpRbac::new(&proto, &store, HCM_PREFIX).unwrap();
    let allowed = |path: &str| {
        f.decide(&Input::request(&ds, &request("GET", SVC, path, &[])), None)
            .allowed
    };
    assert!(allowed("/path/template/x"));
    assert!(allowed("/path/template/x?y=1"));
    assert!(allowed("/a/b/path/template"));
    assert!(!allowed("/path/template/x/y"));
    assert!(!allowed("/path/template"));
    assert!(!allowed("/other"));
}

fn tcp_allowed(f: &NetworkRbac, ds: &Downstream) -> bool {
    f.on_data(&mut NetworkRbacState::default(), &Input::connection(ds))
        .allowed()
}

#[test]
fn tcp_service_with_network_rbac() {
    let store = Store::new(None).unwrap();
    // ALLOW from namespace ns-1 to port 80; the rules that needed HTTP fields were dropped.
    let f = network_filter("tcp/allow-both-http-tcp-out.yaml", &store);
    let ns1 = "spiffe://cluster.local/ns/ns-1/sa/client";
    assert!(tcp_allowed(&f, &conn("10.244.1.7:80", Some(ns1))));
    assert!(
        !tcp_allowed(&f, &conn("10.244.1.7:8080", Some(ns1))),
        "the HTTP-only rule is gone"
    );
    assert!(!tcp_allowed(
        &f,
        &conn("10.244.1.7:80", Some("spiffe://cluster.local/ns/ns-2/sa/c"))
    ));
    assert!(
        !tcp_allowed(&f, &conn("10.244.1.7:80", None)),
        "plaintext has no principal"
    );
    let denied = f.on_data(
        &mut NetworkRbacState::default(),
        &Input::connection(&conn("10.244.1.7:80", None)),
    );
    assert_eq!(denied.termination_details().as_deref(), Some(DENIED_NONE));
    assert_eq!(stat(&store, "tcp.rbac.allowed"), 1);
    assert_eq!(stat(&store, "tcp.rbac.denied"), 4);

    // An ALLOW policy with only HTTP fields leaves `rules: {}`: nothing is allowed.
    let store = Store::new(None).unwrap();
    let none = network_filter("tcp/allow-only-http-out.yaml", &store);
    assert!(!tcp_allowed(&none, &conn("10.244.1.7:80", Some(ns1))));

    // Dry run: port 80 is denied, but the shadow policy would have allowed it.
    let store = Store::new(None).unwrap();
    let dry = network_filter("tcp/dry-run-mix-out.yaml", &store);
    assert!(tcp_allowed(&dry, &conn("10.244.1.7:9000", None)));
    let v = dry.on_data(
        &mut NetworkRbacState::default(),
        &Input::connection(&conn("10.244.1.7:80", None)),
    );
    assert!(!v.allowed() && v.shadow.unwrap().allowed);
    assert_eq!(
        stat(&store, "tcp.rbac.istio_dry_run_allow_.shadow_allowed"),
        1
    );
    assert_eq!(
        stat(&store, "tcp.rbac.istio_dry_run_allow_.shadow_denied"),
        1
    );
}
