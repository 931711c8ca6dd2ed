//! The `berth` command line: pack, push, pull, inspect, diff, list and promote Kubernetes
//! configuration as OCI artifacts. Errors print one line plus a `hint:` line; exit codes
//! are documented in `berth --help` (0 ok, 1 generic, 2 usage, 3 invalid input,
//! 4 registry/network, 5 auth, 6 not found, 7 verification failed).

mod cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cmd::Cli::parse();
    // TLS failures are reported once, as berth's own error with a hint; the TLS stack's own
    // log line would say the same thing twice unless the user asked for detail.
    let quiet_tls = matches!(cli.global.log_level.as_str(), "error" | "warn");
    let directives = if quiet_tls {
        format!("{},rustls=off", cli.global.log_level)
    } else {
        cli.global.log_level.clone()
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(cmd::Exit::Generic as u8);
        }
    };
    match runtime.block_on(cmd::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            if !failure.hint.is_empty() {
                eprintln!("hint: {}", failure.hint);
            }
            failure.exit.into()
        }
    }
}
