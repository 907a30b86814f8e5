//! `bench`: figures printed side by side with a baseline from the same run.

use clap::{Parser, Subcommand};

mod consumer;

#[derive(Debug, Parser)]
#[command(about = "Benchmarks; run them through scripts/bench, which starts what they need")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Rows/s of the consumer's bulk insert against one INSERT per row and raw binary COPY.
    Consumer(consumer::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Consumer(args) => consumer::run(args).await,
    }
}
