//! The whole mesh acceptance suite in one command: every scenario in the chosen modes,
//! the matrix of expected versus observed per request, and a final `N passed, N failed`.
//!
//! ```text
//! mesh-suite [--mode envoy|ours|mixed-ours-clients|mixed-ours-servers|all]... [SCENARIO]...
//! ```
//! Run it through `scripts/mesh-suite.sh`, which builds the binaries it needs first.

use std::process::ExitCode;
use std::time::Instant;

use e2e::mesh::Mode;
use e2e::mesh::report::Report;
use e2e::scenarios::{ALL, Scenario};

fn usage() -> String {
    let names: Vec<&str> = ALL.iter().map(|s| s.name).collect();
    format!(
        "usage: mesh-suite [--mode envoy|ours|mixed-ours-clients|mixed-ours-servers|all]... \
         [SCENARIO]...\nscenarios: {}",
        names.join(", ")
    )
}

fn parse() -> Result<(Vec<Mode>, Vec<&'static Scenario>), String> {
    let mut modes = Vec::new();
    let mut scenarios = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--mode" => {
                let m = args.next().ok_or_else(usage)?;
                if m == "all" {
                    modes.extend(Mode::ALL);
                } else {
                    modes.push(Mode::parse(&m).ok_or_else(usage)?);
                }
            }
            "-h" | "--help" => return Err(usage()),
            name => scenarios.push(Scenario::find(name).ok_or_else(usage)?),
        }
    }
    if modes.is_empty() {
        modes.push(Mode::Envoy);
    }
    if scenarios.is_empty() {
        scenarios.extend(ALL.iter());
    }
    Ok((modes, scenarios))
}

fn main() -> ExitCode {
    let (modes, scenarios) = match parse() {
        Ok(p) => p,
        Err(usage) => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    if !e2e::is_root() {
        println!(
            "SKIPPED mesh-suite: needs root (it creates network namespaces, runs iptables-init \
             and runs sidecars as uid 1337); run it as root, as CI does"
        );
        return ExitCode::SUCCESS;
    }
    if e2e::envoy_binary().is_none() {
        println!("SKIPPED mesh-suite: Envoy not found (scripts/install-deps.sh installs it)");
        return ExitCode::SUCCESS;
    }
    let started = Instant::now();
    let mut total = Report::default();
    for mode in &modes {
        for scenario in &scenarios {
            let t = Instant::now();
            let report = scenario.run(*mode);
            println!(
                "== {} ({}) in {:.1}s: {}",
                scenario.name,
                mode.name(),
                t.elapsed().as_secs_f64(),
                report.summary()
            );
            total.extend(report);
        }
    }
    println!();
    print!("{}", total.matrix());
    println!("\nmesh-suite took {:.1}s", started.elapsed().as_secs_f64());
    println!("{}", total.summary());
    if total.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
