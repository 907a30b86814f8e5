//! `TASK=provision`: the custom resource that has the migrate function run
//! during `sam deploy`.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::json;
use support::FromEnv;

use super::deadline;
use crate::config::ProvisionConfig;
use crate::provision::{
    self, HttpsResponder, LambdaMigrate, ProvisionEvent, SecretsManagerSecrets,
};

/// The custom resource `DatabaseSchema`: CloudFormation's request is served
/// and answered at its response URL; any other payload (scripts/deploy
/// --migrate) provisions and answers the caller.
pub async fn run() -> Result<(), Error> {
    let config = ProvisionConfig::from_env()?;
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let secret = SecretsManagerSecrets {
        client: aws_sdk_secretsmanager::Client::new(&aws),
        writer_arn: config.writer_secret_arn,
        reader_arn: config.reader_secret_arn,
    };
    let migrate = LambdaMigrate {
        client: aws_sdk_lambda::Client::new(&aws),
        function: config.migrate_function,
    };
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
