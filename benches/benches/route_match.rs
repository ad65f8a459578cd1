//! Per-request routing cost on a mesh-sized route table: 1,000 virtual hosts (each with
//! the host, host:port, short-name and IP domains Istio generates, five routes, one header
//! match), plus wildcard hosts and the `*` fallback.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
    header_matcher::HeaderMatchSpecifier, route, route_action::ClusterSpecifier,
    route_match::PathSpecifier,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use http::{HeaderMap, Method};
use proxy::http::route::config::Validation;
use proxy::http::route::{RequestView, RouteTable, Selected};

fn route(path: PathSpecifier, cluster: &str, header: Option<(&str, &str)>) -> Route {
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(path),
            headers: header
                .map(|(k, v)| HeaderMatcher {
                    name: k.into(),
                    header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(
                        StringMatcher {
                            match_pattern: Some(MatchPattern::Exact(v.into())),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.into())),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn table() -> RouteTable {
    let mut vhosts: Vec<VirtualHost> = (0..1000)
        .map(|i| {
            let fqdn = format!("svc-{i}.ns-{}.svc.cluster.local", i % 20);
            let cluster = format!("outbound|80||{fqdn}");
            VirtualHost {
                name: format!("{fqdn}:80"),
                domains: vec![
                    fqdn.clone(),
                    format!("{fqdn}:80"),
                    format!("svc-{i}"),
                    format!("svc-{i}:80"),
                    format!("10.96.{}.{}", i / 250, i % 250),
                    format!("10.96.{}.{}:80", i / 250, i % 250),
                ],
                routes: vec![
                    route(PathSpecifier::Path("/healthz".into()), &cluster, None),
                    route(
                        PathSpecifier::Prefix("/api/v2".into()),
                        &cluster,
                        Some(("x-version", "v2")),
                    ),
                    route(PathSpecifier::Prefix("/api".into()), &cluster, None),
                    route(
                        PathSpecifier::PathSeparatedPrefix("/static".into()),
                        &cluster,
                        None,
                    ),
                    route(PathSpecifier::Prefix("/".into()), &cluster, None),
                ],
                ..Default::default()
            }
        })
        .collect();
    vhosts.push(VirtualHost {
        name: "wildcard".into(),
        domains: vec![
            "*.example.com".into(),
            "*.corp.example.com".into(),
            "api.*".into(),
        ],
        routes: vec![route(PathSpecifier::Prefix("/".into()), "wildcard", None)],
        ..Default::default()
    });
    vhosts.push(VirtualHost {
        name: "allow_any".into(),
        domains: vec!["*".into()],
        routes: vec![route(
            PathSpecifier::Prefix("/".into()),
            "PassthroughCluster",
            None,
        )],
        ..Default::default()
    });
    let rc = RouteConfiguration {
        name: "80".into(),
        virtual_hosts: vhosts,
        ..Default::default()
    };
    RouteTable::new(
        &rc,
        Validation {
            clusters: None,
            default: false,
        },
    )
    .expect("valid route config")
}

fn select(t: &RouteTable, authority: &str, path: &str, headers: &HeaderMap) -> bool {
    let req = RequestView {
        method: &Method::GET,
        scheme: "http",
        authority,
        path,
        headers,
        tls: None,
        internal: false,
    };
    matches!(t.select(&req, 0), Selected::Route(..))
}

fn bench(c: &mut Criterion) {
    let t = table();
    let none = HeaderMap::new();
    let mut v2 = HeaderMap::new();
    v2.insert("x-version", "v2".parse().expect("valid header"));
    let mut g = c.benchmark_group("route_match_1000_vhosts");
    g.bench_function("exact_host_port_first_route", |b| {
        b.iter(|| {
            select(
                &t,
                black_box("svc-777.ns-17.svc.cluster.local:80"),
                black_box("/healthz"),
                &none,
            )
        })
    });
    g.bench_function("short_name_catch_all_route", |b| {
        b.iter(|| select(&t, black_box("svc-500"), black_box("/orders/42?x=1"), &none))
    });
    g.bench_function("header_match_route", |b| {
        b.iter(|| {
            select(
                &t,
                black_box("svc-3.ns-3.svc.cluster.local"),
                black_box("/api/v2/items"),
                &v2,
            )
        })
    });
    g.bench_function("mixed_case_host", |b| {
        b.iter(|| {
            select(
                &t,
                black_box("SVC-9.ns-9.svc.cluster.local:80"),
                black_box("/static/app.js"),
                &none,
            )
        })
    });
    g.bench_function("suffix_wildcard_host", |b| {
        b.iter(|| select(&t, black_box("www.corp.example.com"), black_box("/"), &none))
    });
    g.bench_function("fallback_star_host", |b| {
        b.iter(|| {
            select(
                &t,
                black_box("unknown.external.org:443"),
                black_box("/"),
                &none,
            )
        })
    });
    g.finish();
    c.bench_function("compile_route_table_1000_vhosts", |b| b.iter(table));
}

criterion_group!(benches, bench);
criterion_main!(benches);
