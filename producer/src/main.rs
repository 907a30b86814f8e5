//! The producer binary: logging, configuration from the environment, then [`producer::run`].

use anyhow::Context;
use support::FromEnv;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    producer::telemetry::init().context("setting up logging")?;
    let config = producer::Config::from_env().context("reading the configuration")?;
    producer::run(config).await.context("running the producer")
}
