//! Scenario 1, Istio's "Automatic mutual TLS" task: namespaces `full` (httpbin and sleep
//! with sidecars), `partial` (httpbin with a sidecar and httpbin-nosidecar behind one
//! service) and `legacy` (no sidecars). sleep.full and sleep.legacy call every httpbin
//! under PERMISSIVE, STRICT and DISABLE on httpbin.full, then with an ISTIO_MUTUAL
//! DestinationRule while httpbin.full is DISABLE.

use crate::cp::model::{ClientTlsMode, DestinationRule, MeshSpec, MtlsMode, spiffe_id};
use crate::mesh::report::{Expect, Peer, Report};
use crate::mesh::{Mesh, MeshError, Options};

use super::fixtures::{client, http_service, peer_authn, server, vip};

const NAME: &str = "auto-mtls";
/// sleep.full's identity.
fn full_sleep() -> String {
    spiffe_id("full", "sleep")
}

pub fn spec() -> MeshSpec {
    MeshSpec {
        services: vec![
            http_service("httpbin", "full", "httpbin", vip(1)),
            http_service("httpbin", "partial", "httpbin", vip(2)),
            http_service("httpbin", "legacy", "httpbin", vip(3)),
        ],
        workloads: vec![
            server("httpbin", "full", "httpbin", 1),
            client("sleep", "full", 2),
            server("httpbin", "partial", "httpbin", 3),
            server("httpbin-nosidecar", "partial", "httpbin", 4).without_sidecar(),
            server("httpbin", "legacy", "httpbin", 5).without_sidecar(),
            client("sleep", "legacy", 6).without_sidecar(),
        ],
        ..MeshSpec::default()
    }
}

/// What sleep.`from` should see from httpbin.`to` when httpbin.full runs `full_mode`.
fn expect(from: &str, to: &str, full_mode: MtlsMode) -> Expect {
    match (from, to, full_mode) {
        ("legacy", "full", MtlsMode::Strict) => Expect::Reset,
        ("legacy", _, _) | ("full", "legacy", _) | ("full", "full", MtlsMode::Disable) => {
            Expect::Ok(Peer::Plaintext)
        }
        ("full", "partial", _) => Expect::Ok(Peer::MtlsIfSidecar(full_sleep())),
        _ => Expect::Ok(Peer::Mtls(full_sleep())),
    }
}

fn all_pairs(
    mesh: &Mesh,
    report: &mut Report,
    step: &str,
    full_mode: MtlsMode,
) -> Result<(), MeshError> {
    for from in ["full", "legacy"] {
        for to in ["full", "partial", "legacy"] {
            let call = mesh.http_to_service("httpbin", to, "/headers")?;
            // Two endpoints behind httpbin.partial: call it a few times to see both.
            let times = if to == "partial" { 4 } else { 1 };
            for _ in 0..times {
                let e = expect(from, to, full_mode);
                mesh.check(report, NAME, step, &format!("sleep.{from}"), &call, e);
            }
        }
    }
    Ok(())
}

pub fn run(opts: Options, report: &mut Report) -> Result<(), MeshError> {
    let mesh = Mesh::start(spec(), opts)?;
    all_pairs(&mesh, report, "PERMISSIVE", MtlsMode::Permissive)?;

    let pa = |mode| peer_authn("httpbin", "full", Some("httpbin"), mode);
    mesh.apply(|s| s.set_peer_authentication(pa(MtlsMode::Strict)))?;
    all_pairs(&mesh, report, "STRICT httpbin.full", MtlsMode::Strict)?;

    mesh.apply(|s| s.set_peer_authentication(pa(MtlsMode::Disable)))?;
    all_pairs(&mesh, report, "DISABLE httpbin.full", MtlsMode::Disable)?;

    mesh.apply(|s| {
        s.set_destination_rule(DestinationRule {
            name: "httpbin".into(),
            namespace: "full".into(),
            host: "httpbin.full.svc.cluster.local".into(),
            tls: ClientTlsMode::IstioMutual,
        });
    })?;
    let step = "DISABLE + DR ISTIO_MUTUAL";
    let call = mesh.http_to_service("httpbin", "full", "/headers")?;
    mesh.check(report, NAME, step, "sleep.full", &call, Expect::Status(503));
    mesh.check(
        report,
        NAME,
        step,
        "sleep.legacy",
        &call,
        Expect::Ok(Peer::Plaintext),
    );
    super::finish(&mesh, report);
    Ok(())
}
