//! Scenario 5: a TCP echo service under STRICT with a network RBAC policy admitting only
//! tcp/sleep on port 9000. A rule granting intruder HTTP methods cannot apply to TCP and is
//! dropped, as istiod drops it. Denied connections are closed without an answer.

use crate::cp::model::{Action, MeshSpec, MtlsMode, Operation, Rule, Source};
use crate::mesh::report::{Expect, Report};
use crate::mesh::{Mesh, MeshError, Options};

use super::fixtures::{authz, client, peer_authn, server, tcp_service, vip};

const NAME: &str = "tcp";

pub fn spec() -> MeshSpec {
    MeshSpec {
        services: vec![tcp_service("tcp-echo", "tcp", "tcp-echo", vip(1))],
        workloads: vec![
            server("tcp-echo", "tcp", "tcp-echo", 1),
            client("sleep", "tcp", 2),
            client("intruder", "tcp", 3),
            client("sleep", "legacy", 4).without_sidecar(),
        ],
        ..MeshSpec::default()
    }
}

fn from(principal: &str) -> Vec<Source> {
    vec![Source {
        principals: vec![principal.to_string()],
        namespaces: Vec::new(),
    }]
}

pub fn run(opts: Options, report: &mut Report) -> Result<(), MeshError> {
    let mesh = Mesh::start(spec(), opts)?;
    let echo = mesh.tcp_to_service("tcp-echo", "tcp", 9000)?;
    for who in ["sleep.tcp", "intruder.tcp", "sleep.legacy"] {
        mesh.check(
            report,
            NAME,
            "PERMISSIVE, no policy",
            who,
            &echo,
            Expect::Echo,
        );
    }

    let policy = authz(
        "tcp-echo",
        "tcp",
        Some("tcp-echo"),
        Action::Allow,
        vec![
            Rule {
                from: from("cluster.local/ns/tcp/sa/sleep"),
                to: vec![Operation {
                    ports: vec![9000],
                    ..Operation::default()
                }],
            },
            Rule {
                from: from("cluster.local/ns/tcp/sa/intruder"),
                to: vec![Operation {
                    methods: vec!["GET".into()],
                    ..Operation::default()
                }],
            },
        ],
    );
    mesh.apply(|s| {
        s.set_peer_authentication(peer_authn("default", "tcp", None, MtlsMode::Strict));
        s.set_authorization_policy(policy);
    })?;
    let step = "STRICT + allow sleep:9000";
    mesh.check(report, NAME, step, "sleep.tcp", &echo, Expect::Echo);
    mesh.check(report, NAME, step, "intruder.tcp", &echo, Expect::Reset);
    mesh.check(report, NAME, step, "sleep.legacy", &echo, Expect::Reset);
    super::finish(&mesh, report);
    Ok(())
}
