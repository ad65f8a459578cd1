//! What the connection manager does to request headers before routing (Envoy's
//! `ConnectionManagerUtility::mutateRequestHeaders`): hop-by-hop headers, `x-forwarded-for`
//! and the trusted client address, `x-forwarded-proto`, internal/edge classification and
//! `x-envoy-*` sanitizing, `x-request-id`, and `x-forwarded-client-cert`.

use std::net::{IpAddr, SocketAddr};

use http::header::{CONNECTION, TRANSFER_ENCODING, UPGRADE, VIA};
use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::conn::{Downstream, PeerTls};
use crate::upstream::lb;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
pub const X_ENVOY_INTERNAL: HeaderName = HeaderName::from_static("x-envoy-internal");
pub const X_ENVOY_EXTERNAL_ADDRESS: HeaderName =
    HeaderName::from_static("x-envoy-external-address");
pub const X_ENVOY_ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");
pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
pub const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
pub const TE: HeaderName = HeaderName::from_static("te");

/// `x-envoy-*` request headers only trusted from internal requests.
const INTERNAL_HEADERS: &[&str] = &[
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-max-retries",
    "x-envoy-upstream-alt-stat-name",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-force-trace",
    "x-envoy-ip-tags",
    "x-envoy-original-url",
    "x-envoy-hedge-on-per-try-timeout",
];

/// Removed from edge requests only.
const EDGE_HEADERS: &[&str] = &[
    "x-envoy-decorator-operation",
    "x-envoy-downstream-service-cluster",
    "x-envoy-downstream-service-node",
];

/// `forward_client_cert_details`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardClientCert {
    #[default]
    Sanitize,
    ForwardOnly,
    AppendForward,
    SanitizeSet,
    AlwaysForwardOnly,
}

/// `set_current_client_cert_details`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientCertDetails {
    pub subject: bool,
    pub uri: bool,
    pub cert: bool,
    pub dns: bool,
}

/// The HCM settings that shape request headers.
#[derive(Debug, Clone)]
pub struct RequestHeaderConfig {
    pub use_remote_address: bool,
    pub xff_num_trusted_hops: u32,
    pub skip_xff_append: bool,
    pub via: Option<HeaderValue>,
    pub generate_request_id: bool,
    pub preserve_external_request_id: bool,
    pub forward_client_cert: ForwardClientCert,
    pub client_cert_details: ClientCertDetails,
    /// `internal_address_config.cidr_ranges`; empty means no address is internal (Envoy
    /// 1.40's default).
    pub internal_addresses: Vec<IpNet>,
    /// Appended to `x-forwarded-for` instead of a loopback peer (Envoy's local address).
    pub local_address: IpAddr,
}

impl Default for RequestHeaderConfig {
    fn default() -> Self {
        Self {
            use_remote_address: false,
            xff_num_trusted_hops: 0,
            skip_xff_append: false,
            via: None,
            generate_request_id: true,
            preserve_external_request_id: false,
            forward_client_cert: ForwardClientCert::Sanitize,
            client_cert_details: ClientCertDetails::default(),
            internal_addresses: Vec::new(),
            local_address: local_address(),
        }
    }
}

/// What the mutation learned about the request.
#[derive(Debug, Clone, Copy)]
pub struct Classified {
    /// The trusted client address (`%DOWNSTREAM_REMOTE_ADDRESS%`).
    pub remote: SocketAddr,
    pub internal: bool,
    pub edge: bool,
}

// === impl RequestHeaderConfig ===

impl RequestHeaderConfig {
    /// Rewrites the request headers as Envoy's HCM does before routing. `upgrade` keeps
    /// `connection`/`upgrade` for WebSocket-style upgrades.
    pub fn mutate(&self, headers: &mut HeaderMap, ds: &Downstream, upgrade: bool) -> Classified {
        if !upgrade {
            headers.remove(CONNECTION);
            headers.remove(UPGRADE);
        }
        headers.remove(X_ENVOY_INTERNAL);
        headers.remove(KEEP_ALIVE);
        headers.remove(PROXY_CONNECTION);
        headers.remove(TRANSFER_ENCODING);
        if headers.get_all(http::header::REFERER).iter().count() > 1 {
            headers.remove(http::header::REFERER);
        }
        let tls = ds.tls.is_some();
        let scheme = HeaderValue::from_static(if tls { "https" } else { "http" });
        let mut trusted: Option<IpAddr> = None;
        let allow_trusted_checks;
        if self.use_remote_address {
            allow_trusted_checks = !headers.contains_key(X_FORWARDED_FOR);
            if self.xff_num_trusted_hops > 0 {
                trusted = last_xff_address(headers, self.xff_num_trusted_hops - 1);
            }
            if trusted.is_none() {
                trusted = Some(ds.peer.ip());
            }
            if !self.skip_xff_append {
                let ip = if ds.peer.ip().is_loopback() {
                    self.local_address
                } else {
                    ds.peer.ip()
                };
                append_xff(headers, ip);
            }
            if self.xff_num_trusted_hops == 0 || !headers.contains_key(X_FORWARDED_PROTO) {
                headers.insert(X_FORWARDED_PROTO, scheme.clone());
            }
        } else {
            // Envoy's default original IP detection: the XFF entry `xff_num_trusted_hops`
            // from the end; trusted-address checks only for a single-entry XFF.
            trusted = last_xff_address(headers, self.xff_num_trusted_hops);
            allow_trusted_checks = trusted.is_some()
                && headers
                    .get(X_FORWARDED_FOR)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| !v.contains(','));
        }
        if !headers.contains_key(X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO, scheme);
        }
        let internal = allow_trusted_checks
            && trusted.is_some_and(|ip| self.internal_addresses.iter().any(|n| n.contains(&ip)));
        let remote = match trusted {
            Some(ip) if ip == ds.peer.ip() => ds.peer,
            Some(ip) => SocketAddr::new(ip, 0),
            None => ds.peer,
        };
        let edge = !internal && self.use_remote_address;
        if internal {
            headers.insert(X_ENVOY_INTERNAL, HeaderValue::from_static("true"));
        } else {
            clean_internal_headers(headers, edge);
        }
        if let Some(via) = &self.via {
            append(headers, VIA, via.as_bytes(), b", ");
        }
        if edge {
            headers.insert(X_ENVOY_EXTERNAL_ADDRESS, ip_value(remote.ip()));
        }
        if self.generate_request_id {
            let force = !self.preserve_external_request_id && edge;
            let missing = headers.get(X_REQUEST_ID).is_none_or(|v| v.is_empty());
            if force || missing {
                headers.insert(X_REQUEST_ID, request_id());
            }
        }
        self.mutate_xfcc(headers, ds.tls.as_deref());
        Classified {
            remote,
            internal,
            edge,
        }
    }

    /// Envoy's `mutateXfccRequestHeader`.
    fn mutate_xfcc(&self, headers: &mut HeaderMap, tls: Option<&PeerTls>) {
        let mode = self.forward_client_cert;
        if mode == ForwardClientCert::AlwaysForwardOnly {
            return;
        }
        let cert = tls.and_then(|t| t.peer_certificate.as_ref().map(|c| (t, c)));
        let Some((tls, cert)) = cert.filter(|_| mode != ForwardClientCert::Sanitize) else {
            headers.remove(XFCC);
            return;
        };
        if mode == ForwardClientCert::ForwardOnly {
            return;
        }
        let mut parts: Vec<String> = Vec::new();
        for uri in &tls.local_uri_sans {
            parts.push(format!("By={uri}"));
        }
        if !cert.sha256_hex.is_empty() {
            parts.push(format!("Hash={}", cert.sha256_hex));
        }
        let d = self.client_cert_details;
        if d.subject {
            parts.push(format!("Subject=\"{}\"", cert.subject));
        }
        if d.uri {
            if cert.uri_sans.is_empty() {
                parts.push("URI=".to_string());
            }
            for uri in &cert.uri_sans {
                parts.push(format!("URI={uri}"));
            }
        }
        if d.cert && !cert.pem.is_empty() {
            parts.push(format!("Cert=\"{}\"", url_encode_pem(&cert.pem)));
        }
        if d.dns {
            for dns in &cert.dns_sans {
                parts.push(format!("DNS={dns}"));
            }
        }
        let value = parts.join(";");
        match mode {
            ForwardClientCert::AppendForward => append(headers, XFCC, value.as_bytes(), b","),
            _ => {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.insert(XFCC, v);
                }
            }
        }
    }
}

fn clean_internal_headers(headers: &mut HeaderMap, edge: bool) {
    if edge {
        for h in EDGE_HEADERS {
            headers.remove(*h);
        }
    }
    for h in INTERNAL_HEADERS {
        headers.remove(*h);
    }
}

/// Appends to a comma-separated header (or sets it).
fn append(headers: &mut HeaderMap, name: HeaderName, value: &[u8], sep: &[u8]) {
    let joined = match headers.get(&name) {
        Some(old) if !old.is_empty() => [old.as_bytes(), sep, value].concat(),
        _ => value.to_vec(),
    };
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(name, v);
    }
}

/// Appends the HCM's `via` value (requests and responses).
pub fn append_via(headers: &mut HeaderMap, via: &HeaderValue) {
    append(headers, VIA, via.as_bytes(), b", ");
}

fn append_xff(headers: &mut HeaderMap, ip: IpAddr) {
    append(headers, X_FORWARDED_FOR, ip.to_string().as_bytes(), b",");
}

fn ip_value(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Envoy's `getLastAddressFromXFF`: the address `skip` entries from the end of
/// `x-forwarded-for`.
pub fn last_xff_address(headers: &HeaderMap, skip: u32) -> Option<IpAddr> {
    let mut xff = headers.get(X_FORWARDED_FOR)?.to_str().ok()?;
    for _ in 0..skip {
        xff = &xff[..xff.rfind(',')?];
    }
    let last = match xff.rfind(',') {
        Some(i) => &xff[i + 1..],
        None => xff,
    };
    last.trim().parse().ok()
}

/// A random (version 4) UUID, as Envoy's request ID extension generates.
pub fn request_id() -> HeaderValue {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&lb::random().to_le_bytes());
    b[8..].copy_from_slice(&lb::random().to_le_bytes());
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 36];
    let mut o = 0;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[o] = b'-';
            o += 1;
        }
        out[o] = HEX[usize::from(byte >> 4)];
        out[o + 1] = HEX[usize::from(byte & 0xf)];
        o += 2;
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The PEM as Envoy puts it in `Cert="..."`.
fn url_encode_pem(pem: &str) -> String {
    let mut out = String::with_capacity(pem.len() + pem.len() / 8);
    for c in pem.chars() {
        match c {
            '\n' => out.push_str("%0A"),
            ' ' => out.push_str("%20"),
            '+' => out.push_str("%2B"),
            '/' => out.push_str("%2F"),
            '=' => out.push_str("%3D"),
            c => out.push(c),
        }
    }
    out
}

/// The address Envoy calls its local address: the first non-loopback IPv4 address of an
/// interface that is up, else loopback.
pub fn local_address() -> IpAddr {
    use nix::ifaddrs::getifaddrs;
    use nix::net::if_::InterfaceFlags;
    let found = getifaddrs().ok().and_then(|mut addrs| {
        addrs.find_map(|a| {
            if !a.flags.contains(InterfaceFlags::IFF_UP) {
                return None;
            }
            let ip = a.address?.as_sockaddr_in().map(|s| IpAddr::V4(s.ip()))?;
            (!ip.is_loopback()).then_some(ip)
        })
    });
    found.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

/// Removes connection-specific headers from a response (Envoy's `mutateResponseHeaders`),
/// keeping `connection`/`upgrade` on an upgrade response.
pub fn clean_response(headers: &mut HeaderMap, upgrade: bool) {
    if !upgrade {
        headers.remove(CONNECTION);
        headers.remove(UPGRADE);
    }
    headers.remove(TRANSFER_ENCODING);
    headers.remove(KEEP_ALIVE);
    headers.remove(PROXY_CONNECTION);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::PeerCertificate;
    use std::sync::Arc;

    fn downstream(peer: &str, tls: Option<PeerTls>) -> Downstream {
        Downstream {
            local: "10.0.0.1:8080".parse().unwrap(),
            peer: peer.parse().unwrap(),
            listener: Arc::from("l"),
            direction: Default::default(),
            filter_chain: Arc::from("c"),
            requested_server_name: None,
            tls: tls.map(Arc::new),
            original_src_mark: None,
        }
    }

    fn mtls() -> PeerTls {
        PeerTls {
            alpn: None,
            version: "TLSv1.3".into(),
            cipher: String::new(),
            peer_certificate: Some(PeerCertificate {
                uri_sans: vec!["spiffe://cluster.local/ns/default/sa/sleep".into()],
                dns_sans: vec!["sleep.default".into()],
                subject: "O=cluster.local".into(),
                sha256_hex: "abcd".into(),
                pem: "-----BEGIN CERTIFICATE-----\nMII+/=\n-----END CERTIFICATE-----\n".into(),
            }),
            local_uri_sans: vec!["spiffe://cluster.local/ns/default/sa/httpbin".into()],
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn cfg() -> RequestHeaderConfig {
        RequestHeaderConfig {
            local_address: "192.0.2.2".parse().unwrap(),
            ..RequestHeaderConfig::default()
        }
    }

    #[test]
    fn sidecar_defaults_keep_xff_and_strip_envoy_headers() {
        let mut h = headers(&[
            ("x-forwarded-for", "10.1.1.1"),
            ("x-envoy-retry-on", "5xx"),
            ("x-request-id", "abc"),
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
        ]);
        let c = cfg().mutate(&mut h, &downstream("10.0.0.9:1234", None), false);
        assert!(!c.edge && !c.internal);
        assert_eq!(
            c.remote,
            "10.1.1.1:0".parse::<SocketAddr>().unwrap(),
            "the client per XFF"
        );
        assert_eq!(h["x-forwarded-for"], "10.1.1.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-request-id"], "abc");
        for gone in ["x-envoy-retry-on", "connection", "keep-alive"] {
            assert!(!h.contains_key(gone), "{gone}");
        }
    }

    #[test]
    fn use_remote_address_appends_and_regenerates_request_id() {
        let cfg = RequestHeaderConfig {
            use_remote_address: true,
            ..cfg()
        };
        let mut h = headers(&[
            ("x-forwarded-for", "10.1.1.1"),
            ("x-request-id", "abc"),
            ("x-forwarded-proto", "https"),
        ]);
        let c = cfg.mutate(&mut h, &downstream("127.0.0.1:5000", None), false);
        assert!(c.edge);
        assert_eq!(
            h["x-forwarded-for"], "10.1.1.1,192.0.2.2",
            "loopback peers are replaced by the local address"
        );
        assert_eq!(
            h["x-forwarded-proto"], "http",
            "an untrusted hop's x-forwarded-proto is overwritten"
        );
        assert_eq!(h["x-envoy-external-address"], "127.0.0.1");
        assert_ne!(h["x-request-id"], "abc");
        let mut h = headers(&[]);
        cfg.mutate(&mut h, &downstream("10.0.0.9:1", None), false);
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
    }

    #[test]
    fn trusted_hops_pick_the_client_from_xff() {
        let cfg = RequestHeaderConfig {
            use_remote_address: true,
            xff_num_trusted_hops: 1,
            internal_addresses: vec!["10.0.0.0/8".parse().unwrap()],
            ..cfg()
        };
        let mut h = headers(&[
            ("x-forwarded-for", "1.2.3.4, 10.5.5.5"),
            ("x-forwarded-proto", "https"),
        ]);
        let c = cfg.mutate(&mut h, &downstream("10.0.0.9:1", None), false);
        assert_eq!(c.remote, "10.5.5.5:0".parse::<SocketAddr>().unwrap());
        assert!(
            !c.internal,
            "an XFF from the client disables trusted-address checks"
        );
        assert_eq!(
            h["x-forwarded-proto"], "https",
            "kept when hops are trusted"
        );
        assert_eq!(h["x-envoy-external-address"], "10.5.5.5");
        let mut h = headers(&[("x-envoy-retry-on", "5xx")]);
        let c = cfg.mutate(&mut h, &downstream("10.0.0.9:1", None), false);
        assert!(c.internal);
        assert_eq!(h["x-envoy-internal"], "true");
        assert_eq!(h["x-envoy-retry-on"], "5xx");
    }

    #[test]
    fn last_xff_address_skips_from_the_end() {
        let h = headers(&[("x-forwarded-for", "1.1.1.1,2.2.2.2, 3.3.3.3")]);
        assert_eq!(last_xff_address(&h, 0), Some("3.3.3.3".parse().unwrap()));
        assert_eq!(last_xff_address(&h, 2), Some("1.1.1.1".parse().unwrap()));
        assert_eq!(last_xff_address(&h, 3), None);
    }

    #[test]
    fn request_ids_are_uuid_v4() {
        let id = request_id();
        let s = id.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
        assert_ne!(request_id(), id);
    }

    fn xfcc(
        mode: ForwardClientCert,
        tls: Option<PeerTls>,
        incoming: Option<&str>,
    ) -> Option<String> {
        let cfg = RequestHeaderConfig {
            forward_client_cert: mode,
            client_cert_details: ClientCertDetails {
                subject: true,
                uri: true,
                cert: false,
                dns: true,
            },
            ..cfg()
        };
        let mut h = HeaderMap::new();
        if let Some(v) = incoming {
            h.insert(XFCC, v.parse().unwrap());
        }
        cfg.mutate(&mut h, &downstream("10.0.0.9:1", tls), false);
        h.get(XFCC).map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn xfcc_every_mode() {
        let mine = "By=spiffe://cluster.local/ns/default/sa/httpbin;Hash=abcd;Subject=\"O=cluster.local\";URI=spiffe://cluster.local/ns/default/sa/sleep;DNS=sleep.default";
        let prior = Some("By=x;URI=y");
        assert_eq!(xfcc(ForwardClientCert::Sanitize, Some(mtls()), prior), None);
        assert_eq!(
            xfcc(ForwardClientCert::ForwardOnly, Some(mtls()), prior).as_deref(),
            prior
        );
        assert_eq!(
            xfcc(ForwardClientCert::ForwardOnly, None, prior),
            None,
            "plaintext: removed"
        );
        assert_eq!(
            xfcc(ForwardClientCert::AppendForward, Some(mtls()), prior).unwrap(),
            format!("By=x;URI=y,{mine}")
        );
        assert_eq!(
            xfcc(ForwardClientCert::AppendForward, Some(mtls()), None).unwrap(),
            mine
        );
        assert_eq!(
            xfcc(ForwardClientCert::SanitizeSet, Some(mtls()), prior).unwrap(),
            mine
        );
        assert_eq!(
            xfcc(ForwardClientCert::AlwaysForwardOnly, None, prior).as_deref(),
            prior
        );
        let one_way = PeerTls {
            peer_certificate: None,
            ..mtls()
        };
        assert_eq!(
            xfcc(ForwardClientCert::AppendForward, Some(one_way), prior),
            None
        );
    }

    #[test]
    fn xfcc_cert_is_url_encoded() {
        let cfg = RequestHeaderConfig {
            forward_client_cert: ForwardClientCert::SanitizeSet,
            client_cert_details: ClientCertDetails {
                cert: true,
                ..Default::default()
            },
            ..cfg()
        };
        let mut h = HeaderMap::new();
        cfg.mutate(&mut h, &downstream("10.0.0.9:1", Some(mtls())), false);
        assert_eq!(
            h[XFCC],
            "By=spiffe://cluster.local/ns/default/sa/httpbin;Hash=abcd;Cert=\"-----BEGIN%20CERTIFICATE-----%0AMII%2B%2F%3D%0A-----END%20CERTIFICATE-----%0A\""
        );
    }

    #[test]
    fn upgrades_keep_connection_headers() {
        let mut h = headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        cfg().mutate(&mut h, &downstream("10.0.0.9:1", None), true);
        assert_eq!(h["upgrade"], "websocket");
        let mut r = headers(&[
            ("connection", "close"),
            ("transfer-encoding", "chunked"),
            ("x", "y"),
        ]);
        clean_response(&mut r, false);
        assert_eq!(r.len(), 1);
    }
}
