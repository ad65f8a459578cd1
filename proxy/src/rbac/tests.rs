//! Engine and filter tests: each matcher kind and combinator, the actions, shadow rules,
//! stats, the filters' replies and metadata, and the exact error texts for refused configs.

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

fn yaml<T: Message + Name + Default>(text: &str) -> T {
    decode::<T>(text, Format::Yaml, UnknownFields::Reject)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .message
}

fn engine(text: &str) -> Engine {
    Engine::new(&yaml::<Rbac>(text)).unwrap()
}

fn engine_err(text: &str) -> String {
    Engine::new(&yaml::<Rbac>(text)).unwrap_err().to_string()
}

/// An ALLOW engine with one policy `p` whose only permission is `permission` and whose
/// only principal is `principal`.
fn allow(permission: &str, principal: &str) -> Engine {
    engine(&format!(
        "policies:\n  p:\n    permissions: [{permission}]\n    principals: [{principal}]\n"
    ))
}

fn perm(permission: &str) -> Engine {
    allow(permission, "{any: true}")
}

fn princ(principal: &str) -> Engine {
    allow("{any: true}", principal)
}

fn downstream(local: &str, peer: &str) -> Downstream {
    Downstream {
        local: local.parse().unwrap(),
        peer: peer.parse().unwrap(),
        listener: Arc::from("virtualInbound"),
        direction: Direction::Inbound,
        filter_chain: Arc::from("0.0.0.0_8080"),
        requested_server_name: None,
        tls: None,
    }
}

fn plain() -> Downstream {
    downstream("10.0.0.1:8080", "10.1.0.5:40000")
}

fn mtls(uri: &[&str], dns: &[&str], subject: &str) -> Downstream {
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

fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn get(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    req("GET", uri, headers)
}

fn http_allows(e: &Engine, ds: &Downstream, parts: &http::request::Parts) -> bool {
    e.evaluate(&Input::request(ds, parts)).allowed
}

fn conn_allows(e: &Engine, ds: &Downstream) -> bool {
    e.evaluate(&Input::connection(ds)).allowed
}

fn metadata(filter: &str, fields: &[(&str, Value)]) -> Metadata {
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

fn s(v: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(v.into())),
    }
}

// --- permissions --------------------------------------------------------------------------

#[test]
fn header_string_matchers_and_ignore_case() {
    let ds = plain();
    let e =
        perm("{header: {name: ':authority', string_match: {exact: Exact.com, ignore_case: true}}}");
    assert!(http_allows(&e, &ds, &get("/", &[("host", "exact.COM")])));
    assert!(!http_allows(
        &e,
        &ds,
        &get("/", &[("host", "exact.com.evil")])
    ));
    let e = perm("{header: {name: x-a, string_match: {prefix: ab}}}");
    assert!(http_allows(&e, &ds, &get("/", &[("x-a", "abc")])));
    assert!(!http_allows(&e, &ds, &get("/", &[("x-a", "ABc")])));
    let e = perm("{header: {name: x-a, string_match: {suffix: YZ, ignore_case: true}}}");
    assert!(http_allows(&e, &ds, &get("/", &[("x-a", "xyz")])));
    let e = perm("{header: {name: x-a, contains_match: mid}}");
    assert!(http_allows(&e, &ds, &get("/", &[("x-a", "a-mid-b")])));
    assert!(!http_allows(&e, &ds, &get("/", &[("x-a", "a-MID-b")])));
    let e = perm("{header: {name: x-a, safe_regex_match: {regex: 'v[0-9]+'}}}");
    assert!(http_allows(&e, &ds, &get("/", &[("x-a", "v12")])));
    assert!(
        !http_allows(&e, &ds, &get("/", &[("x-a", "v12a")])),
        "regexes match in full"
    );
}

#[test]
fn header_names_are_case_insensitive_and_host_is_authority() {
    let ds = plain();
    let e = perm("{header: {name: X-Header, exact_match: v}}");
    assert!(http_allows(&e, &ds, &get("/", &[("x-header", "v")])));
    let e = perm("{header: {name: host, exact_match: svc}}");
    assert!(http_allows(&e, &ds, &get("/", &[("host", "svc")])));
    assert!(
        http_allows(&e, &ds, &get("http://svc/x", &[])),
        "absolute URI authority"
    );
    let e = perm("{header: {name: ':method', exact_match: POST}}");
    assert!(http_allows(&e, &ds, &req("POST", "/", &[])));
    assert!(!http_allows(&e, &ds, &get("/", &[])));
    let e = perm("{header: {name: ':path', prefix_match: /api}}");
    assert!(http_allows(&e, &ds, &get("/api/x?q=1", &[])));
    let e = perm("{header: {name: ':scheme', exact_match: http}}");
    assert!(http_allows(&e, &ds, &get("/", &[])));
    assert!(
        !http_allows(&e, &mtls(&[], &[], ""), &get("/", &[])),
        "TLS is https"
    );
    let e = perm("{header: {name: ':status', present_match: true}}");
    assert!(
        !http_allows(&e, &ds, &get("/", &[])),
        "not a request header"
    );
}

#[test]
fn header_presence_absence_and_invert() {
    let ds = plain();
    let with = get("/", &[("x-a", "1")]);
    let without = get("/", &[]);
    let present = perm("{header: {name: x-a, present_match: true}}");
    assert!(http_allows(&present, &ds, &with));
    assert!(!http_allows(&present, &ds, &without));
    let absent = perm("{header: {name: x-a, present_match: false}}");
    assert!(!http_allows(&absent, &ds, &with));
    assert!(http_allows(&absent, &ds, &without));
    // No specifier: present.
    let bare = perm("{header: {name: x-a}}");
    assert!(http_allows(&bare, &ds, &with) && !http_allows(&bare, &ds, &without));
    // Inverted value match: an absent header still does not match.
    let inv = perm("{header: {name: x-a, exact_match: '1', invert_match: true}}");
    assert!(!http_allows(&inv, &ds, &with));
    assert!(http_allows(&inv, &ds, &get("/", &[("x-a", "2")])));
    assert!(!http_allows(&inv, &ds, &without));
    let inv_present = perm("{header: {name: x-a, present_match: true, invert_match: true}}");
    assert!(http_allows(&inv_present, &ds, &without));
    assert!(!http_allows(&inv_present, &ds, &with));
    // treat_missing_header_as_empty: absent is "".
    let empty = perm(
        "{header: {name: x-a, string_match: {exact: ''}, treat_missing_header_as_empty: true}}",
    );
    assert!(http_allows(&empty, &ds, &without));
    // The deprecated exact_match with an empty value matches any value.
    let any_value = perm("{header: {name: x-a, exact_match: ''}}");
    assert!(http_allows(&any_value, &ds, &with) && !http_allows(&any_value, &ds, &without));
}

#[test]
fn repeated_headers_are_joined_with_commas() {
    let ds = plain();
    let e = perm("{header: {name: x-a, exact_match: '1,2'}}");
    assert!(http_allows(
        &e,
        &ds,
        &get("/", &[("x-a", "1"), ("x-a", "2")])
    ));
    assert!(!http_allows(&e, &ds, &get("/", &[("x-a", "1")])));
    let long = "y".repeat(3000);
    let e = perm("{header: {name: x-a, suffix_match: ',end'}}");
    assert!(http_allows(
        &e,
        &ds,
        &get("/", &[("x-a", &long), ("x-a", "end")])
    ));
}

#[test]
fn header_range_match() {
    let ds = plain();
    let e = perm("{header: {name: x-n, range_match: {start: -10, end: 10}}}");
    assert!(http_allows(&e, &ds, &get("/", &[("x-n", "-10")])));
    assert!(http_allows(&e, &ds, &get("/", &[("x-n", "9")])));
    assert!(!http_allows(&e, &ds, &get("/", &[("x-n", "10")])));
    assert!(!http_allows(&e, &ds, &get("/", &[("x-n", "1.5")])));
}

#[test]
fn headers_never_match_on_a_connection() {
    let ds = plain();
    assert!(!conn_allows(
        &perm("{header: {name: ':method', present_match: true}}"),
        &ds
    ));
    // Envoy evaluates network RBAC with an empty header map: "absent" matches.
    assert!(conn_allows(
        &perm("{header: {name: ':method', present_match: false}}"),
        &ds
    ));
    assert!(!conn_allows(&perm("{url_path: {path: {prefix: /}}}"), &ds));
}

#[test]
fn url_path_ignores_query_and_fragment() {
    let ds = plain();
    let e = perm("{url_path: {path: {exact: /info}}}");
    assert!(http_allows(&e, &ds, &get("/info?x=/admin", &[])));
    assert!(!http_allows(&e, &ds, &get("/info/", &[])));
    let e = perm("{url_path: {path: {prefix: /ADMIN, ignore_case: true}}}");
    assert!(http_allows(&e, &ds, &get("/admin/x", &[])));
    // Encoded characters are not decoded here: that is the connection manager's job.
    assert!(
        !perm("{url_path: {path: {exact: /a/b}}}")
            .evaluate(&Input::request(&ds, &get("/a%2Fb", &[])))
            .allowed
    );
}

#[test]
fn uri_templates_match_the_path() {
    let ds = plain();
    let e = perm(
        "{uri_template: {name: t, typed_config: {'@type': type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig, path_template: '/books/*/pages'}}}",
    );
    assert!(http_allows(&e, &ds, &get("/books/12/pages?x", &[])));
    assert!(!http_allows(&e, &ds, &get("/books/1/2/pages", &[])));
    assert!(!conn_allows(&e, &ds));
}

#[test]
fn destination_ip_and_ports() {
    let v4 = plain();
    let v6 = downstream("[2001:db8::1]:9090", "[2001:db8::9]:5000");
    let e = perm("{destination_ip: {address_prefix: 10.0.0.0, prefix_len: 24}}");
    assert!(conn_allows(&e, &v4) && !conn_allows(&e, &v6));
    let e = perm("{destination_ip: {address_prefix: '2001:db8::', prefix_len: 64}}");
    assert!(conn_allows(&e, &v6) && !conn_allows(&e, &v4));
    assert!(conn_allows(&perm("{destination_port: 8080}"), &v4));
    assert!(!conn_allows(&perm("{destination_port: 8081}"), &v4));
    let range = perm("{destination_port_range: {start: 9000, end: 9090}}");
    assert!(!conn_allows(&range, &v6), "end is exclusive");
    assert!(conn_allows(
        &perm("{destination_port_range: {start: 9090, end: 9091}}"),
        &v6
    ));
}

#[test]
fn requested_server_name() {
    let mut ds = plain();
    let e = perm("{requested_server_name: {suffix: .svc.cluster.local}}");
    assert!(!conn_allows(&e, &ds));
    ds.requested_server_name = Some(Arc::from("outbound_.80_._.a.ns.svc.cluster.local"));
    assert!(conn_allows(&e, &ds));
    // No SNI is the empty string.
    assert!(conn_allows(
        &perm("{requested_server_name: {exact: ''}}"),
        &plain()
    ));
}

#[test]
fn metadata_matchers_and_absent_metadata() {
    let ds = plain();
    let md = metadata(
        "istio_authn",
        &[
            ("request.auth.principal", s("iss/sub")),
            (
                "request.auth.claims",
                Value {
                    kind: Some(Kind::StructValue(Struct {
                        fields: [(
                            "groups".to_string(),
                            Value {
                                kind: Some(Kind::ListValue(
                                    envoy_types::pb::google::protobuf::ListValue {
                                        values: vec![s("dev"), s("admin")],
                                    },
                                )),
                            },
                        )]
                        .into(),
                    })),
                },
            ),
        ],
    );
    let exact = princ(
        "{metadata: {filter: istio_authn, path: [{key: request.auth.principal}], value: {string_match: {exact: iss/sub}}}}",
    );
    let with = |e: &Engine| {
        e.evaluate(&Input::connection(&ds).with_metadata(&md))
            .allowed
    };
    assert!(with(&exact));
    assert!(
        !conn_allows(&exact, &ds),
        "no metadata: the value is absent"
    );
    let list = princ(
        "{metadata: {filter: istio_authn, path: [{key: request.auth.claims}, {key: groups}], value: {list_match: {one_of: {string_match: {exact: admin}}}}}}",
    );
    assert!(with(&list));
    // Absent values: present_match is false, and invert flips the result.
    let present =
        princ("{metadata: {filter: jwt, path: [{key: payload}], value: {present_match: true}}}");
    assert!(!with(&present));
    let inverted = princ(
        "{metadata: {filter: jwt, path: [{key: payload}], value: {string_match: {exact: x}}, invert: true}}",
    );
    assert!(with(&inverted) && conn_allows(&inverted, &ds));
    let or = princ(
        "{metadata: {filter: istio_authn, path: [{key: request.auth.principal}], value: {or_match: {value_matchers: [{bool_match: true}, {string_match: {prefix: iss/}}]}}}}",
    );
    assert!(with(&or));
}

// --- principals ---------------------------------------------------------------------------

#[test]
fn authenticated_uses_every_san_then_the_subject() {
    let e = princ(
        "{authenticated: {principal_name: {exact: spiffe://cluster.local/ns/default/sa/guestbook}}}",
    );
    assert!(!conn_allows(&e, &plain()), "no TLS, no principal");
    assert!(conn_allows(
        &e,
        &mtls(
            &[
                "spiffe://other",
                "spiffe://cluster.local/ns/default/sa/guestbook"
            ],
            &[],
            ""
        )
    ));
    let dns = princ("{authenticated: {principal_name: {suffix: .example.com}}}");
    assert!(conn_allows(
        &dns,
        &mtls(&["spiffe://x"], &["a.example.com"], "")
    ));
    let subject = princ("{authenticated: {principal_name: {exact: 'CN=client,O=mesh'}}}");
    assert!(conn_allows(
        &subject,
        &mtls(&["spiffe://x"], &[], "CN=client,O=mesh")
    ));
    // No matcher: any TLS connection, even one without a client certificate.
    let any_tls = princ("{authenticated: {}}");
    let no_cert = Downstream {
        tls: Some(Arc::new(PeerTls::default())),
        ..plain()
    };
    assert!(conn_allows(&any_tls, &no_cert) && !conn_allows(&any_tls, &plain()));
    assert!(!conn_allows(&e, &no_cert));
}

#[test]
fn identity_never_comes_from_headers() {
    let e = princ(
        "{authenticated: {principal_name: {exact: spiffe://cluster.local/ns/default/sa/guestbook}}}",
    );
    let spoof = get(
        "/",
        &[
            (
                "x-forwarded-client-cert",
                "URI=spiffe://cluster.local/ns/default/sa/guestbook",
            ),
            (
                "x-spiffe-id",
                "spiffe://cluster.local/ns/default/sa/guestbook",
            ),
        ],
    );
    assert!(!http_allows(&e, &plain(), &spoof));
}

#[test]
fn remote_direct_remote_and_source_ip() {
    let ds = plain(); // peer 10.1.0.5
    let parts = get("/", &[]);
    let xff: IpAddr = "192.168.7.8".parse().unwrap();
    let direct = princ("{direct_remote_ip: {address_prefix: 10.1.0.0, prefix_len: 16}}");
    let source = princ("{source_ip: {address_prefix: 10.1.0.5, prefix_len: 32}}");
    let remote = princ("{remote_ip: {address_prefix: 192.168.7.0, prefix_len: 24}}");
    let input = Input::request(&ds, &parts).with_remote(xff);
    assert!(direct.evaluate(&input).allowed);
    assert!(
        source.evaluate(&input).allowed,
        "source_ip is the connection's peer"
    );
    assert!(remote.evaluate(&input).allowed);
    assert!(
        !remote.evaluate(&Input::request(&ds, &parts)).allowed,
        "defaults to the peer"
    );
    let v6 = princ("{direct_remote_ip: {address_prefix: 'fd00::', prefix_len: 8}}");
    assert!(conn_allows(
        &v6,
        &downstream("[fd00::1]:80", "[fd00::2]:1234")
    ));
}

// --- combinators --------------------------------------------------------------------------

#[test]
fn and_or_not_nest() {
    let ds = plain();
    let e = perm(
        "{and_rules: {rules: [
            {or_rules: {rules: [{destination_port: 80}, {destination_port: 8080}]}},
            {not_rule: {and_rules: {rules: [{header: {name: ':method', exact_match: DELETE}}, {url_path: {path: {prefix: /admin}}}]}}}
        ]}}",
    );
    assert!(http_allows(&e, &ds, &req("DELETE", "/public", &[])));
    assert!(http_allows(&e, &ds, &get("/admin", &[])));
    assert!(!http_allows(&e, &ds, &req("DELETE", "/admin/x", &[])));
    assert!(!http_allows(
        &e,
        &downstream("10.0.0.1:81", "10.1.0.5:1"),
        &get("/", &[])
    ));
    let ids = princ(
        "{or_ids: {ids: [{and_ids: {ids: [{direct_remote_ip: {address_prefix: 10.1.0.0, prefix_len: 16}}, {not_id: {any: true}}]}}, {not_id: {direct_remote_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}}]}}",
    );
    assert!(!conn_allows(&ids, &ds));
    assert!(conn_allows(
        &ids,
        &downstream("10.0.0.1:80", "192.168.0.1:1")
    ));
}

#[test]
fn a_policy_needs_a_permission_and_a_principal() {
    let e = engine(
        "policies:\n  p:\n    permissions: [{destination_port: 1}, {destination_port: 8080}]\n    principals: [{direct_remote_ip: {address_prefix: 9.9.9.9, prefix_len: 32}}, {any: true}]\n",
    );
    assert!(conn_allows(&e, &plain()));
    let e = engine(
        "policies:\n  p:\n    permissions: [{any: true}]\n    principals: [{direct_remote_ip: {address_prefix: 9.9.9.9, prefix_len: 32}}]\n",
    );
    assert!(!conn_allows(&e, &plain()));
}

// --- actions ------------------------------------------------------------------------------

const TWO_POLICIES: &str = "policies:
  zeta: {permissions: [{destination_port: 8080}], principals: [{any: true}]}
  'alpha beta': {permissions: [{any: true}], principals: [{any: true}]}
  other: {permissions: [{destination_port: 1}], principals: [{any: true}]}
";

#[test]
fn allow_deny_and_log_actions() {
    let ds = plain();
    let allow = engine(TWO_POLICIES);
    let d = allow.evaluate(&Input::connection(&ds));
    assert!(d.allowed);
    assert_eq!(d.matched_policy, Some("alpha beta"), "first match by name");
    assert_eq!(d.access_log_hint, None);

    let deny = engine(&format!("action: DENY\n{TWO_POLICIES}"));
    let d = deny.evaluate(&Input::connection(&ds));
    assert!(!d.allowed);
    assert_eq!(
        d.denied_details(),
        "rbac_access_denied_matched_policy[alpha_beta]"
    );

    let log = engine(&format!("action: LOG\n{TWO_POLICIES}"));
    let d = log.evaluate(&Input::connection(&ds));
    assert!(d.allowed && d.access_log_hint == Some(true));
    let log_none = engine(
        "action: LOG\npolicies: {p: {permissions: [{destination_port: 1}], principals: [{any: true}]}}",
    );
    assert_eq!(
        log_none.evaluate(&Input::connection(&ds)).access_log_hint,
        Some(false)
    );
}

#[test]
fn empty_policy_sets() {
    let ds = plain();
    let allow_none = engine("{}");
    let d = allow_none.evaluate(&Input::connection(&ds));
    assert!(
        !d.allowed,
        "an ALLOW engine without policies denies everything"
    );
    assert_eq!(
        d.denied_details(),
        "rbac_access_denied_matched_policy[none]"
    );
    assert!(
        conn_allows(&engine("action: DENY"), &ds),
        "DENY without policies allows"
    );
}

#[test]
fn istio_spec_empty_is_deny_all() {
    // rbacPolicyMatchNever, as istiod emits for `spec: {}`.
    let e = engine(
        "policies:\n  ns[foo]-policy[allow-none]-rule[0]:\n    permissions: [{not_rule: {any: true}}]\n    principals: [{not_id: {any: true}}]\n",
    );
    assert!(!conn_allows(&e, &plain()));
    assert!(!http_allows(
        &e,
        &mtls(&["spiffe://cluster.local/ns/foo/sa/x"], &[], ""),
        &get("/", &[])
    ));
}

// --- filters ------------------------------------------------------------------------------

fn http_filter(text: &str, store: &Store) -> HttpRbac {
    HttpRbac::new(&yaml::<HttpProto>(text), store, "http.inbound_0.0.0.0_80.").unwrap()
}

fn network_filter(text: &str, store: &Store) -> NetworkRbac {
    NetworkRbac::new(&yaml::<NetworkProto>(text), store).unwrap()
}

fn stats_text(store: &Store) -> String {
    store.render(&Query::default())
}

#[test]
fn http_filter_denies_with_envoys_reply_and_stats() {
    let store = Store::new(None).unwrap();
    let f = http_filter(
        "rules: {policies: {'ns[foo]-policy[get]-rule[0]': {permissions: [{header: {name: ':method', exact_match: GET}}], principals: [{any: true}]}}}",
        &store,
    );
    let ds = plain();
    let ok = f.decide(&Input::request(&ds, &get("/", &[])), None);
    assert!(ok.allowed && ok.local_reply().is_none());
    let post = req("POST", "/", &[]);
    let denied = f.decide(&Input::request(&ds, &post), None);
    assert!(!denied.allowed);
    let reply = denied.local_reply().unwrap();
    assert_eq!(reply.status, http::StatusCode::FORBIDDEN);
    assert_eq!(reply.body, "RBAC: access denied");
    assert_eq!(reply.details, "rbac_access_denied_matched_policy[none]");
    let md = denied.dynamic_metadata().unwrap();
    assert_eq!(md.fields["enforced_engine_result"], s("denied"));
    let text = stats_text(&store);
    assert!(
        text.contains("http.inbound_0.0.0.0_80.rbac.allowed: 1"),
        "{text}"
    );
    assert!(
        text.contains("http.inbound_0.0.0.0_80.rbac.denied: 1"),
        "{text}"
    );
}

#[test]
fn http_filter_without_rules_allows_and_with_empty_rules_denies() {
    let store = Store::new(None).unwrap();
    let ds = plain();
    let parts = get("/", &[]);
    let none = http_filter("shadow_rules_stat_prefix: istio_dry_run_allow_", &store);
    let v = none.decide(&Input::request(&ds, &parts), None);
    assert!(v.allowed && v.dynamic_metadata().is_none());
    let empty = http_filter("rules: {}", &store);
    assert!(!empty.decide(&Input::request(&ds, &parts), None).allowed);
}

#[test]
fn shadow_rules_count_and_set_dry_run_metadata_but_never_deny() {
    let store = Store::new(None).unwrap();
    let f = http_filter(
        "shadow_rules: {action: DENY, policies: {'ns[foo]-policy[dry]-rule[0]': {permissions: [{url_path: {path: {prefix: /admin}}}], principals: [{any: true}]}}}\nshadow_rules_stat_prefix: istio_dry_run_deny_\ntrack_per_rule_stats: true",
        &store,
    );
    let ds = plain();
    let v = f.decide(&Input::request(&ds, &get("/admin", &[])), None);
    assert!(
        v.allowed && v.local_reply().is_none(),
        "shadow rules never enforce"
    );
    let md = v.dynamic_metadata().unwrap();
    assert_eq!(
        md.fields["istio_dry_run_deny_shadow_engine_result"],
        s("denied")
    );
    assert_eq!(
        md.fields["istio_dry_run_deny_shadow_effective_policy_id"],
        s("ns[foo]-policy[dry]-rule[0]")
    );
    f.decide(&Input::request(&ds, &get("/public", &[])), None);
    let text = stats_text(&store);
    for line in [
        "http.inbound_0.0.0.0_80.rbac.istio_dry_run_deny_.shadow_denied: 1",
        "http.inbound_0.0.0.0_80.rbac.istio_dry_run_deny_.shadow_allowed: 1",
        "http.inbound_0.0.0.0_80.rbac.istio_dry_run_deny_.policy.ns[foo]-policy[dry]-rule[0].shadow_denied: 1",
        "http.inbound_0.0.0.0_80.rbac.allowed: 0",
    ] {
        assert!(text.contains(line), "missing {line:?}:\n{text}");
    }
}

#[test]
fn per_route_config_replaces_the_filters_engines() {
    let store = Store::new(None).unwrap();
    let f = http_filter("rules: {}", &store);
    let ds = plain();
    let parts = get("/", &[]);
    let off = HttpRbacPerRoute::new(&RbacPerRoute::default()).unwrap();
    assert!(
        f.decide(&Input::request(&ds, &parts), Some(&off)).allowed,
        "no rbac: RBAC off"
    );
    let deny = HttpRbacPerRoute::new(&yaml::<RbacPerRoute>(
        "rbac: {rules: {action: DENY, policies: {p: {permissions: [{any: true}], principals: [{any: true}]}}}, rules_stat_prefix: route_}",
    ))
    .unwrap();
    let v = f.decide(&Input::request(&ds, &parts), Some(&deny));
    assert_eq!(
        v.local_reply().unwrap().details,
        "rbac_access_denied_matched_policy[p]"
    );
    let md = v.dynamic_metadata().unwrap();
    assert_eq!(md.fields["route_enforced_effective_policy_id"], s("p"));
}

#[test]
fn network_filter_one_time_and_continuous() {
    let store = Store::new(None).unwrap();
    let once = network_filter(
        "stat_prefix: tcp.\nrules: {policies: {p: {permissions: [{destination_port: 8080}], principals: [{any: true}]}}}\nshadow_rules: {}\nshadow_rules_stat_prefix: istio_dry_run_allow_",
        &store,
    );
    let ds = plain();
    let input = Input::connection(&ds);
    let mut state = NetworkRbacState::default();
    let first = once.on_data(&mut state, &input);
    assert!(first.allowed() && first.enforced.is_some() && first.shadow.is_some());
    let md = first.dynamic_metadata().unwrap();
    assert_eq!(
        md.fields["istio_dry_run_allow_shadow_engine_result"],
        s("denied")
    );
    let second = once.on_data(&mut state, &input);
    assert!(
        second.allowed() && second.enforced.is_none(),
        "decided once"
    );
    let text = stats_text(&store);
    assert!(text.contains("tcp.rbac.allowed: 1"), "{text}");
    assert!(
        text.contains("tcp.rbac.istio_dry_run_allow_.shadow_denied: 1"),
        "{text}"
    );

    let store = Store::new(None).unwrap();
    let every = network_filter(
        "stat_prefix: tcp\nenforcement_type: CONTINUOUS\ndelay_deny: 0.5s\nrules: {action: DENY, policies: {p: {permissions: [{any: true}], principals: [{any: true}]}}}",
        &store,
    );
    let mut state = NetworkRbacState::default();
    for _ in 0..3 {
        let v = every.on_data(&mut state, &input);
        assert_eq!(
            v.action,
            NetworkAction::Deny {
                delay: Some(std::time::Duration::from_millis(500))
            }
        );
        assert_eq!(
            v.termination_details().unwrap(),
            "rbac_access_denied_matched_policy[p]"
        );
    }
    assert!(stats_text(&store).contains("tcp.rbac.denied: 3"));
}

#[test]
fn layered_filters_log_deny_allow() {
    // Istio's order: AUDIT (LOG), DENY, ALLOW. A request must not match DENY and must match
    // ALLOW; LOG never denies.
    let store = Store::new(None).unwrap();
    let log = http_filter(
        "rules: {action: LOG, policies: {audit: {permissions: [{any: true}], principals: [{any: true}]}}}",
        &store,
    );
    let deny = http_filter(
        "rules: {action: DENY, policies: {no-admin: {permissions: [{url_path: {path: {prefix: /admin}}}], principals: [{any: true}]}}}",
        &store,
    );
    let allow = http_filter(
        "rules: {policies: {gets: {permissions: [{header: {name: ':method', exact_match: GET}}], principals: [{any: true}]}}}",
        &store,
    );
    let chain = [&log, &deny, &allow];
    let ds = plain();
    let run = |parts: &http::request::Parts| -> Option<String> {
        for f in chain {
            let v = f.decide(&Input::request(&ds, parts), None);
            if let Some(reply) = v.local_reply() {
                return Some(reply.details);
            }
        }
        None
    };
    assert_eq!(run(&get("/public", &[])), None);
    assert_eq!(
        run(&get("/admin", &[])).unwrap(),
        "rbac_access_denied_matched_policy[no-admin]"
    );
    assert_eq!(
        run(&req("POST", "/public", &[])).unwrap(),
        "rbac_access_denied_matched_policy[none]"
    );
    let v = log.decide(&Input::request(&ds, &get("/", &[])), None);
    assert_eq!(v.access_log_hint(), Some(true));
}

#[test]
fn filter_configs_decode_from_any_and_typed_struct() {
    let store = Store::new(None).unwrap();
    let proto = yaml::<NetworkProto>("stat_prefix: tcp.\nrules: {}");
    let any = Any {
        type_url: NetworkProto::type_url(),
        value: proto.encode_to_vec(),
    };
    assert!(NetworkRbac::from_any(&any, &store).is_ok());
    let ts = yaml::<Any>(
        "'@type': type.googleapis.com/udpa.type.v1.TypedStruct\ntype_url: type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC\nvalue: {rules: {action: DENY}}",
    );
    assert!(HttpRbac::from_any(&ts, &store, "http.x.").is_ok());
    let wrong = Any {
        type_url: HttpProto::type_url(),
        value: proto.encode_to_vec(),
    };
    assert!(
        NetworkRbac::from_any(&wrong, &store)
            .unwrap_err()
            .to_string()
            .contains("expected type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC")
    );
}

#[test]
fn unknown_binary_fields_are_refused() {
    // A field number this build does not know inside a permission (say, a future matcher):
    // prost would drop it and leave an empty rule; we refuse the config.
    let store = Store::new(None).unwrap();
    let mut bytes = yaml::<HttpProto>("rules: {}").encode_to_vec();
    // Field 99 (varint) appended to the top-level message.
    bytes.extend_from_slice(&[0x98, 0x06, 0x01]);
    let any = Any {
        type_url: HttpProto::type_url(),
        value: bytes,
    };
    let err = HttpRbac::from_any(&any, &store, "http.x.")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field number 99"), "{err}");
}

// --- refused configs ----------------------------------------------------------------------

fn policy_err(permission: &str, principal: &str) -> String {
    engine_err(&format!(
        "policies:\n  ns[default]-policy[x]-rule[0]:\n    permissions: [{{any: true}}, {permission}]\n    principals: [{principal}]\n"
    ))
}

#[test]
fn unsupported_and_invalid_fields_name_their_path() {
    const P: &str = "policies[\"ns[default]-policy[x]-rule[0]\"]";
    let cases = [
        (
            policy_err("{header: {name: x, prefix_match: ''}}", "{any: true}"),
            format!("{P}.permissions[1].header: prefix_match must not be empty"),
        ),
        (
            policy_err("{any: true}", "{filter_state: {key: io.istio.peer_principal, string_match: {exact: a}}}"),
            format!(
                "{P}.principals[0].filter_state: filter_state principals (waypoint identity) is not \
                 supported; refusing the config rather than ignoring a rule that decides who is allowed"
            ),
        ),
        (
            policy_err("{sourced_metadata: {metadata_matcher: {filter: a, path: [{key: b}], value: {present_match: true}}}}", "{any: true}"),
            format!(
                "{P}.permissions[1].sourced_metadata: sourced_metadata (route metadata) is not \
                 supported; refusing the config rather than ignoring a rule that decides who is allowed"
            ),
        ),
        (
            policy_err("{any: false}", "{any: true}"),
            format!("{P}.permissions[1].any: `any` must be true when set"),
        ),
        (
            policy_err("{destination_port: 70000}", "{any: true}"),
            format!("{P}.permissions[1].destination_port: destination_port 70000 is out of range (at most 65535)"),
        ),
        (
            policy_err("{destination_port_range: {start: 90, end: 90}}", "{any: true}"),
            format!("{P}.permissions[1].destination_port_range: range start 90 cannot be greater or equal than range end 90"),
        ),
        (
            policy_err("{and_rules: {rules: []}}", "{any: true}"),
            format!("{P}.permissions[1].and_rules.rules: the list of permissions must not be empty"),
        ),
        (
            policy_err("{not_rule: {}}", "{any: true}"),
            format!("{P}.permissions[1].not_rule: a permission rule must be set (it is empty, or uses a field this proxy does not know)"),
        ),
        (
            policy_err("{requested_server_name: {safe_regex: {regex: '('}}}", "{any: true}"),
            format!("{P}.permissions[1].requested_server_name: invalid safe_regex \"(\": regex parse error:"),
        ),
        (
            policy_err("{any: true}", "{authenticated: {principal_name: {prefix: ''}}}"),
            format!("{P}.principals[0].authenticated.principal_name: string matcher prefix must not be empty (use safe_regex to match anything)"),
        ),
        (
            policy_err("{any: true}", "{remote_ip: {address_prefix: not-an-ip}}"),
            format!("{P}.principals[0].remote_ip: malformed IP address: \"not-an-ip\""),
        ),
        (
            policy_err("{uri_template: {name: t, typed_config: {'@type': type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig, path_template: '/**/a/*'}}}", "{any: true}"),
            format!("{P}.permissions[1].uri_template: invalid path_template \"/**/a/*\": glob after text glob"),
        ),
        (
            policy_err("{metadata: {filter: f, path: [{key: k}], value: {}}}", "{any: true}"),
            format!("{P}.permissions[1].metadata: value matcher must be set (it is empty, or uses a field this proxy does not know)"),
        ),
        (
            engine_err("policies: {p: {permissions: [], principals: [{any: true}]}}"),
            "policies[\"p\"].permissions: the list of permissions must not be empty".to_string(),
        ),
        (
            engine_err("policies: {p: {permissions: [{any: true}], principals: [{any: true}], condition: {const_expr: {bool_value: true}}}}"),
            "policies[\"p\"].condition: CEL conditions is not supported; refusing the config rather than ignoring a rule that decides who is allowed".to_string(),
        ),
    ];
    for (got, want) in cases {
        // Regex errors span lines; the first names the field and the pattern.
        assert_eq!(got.lines().next(), Some(want.as_str()));
    }
}

#[test]
fn filter_level_refusals() {
    let store = Store::new(None).unwrap();
    let err = |r: Result<NetworkRbac, crate::config::ConfigError>| r.unwrap_err().to_string();
    assert_eq!(
        err(NetworkRbac::new(&yaml::<NetworkProto>("rules: {}"), &store)),
        "stat_prefix: stat_prefix must not be empty"
    );
    assert_eq!(
        err(NetworkRbac::new(
            &yaml::<NetworkProto>("stat_prefix: t\nmatcher: {}"),
            &store
        )),
        "matcher: the xDS matcher API for RBAC (use rules / shadow_rules) is not supported; \
         refusing the config rather than ignoring a rule that decides who is allowed"
    );
    let bad_action = HttpProto {
        rules: Some(Rbac {
            action: 7,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        HttpRbac::new(&bad_action, &store, "http.x.")
            .unwrap_err()
            .to_string(),
        "rules.action: unknown action value 7"
    );
    let bad_shadow = yaml::<HttpProto>(
        "shadow_rules: {policies: {p: {permissions: [{any: true}], principals: []}}}",
    );
    assert_eq!(
        HttpRbac::new(&bad_shadow, &store, "http.x.")
            .unwrap_err()
            .to_string(),
        "shadow_rules.policies[\"p\"].principals: the list of principals must not be empty"
    );
}
