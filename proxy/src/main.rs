//! The `proxy` binary: Envoy's command line, so pilot-agent can run it in place of `envoy`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use proxy::bootstrap;
use proxy::cli::{self, Command, Mode, logging};

fn main() -> ExitCode {
    let program = std::env::args().next().unwrap_or_else(|| "proxy".into());
    let options = match cli::parse(std::env::args_os()) {
        Ok(Command::Run(options)) => options,
        Ok(Command::Version) => {
            // Envoy's exact layout: blank line, version line, blank line, on stdout.
            println!("\n{}\n", cli::version_line(&program));
            return ExitCode::SUCCESS;
        }
        Ok(Command::HotRestartVersion) => {
            // What Envoy prints when hot restart is disabled, which it always is here.
            eprint!("disabled");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Help(usage)) => {
            print!("{usage}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let log = match logging::init(&options.log) {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match proxy::limits::raise_nofile() {
        Ok((old, new)) if old != new => {
            tracing::info!("raised the open file limit from {old} to {new}");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot raise the open file limit: {e}"),
    }
    if !options.no_effect.is_empty() {
        tracing::info!(
            "accepted, but without effect in this proxy: {}",
            options.no_effect.join(", ")
        );
    }
    if options.mode == Mode::Validate {
        return match bootstrap::validate_mode(
            &options.bootstrap,
            proxy::server::check_static,
            &mut std::io::stdout(),
        ) {
            true => ExitCode::SUCCESS,
            false => ExitCode::FAILURE,
        };
    }
    let path = options
        .bootstrap
        .config_path
        .as_deref()
        .map(|p| p.display().to_string());
    let loaded = match bootstrap::load(&options.bootstrap) {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::error!(
                "error initializing configuration '{}': {e}",
                path.unwrap_or_default()
            );
            return ExitCode::FAILURE;
        }
    };
    if let Some(format) = logging::bootstrap_log_format(&loaded.bootstrap) {
        log.set_format(format);
    }
    proxy::server::run(*options, loaded, Some(log))
}
