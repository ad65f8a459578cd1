//! The network and HTTP filters: stats, replies, metadata, per-route configs, layering.

use super::*;

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
