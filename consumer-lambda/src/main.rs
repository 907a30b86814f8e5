//! The consumer function's binary (`bootstrap`): one build serves the
//! consumer, the migration (`TASK=migrate`) and the custom resource that runs
//! it (`TASK=provision`), each a function with its own IAM role.

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
