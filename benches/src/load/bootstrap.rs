//! The static Envoy bootstraps each scenario gives both proxies, byte for byte the same, and
//! the test PKI (a root and SPIFFE workload certificates) the mTLS scenarios use.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};

/// The trust domain of the test identities.
pub const TRUST_DOMAIN: &str = "cluster.local";

/// The identity RBAC allows (the client sidecar's).
pub fn client_principal() -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/default/sa/client")
}

/// The server sidecar's identity, which the client sidecar verifies.
pub fn server_principal() -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/default/sa/server")
}

/// An identity RBAC must deny (used by the verification step).
pub fn other_principal() -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/default/sa/intruder")
}

/// One workload's files, in Istio's `/etc/certs` layout plus file-based SDS resources.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `cert-chain.pem`, `key.pem`, `root-cert.pem`.
    pub certs: PathBuf,
    /// `default.yaml` (the workload secret) and `rootca.yaml` (the root), SDS from files.
    pub sds: PathBuf,
}

/// The PKI for a run: a fresh ECDSA P-256 root and one identity per workload.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The client sidecar.
    pub client: Identity,
    /// The server sidecar.
    pub server: Identity,
    /// A workload RBAC denies.
    pub other: Identity,
}

impl Pki {
    /// Writes a new root and three identities under `dir`.
    pub fn create(dir: &Path) -> Result<Self, rcgen::Error> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, TRUST_DOMAIN);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let root_pem = params.self_signed(&key)?.pem();
        let issuer = Issuer::new(params, key);
        let issue = |name: &str, spiffe: String| -> Result<Identity, rcgen::Error> {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
            let mut params = CertificateParams::default();
            params.distinguished_name = DistinguishedName::new();
            let uri = spiffe
                .try_into()
                .map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
            params.subject_alt_names = vec![SanType::URI(uri)];
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            params.use_authority_key_identifier_extension = true;
            let cert = params.signed_by(&key, &issuer)?;
            let certs = dir.join(name).join("certs");
            let sds = dir.join(name).join("sds");
            let write = |path: PathBuf, text: String| {
                std::fs::write(path, text).map_err(|e| rcgen::Error::PemError(e.to_string()))
            };
            for d in [&certs, &sds] {
                std::fs::create_dir_all(d).map_err(|e| rcgen::Error::PemError(e.to_string()))?;
            }
            write(
                certs.join("cert-chain.pem"),
                format!("{}{}", cert.pem(), root_pem),
            )?;
            write(certs.join("key.pem"), key.serialize_pem())?;
            write(certs.join("root-cert.pem"), root_pem.clone())?;
            let c = certs.display();
            write(
                sds.join("default.yaml"),
                format!(
                    "resources:\n- \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  name: default\n  tls_certificate:\n    certificate_chain: {{ filename: {c}/cert-chain.pem }}\n    private_key: {{ filename: {c}/key.pem }}\n"
                ),
            )?;
            write(
                sds.join("rootca.yaml"),
                format!(
                    "resources:\n- \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  name: ROOTCA\n  validation_context:\n    trusted_ca: {{ filename: {c}/root-cert.pem }}\n"
                ),
            )?;
            Ok(Identity { certs, sds })
        };
        Ok(Self {
            client: issue("client", client_principal())?,
            server: issue("server", server_principal())?,
            other: issue("intruder", other_principal())?,
        })
    }
}

/// How the proxies between the load generator and the backend are arranged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// No proxy: the machine's ceiling.
    Direct,
    /// One proxy, `tcp_proxy` to the backend.
    OneHopTcp,
    /// One proxy, `http_connection_manager` + router to the backend (HTTP/1.1 or h2c in).
    OneHopHttp,
    /// A sidecar pair: client sidecar `tcp_proxy` originating mTLS (ALPN `istio`), server
    /// sidecar requiring the client certificate, network RBAC on the SPIFFE principal,
    /// `tcp_proxy` to the backend. `full_handshake` turns off client session resumption.
    PairTcpMtls {
        /// No TLS session resumption (`max_session_keys: 0`): a full handshake per connection.
        full_handshake: bool,
    },
    /// A sidecar pair for HTTP: client sidecar HCM originating mTLS with ALPN
    /// `istio-http/1.1`, server sidecar HCM with HTTP RBAC on the principal, XFCC, router.
    PairHttpMtls,
}

impl Topology {
    /// How many proxies it runs.
    pub fn proxies(self) -> usize {
        match self {
            Topology::Direct => 0,
            Topology::OneHopTcp | Topology::OneHopHttp => 1,
            Topology::PairTcpMtls { .. } | Topology::PairHttpMtls => 2,
        }
    }

    /// Whether the server sidecar terminates mTLS (and so can be checked for plaintext and
    /// wrong-principal rejection).
    pub fn mtls(self) -> bool {
        matches!(self, Topology::PairTcpMtls { .. } | Topology::PairHttpMtls)
    }
}

/// The bootstraps, first proxy (the one the load generator talks to) first. `listen[i]` is
/// proxy `i`'s listener port; the last proxy forwards to `backend`.
pub fn bootstraps(topology: Topology, listen: &[u16], backend: u16, pki: &Pki) -> Vec<String> {
    match topology {
        Topology::Direct => vec![],
        Topology::OneHopTcp => vec![proxy(
            "hop",
            &listener("ingress", listen[0], "", &tcp_proxy("backend")),
            &cluster("backend", backend, ""),
        )],
        Topology::OneHopHttp => vec![proxy(
            "hop",
            &listener(
                "ingress",
                listen[0],
                "",
                &hcm("ingress_http", "backend", "", ""),
            ),
            &cluster("backend", backend, ""),
        )],
        Topology::PairTcpMtls { full_handshake } => vec![
            proxy(
                "client",
                &listener("outbound", listen[0], "", &tcp_proxy("server")),
                &cluster(
                    "server",
                    listen[1],
                    &upstream_tls(
                        &pki.client,
                        &["istio-peer-exchange", "istio"],
                        full_handshake,
                    ),
                ),
            ),
            proxy(
                "server",
                &listener(
                    "inbound",
                    listen[1],
                    &downstream_tls(&pki.server, &[]),
                    &format!("{}{}", network_rbac(), tcp_proxy("app")),
                ),
                &cluster("app", backend, ""),
            ),
        ],
        Topology::PairHttpMtls => vec![
            proxy(
                "client",
                &listener(
                    "outbound",
                    listen[0],
                    "",
                    &hcm("outbound_http", "server", "", ""),
                ),
                &cluster(
                    "server",
                    listen[1],
                    &upstream_tls(&pki.client, &["istio-http/1.1", "istio", "http/1.1"], false),
                ),
            ),
            proxy(
                "server",
                &listener(
                    "inbound",
                    listen[1],
                    &downstream_tls(&pki.server, &["h2", "http/1.1"]),
                    &hcm(
                        "inbound_http",
                        "app",
                        &http_rbac(),
                        "          forward_client_cert_details: APPEND_FORWARD\n          set_current_client_cert_details: { subject: true, dns: true, uri: true }\n",
                    ),
                ),
                &cluster("app", backend, ""),
            ),
        ],
    }
}

fn proxy(name: &str, listeners: &str, clusters: &str) -> String {
    format!(
        "node: {{ id: {name}, cluster: {name} }}\n\
         admin:\n  address:\n    socket_address: {{ address: 127.0.0.1, port_value: 0 }}\n\
         static_resources:\n  listeners:\n{listeners}  clusters:\n{clusters}"
    )
}

fn listener(name: &str, port: u16, transport_socket: &str, filters: &str) -> String {
    format!(
        "  - name: {name}\n    address:\n      socket_address: {{ address: 127.0.0.1, port_value: {port} }}\n    filter_chains:\n    - {ts}filters:\n{filters}",
        ts = if transport_socket.is_empty() {
            String::new()
        } else {
            format!("{transport_socket}      ")
        }
    )
}

fn tcp_proxy(cluster: &str) -> String {
    format!(
        "      - name: envoy.filters.network.tcp_proxy\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n          stat_prefix: {cluster}\n          cluster: {cluster}\n"
    )
}

fn network_rbac() -> String {
    format!(
        "      - name: envoy.filters.network.rbac\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC\n          stat_prefix: tcp.\n          rules:\n            action: ALLOW\n            policies:\n              ns[default]-policy[allow-client]-rule[0]:\n                permissions:\n                - any: true\n                principals:\n                - authenticated:\n                    principal_name: {{ exact: {} }}\n",
        client_principal()
    )
}

fn http_rbac() -> String {
    format!(
        "          - name: envoy.filters.http.rbac\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC\n              rules:\n                action: ALLOW\n                policies:\n                  ns[default]-policy[allow-client]-rule[0]:\n                    permissions:\n                    - any: true\n                    principals:\n                    - authenticated:\n                        principal_name: {{ exact: {} }}\n",
        client_principal()
    )
}

/// An HTTP connection manager routing everything to `cluster`, no access log.
fn hcm(stat_prefix: &str, cluster: &str, filters_before_router: &str, extra: &str) -> String {
    format!(
        "      - name: envoy.filters.network.http_connection_manager\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n          stat_prefix: {stat_prefix}\n          codec_type: AUTO\n{extra}          route_config:\n            name: {stat_prefix}\n            virtual_hosts:\n            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: {{ prefix: \"/\" }}\n                route: {{ cluster: {cluster}, timeout: 0s }}\n          http_filters:\n{filters_before_router}          - name: envoy.filters.http.router\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n"
    )
}

fn cluster(name: &str, port: u16, transport_socket: &str) -> String {
    format!(
        "  - name: {name}\n    type: STATIC\n    connect_timeout: 1s\n{transport_socket}    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n        - endpoint:\n            address:\n              socket_address: {{ address: 127.0.0.1, port_value: {port} }}\n"
    )
}

fn sds(name: &str, path: &Path) -> String {
    format!(
        "{{ name: {name}, sds_config: {{ path_config_source: {{ path: {} }}, resource_api_version: V3 }} }}",
        path.display()
    )
}

fn upstream_tls(id: &Identity, alpn: &[&str], full_handshake: bool) -> String {
    format!(
        "    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n        sni: outbound_.8080_._.server.default.svc.cluster.local\n{resume}        common_tls_context:\n          alpn_protocols: [{alpn}]\n          tls_certificate_sds_secret_configs:\n          - {cert}\n          combined_validation_context:\n            default_validation_context:\n              match_typed_subject_alt_names:\n              - san_type: URI\n                matcher: {{ exact: {server} }}\n            validation_context_sds_secret_config: {root}\n",
        resume = if full_handshake {
            "        max_session_keys: 0\n"
        } else {
            ""
        },
        alpn = alpn.join(", "),
        cert = sds("default", &id.sds.join("default.yaml")),
        root = sds("ROOTCA", &id.sds.join("rootca.yaml")),
        server = server_principal(),
    )
}

fn downstream_tls(id: &Identity, alpn: &[&str]) -> String {
    format!(
        "transport_socket:\n        name: envoy.transport_sockets.tls\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n          require_client_certificate: true\n          common_tls_context:\n{alpn}            tls_certificate_sds_secret_configs:\n            - {cert}\n            combined_validation_context:\n              default_validation_context:\n                match_typed_subject_alt_names:\n                - san_type: URI\n                  matcher: {{ prefix: \"spiffe://{TRUST_DOMAIN}/\" }}\n              validation_context_sds_secret_config: {root}\n",
        alpn = if alpn.is_empty() {
            String::new()
        } else {
            format!("            alpn_protocols: [{}]\n", alpn.join(", "))
        },
        cert = sds("default", &id.sds.join("default.yaml")),
        root = sds("ROOTCA", &id.sds.join("rootca.yaml")),
    )
}
