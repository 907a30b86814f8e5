//! The default task: the consumer, invoked by the event source mapping.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::json;
use support::FromEnv;
use support::lambda::epoch_millis;

use super::deadline;
use crate::invocation::Invocation;
use crate::probe::BatchProbe;
use crate::{Config, Consumer, PgStore, SqsDeadLetterQueue, SqsRetryQueue};

/// Serves batches, the breaker's probe and the deploy canary's lookup.
pub async fn run() -> Result<(), Error> {
    let config = Config::from_env()?;
    // Built once per execution environment. The database connection is made on
    // the first batch, not here, so the cold start does not wait for it.
    let store = PgStore::new(config.database, 1).await?;
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let consumer = Consumer::new(
        &store,
        SqsRetryQueue::new(sqs.clone(), config.queue_url),
        SqsDeadLetterQueue::new(sqs, config.dlq_url),
        config.retry,
    );
    let probe = BatchProbe::of(&store, config.retry);
    let (store, consumer, probe) = (&store, &consumer, &probe);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<Invocation>| async move {
            match event.payload {
                Invocation::Batch(batch) => {
                    let deadline = deadline(event.context.deadline);
                    // Boxed: the handler's future is deep, and so would be the runtime's around it.
                    let handled = Box::pin(consumer.handle(batch, deadline)).await?;
                    // Metrics travel as an EMF line on stdout, which CloudWatch Logs extracts.
                    let function = &event.context.env_config.function_name;
                    println!("{}", handled.metrics.to_emf(function, epoch_millis()));
                    Ok::<_, Error>(serde_json::to_value(handled.response)?)
                }
                // The breaker asks whether a batch would be stored now; the
                // release hook also whether poison is answered as poison.
                Invocation::Probe(request) => Ok(serde_json::to_value(
                    Box::pin(probe.answer(request.poison)).await,
                )?),
                // scripts/deploy's canary asks whether its order is stored.
                Invocation::Lookup(lookup) => {
                    let stored = store.is_stored(lookup.order_id).await?;
                    Ok(json!({ "order_id": lookup.order_id, "stored": stored }))
                }
            }
        },
    ))
    .await
}
