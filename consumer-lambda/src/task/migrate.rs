//! `TASK=migrate`: the schema's owner at work, once per deploy.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};
use support::FromEnv;

use crate::config::MigrateConfig;
use crate::migrations::{self, Role};

/// Applies the migrations and grants the roles. The event may carry
/// `writer_password_verifier` and `reader_password_verifier`, the passwords as
/// SCRAM verifiers, so no password itself travels. Answers what it applied.
pub async fn run() -> Result<(), Error> {
    let config = MigrateConfig::from_env()?;
    let config = &config;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let verifier = |name: &str| event.payload.get(name).and_then(Value::as_str);
        let mut roles = vec![Role::writer(
            &config.writer,
            verifier("writer_password_verifier"),
        )?];
        if let Some(reader) = &config.reader {
            roles.push(Role::reader(reader, verifier("reader_password_verifier"))?);
        }
        let applied = migrations::connect_and_prepare(config.database.clone(), &roles).await?;
        tracing::info!(
            ?applied,
            writer = config.writer,
            reader = config.reader,
            "the schema is up to date and the roles granted"
        );
        Ok::<_, Error>(
            json!({ "applied": applied, "writer": config.writer, "reader": config.reader }),
        )
    }))
    .await
}
