//! Unit tests for the proto layer: JSON/YAML to envoy-types and back, TypedStruct, errors.

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::google::protobuf::{Any, Duration};
use prost::{Message, Name};
use prost_reflect::DynamicMessage;
use serde_json::json;

use super::*;

fn json_to<T: Message + Name + Default>(value: serde_json::Value) -> T {
    decode_value::<T>(&value, UnknownFields::Reject)
        .unwrap_or_else(|e| panic!("{e}"))
        .message
}

fn error_of<T: Message + Name + Default>(value: serde_json::Value) -> Error {
    match decode_value::<T>(&value, UnknownFields::Reject) {
        Ok(_) => panic!("decoded, expected an error: {value}"),
        Err(e) => e,
    }
}

fn unpack<T: Message + Name + Default>(any: &Any) -> T {
    assert_eq!(any.type_url, T::type_url());
    T::decode(any.value.as_slice()).unwrap()
}

fn tcp_listener() -> serde_json::Value {
    json!({
        "name": "tcp_15001",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15001}},
        "filter_chains": [{
            "filters": [{
                "name": "envoy.filters.network.tcp_proxy",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                    "stat_prefix": "outbound",
                    "cluster": "backend",
                    "idle_timeout": "3600s"
                }
            }]
        }]
    })
}

#[test]
fn descriptor_set_has_envoy_and_istio_types() {
    let pool = pool().unwrap();
    for name in [
        "envoy.config.bootstrap.v3.Bootstrap",
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "udpa.type.v1.TypedStruct",
        "xds.type.v3.TypedStruct",
        "stats.PluginConfig",
        "envoy.tcp.metadataexchange.config.MetadataExchange",
        "io.istio.http.peer_metadata.Config",
        "istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig",
        "istio.workload.BootstrapExtension",
    ] {
        assert!(pool.get_message_by_name(name).is_some(), "{name} missing");
    }
}

#[test]
fn listener_with_tcp_proxy_round_trips() {
    let listener: Listener = json_to(tcp_listener());
    assert_eq!(listener.name, "tcp_15001");
    let filter = &listener.filter_chains[0].filters[0];
    let Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(any)) =
        &filter.config_type
    else {
        panic!("no typed_config: {filter:?}")
    };
    let tcp: TcpProxy = unpack(any);
    assert_eq!(tcp.stat_prefix, "outbound");
    assert_eq!(
        tcp.cluster_specifier,
        Some(tcp_proxy::ClusterSpecifier::Cluster("backend".into()))
    );
    assert_eq!(
        tcp.idle_timeout,
        Some(Duration {
            seconds: 3600,
            nanos: 0
        })
    );
    // Back to JSON, as /config_dump shows it: the same document.
    assert_eq!(encode(&listener).unwrap(), tcp_listener());
}

#[test]
#[allow(deprecated)] // max_requests_per_connection: Istio still sets it
fn cluster_with_typed_extension_protocol_options_round_trips() {
    let doc = json!({
        "name": "xds-grpc",
        "type": "STATIC",
        "connect_timeout": "1s",
        "max_requests_per_connection": 1,
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}
            }
        }
    });
    let cluster: Cluster = json_to(doc.clone());
    let any = &cluster.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    let options: HttpProtocolOptions = unpack(any);
    assert!(matches!(
        options.upstream_protocol_options,
        Some(http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(_))
    ));
    assert_eq!(
        cluster.max_requests_per_connection.map(|v| v.value),
        Some(1)
    );
    assert_eq!(encode(&cluster).unwrap(), doc);
}

#[test]
fn durations_take_protobuf_strings_only() {
    let cluster: Cluster = json_to(json!({"name": "c", "connect_timeout": "0.250s"}));
    assert_eq!(
        cluster.connect_timeout,
        Some(Duration {
            seconds: 0,
            nanos: 250_000_000
        })
    );
    assert_eq!(encode(&cluster).unwrap()["connect_timeout"], "0.250s");

    let err = error_of::<Cluster>(json!({"name": "c", "connect_timeout": "5"}));
    assert_eq!(err.path().unwrap().to_string(), "connect_timeout");
    assert!(err.to_string().contains("invalid Duration \"5\""), "{err}");
    let err = error_of::<Cluster>(json!({"name": "c", "connect_timeout": 5}));
    assert!(err.to_string().contains("invalid Duration 5"), "{err}");
}

#[test]
fn enums_by_name_in_any_case_or_by_number() {
    let by_name: Cluster = json_to(json!({"type": "STRICT_DNS", "lb_policy": "round_robin"}));
    assert_eq!(
        by_name.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::StrictDns as i32
        ))
    );
    let by_number: Cluster = json_to(json!({"type": 1}));
    assert_eq!(
        by_number.cluster_discovery_type,
        by_name.cluster_discovery_type
    );
    assert_eq!(encode(&by_number).unwrap()["type"], "STRICT_DNS");

    let err = error_of::<Cluster>(json!({"lb_policy": "FASTEST"}));
    assert_eq!(err.path().unwrap().to_string(), "lb_policy");
    assert!(
        err.to_string().contains(
            "unknown value \"FASTEST\" for enum envoy.config.cluster.v3.Cluster.LbPolicy"
        ),
        "{err}"
    );
    // Like Envoy, --allow-unknown-static-fields skips unknown enum values too.
    let lenient =
        decode_value::<Cluster>(&json!({"lb_policy": "FASTEST"}), UnknownFields::Ignore).unwrap();
    assert_eq!(lenient.message.lb_policy, 0);
    assert_eq!(lenient.ignored[0].path.to_string(), "lb_policy");
}

#[test]
fn integers_as_numbers_or_strings_and_64_bit_ones_print_as_strings() {
    let doc = json!({
        "node": {"id": "n"},
        "stats_server_version_override": "18446744073709551615",
        "admin": {"address": {"socket_address": {"port_value": "15000"}}}
    });
    let bootstrap: Bootstrap = json_to(doc);
    assert_eq!(
        bootstrap.stats_server_version_override.map(|v| v.value),
        Some(u64::MAX)
    );
    let out = encode(&bootstrap).unwrap();
    assert_eq!(out["stats_server_version_override"], "18446744073709551615");
    assert_eq!(
        out["admin"]["address"]["socket_address"]["port_value"],
        15000
    );

    let err = error_of::<Bootstrap>(
        json!({"admin": {"address": {"socket_address": {"port_value": 99999999999u64}}}}),
    );
    assert_eq!(
        err.to_string(),
        "admin.address.socket_address.port_value: 99999999999 is out of range for uint32"
    );
}

#[test]
fn camel_case_and_snake_case_names_both_work() {
    let camel: Listener = json_to(json!({
        "name": "l",
        "additionalAddresses": [{"address": {"socketAddress": {"address": "::", "portValue": 15090}}}]
    }));
    let snake: Listener = json_to(json!({
        "name": "l",
        "additional_addresses": [{"address": {"socket_address": {"address": "::", "port_value": 15090}}}]
    }));
    assert_eq!(camel, snake);
    assert_eq!(camel.additional_addresses.len(), 1);
}

#[test]
fn errors_name_the_field_path() {
    let err = error_of::<Bootstrap>(json!({
        "static_resources": {"clusters": [
            {"name": "a"}, {"name": "b"},
            {"name": "c", "load_assignment": {"endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "1.2.3.4", "foo": 1}}}}
            ]}]}}
        ]}
    }));
    assert_eq!(
        err.to_string(),
        "static_resources.clusters[2].load_assignment.endpoints[0].lb_endpoints[0].endpoint\
         .address.socket_address.foo: unknown field \"foo\" in envoy.config.core.v3.SocketAddress"
    );

    let err = error_of::<Listener>(json!({"filter_chains": [{"filters": [{
        "name": "x", "typed_config": {"@type": "type.googleapis.com/x.Y", "a": 1}
    }]}]}));
    assert_eq!(
        err.to_string(),
        "filter_chains[0].filters[0].typed_config: unknown @type \"type.googleapis.com/x.Y\": \
         no such message type is compiled in"
    );

    // Inside an Any the path goes on through the embedded message's fields.
    let mut doc = tcp_listener();
    doc["filter_chains"][0]["filters"][0]["typed_config"]["idle_timeout"] = json!("1h");
    let err = error_of::<Listener>(doc);
    assert_eq!(
        err.path().unwrap().to_string(),
        "filter_chains[0].filters[0].typed_config.idle_timeout"
    );
}

#[test]
fn unknown_fields_are_rejected_or_ignored_by_policy() {
    let doc =
        json!({"name": "c", "bogus": 1, "load_assignment": {"cluster_name": "c", "nope": true}});
    let err = error_of::<Cluster>(doc.clone());
    assert_eq!(err.path().unwrap().to_string(), "bogus");

    let lenient = decode_value::<Cluster>(&doc, UnknownFields::Ignore).unwrap();
    assert_eq!(lenient.message.name, "c");
    let ignored: Vec<String> = lenient.ignored.iter().map(|i| i.path.to_string()).collect();
    assert_eq!(ignored, ["bogus", "load_assignment.nope"]);
}

#[test]
fn a_field_set_twice_or_two_oneof_members_are_errors() {
    let err = decode::<Cluster>(
        r#"{"name": "a", "name": "b"}"#,
        Format::Json,
        UnknownFields::Reject,
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "name: \"name\" is set twice");

    let mut doc = tcp_listener();
    doc["filter_chains"][0]["filters"][0]["typed_config"]["weighted_clusters"] =
        json!({"clusters": [{"name": "a", "weight": 1}]});
    let err = error_of::<Listener>(doc);
    assert!(
        err.to_string().contains(
            "\"weighted_clusters\" and \"cluster\" are alternatives (oneof cluster_specifier)"
        ),
        "{err}"
    );

    // A message field given twice, by both spellings, merges, as in Envoy.
    let merged: Cluster = json_to(json!({
        "name": "c",
        "load_assignment": {"cluster_name": "c"},
        "loadAssignment": {"endpoints": [{}]}
    }));
    let assignment = merged.load_assignment.unwrap();
    assert_eq!(
        (assignment.cluster_name.as_str(), assignment.endpoints.len()),
        ("c", 1)
    );
}

#[test]
fn yaml_reads_like_json() {
    let yaml = r#"
name: tcp_15001
address:
  socket_address: { address: 0.0.0.0, port_value: 15001 }
filter_chains:
- filters:
  - name: envoy.filters.network.tcp_proxy
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
      stat_prefix: outbound
      cluster: backend
      idle_timeout: 3600s
"#;
    let from_yaml = decode::<Listener>(yaml, Format::Yaml, UnknownFields::Reject).unwrap();
    assert_eq!(from_yaml.message, json_to::<Listener>(tcp_listener()));

    let err =
        decode::<Listener>("name: [unclosed\n", Format::Yaml, UnknownFields::Reject).unwrap_err();
    assert!(matches!(err, Error::Yaml(_)), "{err:?}");
    // One line, with the position.
    assert!(!err.to_string().contains('\n'), "{err}");
    assert!(err.to_string().contains("line 1"), "{err}");
}

fn typed_struct(wrapper: &str, type_url: &str, value: serde_json::Value) -> Any {
    let doc = json!({"typed_config": {"@type": wrapper, "type_url": type_url, "value": value}});
    let filter: envoy_types::pb::envoy::config::listener::v3::Filter = json_to(doc);
    match filter.config_type {
        Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(a)) => a,
        other => panic!("{other:?}"),
    }
}

#[test]
fn typed_struct_unwraps_into_the_real_message() {
    for wrapper in [
        "type.googleapis.com/udpa.type.v1.TypedStruct",
        "type.googleapis.com/xds.type.v3.TypedStruct",
    ] {
        let any = typed_struct(
            wrapper,
            "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            json!({"statPrefix": "inbound", "cluster": "local", "idle_timeout": "1.5s"}),
        );
        assert!(is_typed_struct(&any.type_url));
        let unwrapped = unwrap_typed_struct(&any, UnknownFields::Reject)
            .unwrap()
            .message;
        let tcp: TcpProxy = unpack(&unwrapped);
        assert_eq!(tcp.stat_prefix, "inbound");
        assert_eq!(
            tcp.idle_timeout.map(|d| (d.seconds, d.nanos)),
            Some((1, 500_000_000))
        );
    }
}

#[test]
fn typed_struct_of_an_istio_config_decodes_with_our_protos() {
    let any = typed_struct(
        "type.googleapis.com/udpa.type.v1.TypedStruct",
        "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange",
        json!({"protocol": "istio-peer-exchange"}),
    );
    let unwrapped = unwrap_typed_struct(&any, UnknownFields::Reject)
        .unwrap()
        .message;
    let desc = pool()
        .unwrap()
        .get_message_by_name("envoy.tcp.metadataexchange.config.MetadataExchange")
        .unwrap();
    let message = DynamicMessage::decode(desc, unwrapped.value.as_slice()).unwrap();
    assert_eq!(
        message.get_field_by_name("protocol").unwrap().as_str(),
        Some("istio-peer-exchange")
    );
    // And /config_dump shows it expanded.
    assert_eq!(
        encode_any(&unwrapped),
        json!({
            "@type": "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange",
            "protocol": "istio-peer-exchange"
        })
    );
}

#[test]
fn typed_struct_errors_name_the_type_and_the_field() {
    let tcp = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
    let bad = typed_struct(
        "type.googleapis.com/udpa.type.v1.TypedStruct",
        tcp,
        json!({"stat_prefix": "s", "idle_timeout": 5}),
    );
    let err = unwrap_typed_struct(&bad, UnknownFields::Reject).unwrap_err();
    assert_eq!(err.path().unwrap().to_string(), "value.idle_timeout");
    assert!(err.to_string().contains(tcp), "{err}");

    let unknown_type = typed_struct(
        "type.googleapis.com/udpa.type.v1.TypedStruct",
        "type.googleapis.com/acme.Filter",
        json!({}),
    );
    let err = unwrap_typed_struct(&unknown_type, UnknownFields::Reject).unwrap_err();
    assert_eq!(
        err.to_string(),
        "type_url: unknown @type \"type.googleapis.com/acme.Filter\": no such message type is \
         compiled in"
    );

    let unknown_field = typed_struct(
        "type.googleapis.com/udpa.type.v1.TypedStruct",
        tcp,
        json!({"stat_prefix": "s", "bogus": 1}),
    );
    assert!(unwrap_typed_struct(&unknown_field, UnknownFields::Reject).is_err());
    let lenient = unwrap_typed_struct(&unknown_field, UnknownFields::Ignore).unwrap();
    assert_eq!(lenient.ignored[0].path.to_string(), "value.bogus");
}

#[test]
fn config_dump_shows_an_unknown_any_as_base64_instead_of_failing() {
    let any = Any {
        type_url: "type.googleapis.com/acme.v1.Secret".into(),
        value: vec![0x0a, 0x02, b'h', b'i'],
    };
    assert_eq!(
        encode_any(&any),
        json!({"@type": "type.googleapis.com/acme.v1.Secret", "value": "CgJoaQ=="})
    );
    // Also when it sits deep inside a message.
    let mut listener: Listener = json_to(tcp_listener());
    if let Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(a)) =
        &mut listener.filter_chains[0].filters[0].config_type
    {
        *a = any;
    }
    let out = encode(&listener).unwrap();
    assert_eq!(
        out["filter_chains"][0]["filters"][0]["typed_config"]["value"],
        "CgJoaQ=="
    );
}

#[test]
fn struct_metadata_keeps_nested_values() {
    let metadata = json!({
        "LABELS": {"app": "ratings", "version": "v1"},
        "ISTIO_VERSION": "1.28.0",
        "SIDECAR": true,
        "PORTS": [9080, "http"],
        "NOTHING": null
    });
    let bootstrap: Bootstrap =
        json_to(json!({"node": {"id": "sidecar~1.2.3.4~foo~bar", "metadata": metadata}}));
    assert_eq!(encode(&bootstrap).unwrap()["node"]["metadata"], metadata);
}

#[test]
fn validate_checks_durations_and_typed_structs_everywhere() {
    let mut doc = tcp_listener();
    doc["filter_chains"][0]["filters"][0]["typed_config"]["idle_timeout"] = json!("-1s");
    let listener: Listener = json_to(doc);
    let err = validate(&listener, UnknownFields::Reject).unwrap_err();
    assert_eq!(
        err.to_string(),
        "filter_chains[0].filters[0].typed_config.idle_timeout: Duration \"-1s\" is negative; \
         durations must be >= 0"
    );

    let listener: Listener = json_to(json!({"filter_chains": [{"filters": [{
        "name": "istio.metadata_exchange",
        "typed_config": {
            "@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
            "type_url": "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange",
            "value": {"protocol": "istio-peer-exchange", "extra": 1}
        }
    }]}]}));
    let err = validate(&listener, UnknownFields::Reject).unwrap_err();
    assert_eq!(
        err.path().unwrap().to_string(),
        "filter_chains[0].filters[0].typed_config.value.extra"
    );
    let ignored = validate(&listener, UnknownFields::Ignore).unwrap();
    assert_eq!(ignored.len(), 1);
}

#[test]
fn binary_decoding_reports_unknown_fields() {
    let mut bytes = Cluster {
        name: "c".into(),
        ..Default::default()
    }
    .encode_to_vec();
    // Field 9999, varint 1: not a Cluster field.
    bytes.extend([0xf8, 0xf0, 0x04, 0x01]);
    let err = decode_binary::<Cluster>(&bytes, UnknownFields::Reject).unwrap_err();
    assert_eq!(
        err.to_string(),
        "(top level): unknown field number 9999 in envoy.config.cluster.v3.Cluster"
    );
    let lenient = decode_binary::<Cluster>(&bytes, UnknownFields::Ignore).unwrap();
    assert_eq!(lenient.message.name, "c");
    assert_eq!(lenient.ignored.len(), 1);
}

#[test]
fn text_format_protobuf_decodes() {
    let bootstrap: Bootstrap = decode_text(
        r#"admin { address { socket_address { address: "127.0.0.1" port_value: 15000 } } }"#,
    )
    .unwrap();
    let out = encode(&bootstrap).unwrap();
    assert_eq!(
        out["admin"]["address"]["socket_address"]["port_value"],
        15000
    );
    assert!(decode_text::<Bootstrap>("admin { bogus: 1 }").is_err());
}
