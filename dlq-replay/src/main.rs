use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    // Logs go to stderr (stdout carries the table, the JSON and the summary).
    // By default only this tool's own events: the start and the counts of a replay.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "warn,dlq_replay=info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json().init();
    } else {
        logs.init();
    }
    match dlq_replay::cli::Cli::parse().run().await {
        Ok(code) => code,
        Err(err) => {
            // Each cause once, and not the SDK's own chain under an SqsError.
            eprintln!("error: {}", dlq_replay::queues::error_chain(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}
