//! The `bootstrap` binary Lambda runs: configuration, telemetry, then the runtime loop.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lambda_events::event::sqs::SqsEvent;
use consumer_lambda::{Config, Consumer, PgStore, SqsRetryQueue};
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = Config::from_env()?;
    // Built once per execution environment. The database connection is made on
    // the first batch, not here, so the cold start does not wait for it.
    let store = PgStore::new(config.database, 1).await?;
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let queue_url = config.queue_url.ok_or(
        "QUEUE_URL is not set: set it to the orders queue, whose failed records are postponed and requeued",
    )?;
    if config.retry.max_receive_count.is_none() {
        return Err("MAX_RECEIVE_COUNT is not set: set it to the queue's maxReceiveCount, so that valid records are requeued before they run out of receives".into());
    }
    let consumer = Consumer::new(
        store,
        SqsRetryQueue::new(aws_sdk_sqs::Client::new(&aws), queue_url),
        config.retry,
    );
    let function =
        std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "orders-consumer".into());

    let (consumer, function) = (&consumer, function.as_str());
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let deadline = deadline(event.context.deadline);
        // Boxed: the handler's future is deep, and so would be the runtime's around it.
        let handled = Box::pin(consumer.handle(event.payload, deadline)).await?;
        // Metrics travel as an EMF line on stdout, which CloudWatch Logs extracts.
        println!("{}", handled.metrics.to_emf(function, epoch_millis()));
        Ok::<_, Error>(handled.response)
    }))
    .await
}

/// The invocation's deadline (milliseconds since the epoch, from the Runtime
/// API) on the monotonic clock the handler's timers use.
fn deadline(deadline_ms: u64) -> tokio::time::Instant {
    let left = Duration::from_millis(deadline_ms.saturating_sub(epoch_millis()));
    tokio::time::Instant::now() + left
}

fn epoch_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}
