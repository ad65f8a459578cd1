#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The bootstraps Istio's pilot-agent renders (its own golden files, see
//! tests/data/istio-bootstrap/SOURCE.txt) load as JSON and as YAML, and hold what a user
//! would check: node identity and metadata, admin address, static clusters and listeners,
//! Delta ADS, the SDS socket, and the TypedStruct-wrapped bootstrap extensions.

use std::path::{Path, PathBuf};

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{address, api_config_source, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::extensions::bootstrap::internal_listener::v3::InternalListener;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::google::protobuf::{Any, value::Kind};
use prost::{Message, Name};
use proxy::bootstrap::{self, Config};
use proxy::proto::{self, UnknownFields};

/// (golden, node.cluster, admin port, ISTIO_VERSION)
const GOLDENS: [(&str, &str, u32, &str); 6] = [
    ("default", "istio-proxy", 15000, "binary-1.0"),
    ("running", "test.test", 15005, "release-3.1"),
    ("all", "istio-proxy", 15005, "binary-1.0"),
    ("ambient", "istio-proxy", 15000, "binary-1.0"),
    ("stats_inclusion", "istio-proxy", 15000, "binary-1.0"),
    ("tracing_zipkin", "istio-proxy", 15000, "binary-1.0"),
];

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/istio-bootstrap")
        .join(format!("{name}_golden.json"))
}

fn load(path: PathBuf) -> Bootstrap {
    let config = Config {
        config_path: Some(path.clone()),
        ..Config::default()
    };
    match bootstrap::load(&config) {
        Ok(loaded) => {
            assert!(loaded.ignored.is_empty(), "{:?}", loaded.ignored);
            loaded.bootstrap
        }
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

/// The golden converted to YAML, in a temporary file.
fn as_yaml(name: &str, dir: &tempfile::TempDir) -> PathBuf {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden_path(name)).unwrap()).unwrap();
    let path = dir.path().join(format!("{name}.yaml"));
    std::fs::write(&path, serde_saphyr::to_string(&json).unwrap()).unwrap();
    path
}

fn unpack<T: Message + Name + Default>(any: &Any) -> T {
    assert_eq!(any.type_url, T::type_url());
    T::decode(any.value.as_slice()).unwrap()
}

fn cluster<'a>(bootstrap: &'a Bootstrap, name: &str) -> &'a Cluster {
    let clusters = &bootstrap.static_resources.as_ref().unwrap().clusters;
    clusters
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no static cluster {name}"))
}

fn pipe_path(cluster: &Cluster) -> String {
    let endpoint = &cluster.load_assignment.as_ref().unwrap().endpoints[0].lb_endpoints[0];
    let Some(lb_endpoint::HostIdentifier::Endpoint(endpoint)) = &endpoint.host_identifier else {
        panic!("no endpoint in {}", cluster.name)
    };
    match &endpoint.address.as_ref().unwrap().address {
        Some(address::Address::Pipe(pipe)) => pipe.path.clone(),
        other => panic!("{}: not a pipe: {other:?}", cluster.name),
    }
}

fn check(name: &str, node_cluster: &str, admin_port: u32, istio_version: &str, b: &Bootstrap) {
    check_identity(name, node_cluster, istio_version, b);
    check_admin(name, admin_port, b);
    check_xds_and_sds(name, b);
    check_static_listeners(name, b);
    check_internal_listener_extension(name, b);
}

/// node.id, node.cluster and node.metadata as pilot-agent wrote them.
fn check_identity(name: &str, node_cluster: &str, istio_version: &str, b: &Bootstrap) {
    let node = b.node.as_ref().unwrap();
    assert_eq!(node.id, "sidecar~1.2.3.4~foo~bar", "{name}");
    assert_eq!(node.cluster, node_cluster, "{name}");
    let metadata = &node.metadata.as_ref().unwrap().fields;
    assert_eq!(
        metadata["ISTIO_VERSION"].kind,
        Some(Kind::StringValue(istio_version.into())),
        "{name}"
    );
    assert_eq!(
        metadata["ENVOY_STATUS_PORT"].kind,
        Some(Kind::NumberValue(15021.0)),
        "{name}"
    );
}

/// The admin listener pilot-agent polls: 127.0.0.1:<ProxyAdminPort>.
fn check_admin(name: &str, admin_port: u32, b: &Bootstrap) {
    let admin = b.admin.as_ref().unwrap().address.as_ref().unwrap();
    let Some(address::Address::SocketAddress(admin)) = &admin.address else {
        panic!("{name}: admin is not a socket address")
    };
    assert_eq!(admin.address, "127.0.0.1", "{name}");
    assert_eq!(
        admin.port_specifier,
        Some(socket_address::PortSpecifier::PortValue(admin_port)),
        "{name}"
    );
}

/// Delta ADS over the xds-grpc pipe, SDS over the workload socket, both HTTP/2.
fn check_xds_and_sds(name: &str, b: &Bootstrap) {
    let statics = b.static_resources.as_ref().unwrap();
    let clusters: Vec<&str> = statics.clusters.iter().map(|c| c.name.as_str()).collect();
    for expected in ["prometheus_stats", "agent", "sds-grpc", "xds-grpc"] {
        assert!(clusters.contains(&expected), "{name}: {clusters:?}");
    }
    let dynamic = b.dynamic_resources.as_ref().unwrap();
    let ads = dynamic.ads_config.as_ref().unwrap();
    assert_eq!(
        ads.api_type,
        api_config_source::ApiType::DeltaGrpc as i32,
        "{name}"
    );
    assert!(ads.set_node_on_first_message_only, "{name}");

    assert_eq!(
        pipe_path(cluster(b, "sds-grpc")),
        "./var/run/secrets/workload-spiffe-uds/test.sock",
        "{name}"
    );
    let xds = cluster(b, "xds-grpc");
    assert_eq!(pipe_path(xds), "/tmp/XDS", "{name}");
    assert_eq!(
        xds.connect_timeout.map(|d| (d.seconds, d.nanos)),
        Some((1, 0))
    );
    let options: HttpProtocolOptions = unpack(
        &xds.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"],
    );
    assert!(matches!(
        options.upstream_protocol_options,
        Some(http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(_))
    ));
    assert_eq!(
        cluster(b, "agent").connect_timeout.map(|d| d.nanos),
        Some(250_000_000)
    );
}

/// 15090 (Prometheus) and 15021 (readiness); 15090 routes /stats/prometheus onwards.
fn check_static_listeners(name: &str, b: &Bootstrap) {
    let statics = b.static_resources.as_ref().unwrap();
    let listeners: Vec<&str> = statics.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(listeners, ["0.0.0.0_15090", "0.0.0.0_15021"], "{name}");
    let filter = &statics.listeners[0].filter_chains[0].filters[0];
    let Some(ConfigType::TypedConfig(any)) = &filter.config_type else {
        panic!("{name}: no typed_config")
    };
    let hcm: HttpConnectionManager = unpack(any);
    let Some(http_connection_manager::RouteSpecifier::RouteConfig(routes)) = &hcm.route_specifier
    else {
        panic!("{name}: no inline routes")
    };
    let route = &routes.virtual_hosts[0].routes[0];
    assert!(format!("{route:?}").contains("prometheus_stats"), "{name}");
}

/// The internal_listener bootstrap extension is a TypedStruct; it unwraps.
fn check_internal_listener_extension(name: &str, b: &Bootstrap) {
    let extension = b
        .bootstrap_extensions
        .iter()
        .find(|e| e.name == "envoy.bootstrap.internal_listener")
        .unwrap();
    let typed = extension.typed_config.as_ref().unwrap();
    assert!(proto::is_typed_struct(&typed.type_url));
    let unwrapped = proto::unwrap_typed_struct(typed, UnknownFields::Reject).unwrap();
    let internal: InternalListener = unpack(&unwrapped.message);
    assert_eq!(internal.buffer_size_kb.map(|v| v.value), Some(64), "{name}");
}

#[test]
fn every_istio_golden_loads_as_json() {
    for (name, node_cluster, admin_port, version) in GOLDENS {
        let b = load(golden_path(name));
        check(name, node_cluster, admin_port, version, &b);
    }
}

#[test]
fn every_istio_golden_loads_as_yaml_too() {
    let dir = tempfile::tempdir().unwrap();
    for (name, node_cluster, admin_port, version) in GOLDENS {
        let from_yaml = load(as_yaml(name, &dir));
        check(name, node_cluster, admin_port, version, &from_yaml);
        assert_eq!(
            from_yaml,
            load(golden_path(name)),
            "{name}: YAML and JSON differ"
        );
    }
}

#[test]
fn running_golden_carries_locality_and_labels() {
    let b = load(golden_path("running"));
    let node = b.node.unwrap();
    let locality = node.locality.unwrap();
    assert_eq!(
        (
            locality.region.as_str(),
            locality.zone.as_str(),
            locality.sub_zone.as_str()
        ),
        ("regionA", "zoneB", "sub_zoneC")
    );
    let Some(Kind::StructValue(labels)) = &node.metadata.unwrap().fields["LABELS"].kind else {
        panic!("LABELS is not an object")
    };
    assert_eq!(
        labels.fields["app"].kind,
        Some(Kind::StringValue("test".into()))
    );
}

#[test]
fn ambient_golden_metadata_discovery_extension_is_an_istio_type_we_know() {
    let b = load(golden_path("ambient"));
    let extension = b
        .bootstrap_extensions
        .iter()
        .find(|e| e.name == "metadata_discovery")
        .unwrap();
    let unwrapped = proto::unwrap_typed_struct(
        extension.typed_config.as_ref().unwrap(),
        UnknownFields::Reject,
    )
    .unwrap()
    .message;
    assert_eq!(
        unwrapped.type_url,
        "type.googleapis.com/istio.workload.BootstrapExtension"
    );
    assert_eq!(
        proto::encode_any(&unwrapped),
        serde_json::json!({
            "@type": "type.googleapis.com/istio.workload.BootstrapExtension",
            "config_source": {"ads": {}}
        })
    );
}

#[test]
fn goldens_survive_a_config_dump_round_trip() {
    for (name, ..) in GOLDENS {
        let b = load(golden_path(name));
        let dumped = proto::encode(&b).unwrap();
        let again = proto::decode_value::<Bootstrap>(&dumped, UnknownFields::Reject)
            .unwrap()
            .message;
        assert_eq!(again, b, "{name}");
        // Spot check the dump looks like Envoy's: snake_case names, Durations as strings.
        assert_eq!(
            dumped["static_resources"]["clusters"][0]["connect_timeout"],
            "0.250s"
        );
        assert_eq!(
            dumped["dynamic_resources"]["ads_config"]["api_type"],
            "DELTA_GRPC"
        );
    }
}
