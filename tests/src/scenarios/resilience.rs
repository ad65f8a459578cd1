//! Scenarios 6 and 7: steady traffic while workload certificates rotate (short-lived
//! certificates, replaced at half-life as pilot-agent does), and while the control plane
//! is killed and restarted. Zero requests may fail; afterwards the new certificate is the
//! one on the wire, and config pushed after the restart takes effect.

use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::cp::model::{Action, MeshSpec, spiffe_id};
use crate::mesh::report::{Expect, Peer, Report, Row};
use crate::mesh::{Mesh, MeshError, Options};

use super::fixtures::{authz, client, http_service, server, tcp_service, vip};
use super::load::Load;

const GAP: Duration = Duration::from_millis(20);

pub fn spec(ns: &str) -> MeshSpec {
    MeshSpec {
        services: vec![
            http_service("httpbin", ns, "httpbin", vip(1)),
            tcp_service("tcp-echo", ns, "httpbin", vip(2)),
        ],
        workloads: vec![server("httpbin", ns, "httpbin", 1), client("sleep", ns, 2)],
        ..MeshSpec::default()
    }
}

/// Scenario 6: certificates live 6 s and each is replaced at half-life, for 12 s. (At 4 s
/// a rotation delayed by a loaded machine let a certificate expire mid-run.)
pub fn run_rotation(opts: Options, report: &mut Report) -> Result<(), MeshError> {
    const NAME: &str = "cert-rotation";
    const TTL: Duration = Duration::from_secs(6);
    let mesh = Mesh::start(
        spec("rot"),
        Options {
            cert_ttl: TTL,
            ..opts
        },
    )?;
    let call = mesh.http_to_service("httpbin", "rot", "/headers")?;
    let tcp = mesh.tcp_to_service("tcp-echo", "rot", 9000)?;
    let loads = [
        Load::start(&mesh, "sleep.rot", &call, GAP)?,
        Load::start(&mesh, "sleep.rot", &tcp, GAP)?,
    ];
    let rotations = rotate_at_half_life(
        &mesh,
        &["sleep.rot", "httpbin.rot"],
        Duration::from_secs(12),
    )?;
    // Traffic stops with the rotations: from here on nobody renews, and the last
    // certificates run out while the checks below wait for the older ones to expire.
    let tallies: Vec<_> = loads.into_iter().map(Load::stop).collect();
    // Past the previous certificates' expiry: only the newest can still handshake.
    std::thread::sleep(TTL / 2 + Duration::from_millis(300));
    let step = format!("{rotations} rotations, TTL {}s", TTL.as_secs());
    for (tally, to) in tallies.into_iter().zip([&call.to, &tcp.to]) {
        report
            .rows
            .push(Row::new(NAME, &step, &mesh.label("sleep.rot"), to).outcome(
                "0 failed",
                tally.describe(),
                tally.passed(),
            ));
    }

    check_wire_certificate(&mesh, report, NAME)?;
    for pod in ["sleep.rot", "httpbin.rot"] {
        check_active_secret(&mesh, report, NAME, pod)?;
    }
    super::finish(&mesh, report);
    Ok(())
}

/// Rotates each pod's certificate when half its lifetime has passed, as pilot-agent does,
/// for `period`. Returns how many rotations there were.
fn rotate_at_half_life(mesh: &Mesh, pods: &[&str], period: Duration) -> Result<u32, MeshError> {
    let end = SystemTime::now() + period;
    let mut rotations = 0;
    loop {
        let mut due = Vec::new();
        for pod in pods {
            let cert = mesh
                .cp()
                .cert(pod)
                .ok_or_else(|| MeshError::Unknown((*pod).to_string()))?;
            let life = cert
                .not_after
                .duration_since(cert.issued_at)
                .unwrap_or_default();
            due.push((cert.issued_at + life / 2, *pod));
        }
        let Some((when, pod)) = due.into_iter().min() else {
            return Ok(rotations);
        };
        if when > end {
            return Ok(rotations);
        }
        std::thread::sleep(when.duration_since(SystemTime::now()).unwrap_or_default());
        mesh.cp().rotate(pod)?;
        rotations += 1;
    }
}

/// A new mTLS connection to httpbin's sidecar is served with the newest certificate.
fn check_wire_certificate(mesh: &Mesh, report: &mut Report, name: &str) -> Result<(), MeshError> {
    let probe = mesh
        .cp()
        .issue(&spiffe_id("rot", "probe"), Duration::from_secs(60))?;
    let addr = std::net::SocketAddr::from((mesh.pod("httpbin.rot")?.workload.ip, 8080));
    let sni = "outbound_.8000_._.httpbin.rot.svc.cluster.local";
    let seen = crate::mesh::probe::server_certificate(mesh.node_ns(), addr, sni, &probe);
    let newest = mesh
        .cp()
        .cert("httpbin.rot")
        .map(|c| c.leaf_der)
        .unwrap_or_default();
    let (observed, pass) = match seen {
        Ok(der) if der == newest => ("newest".to_string(), true),
        Ok(_) => ("an older certificate".to_string(), false),
        Err(e) => (format!("handshake failed: {e}"), false),
    };
    report.rows.push(
        Row::new(
            name,
            "after rotation",
            "mTLS probe",
            &format!("{} {addr}", mesh.label("httpbin.rot")),
        )
        .outcome("presents newest cert", observed, pass),
    );
    Ok(())
}

/// What `istioctl proxy-config secret` shows: the active `default` secret is the newest
/// certificate the agent issued.
fn check_active_secret(
    mesh: &Mesh,
    report: &mut Report,
    name: &str,
    pod: &str,
) -> Result<(), MeshError> {
    use base64::Engine as _;
    let p = mesh.pod(pod)?;
    let newest = mesh.cp().cert(pod).map(|c| c.chain_pem).unwrap_or_default();
    let dump = p
        .sidecar
        .as_ref()
        .map(|sc| sc.admin(&p.ns, "/config_dump?resource=dynamic_active_secrets"))
        .transpose()
        .map_err(MeshError::io(format!("reading {pod}'s config dump")))?;
    let active = dump
        .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
        .and_then(|j| {
            j["configs"].as_array()?.iter().find_map(|c| {
                let secret = &c["secret"];
                (secret["name"] == "default").then(|| {
                    secret["tls_certificate"]["certificate_chain"]["inline_bytes"]
                        .as_str()
                        .map(str::to_string)
                })?
            })
        })
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .map(|pem| String::from_utf8_lossy(&pem).into_owned());
    let pass = active.as_deref() == Some(newest.as_str());
    let observed = match &active {
        Some(_) if pass => "newest".to_string(),
        Some(_) => "an older certificate".to_string(),
        None => "no active default secret in /config_dump".to_string(),
    };
    report.rows.push(
        Row::new(
            name,
            "after rotation",
            &mesh.label(pod),
            "admin /config_dump secrets",
        )
        .outcome("active default = newest", observed, pass),
    );
    Ok(())
}

/// Scenario 7: "istiod" is killed for 3 s under steady traffic, then restarted; every
/// sidecar reconnects, and a policy pushed afterwards takes effect.
pub fn run_restart(opts: Options, report: &mut Report) -> Result<(), MeshError> {
    const NAME: &str = "cp-restart";
    let mesh = Mesh::start(spec("cp"), opts)?;
    let call = mesh.http_to_service("httpbin", "cp", "/headers")?;
    let tcp = mesh.tcp_to_service("tcp-echo", "cp", 9000)?;
    let loads = [
        Load::start(&mesh, "sleep.cp", &call, GAP)?,
        Load::start(&mesh, "sleep.cp", &tcp, GAP)?,
    ];
    std::thread::sleep(Duration::from_secs(1));
    mesh.cp().kill();
    std::thread::sleep(Duration::from_secs(3));
    mesh.cp().restart()?;
    let reconnect = Instant::now();
    let synced = mesh.wait_synced();
    let took = reconnect.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    for (load, to) in loads.into_iter().zip([&call.to, &tcp.to]) {
        let tally = load.stop();
        report.rows.push(
            Row::new(NAME, "killed 3s, restarted", &mesh.label("sleep.cp"), to).outcome(
                "0 failed",
                tally.describe(),
                tally.passed(),
            ),
        );
    }
    let observed = match &synced {
        Ok(()) => format!("ACKed {:.1}s after restart", took.as_secs_f64()),
        Err(e) => e.to_string(),
    };
    report.rows.push(
        Row::new(NAME, "after restart", "all sidecars", "new control plane").outcome(
            "reconnect and ACK",
            observed,
            synced.is_ok(),
        ),
    );

    let deny = authz("deny-all", "cp", Some("httpbin"), Action::Allow, vec![]);
    mesh.apply(|s| s.set_authorization_policy(deny))?;
    mesh.check(
        report,
        NAME,
        "policy pushed after restart",
        "sleep.cp",
        &call,
        Expect::Denied,
    );
    mesh.apply(|s| s.remove_authorization_policy("cp", "deny-all"))?;
    let sleep = Expect::Ok(Peer::Mtls(spiffe_id("cp", "sleep")));
    mesh.check(report, NAME, "policy removed", "sleep.cp", &call, sleep);
    super::finish(&mesh, report);
    Ok(())
}
