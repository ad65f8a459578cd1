//! The mesh acceptance suite as `cargo test` cases: one test per scenario and mode. Needs
//! root (network namespaces, iptables, uid 1337) and Envoy; says SKIPPED otherwise.
//! `scripts/mesh-suite.sh` runs them all and prints the whole matrix.

use e2e::mesh::Mode;
use e2e::scenarios::Scenario;

fn run(name: &str, mode: Mode) {
    let test = format!("{name}_{}", mode.name());
    if !e2e::require_root(&test) || e2e::require_envoy(&test).is_none() {
        return;
    }
    let Some(scenario) = Scenario::find(name) else {
        panic!("no scenario {name}");
    };
    let report = scenario.run(mode);
    println!("{}", report.matrix());
    println!("{}", report.summary());
    assert_eq!(
        report.failed(),
        0,
        "{}\n{}",
        report.matrix(),
        report.summary()
    );
}

#[test]
fn auto_mtls_envoy() {
    run("auto-mtls", Mode::Envoy);
}

#[test]
fn authz_analyzer_envoy() {
    run("authz-analyzer", Mode::Envoy);
}

#[test]
fn authz_namespace_envoy() {
    run("authz-namespace", Mode::Envoy);
}

#[test]
fn bypass_envoy() {
    run("bypass", Mode::Envoy);
}

#[test]
fn tcp_envoy() {
    run("tcp", Mode::Envoy);
}

#[test]
fn cert_rotation_envoy() {
    run("cert-rotation", Mode::Envoy);
}

#[test]
fn cp_restart_envoy() {
    run("cp-restart", Mode::Envoy);
}
