//! Scenarios 2 and 3, Istio's authorization tasks. 2: a deny-all policy on `analyzer`
//! answers 403 `RBAC: access denied`; then an ALLOW for guestbook's service account with
//! POST only: POST 200, GET 403, other accounts 403. 3: a namespace-wide `spec: {}` denies
//! every workload of the namespace, and an allow-all on one workload opens only that one.

use crate::cp::istiod::bootstrap::AdsFlavor;
use crate::cp::model::{Action, MeshSpec, Rule, spiffe_id};
use crate::mesh::report::{Expect, Peer, Report};
use crate::mesh::{Mesh, MeshError, Options};

use super::fixtures::{authz, client, http_service, rule, server, vip};

pub fn analyzer_spec() -> MeshSpec {
    MeshSpec {
        services: vec![http_service("analyzer", "foo", "analyzer", vip(1))],
        workloads: vec![
            server("analyzer", "foo", "analyzer", 1),
            client("guestbook", "foo", 2),
            client("sleep", "foo", 3),
        ],
        ..MeshSpec::default()
    }
}

/// Scenario 2, over state-of-the-world ADS (`ISTIO_DELTA_XDS=false`).
pub fn run_analyzer(opts: Options, report: &mut Report) -> Result<(), MeshError> {
    const NAME: &str = "authz-analyzer";
    let opts = Options {
        ads: AdsFlavor::StateOfTheWorld,
        ..opts
    };
    let mesh = Mesh::start(analyzer_spec(), opts)?;
    let get = mesh.http_to_service("analyzer", "foo", "/data")?;
    let post = get.clone().method("POST");
    let guestbook = Expect::Ok(Peer::Mtls(spiffe_id("foo", "guestbook")));
    mesh.check(
        report,
        NAME,
        "no policy",
        "guestbook.foo",
        &get,
        guestbook.clone(),
    );

    mesh.apply(|s| {
        s.set_authorization_policy(authz(
            "deny-all",
            "foo",
            Some("analyzer"),
            Action::Allow,
            vec![],
        ))
    })?;
    let step = "allow-nothing on analyzer";
    mesh.check(report, NAME, step, "guestbook.foo", &get, Expect::Denied);
    mesh.check(report, NAME, step, "guestbook.foo", &post, Expect::Denied);
    mesh.check(report, NAME, step, "sleep.foo", &get, Expect::Denied);

    let allow = authz(
        "allow-guestbook-post",
        "foo",
        Some("analyzer"),
        Action::Allow,
        vec![rule(&["cluster.local/ns/foo/sa/guestbook"], &["POST"])],
    );
    mesh.apply(|s| s.set_authorization_policy(allow))?;
    let step = "+ ALLOW guestbook POST";
    mesh.check(report, NAME, step, "guestbook.foo", &post, guestbook);
    mesh.check(report, NAME, step, "guestbook.foo", &get, Expect::Denied);
    mesh.check(report, NAME, step, "sleep.foo", &post, Expect::Denied);
    mesh.check(report, NAME, step, "sleep.foo", &get, Expect::Denied);
    super::finish(&mesh, report);
    Ok(())
}

pub fn namespace_spec() -> MeshSpec {
    MeshSpec {
        services: vec![
            http_service("httpbin", "bar", "httpbin", vip(1)),
            http_service("helloworld", "bar", "helloworld", vip(2)),
        ],
        workloads: vec![
            server("httpbin", "bar", "httpbin", 1),
            server("helloworld", "bar", "helloworld", 2),
            client("sleep", "bar", 3),
            client("sleep", "legacy", 4).without_sidecar(),
        ],
        ..MeshSpec::default()
    }
}

/// Scenario 3.
pub fn run_namespace(opts: Options, report: &mut Report) -> Result<(), MeshError> {
    const NAME: &str = "authz-namespace";
    let mesh = Mesh::start(namespace_spec(), opts)?;
    let httpbin = mesh.http_to_service("httpbin", "bar", "/headers")?;
    let hello = mesh.http_to_service("helloworld", "bar", "/headers")?;
    let sleep = Expect::Ok(Peer::Mtls(spiffe_id("bar", "sleep")));
    mesh.check(
        report,
        NAME,
        "no policy",
        "sleep.bar",
        &httpbin,
        sleep.clone(),
    );
    mesh.check(
        report,
        NAME,
        "no policy",
        "sleep.bar",
        &hello,
        sleep.clone(),
    );

    mesh.apply(|s| {
        s.set_authorization_policy(authz("allow-nothing", "bar", None, Action::Allow, vec![]))
    })?;
    let step = "namespace allow-nothing";
    for call in [&httpbin, &hello] {
        mesh.check(report, NAME, step, "sleep.bar", call, Expect::Denied);
        mesh.check(report, NAME, step, "sleep.legacy", call, Expect::Denied);
    }

    let allow_all = authz(
        "allow-all",
        "bar",
        Some("helloworld"),
        Action::Allow,
        vec![Rule::default()],
    );
    mesh.apply(|s| s.set_authorization_policy(allow_all))?;
    let step = "+ allow-all on helloworld";
    mesh.check(report, NAME, step, "sleep.bar", &hello, sleep);
    mesh.check(
        report,
        NAME,
        step,
        "sleep.legacy",
        &hello,
        Expect::Ok(Peer::Plaintext),
    );
    mesh.check(report, NAME, step, "sleep.bar", &httpbin, Expect::Denied);
    mesh.check(report, NAME, step, "sleep.legacy", &httpbin, Expect::Denied);
    super::finish(&mesh, report);
    Ok(())
}
