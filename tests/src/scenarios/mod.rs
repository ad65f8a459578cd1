//! The acceptance scenarios, from Istio's own docs, with Istio's expected results. Each
//! builds its mesh, makes its requests, and records expected versus observed in a
//! [`Report`]; the same expectations hold whichever binary each sidecar runs.

pub mod authz;
pub mod auto_mtls;
pub mod bypass;
pub mod capture;
pub mod fixtures;
pub mod load;
pub mod resilience;
pub mod tcp;

use crate::mesh::report::Report;
use crate::mesh::{Mesh, MeshError, Mode, Options};

/// One scenario of the suite.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    pub name: &'static str,
    run: fn(Options, &mut Report) -> Result<(), MeshError>,
}

/// Every scenario, in the order.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "tcp-plaintext",
        run: capture::run,
    },
    Scenario {
        name: "auto-mtls",
        run: auto_mtls::run,
    },
    Scenario {
        name: "authz-analyzer",
        run: authz::run_analyzer,
    },
    Scenario {
        name: "authz-namespace",
        run: authz::run_namespace,
    },
    Scenario {
        name: "bypass",
        run: bypass::run,
    },
    Scenario {
        name: "tcp",
        run: tcp::run,
    },
    Scenario {
        name: "cert-rotation",
        run: resilience::run_rotation,
    },
    Scenario {
        name: "cp-restart",
        run: resilience::run_restart,
    },
];

// === impl Scenario ===

impl Scenario {
    /// Runs the scenario in `mode`; setup failures become report errors.
    pub fn run(&self, mode: Mode) -> Report {
        let mut report = Report::default();
        if let Err(e) = (self.run)(Options::new(mode), &mut report) {
            report
                .errors
                .push(format!("{} ({}): {e}", self.name, mode.name()));
        }
        report
    }

    /// The scenario called `name`.
    pub fn find(name: &str) -> Option<&'static Scenario> {
        ALL.iter().find(|s| s.name == name)
    }
}

/// After a scenario's checks: on a failure, print the sidecars' logs to stderr.
pub fn finish(mesh: &Mesh, report: &Report) {
    if report.failed() > 0 || std::env::var_os("E2E_KEEP_LOGS").is_some() {
        eprintln!(
            "sidecar logs ({}):\n{}",
            mesh.mode().name(),
            mesh.sidecar_logs()
        );
    }
}
