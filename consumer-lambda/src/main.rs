//! The `bootstrap` binary Lambda runs: configuration, telemetry, then the
//! runtime loop. One binary serves three functions (one build): the consumer,
//! the migration (`TASK=migrate`, in the VPC) and the custom resource that runs
//! it during `sam deploy` (`TASK=provision`, outside the VPC), each with its
//! own IAM role. The circuit breaker is a binary of its own (`breaker`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use breaker::{Probe, ProbeAnswer};
use consumer_lambda::config::{MigrateConfig, ProvisionConfig};
use consumer_lambda::invocation::{Invocation, LookupAnswer};
use consumer_lambda::migrations::{self, WriterRole};
use consumer_lambda::probe::BatchProbe;
use consumer_lambda::provision::{
    self, HttpsResponder, LambdaMigrate, ProvisionEvent, SecretsManagerSecret,
};
use consumer_lambda::{Config, Consumer, PgStore, SqsDeadLetterQueue, SqsRetryQueue};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    match std::env::var("TASK").as_deref() {
        Err(_) | Ok("consume") => consume().await,
        Ok("migrate") => migrate().await,
        Ok("provision") => run_provision().await,
        Ok(other) => Err(format!(
            "TASK={other:?}: set consume (the default), migrate or provision (the breaker is its own binary)"
        )
        .into()),
    }
}

/// Applies the migrations as the tables' owner and grants the writer role.
/// The event may carry `writer_password_verifier`: the writer's password as a
/// SCRAM verifier (`scripts/deploy` derives it from the writer's secret), so
/// the password itself never travels. Answers the versions applied now.
async fn migrate() -> Result<(), Error> {
    let config = MigrateConfig::from_env()?;
    let config = &config;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let verifier = event
            .payload
            .get("writer_password_verifier")
            .and_then(Value::as_str);
        let writer = WriterRole::new(&config.writer, verifier)?;
        let applied = migrations::connect_and_prepare(config.database.clone(), &writer).await?;
        tracing::info!(
            ?applied,
            writer = writer.name(),
            "the schema is up to date and the writer granted"
        );
        Ok::<_, Error>(json!({ "applied": applied, "writer": writer.name() }))
    }))
    .await
}

/// The custom resource `DatabaseSchema`: CloudFormation's request is served
/// and answered at its response URL; any other payload (scripts/deploy
/// --migrate) provisions and answers the caller.
async fn run_provision() -> Result<(), Error> {
    let config = ProvisionConfig::from_env()?;
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let secret = SecretsManagerSecret::new(
        aws_sdk_secretsmanager::Client::new(&aws),
        config.writer_secret_arn,
    );
    let migrate = LambdaMigrate::new(aws_sdk_lambda::Client::new(&aws), config.migrate_function);
    let responder = HttpsResponder::new()?;
    let (secret, migrate, responder) = (&secret, &migrate, &responder);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<ProvisionEvent>| async move {
            let deadline = deadline(event.context.deadline);
            match event.payload {
                ProvisionEvent::CustomResource(request) => {
                    let logs = format!(
                        "log group {}, stream {}",
                        event.context.env_config.log_group, event.context.env_config.log_stream
                    );
                    let status =
                        provision::serve(&request, secret, migrate, responder, deadline, &logs)
                            .await?;
                    Ok::<_, Error>(json!({ "answered": status }))
                }
                ProvisionEvent::Direct(_) => {
                    let until = deadline
                        .checked_sub(provision::RESPONSE_MARGIN)
                        .unwrap_or(deadline);
                    Ok(provision::provision(secret, migrate, until).await?)
                }
            }
        },
    ))
    .await
}

async fn consume() -> Result<(), Error> {
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
    let function =
        std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "orders-consumer".into());

    let probe = BatchProbe::of(&store, config.retry);
    let (store, consumer, probe, function) = (&store, &consumer, &probe, function.as_str());
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<Invocation>| async move {
            match event.payload {
                Invocation::Batch(batch) => {
                    let deadline = deadline(event.context.deadline);
                    // Boxed: the handler's future is deep, and so would be the runtime's around it.
                    let handled = Box::pin(consumer.handle(batch, deadline)).await?;
                    // Metrics travel as an EMF line on stdout, which CloudWatch Logs extracts.
                    println!("{}", handled.metrics.to_emf(function, epoch_millis()));
                    Ok::<_, Error>(serde_json::to_value(handled.response)?)
                }
                // The breaker asks whether a batch would be stored now.
                Invocation::Probe => Ok(serde_json::to_value(ProbeAnswer::from(
                    Box::pin(probe.probe()).await,
                ))?),
                // scripts/deploy's canary asks whether its order is stored.
                Invocation::Lookup(lookup) => {
                    let stored = store.is_stored(lookup.order_id).await?;
                    Ok(serde_json::to_value(LookupAnswer {
                        order_id: lookup.order_id,
                        stored,
                    })?)
                }
            }
        },
    ))
    .await
}

/// The invocation's deadline on the monotonic clock the handler's timers use.
fn deadline(deadline_ms: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + time_left(deadline_ms, epoch_millis())
}

/// 2020-01-01 in milliseconds since the epoch: no real deadline is earlier.
const PLAUSIBLE_EPOCH_MS: u64 = 1_577_836_800_000;

/// Lambda's Runtime API gives the deadline in milliseconds since the epoch.
/// cargo-lambda's emulator gives the timeout itself (600000 for ten minutes):
/// a value that small is a duration, not a moment in 1970, and reading it as a
/// moment would leave no time at all.
fn time_left(deadline_ms: u64, now_ms: u64) -> Duration {
    if deadline_ms < PLAUSIBLE_EPOCH_MS {
        Duration::from_millis(deadline_ms)
    } else {
        Duration::from_millis(deadline_ms.saturating_sub(now_ms))
    }
}

fn epoch_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_802_192_033;

    #[test]
    fn a_deadline_since_the_epoch_leaves_the_time_until_it() {
        assert_eq!(time_left(NOW + 29_500, NOW), Duration::from_millis(29_500));
        assert_eq!(time_left(NOW - 1, NOW), Duration::ZERO);
    }

    #[test]
    fn an_emulators_bare_timeout_is_read_as_the_time_left() {
        assert_eq!(time_left(600_000, NOW), Duration::from_secs(600));
    }
}
