//! Scenario 0: traffic capture and plaintext TCP, the part of the mesh a proxy without TLS
//! or HTTP can already carry. Mesh-wide DISABLE and TCP services only, generated with the
//! [`Profile::TcpOnly`] profile (istiod's output less its HTTP parts). Connections from
//! and to sidecar pods go through iptables capture, virtualOutbound, the per-service
//! listener or PassthroughCluster, and virtualInbound to the app, which sees them arrive
//! from 127.0.0.6 (the inbound cluster's bind address).

use crate::cp::istiod::Profile;
use crate::cp::model::{MeshSpec, MtlsMode, ROOT_NAMESPACE};
use crate::mesh::report::{Expect, Report};
use crate::mesh::{Call, CallKind, Mesh, MeshError, Options};

use super::fixtures::{client, peer_authn, server, tcp_service, vip};

const NAME: &str = "tcp-plaintext";

pub fn spec() -> MeshSpec {
    MeshSpec {
        services: vec![
            tcp_service("tcp-echo", "plain", "tcp-echo", vip(1)),
            tcp_service("tcp-echo", "legacy", "tcp-echo", vip(2)),
        ],
        workloads: vec![
            server("tcp-echo", "plain", "tcp-echo", 1),
            server("tcp-echo", "legacy", "tcp-echo", 2).without_sidecar(),
            client("sleep", "plain", 3),
            client("sleep", "legacy", 4).without_sidecar(),
        ],
        peer_authentications: vec![peer_authn(
            "default",
            ROOT_NAMESPACE,
            None,
            MtlsMode::Disable,
        )],
        ..MeshSpec::default()
    }
}

pub fn run(opts: Options, report: &mut Report) -> Result<(), MeshError> {
    let opts = Options {
        profile: Profile::TcpOnly,
        ..opts
    };
    let mesh = Mesh::start(spec(), opts)?;
    let inbound = Expect::EchoFrom("127.0.0.6".into());
    let meshed = mesh.tcp_to_service("tcp-echo", "plain", 9000)?;
    let legacy = mesh.tcp_to_service("tcp-echo", "legacy", 9000)?;
    let pod_ip = mesh.pod("tcp-echo.plain")?.workload.ip;
    let direct = Call {
        to: format!("tcp-echo.plain@{pod_ip}:9000"),
        kind: CallKind::Tcp((pod_ip, 9000).into()),
    };
    let sleep_ip = mesh.pod("sleep.plain")?.workload.ip.to_string();
    let step = "DISABLE, TCP only";
    mesh.check(report, NAME, step, "sleep.plain", &meshed, inbound.clone());
    mesh.check(report, NAME, step, "sleep.plain", &direct, inbound.clone());
    mesh.check(report, NAME, step, "sleep.legacy", &meshed, inbound.clone());
    mesh.check(report, NAME, step, "sleep.legacy", &direct, inbound);
    mesh.check(
        report,
        NAME,
        step,
        "sleep.plain",
        &legacy,
        Expect::EchoFrom(sleep_ip),
    );
    super::finish(&mesh, report);
    Ok(())
}
