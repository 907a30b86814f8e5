//! The `breaker` binary Lambda runs every minute: telemetry, then the
//! library's [`breaker::function::run`].

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    breaker::function::run().await
}
