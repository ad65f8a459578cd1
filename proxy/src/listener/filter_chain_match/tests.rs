use std::net::SocketAddr;

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::listener::v3::filter_chain_match::ConnectionSourceType;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch};
use envoy_types::pb::google::protobuf::UInt32Value;

use super::*;

// --- building chains -----------------------------------------------------------------

/// A `FilterChainMatch` builder: `fcm().port(80).tls().alpn(&["h2"])`.
#[derive(Clone, Default)]
struct M(FilterChainMatch);

fn fcm() -> M {
    M::default()
}

fn cidr(s: &str) -> CidrRange {
    let (addr, len) = s.split_once('/').unwrap_or((s, "32"));
    CidrRange {
        address_prefix: addr.into(),
        prefix_len: Some(UInt32Value {
            value: len.parse().unwrap(),
        }),
    }
}

// === impl M ===

impl M {
    fn port(mut self, p: u32) -> Self {
        self.0.destination_port = Some(UInt32Value { value: p });
        self
    }
    fn dst(mut self, c: &str) -> Self {
        self.0.prefix_ranges.push(cidr(c));
        self
    }
    fn sni(mut self, names: &[&str]) -> Self {
        self.0.server_names = names.iter().map(|s| s.to_string()).collect();
        self
    }
    fn transport(mut self, t: &str) -> Self {
        self.0.transport_protocol = t.into();
        self
    }
    fn tls(self) -> Self {
        self.transport("tls")
    }
    fn raw(self) -> Self {
        self.transport("raw_buffer")
    }
    fn alpn(mut self, protos: &[&str]) -> Self {
        self.0.application_protocols = protos.iter().map(|s| s.to_string()).collect();
        self
    }
    fn direct(mut self, c: &str) -> Self {
        self.0.direct_source_prefix_ranges.push(cidr(c));
        self
    }
    fn source_type(mut self, t: ConnectionSourceType) -> Self {
        self.0.source_type = t as i32;
        self
    }
    fn src(mut self, c: &str) -> Self {
        self.0.source_prefix_ranges.push(cidr(c));
        self
    }
    fn src_port(mut self, p: u32) -> Self {
        self.0.source_ports.push(p);
        self
    }
}

fn build(
    chains: &[(&'static str, M)],
    default: Option<&'static str>,
) -> Result<FilterChainMatcher<&'static str>, FilterChainMatchError> {
    FilterChainMatcher::new(
        chains.iter().map(|(name, m)| ChainSpec {
            name,
            filter_chain_match: Some(&m.0),
            chain: *name,
        }),
        default,
    )
}

fn matcher(chains: &[(&'static str, M)]) -> FilterChainMatcher<&'static str> {
    build(chains, None).unwrap()
}

// --- describing connections ------------------------------------------------------------

/// A connection: `conn("10.0.0.1:80").from("10.1.1.1:4000").sni("a.com").tls()`.
#[derive(Clone)]
struct Conn {
    local: SocketAddr,
    remote: SocketAddr,
    direct: Option<SocketAddr>,
    sni: Option<&'static str>,
    tls: bool,
    alpn: Vec<&'static str>,
}

fn conn(local: &str) -> Conn {
    Conn {
        local: local.parse().unwrap(),
        remote: "10.99.0.1:40000".parse().unwrap(),
        direct: None,
        sni: None,
        tls: false,
        alpn: Vec::new(),
    }
}

// === impl Conn ===

impl Conn {
    fn from(mut self, remote: &str) -> Self {
        self.remote = remote.parse().unwrap();
        self
    }
    fn direct(mut self, direct: &str) -> Self {
        self.direct = Some(direct.parse().unwrap());
        self
    }
    fn sni(mut self, name: &'static str) -> Self {
        self.sni = Some(name);
        self
    }
    fn tls(mut self) -> Self {
        self.tls = true;
        self
    }
    fn alpn(mut self, protos: &[&'static str]) -> Self {
        self.alpn = protos.to_vec();
        self
    }
    fn info(&self) -> ConnectionInfo<'_> {
        ConnectionInfo {
            local: self.local,
            remote: self.remote,
            direct_remote: self.direct.unwrap_or(self.remote),
            server_name: self.sni.map(str::as_bytes),
            transport_protocol: if self.tls {
                TransportProtocol::Tls
            } else {
                TransportProtocol::RawBuffer
            },
            application_protocols: if self.alpn.is_empty() {
                AppProtocols::None
            } else {
                AppProtocols::Names(&self.alpn)
            },
        }
    }
}

fn pick<'m>(m: &'m FilterChainMatcher<&'static str>, c: &Conn) -> Option<&'m str> {
    m.select(&c.info()).copied()
}

// --- precedence ------------------------------------------------------------------------

#[test]
fn destination_port_exact_beats_chains_without_a_port() {
    let m = matcher(&[("port-80", fcm().port(80)), ("any-port", fcm())]);
    assert_eq!(pick(&m, &conn("10.0.0.1:80")), Some("port-80"));
    assert_eq!(pick(&m, &conn("10.0.0.1:81")), Some("any-port"));
}

#[test]
fn a_port_subtree_that_matches_nothing_does_not_fall_back_to_port_less_chains() {
    let chains = [("port-80-tls", fcm().port(80).tls()), ("any", fcm())];
    let m = build(&chains, None).unwrap();
    assert_eq!(pick(&m, &conn("10.0.0.1:80").tls()), Some("port-80-tls"));
    assert_eq!(pick(&m, &conn("10.0.0.1:80")), None, "closed, not 'any'");
    let m = build(&chains, Some("default")).unwrap();
    assert_eq!(pick(&m, &conn("10.0.0.1:80")), Some("default"));
}

#[test]
fn destination_ranges_pick_the_longest_prefix_else_chains_without_ranges() {
    let m = matcher(&[
        ("10/8", fcm().dst("10.0.0.0/8")),
        ("10.1/16", fcm().dst("10.1.0.0/16")),
        ("host", fcm().dst("10.1.2.3/32")),
        ("v6", fcm().dst("2001:db8::/32")),
        ("no-ranges", fcm()),
    ]);
    assert_eq!(pick(&m, &conn("10.1.2.3:80")), Some("host"));
    assert_eq!(pick(&m, &conn("10.1.9.9:80")), Some("10.1/16"));
    assert_eq!(pick(&m, &conn("10.9.9.9:80")), Some("10/8"));
    assert_eq!(pick(&m, &conn("192.168.0.1:80")), Some("no-ranges"));
    assert_eq!(pick(&m, &conn("[2001:db8::1]:80")), Some("v6"));
    assert_eq!(pick(&m, &conn("[2001:db9::1]:80")), Some("no-ranges"));
}

#[test]
fn an_ipv4_mapped_destination_matches_ipv6_ranges_until_canonicalised() {
    let m = matcher(&[
        ("v4", fcm().dst("10.0.0.0/8")),
        ("mapped", fcm().dst("::ffff:10.0.0.0/104")),
    ]);
    assert_eq!(pick(&m, &conn("[::ffff:10.1.2.3]:80")), Some("mapped"));
    let canonical = SocketAddr::new(canonical_ip("::ffff:10.1.2.3".parse().unwrap()), 80);
    assert_eq!(pick(&m, &conn(&canonical.to_string())), Some("v4"));
}

#[test]
fn destination_ranges_narrow_without_backtracking() {
    // The /32 wins on the address and then has nothing for raw_buffer: no match, even
    // though the /8 chain would have matched.
    let m = matcher(&[
        ("host-tls", fcm().dst("10.0.0.1/32").tls()),
        ("net", fcm().dst("10.0.0.0/8")),
    ]);
    assert_eq!(pick(&m, &conn("10.0.0.1:80").tls()), Some("host-tls"));
    assert_eq!(pick(&m, &conn("10.0.0.1:80")), None);
    assert_eq!(pick(&m, &conn("10.0.0.2:80")), Some("net"));
}

#[test]
fn server_names_exact_then_longest_wildcard_then_none() {
    let m = matcher(&[
        ("exact", fcm().sni(&["www.example.com"])),
        ("wild-example", fcm().sni(&["*.example.com"])),
        ("wild-com", fcm().sni(&["*.com"])),
        ("no-names", fcm()),
    ]);
    let at = |sni| pick(&m, &conn("10.0.0.1:443").tls().sni(sni));
    assert_eq!(at("www.example.com"), Some("exact"));
    assert_eq!(at("api.example.com"), Some("wild-example"));
    assert_eq!(at("a.b.example.com"), Some("wild-example"));
    assert_eq!(
        at("example.com"),
        Some("wild-com"),
        "*.example.com needs a label"
    );
    assert_eq!(at("example.org"), Some("no-names"));
    assert_eq!(at("WWW.Example.COM"), Some("exact"), "case-insensitive");
    assert_eq!(
        at("example.com."),
        Some("no-names"),
        "a trailing dot starts no suffix"
    );
    assert_eq!(pick(&m, &conn("10.0.0.1:443").tls()), Some("no-names"));
}

#[test]
fn a_matched_server_name_does_not_fall_back_when_later_criteria_fail() {
    let m = matcher(&[
        ("named-h2", fcm().sni(&["a.com"]).alpn(&["h2"])),
        ("any", fcm()),
    ]);
    assert_eq!(
        pick(&m, &conn("10.0.0.1:443").tls().sni("a.com").alpn(&["h2"])),
        Some("named-h2")
    );
    assert_eq!(pick(&m, &conn("10.0.0.1:443").tls().sni("a.com")), None);
    assert_eq!(
        pick(&m, &conn("10.0.0.1:443").tls().sni("b.com")),
        Some("any")
    );
}

#[test]
fn transport_protocol_exact_beats_unset() {
    let m = matcher(&[
        ("tls", fcm().tls()),
        ("raw", fcm().raw()),
        ("unset", fcm().alpn(&["x"])),
    ]);
    assert_eq!(pick(&m, &conn("10.0.0.1:80").tls()), Some("tls"));
    assert_eq!(pick(&m, &conn("10.0.0.1:80")), Some("raw"));
    let m = matcher(&[("tls", fcm().tls()), ("unset", fcm())]);
    assert_eq!(pick(&m, &conn("10.0.0.1:80")), Some("unset"));
    // raw_buffer exact, then an ALPN it lacks: the unset-transport chain is not consulted.
    let m = matcher(&[("raw-h2", fcm().raw().alpn(&["h2"])), ("unset", fcm())]);
    assert_eq!(pick(&m, &conn("10.0.0.1:80")), None);
}

#[test]
fn application_protocols_follow_the_connections_preference() {
    let m = matcher(&[
        ("h2", fcm().alpn(&["h2"])),
        ("http11", fcm().alpn(&["http/1.1"])),
        ("none", fcm()),
    ]);
    let at = |alpn: &[&'static str]| pick(&m, &conn("10.0.0.1:443").tls().alpn(alpn));
    assert_eq!(
        at(&["http/1.1", "h2"]),
        Some("http11"),
        "the client's first listed"
    );
    assert_eq!(at(&["h2", "http/1.1"]), Some("h2"));
    assert_eq!(
        at(&["spdy/3", "h2"]),
        Some("h2"),
        "unlisted protocols are skipped"
    );
    assert_eq!(at(&["spdy/3"]), Some("none"));
    assert_eq!(at(&[]), Some("none"));
}

#[test]
fn direct_source_ranges_use_the_direct_peer() {
    let m = matcher(&[("lb", fcm().direct("192.168.0.0/16")), ("other", fcm())]);
    let c = conn("10.0.0.1:80").from("1.2.3.4:5000");
    assert_eq!(pick(&m, &c.clone().direct("192.168.1.1:5000")), Some("lb"));
    assert_eq!(pick(&m, &c), Some("other"));
}

#[test]
fn source_type_local_means_loopback_or_same_ip() {
    use ConnectionSourceType::{External, SameIpOrLoopback};
    let m = matcher(&[
        ("local", fcm().source_type(SameIpOrLoopback)),
        ("external", fcm().source_type(External)),
    ]);
    let at = |local: &str, remote: &str| pick(&m, &conn(local).from(remote));
    assert_eq!(at("127.0.0.1:80", "127.0.0.1:5000"), Some("local"));
    assert_eq!(
        at("127.0.0.2:80", "127.0.0.1:5000"),
        Some("local"),
        "remote 127.0.0.1"
    );
    assert_eq!(at("10.0.0.1:80", "10.0.0.1:5000"), Some("local"), "same IP");
    assert_eq!(at("[::1]:80", "[::1]:5000"), Some("local"));
    // Envoy's loopback is exactly 127.0.0.1 / ::1, not 127.0.0.0/8.
    assert_eq!(at("127.0.0.3:80", "127.0.0.2:5000"), Some("external"));
    assert_eq!(at("10.0.0.1:80", "10.0.0.2:5000"), Some("external"));
}

#[test]
fn source_type_specific_beats_any_without_backtracking() {
    use ConnectionSourceType::SameIpOrLoopback;
    let m = matcher(&[
        (
            "local-from-10",
            fcm().source_type(SameIpOrLoopback).src("10.0.0.0/8"),
        ),
        ("any", fcm()),
    ]);
    assert_eq!(
        pick(&m, &conn("10.0.0.1:80").from("10.0.0.1:1")),
        Some("local-from-10")
    );
    assert_eq!(
        pick(&m, &conn("127.0.0.1:80").from("127.0.0.1:1")),
        None,
        "local, wrong range"
    );
    assert_eq!(
        pick(&m, &conn("10.0.0.1:80").from("10.0.0.2:1")),
        Some("any"),
        "external"
    );
}

#[test]
fn source_ranges_and_ports() {
    let m = matcher(&[
        ("net", fcm().src("10.0.0.0/8")),
        ("host", fcm().src("10.1.1.1/32")),
        ("host-port", fcm().src("10.1.1.1/32").src_port(5000)),
        ("any", fcm()),
    ]);
    let from = |remote: &str| pick(&m, &conn("10.0.0.1:80").from(remote));
    assert_eq!(from("10.1.1.1:5000"), Some("host-port"));
    assert_eq!(from("10.1.1.1:5001"), Some("host"));
    assert_eq!(from("10.2.2.2:5000"), Some("net"));
    assert_eq!(from("11.0.0.1:5000"), Some("any"));
}

#[test]
fn the_default_chain_takes_what_nothing_matches() {
    let m = build(&[("tls", fcm().tls())], Some("default")).unwrap();
    assert_eq!(pick(&m, &conn("10.0.0.1:80").tls()), Some("tls"));
    assert_eq!(pick(&m, &conn("10.0.0.1:80")), Some("default"));
    let only_default = build(&[], Some("default")).unwrap();
    assert_eq!(pick(&only_default, &conn("10.0.0.1:80")), Some("default"));
}

#[test]
fn chains_with_no_match_criteria_match_everything() {
    let m = FilterChainMatcher::new(
        [ChainSpec {
            name: "all",
            filter_chain_match: None,
            chain: 7,
        }],
        None,
    )
    .unwrap();
    assert_eq!(
        m.select(&conn("10.0.0.1:1").tls().sni("x").info()),
        Some(&7)
    );
    assert_eq!(m.chains(), &[7]);
}

#[test]
fn explicit_catch_all_range_wins_over_no_ranges() {
    // Envoy accepts this config but picks either chain depending on pointer hashing; we
    // pick the explicit range every time, for IPv4, and "no ranges" for IPv6.
    let m = matcher(&[("no-ranges", fcm()), ("explicit", fcm().dst("0.0.0.0/0"))]);
    assert_eq!(pick(&m, &conn("10.0.0.1:80")), Some("explicit"));
    assert_eq!(pick(&m, &conn("[2001:db8::1]:80")), Some("no-ranges"));
}

// --- config errors ---------------------------------------------------------------------

fn error(chains: &[(&'static str, M)]) -> String {
    build(chains, None).unwrap_err().to_string()
}

#[test]
fn identical_matches_are_rejected_naming_both_chains() {
    let err = error(&[("a", fcm().sni(&["x.com"])), ("b", fcm().sni(&["x.com"]))]);
    assert_eq!(
        err,
        "filter chain 'b' has the same matching rules defined as 'a'; give each chain a distinct filter_chain_match"
    );
    assert!(error(&[("", fcm()), ("", fcm())]).contains("#1 (unnamed)"));
}

#[test]
fn overlapping_matches_are_rejected_with_the_overlap() {
    let err = error(&[
        ("a", fcm().port(443).sni(&["x.com", "y.com"])),
        ("b", fcm().port(443).sni(&["y.com"])),
    ]);
    assert_eq!(
        err,
        "filter chains 'a' and 'b' have overlapping matching rules: both match destination_port 443, server name \"y.com\"; make one of them more specific"
    );
    // Normalisation makes these collide, as in Envoy.
    assert!(
        error(&[("a", fcm().sni(&["A.com"])), ("b", fcm().sni(&["a.com"]))])
            .contains("overlapping")
    );
    assert!(
        error(&[
            ("a", fcm().sni(&["*.a.com"])),
            ("b", fcm().sni(&[".a.com"]))
        ])
        .contains("\"*.a.com\"")
    );
    assert!(
        error(&[
            ("a", fcm().dst("10.0.0.1/8")),
            ("b", fcm().dst("10.0.0.0/8"))
        ])
        .contains("destination 10.0.0.0/8")
    );
    assert!(error(&[("a", fcm().alpn(&[""])), ("b", fcm())]).contains("every connection"));
}

#[test]
fn a_value_repeated_within_one_chain_is_rejected() {
    let err = error(&[("a", fcm().alpn(&["h2", "h2"]))]);
    assert!(
        err.starts_with("filter chain 'a' matches application protocol \"h2\" twice"),
        "{err}"
    );
}

#[test]
fn unimplemented_fields_are_rejected() {
    let mut suffix = fcm();
    suffix.0.address_suffix = "1.2.3.4".into();
    assert_eq!(
        error(&[("s", suffix)]),
        "filter chain 's' sets address_suffix or suffix_len, which Envoy does not implement; remove them"
    );
    let mut len = fcm();
    len.0.suffix_len = Some(UInt32Value { value: 3 });
    assert!(error(&[("l", len)]).contains("address_suffix or suffix_len"));
}

#[test]
fn partial_wildcards_are_rejected() {
    for bad in ["*w.example.com", "*", "www.*.com", "a*"] {
        let err = error(&[("w", fcm().sni(&[bad]))]);
        assert!(
            err.contains("partial wildcards are not supported"),
            "{bad}: {err}"
        );
    }
    // Envoy accepts these (the second can never match).
    assert!(build(&[("w", fcm().sni(&["*.", "*.*.com"]))], None).is_ok());
}

#[test]
fn invalid_ranges_are_rejected_naming_the_field() {
    assert_eq!(
        error(&[("c", fcm().src("10.0.0.300/8"))]),
        "filter chain 'c': source_prefix_ranges entry \"10.0.0.300\": malformed IP address \"10.0.0.300\""
    );
    assert!(
        error(&[("c", fcm().dst("::1/129"))])
            .contains("prefix_ranges entry \"::1\": prefix_len 129 is above 128")
    );
    assert!(
        error(&[("c", fcm().direct("/8"))])
            .contains("direct_source_prefix_ranges entry \"\": address_prefix is empty")
    );
    assert!(
        build(&[("c", fcm().direct("1.2.3.4/40"))], None).is_ok(),
        "clamped to /32"
    );
}

#[test]
fn out_of_range_ports_and_source_types_are_rejected() {
    assert_eq!(
        error(&[("p", fcm().port(70000))]),
        "filter chain 'p': destination_port 70000 is not a port; use 1-65535"
    );
    assert!(error(&[("p", fcm().port(0))]).contains("destination_port 0"));
    assert!(error(&[("p", fcm().src_port(0))]).contains("source_ports 0"));
    let mut ty = fcm();
    ty.0.source_type = 5;
    assert!(error(&[("t", ty)]).contains("source_type 5 is not ANY"));
}

#[test]
fn a_listener_needs_some_chain() {
    assert_eq!(
        build(&[], None).unwrap_err(),
        FilterChainMatchError::NoFilterChains
    );
}

#[test]
fn reports_which_inspectors_the_chains_need() {
    let plain = matcher(&[("a", fcm().port(80)), ("b", fcm().raw())]);
    assert!(!plain.needs_tls_inspector() && !plain.needs_http_inspector());
    assert!(matcher(&[("a", fcm().tls())]).needs_tls_inspector());
    assert!(matcher(&[("a", fcm().sni(&["x"]))]).needs_tls_inspector());
    let raw_alpn = matcher(&[("a", fcm().raw().alpn(&["http/1.1", "h2c"]))]);
    assert!(
        !raw_alpn.needs_tls_inspector(),
        "raw_buffer with ALPN: Envoy's rule"
    );
    assert!(raw_alpn.needs_http_inspector());
    assert!(!matcher(&[("a", fcm().tls().alpn(&["http/1.1"]))]).needs_http_inspector());
}

// --- Istio's virtualInbound --------------------------------------------------------------

/// The virtualInbound chains of a real Istio config dump (PERMISSIVE, service port 80).
fn authz_virtual_inbound() -> FilterChainMatcher<String> {
    let json: serde_json::Value =
        serde_json::from_str(include_str!("testdata/virtual_inbound_authz.json")).unwrap();
    let chains: Vec<FilterChain> = json["filter_chains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|fc| FilterChain {
            name: fc["name"].as_str().unwrap().into(),
            filter_chain_match: Some(match_from_json(&fc["filter_chain_match"])),
            ..Default::default()
        })
        .collect();
    FilterChainMatcher::from_filter_chains(&chains, None, |fc| {
        let m = fc.filter_chain_match.clone().unwrap_or_default();
        format!(
            "{} {} {}",
            fc.name,
            m.transport_protocol,
            m.application_protocols.join(",")
        )
        .trim_end()
        .to_string()
    })
    .unwrap()
}

fn match_from_json(j: &serde_json::Value) -> FilterChainMatch {
    let strings = |key: &str| -> Vec<String> {
        j[key].as_array().map_or_else(Vec::new, |a| {
            a.iter().map(|s| s.as_str().unwrap().to_string()).collect()
        })
    };
    FilterChainMatch {
        destination_port: j["destination_port"]
            .as_u64()
            .map(|p| UInt32Value { value: p as u32 }),
        prefix_ranges: j["prefix_ranges"].as_array().map_or_else(Vec::new, |a| {
            a.iter()
                .map(|r| CidrRange {
                    address_prefix: r["address_prefix"].as_str().unwrap().into(),
                    prefix_len: r["prefix_len"]
                        .as_u64()
                        .map(|l| UInt32Value { value: l as u32 }),
                })
                .collect()
        }),
        transport_protocol: j["transport_protocol"].as_str().unwrap_or_default().into(),
        application_protocols: strings("application_protocols"),
        server_names: strings("server_names"),
        ..Default::default()
    }
}

const MESH_TCP: &[&str] = &["istio-peer-exchange", "istio"];
const MESH_HTTP11: &[&str] = &["istio-http/1.1", "istio", "http/1.1"];
const MESH_H2: &[&str] = &["istio-h2", "istio", "h2"];

#[test]
fn istio_permissive_virtual_inbound_from_a_real_config_dump() {
    let m = authz_virtual_inbound();
    assert!(m.needs_tls_inspector() && m.needs_http_inspector());
    let pick = |c: Conn| m.select(&c.info()).cloned();
    let pod = |port| {
        conn(match port {
            80 => "10.244.0.7:80",
            15006 => "10.244.0.7:15006",
            _ => "10.244.0.7:8080",
        })
    };
    // A port without a service: the catch-all chains.
    assert_eq!(
        pick(pod(8080).tls().alpn(MESH_TCP)).as_deref(),
        Some("virtualInbound tls istio-peer-exchange,istio")
    );
    assert_eq!(
        pick(pod(8080).tls().alpn(MESH_HTTP11)).as_deref(),
        Some("virtualInbound-catchall-http tls istio-http/1.0,istio-http/1.1,istio-h2")
    );
    assert_eq!(
        pick(pod(8080).tls().alpn(MESH_H2)).as_deref(),
        Some("virtualInbound-catchall-http tls istio-http/1.0,istio-http/1.1,istio-h2")
    );
    assert_eq!(
        pick(pod(8080).alpn(&["http/1.1"])).as_deref(),
        Some("virtualInbound-catchall-http raw_buffer http/1.1,h2c")
    );
    assert_eq!(
        pick(pod(8080).alpn(&["h2c"])).as_deref(),
        Some("virtualInbound-catchall-http raw_buffer http/1.1,h2c")
    );
    assert_eq!(
        pick(pod(8080)).as_deref(),
        Some("virtualInbound raw_buffer"),
        "plain TCP"
    );
    assert_eq!(
        pick(pod(8080).tls()).as_deref(),
        Some("virtualInbound tls"),
        "app's own TLS, passed through"
    );
    assert_eq!(
        pick(pod(8080).tls().sni("app.example").alpn(&["h2"])).as_deref(),
        Some("virtualInbound tls")
    );
    // The service port's own chains win over the catch-alls.
    assert_eq!(
        pick(pod(80).tls().alpn(MESH_HTTP11)).as_deref(),
        Some("0.0.0.0_80 tls istio,istio-peer-exchange,istio-http/1.0,istio-http/1.1,istio-h2")
    );
    assert_eq!(
        pick(pod(80).alpn(&["http/1.1"])).as_deref(),
        Some("0.0.0.0_80 raw_buffer")
    );
    assert_eq!(pick(pod(80)).as_deref(), Some("0.0.0.0_80 raw_buffer"));
    // Non-mesh TLS to the HTTP service port: its subtree has nothing, and nothing else is
    // tried, so the connection is closed.
    assert_eq!(pick(pod(80).tls().alpn(&["h2"])), None);
    // Traffic to 15006 itself is the redirect loop: blackholed whatever it is.
    assert_eq!(
        pick(pod(15006).tls().alpn(MESH_TCP)).as_deref(),
        Some("virtualInbound-blackhole")
    );
    assert_eq!(
        pick(pod(15006)).as_deref(),
        Some("virtualInbound-blackhole")
    );
}

/// The STRICT layout istiod builds (filterchain_options.go): TLS chains only.
fn strict_virtual_inbound(service_ports: &[u32]) -> FilterChainMatcher<String> {
    let mut chains = vec![
        ("virtualInbound-blackhole".to_string(), fcm().port(15006)),
        (
            "virtualInbound-catchall-http".to_string(),
            fcm()
                .dst("0.0.0.0/0")
                .tls()
                .alpn(&["istio-http/1.0", "istio-http/1.1", "istio-h2"]),
        ),
        ("virtualInbound".to_string(), fcm().dst("0.0.0.0/0").tls()),
    ];
    for &port in service_ports {
        chains.push((format!("0.0.0.0_{port}"), fcm().port(port).tls()));
    }
    FilterChainMatcher::new(
        chains.iter().map(|(name, m)| ChainSpec {
            name,
            filter_chain_match: Some(&m.0),
            chain: name.clone(),
        }),
        None,
    )
    .unwrap()
}

#[test]
fn istio_strict_virtual_inbound_refuses_plaintext() {
    let m = strict_virtual_inbound(&[9080]);
    let pick = |c: Conn| m.select(&c.info()).cloned();
    assert_eq!(
        pick(conn("10.0.0.5:8080").tls().alpn(MESH_TCP)).as_deref(),
        Some("virtualInbound")
    );
    assert_eq!(
        pick(conn("10.0.0.5:8080").tls().alpn(MESH_H2)).as_deref(),
        Some("virtualInbound-catchall-http")
    );
    assert_eq!(
        pick(conn("10.0.0.5:9080").tls().alpn(MESH_TCP)).as_deref(),
        Some("0.0.0.0_9080")
    );
    // Plaintext: no raw_buffer chain and no default, so no chain: Envoy closes.
    for port in [8080, 9080, 80] {
        let plain = conn("10.0.0.5:8080");
        let plain = Conn {
            local: SocketAddr::new(plain.local.ip(), port),
            ..plain
        };
        assert_eq!(pick(plain.clone()), None, "port {port}");
        assert_eq!(pick(plain.alpn(&["http/1.1"])), None, "port {port}");
    }
    assert_eq!(
        pick(conn("10.0.0.5:15006")).as_deref(),
        Some("virtualInbound-blackhole")
    );
}

#[test]
fn istio_service_port_chains_win_over_the_catch_alls_at_scale() {
    let ports: Vec<u32> = (0..50).map(|i| 8000 + i * 7).collect();
    let m = strict_virtual_inbound(&ports);
    for &port in &ports {
        let c = conn("10.0.0.5:1").tls().alpn(MESH_TCP);
        let c = Conn {
            local: SocketAddr::new(c.local.ip(), port as u16),
            ..c
        };
        assert_eq!(
            m.select(&c.info()).map(String::as_str),
            Some(format!("0.0.0.0_{port}").as_str())
        );
    }
    let other = conn("10.0.0.5:8001").tls().alpn(MESH_TCP);
    assert_eq!(
        m.select(&other.info()).map(String::as_str),
        Some("virtualInbound")
    );
}
