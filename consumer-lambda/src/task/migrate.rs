//! `TASK=migrate`: the schema's owner at work, once per deploy.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

use crate::config::MigrateConfig;
use crate::migrations::{self, WriterRole};

/// Applies the migrations as the tables' owner and grants the writer role.
/// The event may carry `writer_password_verifier`: the writer's password as a
/// SCRAM verifier (`scripts/deploy` derives it from the writer's secret), so
/// the password itself never travels. Answers the versions applied now.
pub async fn run() -> Result<(), Error> {
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
