//! The provision task's AWS side: the roles' secrets in Secrets Manager, the
//! migrate function through Lambda's `Invoke`, and the PUT to CloudFormation's
//! presigned URL.

use std::time::Duration;

use aws_sdk_lambda::error::{ProvideErrorMetadata, SdkError};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use super::{Migrate, MigrateOutcome, Passwords, ProvisionError, Respond, Secrets, Verifiers};
use crate::migrations::CONNECT_FAILED;

/// At most this much of a failed function's answer goes into the reason.
const REASON_BYTES: usize = 600;

/// The writer's and the reader's secrets: `{"username": …, "password": …}`,
/// as the template generates them.
#[derive(Debug, Clone)]
pub struct SecretsManagerSecrets {
    pub client: aws_sdk_secretsmanager::Client,
    pub writer_arn: String,
    pub reader_arn: Option<String>,
}

impl SecretsManagerSecrets {
    async fn password(&self, arn: &str) -> Result<String, ProvisionError> {
        let secret = self
            .client
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|err| ProvisionError::Secret {
                arn: arn.to_owned(),
                detail: support::error_chain(&err),
            })?;
        secret
            .secret_string()
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
            .and_then(|value| value.get("password")?.as_str().map(str::to_owned))
            .filter(|password| !password.is_empty())
            .ok_or_else(|| ProvisionError::NoPassword {
                arn: arn.to_owned(),
            })
    }
}

impl Secrets for SecretsManagerSecrets {
    async fn passwords(&self) -> Result<Passwords, ProvisionError> {
        let writer = self.password(&self.writer_arn).await?;
        let reader = match &self.reader_arn {
            Some(arn) => Some(self.password(arn).await?),
            None => None,
        };
        Ok(Passwords { writer, reader })
    }
}

/// The migrate function, invoked synchronously
/// (<https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html>).
#[derive(Debug, Clone)]
pub struct LambdaMigrate {
    pub client: aws_sdk_lambda::Client,
    /// Its name or ARN.
    pub function: String,
}

impl Migrate for LambdaMigrate {
    async fn migrate(&self, verifiers: &Verifiers) -> MigrateOutcome {
        let payload = json!(verifiers).to_string();
        match support::lambda::invoke(&self.client, &self.function, payload).await {
            Ok(answer) => read_answer(answer.function_error.as_deref(), &answer.payload),
            Err(err) => invoke_failed(&err),
        }
    }
}

/// The function's answer, or the function error Lambda reports for it.
fn read_answer(function_error: Option<&str>, payload: &[u8]) -> MigrateOutcome {
    let Some(kind) = function_error else {
        return match serde_json::from_slice::<Value>(payload) {
            Ok(answer) => MigrateOutcome::Applied(answer),
            Err(err) => {
                MigrateOutcome::Failed(format!("the migrate function answered no JSON: {err}"))
            }
        };
    };
    let error: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
    let message = error["errorMessage"].as_str().unwrap_or_default();
    let error_type = error["errorType"].as_str().unwrap_or(kind);
    let reason = format!("{error_type}: {}", clip(message));
    // The proxy not yet admitting connections passes once the target is
    // AVAILABLE. A try cut off by the function's timeout does not: connecting
    // gives up long before it, so a migration outlasted it, and would again.
    if message.starts_with(CONNECT_FAILED) {
        MigrateOutcome::NotYet(reason)
    } else {
        MigrateOutcome::Failed(reason)
    }
}

/// Lambda refused or did not answer the invocation.
fn invoke_failed<E, R>(err: &SdkError<E, R>) -> MigrateOutcome
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let reason = support::error_chain(err);
    match err {
        // A function still being created or updated, throttled, or Lambda busy.
        SdkError::ServiceError(service) => match service.err().code() {
            Some(
                "ResourceNotReadyException"
                | "ResourceConflictException"
                | "TooManyRequestsException"
                | "ServiceException"
                | "EC2ThrottledException",
            ) => MigrateOutcome::NotYet(reason),
            _ => MigrateOutcome::Failed(reason),
        },
        // Not sent, or no answer: the network, worth another try.
        _ => MigrateOutcome::NotYet(reason),
    }
}

fn clip(text: &str) -> &str {
    &text[..text.floor_char_boundary(REASON_BYTES)]
}

/// PUTs the answer to the presigned URL CloudFormation gave, over HTTPS with
/// the system's roots (plain HTTP too, for a local endpoint in tests).
#[derive(Debug, Clone)]
pub struct HttpsResponder {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// Tries of the PUT: S3 may refuse one with a 5xx.
const RESPOND_TRIES: u32 = 3;
const RESPOND_TIMEOUT: Duration = Duration::from_secs(10);

impl HttpsResponder {
    pub fn new() -> Result<Self, ProvisionError> {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider)
            .map_err(|err| ProvisionError::Respond(format!("no TLS roots: {err}")))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    async fn put_once(&self, url: &str, body: &Bytes) -> Result<(), String> {
        // No Content-Type: the URL is signed without one, and S3 checks it.
        let request = hyper::Request::put(url)
            .header(hyper::header::CONTENT_LENGTH, body.len())
            .body(Full::new(body.clone()))
            .map_err(|err| format!("not a valid request: {err}"))?;
        let response = tokio::time::timeout(RESPOND_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| format!("no answer within {RESPOND_TIMEOUT:?}"))?
            .map_err(|err| support::error_chain(&err))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        Err(format!("{status}: {}", clip(&text)))
    }
}

impl Respond for HttpsResponder {
    async fn respond(&self, url: &str, body: Vec<u8>) -> Result<(), ProvisionError> {
        let body = Bytes::from(body);
        let mut last = String::new();
        for attempt in 1..=RESPOND_TRIES {
            match self.put_once(url, &body).await {
                Ok(()) => return Ok(()),
                Err(err) => {
                    tracing::warn!(attempt, %err, "the answer to CloudFormation did not go through");
                    last = err;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Err(ProvisionError::Respond(last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_failure_of_the_migrate_function_is_worth_another_try() {
        let payload = format!(
            r#"{{"errorType":"&alloc::boxed::Box<dyn core::error::Error>","errorMessage":"{CONNECT_FAILED}"}}"#
        );
        assert!(matches!(
            read_answer(Some("Unhandled"), payload.as_bytes()),
            MigrateOutcome::NotYet(_)
        ));
    }

    #[test]
    fn a_migration_refused_by_the_database_is_final_and_says_why() {
        let payload =
            br#"{"errorType":"E","errorMessage":"could not apply the database migrations"}"#;
        match read_answer(Some("Unhandled"), payload) {
            MigrateOutcome::Failed(reason) => {
                assert!(reason.contains("could not apply"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_migration_cut_off_by_the_functions_timeout_is_final_not_tried_again() {
        let payload = br#"{"errorType":"Sandbox.Timedout","errorMessage":"Task timed out after 300.00 seconds"}"#;
        match read_answer(Some("Unhandled"), payload) {
            MigrateOutcome::Failed(reason) => assert!(reason.contains("timed out"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_functions_answer_is_what_was_applied() {
        let answer = read_answer(None, br#"{"applied":[2],"writer":"orders_writer"}"#);
        assert_eq!(
            answer,
            MigrateOutcome::Applied(json!({"applied":[2],"writer":"orders_writer"}))
        );
    }
}
