//! The `iptables-init` binary: istio-iptables' command line.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use iptables_init::cli::{self, ProcessEnv};
use iptables_init::system::{Host, System};
use iptables_init::{capture, iptables, run, validation};

fn main() -> ExitCode {
    let flags = match cli::parse_args(std::env::args_os()) {
        Ok(flags) => flags,
        // Usage errors exit 2, --help and --version exit 0.
        Err(e) => e.exit(),
    };
    init_logging(flags.log_output_level.as_deref());

    let cfg = match cli::resolve(&flags, &ProcessEnv, &Host) {
        Ok(cfg) => cfg,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &cfg.network_namespace
        && let Err(e) = enter_netns(path)
    {
        tracing::error!("cannot enter network namespace {path}: {e}");
        return ExitCode::FAILURE;
    }
    tracing::debug!(?cfg, "configuration");

    if !cfg.skip_rule_apply {
        let plan = capture::plan(&cfg);
        let mut stdout = std::io::stdout();
        match run::run(&cfg, &plan, &iptables::ProcessRunner, &mut stdout) {
            Ok(outcome) => tracing::info!("done: {outcome:?}"),
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if cfg.run_validation && !cfg.dry_run {
        let ipv6 = Host.pod_is_ipv6(false).unwrap_or(false);
        if let Err(e) = validation::validate(&cfg, ipv6) {
            tracing::error!("{e}");
            tracing::error!("{}", validation::VALIDATION_FAILED_MESSAGE);
            return ExitCode::from(validation::VALIDATION_EXIT_CODE);
        }
    }
    ExitCode::SUCCESS
}

/// Moves this (still single-threaded) process into another network namespace, so that
/// every iptables command it runs applies there.
fn enter_netns(path: &str) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

/// Logs to stderr. `--log_output_level` takes Istio's `scope:level,...` form; the `default`
/// scope (or a bare level) sets ours. `RUST_LOG` overrides both.
fn init_logging(istio_levels: Option<&str>) {
    let level = istio_levels
        .into_iter()
        .flat_map(|s| s.split(','))
        .find_map(|item| match item.split_once(':') {
            Some(("default", level)) => Some(level),
            None => Some(item),
            _ => None,
        })
        .map(|level| match level.trim() {
            "debug" => "debug",
            "warn" => "warn",
            "error" | "fatal" => "error",
            "none" => "off",
            _ => "info",
        })
        .unwrap_or("info");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
