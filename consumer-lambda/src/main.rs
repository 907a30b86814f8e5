//! The `bootstrap` binary Lambda runs: configuration, telemetry, then the runtime loop.

use aws_lambda_events::event::sqs::SqsEvent;
use consumer_lambda::{Config, PgStore, handle_batch};
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = Config::from_env()?;
    // Built once per execution environment; it connects on the first batch, not here,
    // so the cold start does not wait for the database.
    let store = PgStore::new(config.database, 1);
    let store = &store;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        handle_batch(event.payload, store)
            .await
            .map_err(Error::from)
    }))
    .await
}
