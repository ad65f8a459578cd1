#![allow(clippy::unwrap_used, clippy::expect_used)]
//! An ingress gateway as Istio configures one for a web app (the Spinnaker shape): TLS SIMPLE
//! on the HTTPS port with the certificate from SDS (a file source, as cert-manager's secret
//! mounted on a gateway), plain HTTP redirecting to HTTPS, and `/api/v1` routed to one
//! backend, everything else to another. The `proxy` binary and the real Envoy run the same
//! bootstrap; clients must see the same answers from both.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use e2e::ProxyProcess;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};

const PROXY: &str = env!("CARGO_BIN_EXE_proxy");
const HOST: &str = "spinnaker.example.com";

/// A backend answering every request with its name.
fn backend(name: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while let Ok(n @ 1..) = s.read(&mut buf) {
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}",
                            name.len()
                        );
                        if s.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA and the gateway's certificate for [`HOST`], written next to the SDS file.
struct Pki {
    ca_pem: String,
}

fn pki(dir: &Path) -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.subject_alt_names = vec![SanType::DnsName(HOST.try_into().unwrap())];
    let key = KeyPair::generate().unwrap();
    let cert = leaf
        .signed_by(&key, &Issuer::from_params(&ca, &ca_key))
        .unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    std::fs::write(
        dir.join("sds.yaml"),
        format!(
            "resources:\n- \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  \
             name: spinnaker-cert\n  tls_certificate:\n    certificate_chain: {{filename: {d}/tls.crt}}\n    \
             private_key: {{filename: {d}/tls.key}}\n",
            d = dir.display()
        ),
    )
    .unwrap();
    Pki { ca_pem }
}

fn hcm(prefix: &str, routes: &str) -> String {
    format!(
        r#"
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {prefix}
          route_config:
            name: {prefix}
            virtual_hosts:
            - name: {prefix}
              domains: ["{HOST}", "{HOST}:*"]
              routes: {routes}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}"#
    )
}

fn bootstrap(dir: &Path, http: u16, https: u16, api: u16, web: u16) -> String {
    let cluster = |name: &str, port: u16| {
        format!(
            "  - name: {name}\n    connect_timeout: 1s\n    load_assignment:\n      cluster_name: {name}\n      \
             endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]\n"
        )
    };
    format!(
        r#"
node: {{id: router~10.244.0.3~istio-ingressgateway.istio-system~istio-system.svc.cluster.local, cluster: istio-ingressgateway}}
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
static_resources:
  listeners:
  - name: http
    address: {{socket_address: {{address: 127.0.0.1, port_value: {http}}}}}
    filter_chains:
    - filters:{redirect}
  - name: https
    address: {{socket_address: {{address: 127.0.0.1, port_value: {https}}}}}
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}
    filter_chains:
    - filter_chain_match: {{server_names: ["{HOST}"]}}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificate_sds_secret_configs:
            - name: spinnaker-cert
              sds_config: {{path_config_source: {{path: {dir}/sds.yaml}}, resource_api_version: V3}}
      filters:{routes}
  clusters:
{api}{web}"#,
        redirect = hcm(
            "http",
            "[{match: {prefix: /}, redirect: {https_redirect: true}}]"
        ),
        routes = hcm(
            "https",
            "[{match: {prefix: /api/v1}, route: {cluster: api}}, {match: {prefix: /}, route: {cluster: web}}]"
        ),
        dir = dir.display(),
        api = cluster("api", api),
        web = cluster("web", web),
    )
}

/// Sends one request and returns the status line, `location` header and body.
fn request<S: Read + Write>(mut s: S, path: &str) -> (String, String, String) {
    let req = format!("GET {path} HTTP/1.1\r\nhost: {HOST}\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or("").to_string();
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .unwrap_or("")
        .to_string();
    (status, location, body.to_string())
}

fn tls_client(pki: &Pki, sni: &str, port: u16) -> std::io::Result<impl Read + Write> {
    let mut roots = rustls::RootCertStore::empty();
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(pki.ca_pem.as_bytes()).unwrap();
    roots.add(der).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    // Complete the handshake now, so a refused one is an error here.
    stream.conn.complete_io(&mut stream.sock)?;
    Ok(stream)
}

/// What a user sees from one gateway.
fn observe(pki: &Pki, http: u16, https: u16) -> Vec<String> {
    let plain = TcpStream::connect(("127.0.0.1", http)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut seen = vec![format!("{:?}", request(plain, "/deck/index.html"))];
    for path in ["/api/v1/pipelines", "/deck/index.html", "/"] {
        let answer = tls_client(pki, HOST, https).map(|s| request(s, path));
        seen.push(format!("{path}: {:?}", answer.map_err(|e| e.kind())));
    }
    let wrong = tls_client(pki, "other.example.com", https).map(|s| request(s, "/"));
    seen.push(format!(
        "other SNI: {}",
        if wrong.is_ok() { "served" } else { "refused" }
    ));
    seen
}

#[test]
fn ingress_gateway_answers_like_envoy() {
    let Some(envoy_bin) = e2e::require_envoy("ingress_gateway_answers_like_envoy") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (api, web) = (backend("api"), backend("web"));
    let mut seen = Vec::new();
    for bin in [envoy_bin.as_path(), Path::new(PROXY)] {
        let (http, https) = (free_port(), free_port());
        let p =
            ProxyProcess::start(bin, &bootstrap(dir.path(), http, https, api, web), &[]).unwrap();
        // The certificate comes from the SDS file shortly after start.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while tls_client(&pki, HOST, https).is_err() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        seen.push(observe(&pki, http, https));
        drop(p);
    }
    let (envoy, ours) = (&seen[0], &seen[1]);
    assert!(envoy[0].contains("301"), "envoy redirect: {envoy:?}");
    assert!(
        envoy[0].contains(&format!("https://{HOST}/deck/index.html")),
        "{envoy:?}"
    );
    assert!(envoy[1].contains("\"api\""), "{envoy:?}");
    assert!(envoy[2].contains("\"web\""), "{envoy:?}");
    assert_eq!(envoy[4], "other SNI: refused");
    assert_eq!(ours, envoy);
}
