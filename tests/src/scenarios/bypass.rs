//! Scenario 4: attempts to get around a policy that admits only secure/sleep to httpbin:
//! calling the pod IP instead of the service, calling a port no service declares, and a
//! plaintext client forging an XFCC header. The policy holds every time and a forged
//! identity never reaches the app. Then STRICT for the namespace: plaintext attempts fail.

use crate::cp::model::{Action, MeshSpec, MtlsMode, spiffe_id};
use crate::mesh::report::{Expect, Peer, Report};
use crate::mesh::{Call, Mesh, MeshError, Options};

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

/// Where the attempts go.
struct Targets {
    svc: Call,
    pod: Call,
    undeclared: Call,
    open: Call,
}

fn forged(c: &Call) -> Call {
    let to = format!("{} +forged XFCC", c.to);
    c.clone()
        .header("X-Forwarded-Client-Cert", FORGED)
        .labelled(&to)
}

pub fn run(opts: Options, report: &mut Report) -> Result<(), MeshError> {
    let mesh = Mesh::start(spec(), opts)?;
    let t = Targets {
        svc: mesh.http_to_service("httpbin", "secure", "/headers")?,
        pod: mesh.http_to_pod("httpbin.secure", 8080, "/headers")?,
        undeclared: mesh.http_to_pod("httpbin.secure", 8081, "/headers")?,
        open: mesh.http_to_service("open", "secure", "/headers")?,
    };
    let sleep = || Expect::Ok(Peer::Mtls(spiffe_id("secure", "sleep")));
    let intruder = Expect::Ok(Peer::Mtls(spiffe_id("secure", "intruder")));
    // Where no policy stops a request, the forged identity is stripped: plaintext carries
    // no XFCC, and a sidecar client's header is replaced by its real identity.
    let permissive = [
        ("sleep.secure", t.svc.clone(), sleep()),
        ("intruder.secure", t.svc.clone(), Expect::Denied),
        ("intruder.secure", t.pod.clone(), Expect::Denied),
        ("intruder.secure", t.undeclared.clone(), Expect::Denied),
        ("sleep.legacy", forged(&t.svc), Expect::Denied),
        ("sleep.legacy", forged(&t.pod), Expect::Denied),
        ("sleep.legacy", forged(&t.undeclared), Expect::Denied),
        ("sleep.legacy", forged(&t.open), Expect::Ok(Peer::Plaintext)),
        ("intruder.secure", forged(&t.open), intruder),
    ];
    for (from, call, expect) in permissive {
        mesh.check(
            report,
            NAME,
            "PERMISSIVE, allow only sleep",
            from,
            &call,
            expect,
        );
    }

    let strict = peer_authn("default", "secure", None, MtlsMode::Strict);
    mesh.apply(|s| s.set_peer_authentication(strict))?;
    let attempts = [
        ("sleep.secure", t.svc.clone(), sleep()),
        ("intruder.secure", t.svc.clone(), Expect::Denied),
        ("intruder.secure", t.pod.clone(), Expect::Reset),
        ("intruder.secure", t.undeclared.clone(), Expect::Reset),
        ("sleep.legacy", forged(&t.svc), Expect::Reset),
        ("sleep.legacy", forged(&t.undeclared), Expect::Reset),
    ];
    for (from, call, expect) in attempts {
        mesh.check(report, NAME, "STRICT namespace", from, &call, expect);
    }
    super::finish(&mesh, report);
    Ok(())
}
