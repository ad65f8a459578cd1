//! Each permission and principal kind, combinators and actions.

use super::*;

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
