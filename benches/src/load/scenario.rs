//! The scenarios, named as issue 9 names them. `t`-suffixed ones are the plain-TCP
//! counterparts through a single `tcp_proxy` hop.

use super::bootstrap::Topology;
use super::client::Work;

/// Bytes of the HTTP response body the backend sends.
pub const HTTP_BODY: usize = 128;
/// Bytes per echo message.
pub const ECHO_SIZE: usize = 64;
/// Bytes per bulk transfer.
pub const BULK_BYTES: u64 = 10 << 20;

/// What a scenario reports its throughput in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Requests per second; CPU per 1k requests.
    Requests,
    /// Gbit/s; CPU per GB.
    Bytes,
}

/// One scenario.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Its name in reports and on the command line.
    pub id: &'static str,
    /// One line saying what it measures.
    pub what: &'static str,
    /// The proxies in the path.
    pub topology: Topology,
    /// What each request is.
    pub work: Work,
    /// Concurrent connections (0: the command line's `--connections`).
    pub connections: usize,
    /// Fixed-rate (latency) scenario: the command line's `--rate`.
    pub fixed_rate: bool,
    /// The direct scenario whose latency this one adds to (fixed-rate scenarios).
    pub baseline: Option<&'static str>,
    /// Throughput unit.
    pub unit: Unit,
}

const fn s(
    id: &'static str,
    what: &'static str,
    topology: Topology,
    work: Work,
    connections: usize,
) -> Scenario {
    Scenario {
        id,
        what,
        topology,
        work,
        connections,
        fixed_rate: false,
        baseline: None,
        unit: Unit::Requests,
    }
}

const fn l(
    id: &'static str,
    what: &'static str,
    topology: Topology,
    work: Work,
    baseline: Option<&'static str>,
) -> Scenario {
    Scenario {
        id,
        what,
        topology,
        work,
        connections: 0,
        fixed_rate: true,
        baseline,
        unit: Unit::Requests,
    }
}

const fn bulk(mut sc: Scenario) -> Scenario {
    sc.unit = Unit::Bytes;
    sc
}

const ECHO: Work = Work::Echo { size: ECHO_SIZE };
const HOLD: Work = Work::EchoHold { size: ECHO_SIZE };
const ECHO_NEW: Work = Work::EchoNewConn { size: ECHO_SIZE };
const BULK: Work = Work::Bulk { bytes: BULK_BYTES };
const H1: Work = Work::Http1 {
    body: HTTP_BODY,
    new_conn: false,
};
const H1_NEW: Work = Work::Http1 {
    body: HTTP_BODY,
    new_conn: true,
};
const H2: Work = Work::Http2 { body: HTTP_BODY };
const TCP_MTLS: Topology = Topology::PairTcpMtls {
    full_handshake: false,
};

/// Every scenario, in report order.
pub const ALL: &[Scenario] = &[
    s(
        "S0",
        "direct TCP echo, 64 B messages (ceiling)",
        Topology::Direct,
        ECHO,
        0,
    ),
    s(
        "S0h",
        "direct HTTP/1.1 GET (ceiling)",
        Topology::Direct,
        H1,
        0,
    ),
    bulk(s(
        "S0b",
        "direct 10 MiB transfers (ceiling)",
        Topology::Direct,
        BULK,
        1,
    )),
    s(
        "S1t",
        "one tcp_proxy hop, TCP echo 64 B",
        Topology::OneHopTcp,
        ECHO,
        0,
    ),
    s(
        "S4t",
        "one tcp_proxy hop, new connection per 64 B echo",
        Topology::OneHopTcp,
        ECHO_NEW,
        0,
    ),
    bulk(s(
        "S5t",
        "one tcp_proxy hop, 10 MiB transfers",
        Topology::OneHopTcp,
        BULK,
        1,
    )),
    s(
        "S1",
        "one HTTP hop (HCM + router), HTTP/1.1 keep-alive",
        Topology::OneHopHttp,
        H1,
        0,
    ),
    s(
        "S1h2",
        "one HTTP hop, h2c downstream, HTTP/1.1 upstream",
        Topology::OneHopHttp,
        H2,
        0,
    ),
    s(
        "S2",
        "sidecar pair, HTTP over mTLS, HTTP RBAC on the server",
        Topology::PairHttpMtls,
        H1,
        0,
    ),
    s(
        "S3",
        "sidecar pair, TCP echo over mTLS, network RBAC",
        TCP_MTLS,
        ECHO,
        0,
    ),
    s(
        "S4",
        "S2 with a new downstream connection per request",
        Topology::PairHttpMtls,
        H1_NEW,
        0,
    ),
    s(
        "S4H",
        "S3 with a new connection and full mTLS handshake per request",
        Topology::PairTcpMtls {
            full_handshake: true,
        },
        ECHO_NEW,
        0,
    ),
    bulk(s("S5", "10 MiB transfers through S3", TCP_MTLS, BULK, 1)),
    s(
        "C1k",
        "1,000 open idle connections through one tcp_proxy hop (RSS)",
        Topology::OneHopTcp,
        HOLD,
        1000,
    ),
    s(
        "C1k-mtls",
        "1,000 open idle connections through the S3 pair (RSS)",
        TCP_MTLS,
        HOLD,
        1000,
    ),
    l(
        "L0t",
        "direct TCP echo at a fixed rate",
        Topology::Direct,
        ECHO,
        None,
    ),
    l(
        "L0",
        "direct HTTP/1.1 at a fixed rate",
        Topology::Direct,
        H1,
        None,
    ),
    l(
        "L1t",
        "S1t at a fixed rate",
        Topology::OneHopTcp,
        ECHO,
        Some("L0t"),
    ),
    l(
        "L1",
        "S1 at a fixed rate",
        Topology::OneHopHttp,
        H1,
        Some("L0"),
    ),
    l(
        "L2",
        "S2 at a fixed rate",
        Topology::PairHttpMtls,
        H1,
        Some("L0"),
    ),
    l("L3", "S3 at a fixed rate", TCP_MTLS, ECHO, Some("L0t")),
];

/// The scenario named `id` (case-insensitive).
pub fn find(id: &str) -> Option<&'static Scenario> {
    ALL.iter().find(|s| s.id.eq_ignore_ascii_case(id))
}
