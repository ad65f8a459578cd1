//! The mesh acceptance suite as `cargo test` cases: one test per scenario and mode. Needs
//! root (network namespaces, iptables, uid 1337) and Envoy; says SKIPPED otherwise.
//! `scripts/mesh-suite.sh` runs every scenario at once and prints the whole matrix.
//!
//! Modes: `envoy` (every sidecar is the real Envoy), `ours` (every sidecar is our proxy),
//! `mixed_ours_clients` / `mixed_ours_servers`. A scenario runs in a mode once our proxy
//! can carry it: turning a mode on is adding it to the scenario's list below.

use e2e::mesh::Mode;
use e2e::scenarios::Scenario;

fn run(name: &str, mode: Mode) {
    let test = format!("{name} ({})", mode.name());
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

/// `scenario!(fn_name, "scenario-name", [modes...])`: one test per mode, in a module
/// named after the scenario.
macro_rules! scenario {
    ($module:ident, $name:literal, [$($mode:ident),+ $(,)?]) => {
        mod $module {
            $(
                #[test]
                fn $mode() {
                    super::run($name, super::mode::$mode);
                }
            )+
        }
    };
}

/// Short names for the modes, used as test names.
#[allow(non_upper_case_globals)]
mod mode {
    use e2e::mesh::Mode;
    pub const envoy: Mode = Mode::Envoy;
    pub const ours: Mode = Mode::Ours;
    pub const mixed_ours_clients: Mode = Mode::OursClients;
    pub const mixed_ours_servers: Mode = Mode::OursServers;
}

// Every scenario runs with every sidecar ours, every sidecar Envoy, and each mix.
scenario!(
    tcp_plaintext,
    "tcp-plaintext",
    [envoy, ours, mixed_ours_clients, mixed_ours_servers]
);

scenario!(
    auto_mtls,
    "auto-mtls",
    [envoy, ours, mixed_ours_clients, mixed_ours_servers]
);
scenario!(
    authz_analyzer,
    "authz-analyzer",
    [envoy, ours, mixed_ours_clients, mixed_ours_servers]
);
scenario!(
    authz_namespace,
    "authz-namespace",
    [envoy, ours, mixed_ours_clients, mixed_ours_servers]
);
scenario!(
    bypass,
    "bypass",
    [envoy, ours, mixed_ours_clients, mixed_ours_servers]
);
scenario!(
    tcp,
    "tcp",
    [envoy, ours, mixed_ours_clients, mixed_ours_servers]
);
scenario!(
    cert_rotation,
    "cert-rotation",
    [envoy, ours, mixed_ours_clients, mixed_ours_servers]
);
scenario!(
    cp_restart,
    "cp-restart",
    [envoy, ours, mixed_ours_clients, mixed_ours_servers]
);
