//! The custom resource `DatabaseSchema`, served during `sam deploy` by this
//! task (`TASK=provision`), outside the VPC.
//!
//! On Create and Update it reads the roles' passwords from their secrets (it
//! is given their ARNs: custom resource properties take no dynamic references
//! to secrets,
//! <https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/dynamic-references-secretsmanager.html>),
//! derives the SCRAM verifiers and invokes the migrate function,
//! the only one in the VPC that may log in as the tables' owner; on Delete it
//! keeps the schema. It answers CloudFormation by a PUT to the presigned S3
//! URL, which the VPC's private subnets could not reach
//! (<https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/crpg-ref-responses.html>).
//! Invoked with any other payload (`scripts/deploy --migrate`), it does the
//! same and answers the caller.

mod aws;

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::Instant;

pub use aws::{HttpsResponder, LambdaMigrate, SecretsManagerSecrets};

/// How long the task retries a migration that cannot reach the database yet
/// (RDS Proxy registers its target some time after CloudFormation created it).
pub const MIGRATE_RETRY_BUDGET: Duration = Duration::from_secs(480);
/// The pause between two tries.
pub const MIGRATE_RETRY_PAUSE: Duration = Duration::from_secs(15);
/// The answer goes out this long before the invocation's deadline, whatever
/// the migration is doing, so that CloudFormation never waits for its timeout.
pub const RESPONSE_MARGIN: Duration = Duration::from_secs(20);
/// How long the secrets may take to read: a hung call then answers
/// FAILED in seconds, not when CloudFormation's ServiceTimeout (660 s) ends.
pub const SECRET_DEADLINE: Duration = Duration::from_secs(30);
/// CloudFormation refuses a response body over 4,096 bytes.
pub const MAX_RESPONSE_BYTES: usize = 4096;

/// What the provision task is invoked with.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ProvisionEvent {
    /// CloudFormation's request for the custom resource.
    CustomResource(Box<Request>),
    /// Anything else: provision now and answer the caller.
    Direct(Value),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum RequestType {
    Create,
    Update,
    Delete,
}

/// A custom resource request
/// (<https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/crpg-ref-requests.html>).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Request {
    pub request_type: RequestType,
    #[serde(rename = "ResponseURL")]
    pub response_url: String,
    pub stack_id: String,
    pub request_id: String,
    pub logical_resource_id: String,
    /// Absent on Create.
    pub physical_resource_id: Option<String>,
    pub resource_properties: Option<Value>,
    /// Update only: the properties before this change.
    pub old_resource_properties: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Success,
    Failed,
}

/// The answer CloudFormation reads from the presigned URL.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Response {
    pub status: Status,
    pub reason: String,
    pub physical_resource_id: String,
    pub stack_id: String,
    pub request_id: String,
    pub logical_resource_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl Response {
    /// The body as sent: JSON of at most [`MAX_RESPONSE_BYTES`], the reason
    /// shortened (on a character boundary) when it would not fit.
    pub fn to_body(&self) -> Vec<u8> {
        let mut response = self.clone();
        loop {
            let body = serde_json::to_vec(&response).unwrap_or_default();
            if body.len() <= MAX_RESPONSE_BYTES || response.reason.is_empty() {
                return body;
            }
            let over = body.len() - MAX_RESPONSE_BYTES;
            let keep = response.reason.len().saturating_sub(over + 3);
            response
                .reason
                .truncate(response.reason.floor_char_boundary(keep));
            response.reason.push('…');
            response.data = None;
        }
    }
}

/// Why provisioning failed; the reason CloudFormation shows.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("could not read the secret {arn}: {detail}")]
    Secret { arn: String, detail: String },
    #[error("the secret {arn} holds no \"password\" (a JSON object with username and password)")]
    NoPassword { arn: String },
    #[error(
        "Secrets Manager did not answer within {0:?} (from outside the VPC: is it reachable, and is the region's service healthy?); deploy again"
    )]
    SecretTimedOut(Duration),
    #[error("the migrate function failed: {0}")]
    Migrate(String),
    #[error(
        "the migrate function could not reach the database for {waited:?} (RDS Proxy's target not AVAILABLE?): {last}"
    )]
    Unreachable { waited: Duration, last: String },
    #[error("could not answer CloudFormation at the response URL: {0}")]
    Respond(String),
}

/// One try of the migrate function: done, worth another try, or not.
#[derive(Debug, Clone, PartialEq)]
pub enum MigrateOutcome {
    Applied(Value),
    /// The database or the function is not reachable yet.
    NotYet(String),
    Failed(String),
}

/// The roles' passwords, as their secrets hold them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passwords {
    pub writer: String,
    /// When the stack has a reader.
    pub reader: Option<String>,
}

/// Where the roles' passwords are kept.
pub trait Secrets {
    fn passwords(&self) -> impl Future<Output = Result<Passwords, ProvisionError>> + Send;
}

/// What the migrate function is invoked with: the passwords as SCRAM
/// verifiers, under the names the migrate task reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verifiers {
    pub writer_password_verifier: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reader_password_verifier: Option<String>,
}

/// The migrate function.
pub trait Migrate {
    fn migrate(&self, verifiers: &Verifiers) -> impl Future<Output = MigrateOutcome> + Send;
}

/// Where the answer to CloudFormation goes.
pub trait Respond {
    fn respond(
        &self,
        url: &str,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<(), ProvisionError>> + Send;
}

/// The password as PostgreSQL stores it (SCRAM-SHA-256, 4096 iterations, a
/// random salt): only this travels to the migrate function and the server.
pub fn password_verifier(password: &str) -> String {
    postgres_protocol::password::scram_sha_256(password.as_bytes())
}

/// Reads the secrets, then runs the migrations, trying again while the
/// database cannot be reached, until [`MIGRATE_RETRY_BUDGET`] or `until`.
pub async fn provision(
    secrets: &impl Secrets,
    migrate: &impl Migrate,
    until: Instant,
) -> Result<Value, ProvisionError> {
    let passwords = tokio::time::timeout(SECRET_DEADLINE, secrets.passwords())
        .await
        .map_err(|_| ProvisionError::SecretTimedOut(SECRET_DEADLINE))??;
    let verifiers = Verifiers {
        writer_password_verifier: password_verifier(&passwords.writer),
        reader_password_verifier: passwords.reader.as_deref().map(password_verifier),
    };
    let started = Instant::now();
    let until = until.min(started + MIGRATE_RETRY_BUDGET);
    let mut tries = 0u32;
    loop {
        tries += 1;
        let outcome = match tokio::time::timeout_at(until, migrate.migrate(&verifiers)).await {
            Ok(outcome) => outcome,
            Err(_) => MigrateOutcome::NotYet("the try was still running at the deadline".into()),
        };
        match outcome {
            MigrateOutcome::Applied(answer) => return Ok(answer),
            MigrateOutcome::Failed(reason) => return Err(ProvisionError::Migrate(reason)),
            MigrateOutcome::NotYet(reason) => {
                tracing::warn!(tries, %reason, "the migrations could not run yet; trying again");
                if Instant::now() + MIGRATE_RETRY_PAUSE >= until {
                    return Err(ProvisionError::Unreachable {
                        waited: started.elapsed(),
                        last: reason,
                    });
                }
                tokio::time::sleep(MIGRATE_RETRY_PAUSE).await;
            }
        }
    }
}

/// Serves one custom resource request and answers it. Every path answers:
/// CloudFormation would otherwise wait for the resource's ServiceTimeout.
/// `logs` names where the details are, for the reason of a failure.
pub async fn serve(
    request: &Request,
    secrets: &impl Secrets,
    migrate: &impl Migrate,
    responder: &impl Respond,
    deadline: Instant,
    logs: &str,
) -> Result<Status, ProvisionError> {
    let until = deadline.checked_sub(RESPONSE_MARGIN).unwrap_or(deadline);
    let outcome = match request.request_type {
        // The schema holds the orders: deleting the stack keeps it, and the
        // database's DeletionPolicy keeps a snapshot.
        RequestType::Delete => Ok(json!({ "kept": true })),
        RequestType::Update if is_rollback(request) => {
            tracing::info!("an older SchemaVersion: a rollback; the newer schema stays");
            Ok(json!({ "kept": "a newer schema" }))
        }
        RequestType::Create | RequestType::Update => provision(secrets, migrate, until).await,
    };
    let response = response_to(request, outcome, logs);
    let status = response.status;
    match &response.status {
        Status::Success => {
            tracing::info!(reason = %response.reason, "answering CloudFormation: SUCCESS")
        }
        Status::Failed => {
            tracing::error!(reason = %response.reason, "answering CloudFormation: FAILED")
        }
    }
    responder
        .respond(&request.response_url, response.to_body())
        .await?;
    Ok(status)
}

/// The response for `request` given what provisioning did.
pub fn response_to(
    request: &Request,
    outcome: Result<Value, ProvisionError>,
    logs: &str,
) -> Response {
    let (status, reason, data) = match outcome {
        Ok(data) => (
            Status::Success,
            format!("{:?}: done", request.request_type),
            Some(data),
        ),
        Err(err) => (Status::Failed, format!("{err} (details: {logs})"), None),
    };
    Response {
        status,
        reason,
        // Kept once given: a new id would make CloudFormation delete the old one.
        physical_resource_id: request
            .physical_resource_id
            .clone()
            .unwrap_or_else(|| format!("{}-schema", stack_name(&request.stack_id))),
        stack_id: request.stack_id.clone(),
        request_id: request.request_id.clone(),
        logical_resource_id: request.logical_resource_id.clone(),
        data,
    }
}

/// An Update whose `SchemaVersion` is older than the one it replaces: a
/// rollback, which sends the previous properties again
/// (<https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/crpg-ref-requesttypes-update.html>).
/// The migrations expand before they contract, so the older code works with
/// the newer schema; failing instead would end the stack in
/// UPDATE_ROLLBACK_FAILED
/// (<https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/troubleshooting.html#troubleshooting-errors-update-rollback-failed>).
fn is_rollback(request: &Request) -> bool {
    let version = |properties: &Option<Value>| {
        let value = properties.as_ref()?.get("SchemaVersion")?;
        // CloudFormation sends every property as a string.
        value
            .as_str()
            .map_or(value.as_i64(), |text| text.parse().ok())
    };
    matches!(
        (version(&request.resource_properties), version(&request.old_resource_properties)),
        (Some(new), Some(old)) if new < old
    )
}

/// `arn:aws:cloudformation:<region>:<account>:stack/<name>/<uuid>` → `<name>`.
fn stack_name(stack_id: &str) -> &str {
    stack_id
        .rsplit_once(":stack/")
        .and_then(|(_, rest)| rest.split('/').next())
        .filter(|name| !name.is_empty())
        .unwrap_or("stack")
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    const STACK: &str = "arn:aws:cloudformation:eu-west-1:123456789012:stack/orders/5b3f0a10-cf2e-11f0-8de9-0242ac120002";

    fn request(kind: &str, physical: Option<&str>) -> Request {
        let mut event = json!({
            "RequestType": kind,
            "ServiceToken": "arn:aws:lambda:eu-west-1:123456789012:function:orders-provision",
            "ResponseURL": "https://cloudformation-custom-resource-response-euwest1.s3.eu-west-1.amazonaws.com/x?X-Amz-Signature=1",
            "StackId": STACK,
            "RequestId": "2b7e4a3c-1",
            "ResourceType": "Custom::DatabaseSchema",
            "LogicalResourceId": "DatabaseSchema",
            "ResourceProperties": { "ServiceToken": "arn", "SchemaVersion": "2" }
        });
        if let Some(id) = physical {
            event["PhysicalResourceId"] = json!(id);
        }
        match serde_json::from_value(event).expect("an event") {
            ProvisionEvent::CustomResource(request) => *request,
            ProvisionEvent::Direct(other) => panic!("read as direct: {other}"),
        }
    }

    struct Password(&'static str);
    impl Secrets for Password {
        async fn passwords(&self) -> Result<Passwords, ProvisionError> {
            Ok(Passwords {
                writer: self.0.to_owned(),
                reader: None,
            })
        }
    }

    /// Answers each try from the list, then the last one again.
    struct Tries(Mutex<Vec<MigrateOutcome>>, Mutex<u32>);
    impl Tries {
        fn new(outcomes: Vec<MigrateOutcome>) -> Self {
            Self(Mutex::new(outcomes), Mutex::new(0))
        }
        fn count(&self) -> u32 {
            *self.1.lock().expect("lock")
        }
    }
    impl Migrate for Tries {
        async fn migrate(&self, verifiers: &Verifiers) -> MigrateOutcome {
            let verifier = &verifiers.writer_password_verifier;
            assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{verifier}");
            *self.1.lock().expect("lock") += 1;
            let mut outcomes = self.0.lock().expect("lock");
            if outcomes.len() > 1 {
                outcomes.remove(0)
            } else {
                outcomes[0].clone()
            }
        }
    }

    #[derive(Default)]
    struct Answers(Mutex<Vec<(String, Value)>>);
    impl Respond for Answers {
        async fn respond(&self, url: &str, body: Vec<u8>) -> Result<(), ProvisionError> {
            let body = serde_json::from_slice(&body).expect("JSON");
            self.0.lock().expect("lock").push((url.to_owned(), body));
            Ok(())
        }
    }

    fn applied() -> MigrateOutcome {
        MigrateOutcome::Applied(json!({"applied": [1, 2], "writer": "orders_writer"}))
    }

    #[test]
    fn a_cloudformation_request_is_read_as_one_and_anything_else_as_a_direct_call() {
        assert_eq!(
            request("Update", Some("p")).request_type,
            RequestType::Update
        );
        let direct: ProvisionEvent = serde_json::from_str("{}").expect("JSON");
        assert!(matches!(direct, ProvisionEvent::Direct(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_create_migrates_and_answers_success_with_what_was_applied() {
        let (tries, answers) = (Tries::new(vec![applied()]), Answers::default());
        let request = request("Create", None);
        let deadline = Instant::now() + Duration::from_secs(600);
        let status = serve(
            &request,
            &Password("pw"),
            &tries,
            &answers,
            deadline,
            "logs",
        )
        .await
        .expect("answered");
        assert_eq!(status, Status::Success);
        let answers = answers.0.lock().expect("lock");
        let (url, body) = &answers[0];
        assert_eq!(url, &request.response_url);
        assert_eq!(body["Status"], "SUCCESS");
        assert_eq!(body["PhysicalResourceId"], "orders-schema");
        assert_eq!(body["RequestId"], "2b7e4a3c-1");
        assert_eq!(body["StackId"], STACK);
        assert_eq!(body["LogicalResourceId"], "DatabaseSchema");
        assert_eq!(body["Data"]["applied"], json!([1, 2]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_database_not_reachable_yet_is_tried_again_until_it_is() {
        let tries = Tries::new(vec![
            MigrateOutcome::NotYet("connection refused".into()),
            MigrateOutcome::NotYet("connection refused".into()),
            applied(),
        ]);
        let until = Instant::now() + Duration::from_secs(600);
        let answer = provision(&Password("pw"), &tries, until)
            .await
            .expect("applied");
        assert_eq!(answer["writer"], "orders_writer");
        assert_eq!(tries.count(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_database_that_stays_unreachable_fails_within_the_retry_budget() {
        let tries = Tries::new(vec![MigrateOutcome::NotYet("timeout".into())]);
        let started = Instant::now();
        let err = provision(&Password("pw"), &tries, started + Duration::from_secs(3600))
            .await
            .expect_err("unreachable");
        assert!(matches!(err, ProvisionError::Unreachable { .. }), "{err}");
        assert!(started.elapsed() <= MIGRATE_RETRY_BUDGET);
        assert!(tries.count() > 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_migration_that_fails_for_another_reason_is_not_tried_again() {
        let tries = Tries::new(vec![MigrateOutcome::Failed("syntax error".into())]);
        let answers = Answers::default();
        let deadline = Instant::now() + Duration::from_secs(600);
        let status = serve(
            &request("Update", Some("orders-schema")),
            &Password("pw"),
            &tries,
            &answers,
            deadline,
            "/aws/lambda/orders-provision",
        )
        .await
        .expect("answered");
        assert_eq!(status, Status::Failed);
        assert_eq!(tries.count(), 1);
        let body = &answers.0.lock().expect("lock")[0].1;
        assert_eq!(body["Status"], "FAILED");
        let reason = body["Reason"].as_str().expect("a reason");
        assert!(
            reason.contains("syntax error") && reason.contains("/aws/lambda/orders-provision"),
            "{reason}"
        );
        assert_eq!(body["PhysicalResourceId"], "orders-schema");
    }

    #[tokio::test]
    async fn each_roles_password_reaches_the_migrate_function_as_its_own_verifier_only() {
        struct Both;
        impl Secrets for Both {
            async fn passwords(&self) -> Result<Passwords, ProvisionError> {
                Ok(Passwords {
                    writer: "writer-pw".into(),
                    reader: Some("reader-pw".into()),
                })
            }
        }
        struct Sent(Mutex<Option<Value>>);
        impl Migrate for Sent {
            async fn migrate(&self, verifiers: &Verifiers) -> MigrateOutcome {
                *self.0.lock().expect("lock") = Some(json!(verifiers));
                applied()
            }
        }
        let sent = Sent(Mutex::new(None));
        provision(&Both, &sent, Instant::now() + Duration::from_secs(60))
            .await
            .expect("provisioned");
        let payload = sent.0.lock().expect("lock").clone().expect("invoked");
        let (writer, reader) = (
            payload["writer_password_verifier"]
                .as_str()
                .unwrap_or_default(),
            payload["reader_password_verifier"]
                .as_str()
                .unwrap_or_default(),
        );
        assert!(writer.starts_with("SCRAM-SHA-256$4096:"), "{payload}");
        assert!(reader.starts_with("SCRAM-SHA-256$4096:"), "{payload}");
        assert_ne!(writer, reader);
        assert!(!payload.to_string().contains("-pw"), "{payload}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_answer_goes_out_before_the_deadline_even_while_a_try_hangs() {
        struct Hangs;
        impl Migrate for Hangs {
            async fn migrate(&self, _: &Verifiers) -> MigrateOutcome {
                std::future::pending().await
            }
        }
        let answers = Answers::default();
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = serve(
            &request("Create", None),
            &Password("pw"),
            &Hangs,
            &answers,
            deadline,
            "logs",
        )
        .await
        .expect("answered");
        assert_eq!(status, Status::Failed);
        assert!(Instant::now() + RESPONSE_MARGIN <= deadline);
    }

    #[tokio::test(start_paused = true)]
    async fn a_secret_read_that_hangs_answers_failed_long_before_the_service_timeout() {
        struct Hangs;
        impl Secrets for Hangs {
            async fn passwords(&self) -> Result<Passwords, ProvisionError> {
                std::future::pending().await
            }
        }
        let answers = Answers::default();
        let (create, tries) = (request("Create", None), Tries::new(vec![applied()]));
        let started = Instant::now();
        let served = serve(
            &create,
            &Hangs,
            &tries,
            &answers,
            started + Duration::from_secs(600),
            "logs",
        );
        let status = tokio::time::timeout(Duration::from_secs(660), served)
            .await
            .expect("answered before the ServiceTimeout")
            .expect("answered");
        assert_eq!(status, Status::Failed);
        assert!(
            started.elapsed() <= SECRET_DEADLINE,
            "{:?}",
            started.elapsed()
        );
        let body = &answers.0.lock().expect("lock")[0].1;
        let reason = body["Reason"].as_str().expect("a reason");
        assert!(reason.contains("Secrets Manager"), "{reason}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rollback_to_an_older_schema_version_answers_success_without_migrating() {
        let mut rollback = request("Update", Some("orders-schema"));
        rollback.old_resource_properties = Some(json!({ "SchemaVersion": "3" }));
        let tries = Tries::new(vec![MigrateOutcome::Failed("must not run".into())]);
        let answers = Answers::default();
        let deadline = Instant::now() + Duration::from_secs(600);
        let status = serve(
            &rollback,
            &Password("pw"),
            &tries,
            &answers,
            deadline,
            "logs",
        )
        .await
        .expect("answered");
        assert_eq!(status, Status::Success);
        assert_eq!(tries.count(), 0);
        let body = &answers.0.lock().expect("lock")[0].1;
        assert_eq!(body["PhysicalResourceId"], "orders-schema");
    }

    #[tokio::test(start_paused = true)]
    async fn an_update_to_a_newer_schema_version_migrates() {
        let mut update = request("Update", Some("orders-schema"));
        update.old_resource_properties = Some(json!({ "SchemaVersion": "1" }));
        let tries = Tries::new(vec![applied()]);
        let deadline = Instant::now() + Duration::from_secs(600);
        let answers = Answers::default();
        let status = serve(&update, &Password("pw"), &tries, &answers, deadline, "logs")
            .await
            .expect("answered");
        assert_eq!((status, tries.count()), (Status::Success, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_delete_keeps_the_schema_and_answers_success_without_migrating() {
        let tries = Tries::new(vec![MigrateOutcome::Failed("must not run".into())]);
        let answers = Answers::default();
        let deadline = Instant::now() + Duration::from_secs(600);
        let status = serve(
            &request("Delete", Some("orders-schema")),
            &Password("pw"),
            &tries,
            &answers,
            deadline,
            "logs",
        )
        .await
        .expect("answered");
        assert_eq!(status, Status::Success);
        assert_eq!(tries.count(), 0);
    }

    #[test]
    fn a_long_reason_is_shortened_so_the_body_fits_what_cloudformation_accepts() {
        let request = request("Create", None);
        let long = ProvisionError::Migrate("é".repeat(5000));
        let body = response_to(&request, Err(long), "logs").to_body();
        assert!(body.len() <= MAX_RESPONSE_BYTES, "{}", body.len());
        let parsed: Value = serde_json::from_slice(&body).expect("still JSON");
        assert_eq!(parsed["Status"], "FAILED");
        assert!(parsed["Reason"].as_str().expect("reason").ends_with('…'));
    }

    #[test]
    fn the_verifier_is_one_the_migration_accepts_and_never_the_password() {
        let verifier = password_verifier("Zr8qWm2TfX0pLk5vHy7Bn3Jc");
        assert!(!verifier.contains("Zr8qWm2TfX0pLk5vHy7Bn3Jc"));
        crate::migrations::Role::writer("orders_writer", Some(&verifier)).expect("accepted");
    }
}
