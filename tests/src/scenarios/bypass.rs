//! Scenario 4: attempts to get around a policy that admits only secure/sleep to httpbin:
//! calling the pod IP instead of the service, calling a port no service declares, and a
//! plaintext client forging an XFCC header. The policy holds every time and a forged
//! identity never reaches the app. Then STRICT for the namespace: plaintext attempts fail.

use crate::cp::model::{Action, MeshSpec, MtlsMode, spiffe_id};
use crate::mesh::report::{Expect, Peer, Report};
use crate::mesh::{Mesh, MeshError, Options};

use super::fixtures::{authz, client, http_service, peer_authn, rule, server, vip};

const NAME: &str = "bypass";
const FORGED: &str =
    "By=spiffe://cluster.local/ns/secure/sa/httpbin;URI=spiffe://cluster.local/ns/secure/sa/sleep";

pub fn spec() -> MeshSpec {
    MeshSpec {
        services: vec![
            http_service("httpbin", "secure", "httpbin", vip(1)),
            http_service("open", "secure", "open", vip(2)),
        ],
        workloads: vec![
            server("httpbin", "secure", "httpbin", 1),
            server("open", "secure", "open", 2),
            client("sleep", "secure", 3),
            client("intruder", "secure", 4),
            client("sleep", "legacy", 5).without_sidecar(),
        ],
        authorization_policies: vec![authz(
            "only-sleep",
            "secure",
            Some("httpbin"),
            Action::Allow,
            vec![rule(&["cluster.local/ns/secure/sa/sleep"], &[])],
        )],
        ..MeshSpec::default()
    }
}

pub fn run(opts: Options, report: &mut Report) -> Result<(), MeshError> {
    let mesh = Mesh::start(spec(), opts)?;
    let svc = mesh.http_to_service("httpbin", "secure", "/headers")?;
    let pod = mesh.http_to_pod("httpbin.secure", 8080, "/headers")?;
    let undeclared = mesh.http_to_pod("httpbin.secure", 8081, "/headers")?;
    let open = mesh.http_to_service("open", "secure", "/headers")?;
    let forged = |c: &crate::mesh::Call| {
        let to = format!("{} +forged XFCC", c.to);
        c.clone()
            .header("X-Forwarded-Client-Cert", FORGED)
            .labelled(&to)
    };
    let sleep = Expect::Ok(Peer::Mtls(spiffe_id("secure", "sleep")));

    let step = "PERMISSIVE, allow only sleep";
    mesh.check(report, NAME, step, "sleep.secure", &svc, sleep.clone());
    mesh.check(report, NAME, step, "intruder.secure", &svc, Expect::Denied);
    mesh.check(report, NAME, step, "intruder.secure", &pod, Expect::Denied);
    mesh.check(
        report,
        NAME,
        step,
        "intruder.secure",
        &undeclared,
        Expect::Denied,
    );
    mesh.check(
        report,
        NAME,
        step,
        "sleep.legacy",
        &forged(&svc),
        Expect::Denied,
    );
    mesh.check(
        report,
        NAME,
        step,
        "sleep.legacy",
        &forged(&pod),
        Expect::Denied,
    );
    mesh.check(
        report,
        NAME,
        step,
        "sleep.legacy",
        &forged(&undeclared),
        Expect::Denied,
    );
    // Where no policy stops the request, the forged identity is stripped: plaintext
    // carries no XFCC, and a sidecar client's header is replaced by its real identity.
    mesh.check(
        report,
        NAME,
        step,
        "sleep.legacy",
        &forged(&open),
        Expect::Ok(Peer::Plaintext),
    );
    let intruder = Expect::Ok(Peer::Mtls(spiffe_id("secure", "intruder")));
    mesh.check(
        report,
        NAME,
        step,
        "intruder.secure",
        &forged(&open),
        intruder,
    );

    mesh.apply(|s| {
        s.set_peer_authentication(peer_authn("default", "secure", None, MtlsMode::Strict))
    })?;
    let step = "STRICT namespace";
    mesh.check(report, NAME, step, "sleep.secure", &svc, sleep);
    mesh.check(report, NAME, step, "intruder.secure", &svc, Expect::Denied);
    mesh.check(report, NAME, step, "intruder.secure", &pod, Expect::Reset);
    mesh.check(
        report,
        NAME,
        step,
        "intruder.secure",
        &undeclared,
        Expect::Reset,
    );
    mesh.check(
        report,
        NAME,
        step,
        "sleep.legacy",
        &forged(&svc),
        Expect::Reset,
    );
    mesh.check(
        report,
        NAME,
        step,
        "sleep.legacy",
        &forged(&undeclared),
        Expect::Reset,
    );
    super::finish(&mesh, report);
    Ok(())
}
