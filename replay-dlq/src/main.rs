use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    // Logs go to stderr (stdout carries the table, the JSON and the summary).
    // By default only this tool's own events: each run's summary.
    support::init_tool_logs("warn,replay_dlq=info");
    match replay_dlq::cli::Cli::parse().run().await {
        Ok(code) => code,
        Err(err) => {
            // Each cause once, and not the SDK's own chain under an SqsError.
            eprintln!("error: {}", support::sqs::sqs_error_chain(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}
