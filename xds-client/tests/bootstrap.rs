//! `ClientConfig` from an Envoy bootstrap: Istio's (DELTA_GRPC over the agent's pipe, SDS on
//! `sds-grpc`), a TLS static cluster, a google_grpc target, and errors an operator can act on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::envoy::config::bootstrap::v3::bootstrap::{DynamicResources, StaticResources};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::api_config_source::ApiType as WireApiType;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::grpc_service::{
    EnvoyGrpc, GoogleGrpc, TargetSpecifier,
};
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiConfigSource, ConfigSource, DataSource, GrpcService, Node,
    Pipe, SocketAddress, TransportSocket,
};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::ValidationContextType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SdsSecretConfig, TlsCertificate,
    UpstreamTlsContext,
};
use envoy_types::pb::google::protobuf::Duration as ProtoDuration;
use xds_client::{
    ApiType, BootstrapError, ClientConfig, Identity, PemSource, ResourceType, SdsSource, Service,
    TlsConfig, Transport,
};

fn static_cluster(name: &str, address: AddressKind) -> Cluster {
    Cluster {
        name: name.into(),
        connect_timeout: Some(ProtoDuration {
            seconds: 1,
            nanos: 0,
        }),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                        address: Some(Address {
                            address: Some(address),
                        }),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pipe(path: &str) -> AddressKind {
    AddressKind::Pipe(Pipe {
        path: path.into(),
        mode: 0,
    })
}

fn api_source(api_type: WireApiType, cluster: &str) -> ApiConfigSource {
    ApiConfigSource {
        api_type: api_type as i32,
        set_node_on_first_message_only: true,
        grpc_services: vec![GrpcService {
            target_specifier: Some(TargetSpecifier::EnvoyGrpc(EnvoyGrpc {
                cluster_name: cluster.into(),
                ..Default::default()
            })),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn ads_source(zero_timeout: bool) -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        initial_fetch_timeout: zero_timeout.then_some(ProtoDuration {
            seconds: 0,
            nanos: 0,
        }),
        ..Default::default()
    }
}

/// The shape of `pkg/bootstrap/testdata/default_golden.json` that matters here.
fn istio_bootstrap() -> Bootstrap {
    Bootstrap {
        node: Some(Node {
            id: "sidecar~1.2.3.4~foo~bar".into(),
            cluster: "istio-proxy".into(),
            ..Default::default()
        }),
        static_resources: Some(StaticResources {
            clusters: vec![
                static_cluster(
                    "sds-grpc",
                    pipe("./var/run/secrets/workload-spiffe-uds/socket"),
                ),
                static_cluster("xds-grpc", pipe("./etc/istio/proxy/XDS")),
            ],
            ..Default::default()
        }),
        dynamic_resources: Some(DynamicResources {
            lds_config: Some(ads_source(true)),
            cds_config: Some(ads_source(true)),
            ads_config: Some(api_source(WireApiType::DeltaGrpc, "xds-grpc")),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn istio_bootstrap_gives_delta_ads_over_the_agent_pipe() {
    let config = ClientConfig::from_bootstrap(&istio_bootstrap()).unwrap();
    assert_eq!(
        config.transport,
        Transport::Uds("./etc/istio/proxy/XDS".into())
    );
    assert_eq!(config.service, Service::Aggregated);
    assert_eq!(config.api_type, ApiType::DeltaGrpc);
    assert!(config.set_node_on_first_message_only);
    assert_eq!(
        config.wildcard,
        [ResourceType::Cluster, ResourceType::Listener].into()
    );
    assert_eq!(
        config.initial_fetch_timeout[&ResourceType::Cluster],
        Duration::ZERO
    );
    assert_eq!(
        config.initial_fetch_timeout[&ResourceType::Listener],
        Duration::ZERO
    );
    assert_eq!(config.connect_timeout, Duration::from_secs(1));
    assert_eq!(config.node.id, "sidecar~1.2.3.4~foo~bar");
    assert_eq!(config.node.cluster, "istio-proxy");
    assert_eq!(config.node.user_agent_name, "envoy");
    assert_eq!(config.max_message_size, None);
}

#[test]
fn istio_sds_config_gives_a_sotw_secret_stream_on_the_agent_socket() {
    let bootstrap = istio_bootstrap();
    // As in every Istio listener's SdsSecretConfig for `default` / `ROOTCA`.
    let secret_config = SdsSecretConfig {
        name: "default".into(),
        sds_config: Some(ConfigSource {
            config_source_specifier: Some(ConfigSourceSpecifier::ApiConfigSource(api_source(
                WireApiType::Grpc,
                "sds-grpc",
            ))),
            initial_fetch_timeout: Some(ProtoDuration {
                seconds: 0,
                nanos: 0,
            }),
            ..Default::default()
        }),
    };
    let source =
        ClientConfig::from_sds_config(&bootstrap, secret_config.sds_config.as_ref().unwrap())
            .unwrap();
    let SdsSource::Stream(config) = source else {
        panic!("expected a separate SDS stream, got {source:?}");
    };
    assert_eq!(
        config.transport,
        Transport::Uds("./var/run/secrets/workload-spiffe-uds/socket".into())
    );
    assert_eq!(config.service, Service::Secret);
    assert_eq!(config.api_type, ApiType::Grpc);
    assert!(config.wildcard.is_empty());
    assert_eq!(
        config.initial_fetch_timeout[&ResourceType::Secret],
        Duration::ZERO
    );

    assert!(matches!(
        ClientConfig::from_sds_config(&bootstrap, &ads_source(false)).unwrap(),
        SdsSource::Ads
    ));
}

#[test]
fn tls_static_cluster_and_google_grpc_target() {
    let mut bootstrap = istio_bootstrap();
    let tls = UpstreamTlsContext {
        sni: "istiod.istio-system.svc".into(),
        common_tls_context: Some(CommonTlsContext {
            tls_certificates: vec![TlsCertificate {
                certificate_chain: Some(file("/etc/certs/cert-chain.pem")),
                private_key: Some(file("/etc/certs/key.pem")),
                ..Default::default()
            }],
            validation_context_type: Some(ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(file("/etc/certs/root-cert.pem")),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut cluster = static_cluster(
        "xds-grpc",
        AddressKind::SocketAddress(SocketAddress {
            address: "10.96.0.10".into(),
            port_specifier: Some(PortSpecifier::PortValue(15012)),
            ..Default::default()
        }),
    );
    cluster.transport_socket = Some(TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(ConfigType::TypedConfig(envoy_types::util::pack_any(tls))),
    });
    bootstrap.static_resources.as_mut().unwrap().clusters[1] = cluster;
    let config = ClientConfig::from_bootstrap(&bootstrap).unwrap();
    assert_eq!(
        config.transport,
        Transport::Tcp {
            authority: "10.96.0.10:15012".into(),
            tls: Some(TlsConfig {
                ca: Some(PemSource::File("/etc/certs/root-cert.pem".into())),
                identity: Some(Identity {
                    cert_chain: PemSource::File("/etc/certs/cert-chain.pem".into()),
                    private_key: PemSource::File("/etc/certs/key.pem".into()),
                }),
                server_name: Some("istiod.istio-system.svc".into()),
            }),
        }
    );

    let ads = bootstrap
        .dynamic_resources
        .as_mut()
        .unwrap()
        .ads_config
        .as_mut()
        .unwrap();
    ads.api_type = WireApiType::Grpc as i32;
    ads.grpc_services[0].target_specifier = Some(TargetSpecifier::GoogleGrpc(GoogleGrpc {
        target_uri: "unix:///etc/istio/proxy/XDS".into(),
        stat_prefix: "xds".into(),
        ..Default::default()
    }));
    let config = ClientConfig::from_bootstrap(&bootstrap).unwrap();
    assert_eq!(
        config.transport,
        Transport::Uds("/etc/istio/proxy/XDS".into())
    );
    assert_eq!(config.api_type, ApiType::Grpc);
}

fn file(path: &str) -> DataSource {
    DataSource {
        specifier: Some(Specifier::Filename(path.into())),
        ..Default::default()
    }
}

#[test]
fn errors_say_what_to_fix() {
    let mut no_ads = istio_bootstrap();
    no_ads.dynamic_resources.as_mut().unwrap().ads_config = None;
    assert_eq!(
        ClientConfig::from_bootstrap(&no_ads).unwrap_err(),
        BootstrapError::MissingAdsConfig
    );

    let mut unknown = istio_bootstrap();
    unknown.static_resources.as_mut().unwrap().clusters.pop();
    let err = ClientConfig::from_bootstrap(&unknown).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the xDS cluster xds-grpc is not a static cluster in the bootstrap"
    );

    let mut rest = istio_bootstrap();
    rest.dynamic_resources
        .as_mut()
        .unwrap()
        .ads_config
        .as_mut()
        .unwrap()
        .api_type = WireApiType::Rest as i32;
    assert_eq!(
        ClientConfig::from_bootstrap(&rest).unwrap_err().to_string(),
        "ads_config: api_type REST is not supported; use GRPC or DELTA_GRPC"
    );

    let mut lds_from_file = istio_bootstrap();
    lds_from_file.dynamic_resources.as_mut().unwrap().lds_config = Some(ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::ApiConfigSource(api_source(
            WireApiType::Grpc,
            "xds-grpc",
        ))),
        ..Default::default()
    });
    assert_eq!(
        ClientConfig::from_bootstrap(&lds_from_file)
            .unwrap_err()
            .to_string(),
        "dynamic_resources.lds_config must use ads {}; found api_config_source"
    );
}
