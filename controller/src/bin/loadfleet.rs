//! `loadfleet`: the controller command line.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use loadfleet_controller::cli::{Cli, main_with};
use loadfleet_controller::exit::Exit;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return Exit::Fleet.into();
        }
    };
    rt.block_on(async {
        let interrupt = CancellationToken::new();
        let hard = CancellationToken::new();
        let (first, second) = (interrupt.clone(), hard.clone());
        // Ctrl-C, or SIGTERM (timeout, systemd, docker stop, Kubernetes):
        // the first stops gracefully and keeps every result, a second stops
        // at once.
        tokio::spawn(async move {
            loadfleet_agent::signal::stop_signal().await;
            first.cancel();
            loadfleet_agent::signal::stop_signal().await;
            second.cancel();
        });
        main_with(cli, interrupt, hard).await
    })
}
