//! The `breaker` binary: telemetry, then the task `TASK` names: the circuit
//! breaker Lambda runs every minute (the default), or the consumer release's
//! pre-traffic hook (`TASK=hook`).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    match std::env::var("TASK").as_deref() {
        Err(_) | Ok("breaker") => breaker::function::run().await,
        Ok("hook") => breaker::hook::run().await,
        Ok(other) => Err(format!("TASK={other:?}: set breaker (the default) or hook").into()),
    }
}
