#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Proof that deciding allocates nothing: a counting global allocator around the whole test
//! binary, which has no test harness (so no other thread allocates while we measure).
//! Configs are compiled first; then a mix of matching and non-matching connections and
//! requests goes through the engines and both filters, and the allocation count must not
//! move.

use std::alloc::System;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpProto;
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkProto;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use proxy::conn::{Direction, Downstream, PeerCertificate, PeerTls};
use proxy::proto::{Format, UnknownFields, decode};
use proxy::rbac::{HttpRbac, Input, NetworkRbac, NetworkRbacState};
use proxy::stats::Store;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Every matcher kind, with Istio's shapes, in DENY, ALLOW and shadow engines.
const HTTP: &str = r#"
rules:
  policies:
    ns[default]-policy[app]-rule[0]:
      permissions:
      - and_rules:
          rules:
          - or_rules: {rules: [{header: {name: ":method", exact_match: POST}}, {header: {name: ":method", string_match: {exact: put, ignore_case: true}}}]}
          - or_rules: {rules: [{url_path: {path: {prefix: /api/}}}, {url_path: {path: {safe_regex: {regex: "/v[0-9]+/.*"}}}}]}
          - or_rules: {rules: [{header: {name: ":authority", string_match: {suffix: .svc.cluster.local, ignore_case: true}}}, {header: {name: x-tenant, present_match: true}}]}
          - not_rule: {header: {name: x-debug, contains_match: "1"}}
          - or_rules: {rules: [{destination_port: 8080}, {destination_port_range: {start: 9000, end: 9100}}]}
          - destination_ip: {address_prefix: 10.244.0.0, prefix_len: 16}
          - uri_template: {name: t, typed_config: {"@type": type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig, path_template: "/**"}}
      principals:
      - and_ids:
          ids:
          - or_ids: {ids: [{authenticated: {principal_name: {exact: "spiffe://cluster.local/ns/default/sa/guestbook"}}}, {authenticated: {principal_name: {safe_regex: {regex: ".*/ns/prod/.*"}}}}]}
          - not_id: {remote_ip: {address_prefix: 192.168.0.0, prefix_len: 16}}
          - direct_remote_ip: {address_prefix: 10.0.0.0, prefix_len: 8}
          - not_id: {metadata: {filter: istio_authn, path: [{key: request.auth.claims}, {key: groups}], value: {list_match: {one_of: {string_match: {exact: banned}}}}}}
          - or_ids: {ids: [{header: {name: x-multi, exact_match: "a,b"}}, {header: {name: x-n, range_match: {start: 0, end: 10}}}, {any: true}]}
shadow_rules:
  action: DENY
  policies:
    dry: {permissions: [{url_path: {path: {exact: /api/admin}}}], principals: [{any: true}]}
shadow_rules_stat_prefix: istio_dry_run_deny_
track_per_rule_stats: true
"#;

const NETWORK: &str = r#"
stat_prefix: tcp.
rules:
  action: DENY
  policies:
    p: {permissions: [{requested_server_name: {prefix: outbound_}}], principals: [{not_id: {authenticated: {}}}]}
shadow_rules: {}
shadow_rules_stat_prefix: istio_dry_run_allow_
"#;

fn downstream(local: &str, principal: &str) -> Downstream {
    Downstream {
        local: local.parse().unwrap(),
        peer: "10.1.2.3:40000".parse().unwrap(),
        listener: Arc::from("virtualInbound"),
        direction: Direction::Inbound,
        filter_chain: Arc::from("c"),
        requested_server_name: Some(Arc::from("outbound_.8080_._.app.default.svc.cluster.local")),
        tls: Some(Arc::new(PeerTls {
            peer_certificate: Some(PeerCertificate {
                uri_sans: vec![principal.into()],
                dns_sans: vec!["app.default.svc".into()],
                subject: "CN=app".into(),
                ..Default::default()
            }),
            ..Default::default()
        })),
        original_src_mark: None,
    }
}

fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn main() {
    let store = Store::new(None).unwrap();
    let http = HttpRbac::new(
        &decode::<HttpProto>(HTTP, Format::Yaml, UnknownFields::Reject)
            .unwrap()
            .message,
        &store,
        "http.inbound_0.0.0.0_8080.",
    )
    .unwrap();
    let network = NetworkRbac::new(
        &decode::<NetworkProto>(NETWORK, Format::Yaml, UnknownFields::Reject)
            .unwrap()
            .message,
        &store,
    )
    .unwrap();
    let allowed = downstream(
        "10.244.1.7:8080",
        "spiffe://cluster.local/ns/default/sa/guestbook",
    );
    let other = downstream("10.244.1.7:9050", "spiffe://cluster.local/ns/other/sa/x");
    let requests = [
        request(
            "POST",
            "/api/items?x=1",
            &[("host", "app.default.svc.cluster.local")],
        ),
        request(
            "put",
            "/v2/items",
            &[
                ("host", "app"),
                ("x-tenant", "t"),
                ("x-multi", "a"),
                ("x-multi", "b"),
            ],
        ),
        request(
            "GET",
            "/api/admin",
            &[("host", "app"), ("x-debug", "1"), ("x-n", "5")],
        ),
        request("DELETE", "http://app.default.svc.cluster.local/other", &[]),
    ];
    let mut claims = Metadata::default();
    claims.filter_metadata.insert(
        "istio_authn".into(),
        Struct {
            fields: [(
                "request.auth.claims".to_string(),
                Value {
                    kind: Some(Kind::StructValue(Struct::default())),
                },
            )]
            .into(),
        },
    );
    let remote = "10.9.9.9".parse().unwrap();

    // Warm up: per-policy counters are created on their first count.
    let run = |check: &mut dyn FnMut(bool)| {
        for ds in [&allowed, &other] {
            for parts in &requests {
                let input = Input::request(ds, parts)
                    .with_remote(remote)
                    .with_metadata(&claims);
                check(http.decide(&input, None).allowed);
            }
            let mut state = NetworkRbacState::default();
            check(
                network
                    .on_data(&mut state, &Input::connection(ds))
                    .allowed(),
            );
        }
    };
    let mut outcomes = Vec::new();
    run(&mut |a| outcomes.push(a));
    outcomes.reserve(1000);

    let region = Region::new(GLOBAL);
    let mut decided = 0usize;
    for _ in 0..100 {
        run(&mut |a| {
            decided += usize::from(a);
        });
    }
    let change = region.change();

    let failed = change.allocations + change.reallocations != 0
        || !outcomes.contains(&true)
        || !outcomes.contains(&false);
    if failed {
        eprintln!("rbac_no_alloc: {change:?}, outcomes {outcomes:?}");
        println!("0 passed, 1 failed");
        std::process::exit(1);
    }
    println!(
        "rbac_no_alloc: {} decisions ({decided} allowed) made without allocating",
        100 * outcomes.len()
    );
    println!("1 passed, 0 failed");
}
