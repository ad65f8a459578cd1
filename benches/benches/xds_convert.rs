//! Applying big xDS pushes: a 10,000-cluster CDS update (Istio outbound EDS clusters with
//! auto-mTLS transport_socket_matches) and a 10,000-endpoint EDS update, each from the
//! wire bytes (protobuf decode) to clusters and hosts in service. Before timing the EDS
//! push it prints the heap the applied endpoints hold, per 1,000 endpoints.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use prost::Message;
use proxy::config::cluster::ClusterConfig;
use proxy::config::endpoint::endpoints_from_assignment;
use proxy::proto::{Format, UnknownFields, decode};
use proxy::stats::Store;
use proxy::upstream::ClusterManager;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

/// Counts allocations, for the memory figure (a few atomic adds per allocation).
#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// An outbound cluster as istiod sends it (EDS, auto-mTLS, circuit breakers).
fn istio_cluster(i: usize) -> Cluster {
    let name = format!("outbound|8080||svc-{i}.ns-{}.svc.cluster.local", i % 50);
    let yaml = format!(
        r#"
name: "{name}"
type: EDS
eds_cluster_config: {{ service_name: "{name}", eds_config: {{ ads: {{}}, initial_fetch_timeout: 0s, resource_api_version: V3 }} }}
connect_timeout: 10s
lb_policy: LEAST_REQUEST
circuit_breakers:
  thresholds:
  - {{ max_connections: 4294967295, max_pending_requests: 4294967295, max_requests: 4294967295, max_retries: 4294967295 }}
common_lb_config: {{ locality_weighted_lb_config: {{}} }}
metadata:
  filter_metadata:
    istio: {{ services: [ {{ host: "svc-{i}.ns.svc.cluster.local", name: "svc-{i}", namespace: "ns" }} ] }}
transport_socket_matches:
- name: tlsMode-istio
  match: {{ tlsMode: istio }}
  transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
      common_tls_context:
        alpn_protocols: [istio-peer-exchange, istio]
        tls_certificate_sds_secret_configs:
        - name: default
          sds_config: {{ api_config_source: {{ api_type: GRPC, grpc_services: [ {{ envoy_grpc: {{ cluster_name: sds-grpc }} }} ], set_node_on_first_message_only: true, transport_api_version: V3 }}, resource_api_version: V3 }}
        combined_validation_context:
          default_validation_context:
            match_subject_alt_names: [ {{ exact: "spiffe://cluster.local/ns/ns/sa/svc-{i}" }} ]
          validation_context_sds_secret_config:
            name: ROOTCA
            sds_config: {{ api_config_source: {{ api_type: GRPC, grpc_services: [ {{ envoy_grpc: {{ cluster_name: sds-grpc }} }} ], set_node_on_first_message_only: true, transport_api_version: V3 }}, resource_api_version: V3 }}
      sni: "outbound_.8080_._.svc-{i}.ns.svc.cluster.local"
- name: tlsMode-disabled
  match: {{}}
  transport_socket: {{ name: envoy.transport_sockets.raw_buffer, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer }} }}
"#
    );
    decode::<Cluster>(&yaml, Format::Yaml, UnknownFields::Reject)
        .unwrap_or_else(|e| panic!("bench cluster: {e}"))
        .message
}

/// One service with `n` endpoints spread over 3 zones, with Istio's endpoint metadata.
/// (Built from one YAML endpoint: the YAML loader caps documents far below this size.)
fn assignment(name: &str, n: usize) -> ClusterLoadAssignment {
    use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
    use envoy_types::pb::envoy::config::endpoint::v3::{
        LbEndpoint, LocalityLbEndpoints, lb_endpoint,
    };
    let template = decode::<LocalityLbEndpoints>(
        "locality: { region: r1, zone: z0 }
lb_endpoints:
         - endpoint: { address: { socket_address: { address: 10.0.0.0, port_value: 8080 } } }
           metadata: { filter_metadata: { envoy.transport_socket_match: { tlsMode: istio }, istio: { workload: \"w;ns;svc;v1;cluster\" } } }
           load_balancing_weight: 1
",
        Format::Yaml,
        UnknownFields::Reject,
    )
    .unwrap_or_else(|e| panic!("bench endpoint: {e}"))
    .message;
    let endpoint_at = |i: usize| -> LbEndpoint {
        let mut ep = template.lb_endpoints[0].clone();
        if let Some(lb_endpoint::HostIdentifier::Endpoint(e)) = ep.host_identifier.as_mut()
            && let Some(address::Address::SocketAddress(sa)) =
                e.address.as_mut().and_then(|a| a.address.as_mut())
        {
            sa.address = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
            sa.port_specifier = Some(socket_address::PortSpecifier::PortValue(8080));
        }
        ep
    };
    let endpoints = (0..3)
        .map(|zone| {
            let mut group = template.clone();
            if let Some(l) = group.locality.as_mut() {
                l.zone = format!("z{zone}");
            }
            group.lb_endpoints = (zone..n).step_by(3).map(endpoint_at).collect();
            group
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints,
        ..Default::default()
    }
}

fn cds(c: &mut Criterion) {
    let wire: Vec<Vec<u8>> = (0..10_000)
        .map(|i| istio_cluster(i).encode_to_vec())
        .collect();
    let mut group = c.benchmark_group("cds");
    group.sample_size(10);
    group.bench_function("decode_convert_apply_10k_clusters", |b| {
        b.iter_batched(
            || ClusterManager::new(Store::new(None).unwrap_or_else(|e| panic!("{e}"))),
            |manager| {
                let configs: Vec<ClusterConfig> = wire
                    .iter()
                    .map(|bytes| {
                        let proto =
                            Cluster::decode(bytes.as_slice()).unwrap_or_else(|e| panic!("{e}"));
                        ClusterConfig::from_proto(&proto).unwrap_or_else(|e| panic!("{e}"))
                    })
                    .collect();
                black_box(manager.apply_cds(configs, &[], true, "1"));
                manager
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

/// Heap bytes the cluster manager keeps after applying a 10,000-endpoint push (the wire
/// bytes and decoded protos already dropped), printed per 1,000 endpoints.
fn eds_memory(manager: &ClusterManager, cluster_name: &str, wire: &[u8]) {
    let region = Region::new(GLOBAL);
    {
        let cla = ClusterLoadAssignment::decode(wire).unwrap_or_else(|e| panic!("{e}"));
        let endpoints = endpoints_from_assignment(&cla, false).unwrap_or_else(|e| panic!("{e}"));
        manager.apply_eds(vec![(cluster_name.to_string(), endpoints)]);
    }
    let c = region.change();
    let held = c.bytes_allocated as isize - c.bytes_deallocated as isize + c.bytes_reallocated;
    eprintln!(
        "eds: 10,000 endpoints hold {} KiB of heap, {} bytes per 1,000 endpoints",
        held / 1024,
        held / 10
    );
}

fn eds(c: &mut Criterion) {
    let name = "outbound|8080||big.ns.svc.cluster.local";
    let wire = assignment(name, 10_000).encode_to_vec();
    let manager = ClusterManager::new(Store::new(None).unwrap_or_else(|e| panic!("{e}")));
    let cluster = ClusterConfig::from_proto(&istio_cluster(0)).unwrap_or_else(|e| panic!("{e}"));
    let cluster_name = cluster.eds_service_name().unwrap_or_default().to_string();
    manager.apply_cds(vec![cluster], &[], true, "1");
    eds_memory(&manager, &cluster_name, &wire);
    let mut group = c.benchmark_group("eds");
    group.sample_size(20);
    group.bench_function("decode_convert_apply_10k_endpoints", |b| {
        b.iter(|| {
            let cla =
                ClusterLoadAssignment::decode(wire.as_slice()).unwrap_or_else(|e| panic!("{e}"));
            let endpoints =
                endpoints_from_assignment(&cla, false).unwrap_or_else(|e| panic!("{e}"));
            manager.apply_eds(vec![(cluster_name.clone(), endpoints)]);
        });
    });
    group.finish();
}

criterion_group!(benches, cds, eds);
criterion_main!(benches);
