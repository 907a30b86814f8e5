//! The consumer function's binary (Lambda runs it as `bootstrap`): telemetry, then the task `TASK` names.
//! One binary serves three functions (one build): the consumer, the migration
//! (`TASK=migrate`, in the VPC) and the custom resource that runs it during
//! `sam deploy` (`TASK=provision`, outside the VPC), each with its own IAM
//! role. The circuit breaker is a binary of its own (`breaker`).

use consumer_lambda::task;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    match std::env::var("TASK").as_deref() {
        Err(_) | Ok("consume") => task::consume::run().await,
        Ok("migrate") => task::migrate::run().await,
        Ok("provision") => task::provision::run().await,
        Ok(other) => Err(format!(
            "TASK={other:?}: set consume (the default), migrate or provision (the breaker is its own binary)"
        )
        .into()),
    }
}
