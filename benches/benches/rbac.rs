//! RBAC decision cost: an ALLOW engine with 100 policies of 10 rules each (headers with
//! ignore_case and regex, paths, ports, CIDRs, SNI, principals), for a request that only
//! the last policy (by name) matches and for one that matches none. Both walk all 100
//! policies, so they bound what a large AuthorizationPolicy set costs per request.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpProto;
use proxy::conn::{Direction, Downstream, PeerCertificate, PeerTls};
use proxy::proto::{Format, UnknownFields, decode};
use proxy::rbac::{HttpRbac, Input};
use proxy::stats::Store;

/// Policy `i` admits POSTs to `/api/v<i>/...` on port 8080 from the guestbook account.
fn policy(i: usize) -> String {
    format!(
        r#"  "ns[default]-policy[p{i:03}]-rule[0]":
    permissions:
    - and_rules:
        rules:
        - header: {{name: ":method", exact_match: POST}}
        - url_path: {{path: {{prefix: "/api/v{i}/"}}}}
        - header: {{name: ":authority", string_match: {{suffix: ".svc.cluster.local", ignore_case: true}}}}
        - destination_port: 8080
        - destination_ip: {{address_prefix: 10.244.0.0, prefix_len: 16}}
        - header: {{name: x-tenant, safe_regex_match: {{regex: "t[0-9]+"}}}}
        - not_rule: {{header: {{name: x-debug, present_match: true}}}}
        - requested_server_name: {{prefix: "outbound_"}}
        - url_path: {{path: {{safe_regex: {{regex: "/api/v{i}/[a-z]+"}}}}}}
        - header: {{name: x-request-class, string_match: {{exact: interactive}}}}
    principals:
    - authenticated: {{principal_name: {{exact: "spiffe://cluster.local/ns/default/sa/guestbook"}}}}
"#
    )
}

fn filter(store: &Store) -> HttpRbac {
    let policies: String = (0..100).map(policy).collect();
    let yaml = format!(
        "rules:\n  policies:\n{}",
        policies
            .replace("\n  ", "\n      ")
            .replace("  \"ns", "      \"ns")
    );
    let proto = decode::<HttpProto>(&yaml, Format::Yaml, UnknownFields::Reject)
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"))
        .message;
    HttpRbac::new(&proto, store, "http.inbound_0.0.0.0_8080.").unwrap()
}

fn downstream() -> Downstream {
    Downstream {
        local: "10.244.1.7:8080".parse().unwrap(),
        peer: "10.244.0.9:40000".parse().unwrap(),
        listener: Arc::from("virtualInbound"),
        direction: Direction::Inbound,
        filter_chain: Arc::from("0.0.0.0_8080"),
        requested_server_name: Some(Arc::from(
            "outbound_.8080_._.backend.default.svc.cluster.local",
        )),
        tls: Some(Arc::new(PeerTls {
            peer_certificate: Some(PeerCertificate {
                uri_sans: vec!["spiffe://cluster.local/ns/default/sa/guestbook".into()],
                ..Default::default()
            }),
            ..Default::default()
        })),
        original_src_mark: None,
    }
}

fn request(path: &str) -> http::request::Parts {
    http::Request::builder()
        .method("POST")
        .uri(path)
        .header("host", "backend.default.svc.cluster.local")
        .header("x-tenant", "t42")
        .header("x-request-class", "interactive")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

fn bench(c: &mut Criterion) {
    let store = Store::new(None).unwrap();
    let rbac = filter(&store);
    let ds = downstream();
    let last = request("/api/v99/items?page=2");
    let none = request("/api/v100/items");
    assert!(rbac.decide(&Input::request(&ds, &last), None).allowed);
    assert!(!rbac.decide(&Input::request(&ds, &none), None).allowed);
    let mut g = c.benchmark_group("rbac_100_policies_x_10_rules");
    g.bench_function("matching_last_policy", |b| {
        b.iter(|| {
            black_box(
                rbac.decide(&Input::request(&ds, black_box(&last)), None)
                    .allowed,
            )
        })
    });
    g.bench_function("matching_none", |b| {
        b.iter(|| {
            black_box(
                rbac.decide(&Input::request(&ds, black_box(&none)), None)
                    .allowed,
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
