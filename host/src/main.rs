//! `reachy`: the command-line entry point. See `reachy --help`.

#![forbid(unsafe_code)]

use std::io::IsTerminal;

use clap::Parser;

mod cli;

fn main() -> std::process::ExitCode {
    // Without a desktop session (SSH, CI, a container) Mesa's Vulkan device-select layer looks
    // for a Wayland display and prints `XDG_RUNTIME_DIR is invalid or not set` twice whenever
    // the sim's cameras start. It only reorders GPUs, and wgpu picks its adapter itself: leave
    // it out there. Set here, first, while this process has one thread.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none()
        && std::env::var_os("NODEVICE_SELECT").is_none()
    {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
    let cli = cli::Cli::parse();
    // quiet by default: our crates say what they do, dependencies (zenoh's session chatter)
    // only warnings; -v for everything at info, -vv for debug; RUST_LOG overrides both
    let default = match cli.verbose {
        // (zenoh's connect failure is said once, by the error the command returns)
        0 => "warn,reachy=info,zenoh::net::runtime::orchestrator=error",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            std::process::ExitCode::from(2)
        }
    }
}

/// The error and its causes, each said once: a cause whose text an outer message already
/// quotes (`cannot read x: No such file…` over `No such file…`) is not repeated.
fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}
