//! `bench`: figures printed side by side with a baseline from the same run.
//!
//! # Layout
//! - `consumer`: rows/s of the consumer's bulk insert against one `INSERT` per row and raw binary `COPY`.
//! - `lambda`: init time, peak RSS and zip size of the real `bootstrap` under a fake Runtime API.
//! - `status`: `GET /orders/{order_id}` through local-alb against a primary-key `SELECT`, and the writes' cost of reads.
//! - `producer`: the producer under oha against its baseline, one `SendMessage` per order; their CPU per 1,000 orders.
//! - `markdown`: how their tables write figures.

use clap::{Parser, Subcommand};

mod consumer;
mod lambda;
mod markdown;
mod producer;
mod status;

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
    /// Init time, peak RSS and zip size of the real bootstrap under a fake Runtime API.
    Lambda(lambda::Args),
    /// The producer under oha against one SendMessage per order; their CPU per 1,000 orders.
    Producer(producer::Args),
    /// GET /orders/{order_id} through local-alb against a primary-key SELECT; the writes' cost of reads.
    Status(status::Args),
    /// The producer with one SendMessage per order, configured as the producer (`producer` runs it).
    #[command(hide = true)]
    BaselineProducer,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Consumer(args) => consumer::run(args).await,
        Command::Lambda(args) => lambda::run(args).await,
        Command::Producer(args) => producer::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::BaselineProducer => producer::baseline().await,
    }
}
