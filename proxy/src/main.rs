//! The `proxy` binary: Envoy's command line. Not written yet.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    eprintln!("proxy: not implemented yet");
    std::process::ExitCode::FAILURE
}
