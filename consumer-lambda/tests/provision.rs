//! The custom resource `sam deploy` creates the schema with, against real
//! peers: a real PostgreSQL whose writer and reader must log in with their
//! passwords, and
//! the real Secrets Manager and Lambda SDK clients and the real HTTPS
//! responder against a local endpoint that answers as those services and
//! CloudFormation's presigned S3 URL do. The stand-in Lambda runs the real
//! migrations against the real database with the verifier it is sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use consumer_lambda::DatabaseConfig;
use consumer_lambda::migrations::{CONNECT_FAILED, LATEST_VERSION, Role, connect_and_prepare};
use consumer_lambda::provision::{
    self, HttpsResponder, LambdaMigrate, ProvisionEvent, Request, SecretsManagerSecrets, Status,
};
use serde_json::{Value, json};
use testkit::{PostgresServer, TestDatabase};
use tokio::time::Instant;

const ROLE: &str = "writer_with_password";
const PASSWORD: &str = "Qm4TfX0pLk5vHy7Bn3JcZr8qWm2";
const SECRET_ARN: &str =
    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:orders/database/writer-AbCdEf";
const READER: &str = "reader_with_password";
const READER_PASSWORD: &str = "Lk5vHy7Bn3JcZr8qWm2Qm4TfX0p";
const READER_SECRET_ARN: &str =
    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:orders/database/reader-GhIjKl";
const STACK: &str = "arn:aws:cloudformation:eu-west-1:123456789012:stack/orders/5b3f0a10-cf2e-11f0-8de9-0242ac120002";

struct Aws {
    database_url: String,
    /// Tries of the migrate function that fail to connect before it can.
    unreachable_tries: Mutex<u32>,
    /// Each request, as "what detail".
    calls: Mutex<Vec<String>>,
    /// The bodies PUT to the response URL.
    answers: Mutex<Vec<Value>>,
}

type Shared = Arc<Aws>;

fn json_response(status: StatusCode, headers: &[(&'static str, &str)], body: String) -> Response {
    let mut response = (status, body).into_response();
    let map = response.headers_mut();
    map.insert(
        "content-type",
        "application/x-amz-json-1.1".parse().expect("header"),
    );
    map.insert("x-amzn-requestid", "7d1c2a40-1".parse().expect("header"));
    for (name, value) in headers {
        map.insert(*name, value.parse().expect("header"));
    }
    response
}

/// Secrets Manager speaks JSON 1.1: POST / with X-Amz-Target.
async fn secrets_manager(State(aws): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let request: Value = serde_json::from_slice(&body).expect("a JSON body");
    aws.calls
        .lock()
        .expect("lock")
        .push(format!("{target} {}", request["SecretId"]));
    let (arn, username, password) = if request["SecretId"] == READER_SECRET_ARN {
        (READER_SECRET_ARN, READER, READER_PASSWORD)
    } else {
        (SECRET_ARN, ROLE, PASSWORD)
    };
    if target != "secretsmanager.GetSecretValue" || request["SecretId"] != arn {
        return json_response(
            StatusCode::BAD_REQUEST,
            &[],
            r#"{"__type":"ResourceNotFoundException","Message":"Secrets Manager can't find the specified secret."}"#.into(),
        );
    }
    let secret = json!({ "username": username, "password": password }).to_string();
    json_response(
        StatusCode::OK,
        &[],
        json!({
            "ARN": arn,
            "Name": "orders/database/writer",
            "VersionId": "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111",
            "SecretString": secret,
            "VersionStages": ["AWSCURRENT"],
            "CreatedDate": 1_764_000_000.0
        })
        .to_string(),
    )
}

/// Lambda's Invoke of the migrate function: the real migrations, with the
/// verifier it was sent, as the migrate task runs them.
async fn invoke(State(aws): State<Shared>, Path(function): Path<String>, body: Bytes) -> Response {
    let payload: Value = serde_json::from_slice(&body).expect("a JSON payload");
    let verifier = |name: &str| payload[name].as_str().unwrap_or_default().to_owned();
    let (verifier, reader_verifier) = (
        verifier("writer_password_verifier"),
        verifier("reader_password_verifier"),
    );
    aws.calls
        .lock()
        .expect("lock")
        .push(format!("Invoke {function}"));
    let lambda_error = |message: String| {
        json_response(
            StatusCode::OK,
            &[("x-amz-function-error", "Unhandled")],
            json!({ "errorType": "alloc::boxed::Box<dyn core::error::Error + Send + Sync>", "errorMessage": message }).to_string(),
        )
    };
    {
        let mut unreachable = aws.unreachable_tries.lock().expect("lock");
        if *unreachable > 0 {
            *unreachable -= 1;
            return lambda_error(CONNECT_FAILED.to_owned());
        }
    }
    let roles = match (
        Role::writer(ROLE, Some(&verifier)),
        Role::reader(READER, Some(&reader_verifier)),
    ) {
        (Ok(writer), Ok(reader)) => [writer, reader],
        (Err(err), _) | (_, Err(err)) => return lambda_error(err.to_string()),
    };
    let config = DatabaseConfig::from_url(&aws.database_url).expect("url");
    match connect_and_prepare(config, &roles).await {
        Ok(applied) => json_response(
            StatusCode::OK,
            &[],
            json!({ "applied": applied, "writer": ROLE }).to_string(),
        ),
        Err(err) => lambda_error(err.to_string()),
    }
}

/// CloudFormation's presigned S3 URL: the signature covers no Content-Type,
/// so S3 refuses a PUT that sends one.
async fn response_url(State(aws): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if headers.get("content-type").is_some_and(|v| !v.is_empty()) {
        return (
            StatusCode::FORBIDDEN,
            "<Error><Code>SignatureDoesNotMatch</Code></Error>",
        )
            .into_response();
    }
    assert_eq!(
        headers.get("content-length").and_then(|v| v.to_str().ok()),
        Some(body.len().to_string().as_str())
    );
    aws.answers
        .lock()
        .expect("lock")
        .push(serde_json::from_slice(&body).expect("a JSON answer"));
    StatusCode::OK.into_response()
}

struct Setup {
    aws: Shared,
    endpoint: String,
    db: TestDatabase,
    _server: PostgresServer,
}

async fn setup(unreachable_tries: u32) -> Setup {
    // pg_hba.conf takes a list of roles.
    let server = PostgresServer::start_with_password_for(&format!("{ROLE},{READER}")).await;
    let db = TestDatabase::create_on(&server.admin_url()).await;
    let aws = Arc::new(Aws {
        database_url: db.url.clone(),
        unreachable_tries: Mutex::new(unreachable_tries),
        calls: Mutex::new(Vec::new()),
        answers: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/", post(secrets_manager))
        .route("/2015-03-31/functions/{function}/invocations", post(invoke))
        .route("/cloudformation-response/{*rest}", put(response_url))
        .with_state(aws.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Setup {
        aws,
        endpoint,
        db,
        _server: server,
    }
}

fn clients(endpoint: &str) -> (SecretsManagerSecrets, LambdaMigrate) {
    let region = aws_config::Region::new("eu-west-1");
    let credentials = aws_credential_types::Credentials::new("test", "test", None, None, "test");
    let secrets = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(region.clone())
        .credentials_provider(credentials.clone())
        .build();
    let lambda = aws_sdk_lambda::Config::builder()
        .behavior_version(aws_sdk_lambda::config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(region)
        .credentials_provider(credentials)
        .build();
    (
        SecretsManagerSecrets {
            client: aws_sdk_secretsmanager::Client::from_conf(secrets),
            writer_arn: SECRET_ARN.to_owned(),
            reader_arn: Some(READER_SECRET_ARN.to_owned()),
        },
        LambdaMigrate {
            client: aws_sdk_lambda::Client::from_conf(lambda),
            function: "orders-migrate".to_owned(),
        },
    )
}

/// A request as CloudFormation sends it (every property a string).
fn request(setup: &Setup, kind: &str) -> Request {
    let mut event = json!({
        "RequestType": kind,
        "ServiceToken": "arn:aws:lambda:eu-west-1:123456789012:function:orders-provision",
        "ResponseURL": format!("{}/cloudformation-response/arn%3Aaws%3Acloudformation%3Aeu-west-1%3A123456789012%3Astack/orders/5b3f%7CDatabaseSchema%7C2b7e?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=0f1e", setup.endpoint),
        "StackId": STACK,
        "RequestId": "2b7e4a3c-8c1d-4f0e-9a55-2d1f6b7c8e90",
        "ResourceType": "Custom::DatabaseSchema",
        "LogicalResourceId": "DatabaseSchema",
        "ResourceProperties": {
            "ServiceToken": "arn:aws:lambda:eu-west-1:123456789012:function:orders-provision",
            "ServiceTimeout": "660",
            "SchemaVersion": "2",
            "MigrateFunction": "orders-migrate",
            "WriterUsername": ROLE,
            "WriterSecret": SECRET_ARN
        }
    });
    if kind != "Create" {
        event["PhysicalResourceId"] = json!("orders-schema");
        event["OldResourceProperties"] = event["ResourceProperties"].clone();
    }
    match serde_json::from_value(event).expect("an event") {
        ProvisionEvent::CustomResource(request) => *request,
        ProvisionEvent::Direct(other) => panic!("not read as CloudFormation's: {other}"),
    }
}

async fn serve(setup: &Setup, kind: &str) -> Status {
    let (secret, migrate) = clients(&setup.endpoint);
    let responder = HttpsResponder::new().expect("a client");
    let deadline = Instant::now() + Duration::from_secs(600);
    provision::serve(
        &request(setup, kind),
        &secret,
        &migrate,
        &responder,
        deadline,
        "/aws/lambda/orders-provision",
    )
    .await
    .expect("answered")
}

async fn login(
    setup: &Setup,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    login_as(setup, ROLE, password).await
}

async fn login_as(
    setup: &Setup,
    role: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let url = setup.db.url_as(&format!("{role}:{password}"));
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// How often the migrate function was invoked.
fn invokes(setup: &Setup) -> usize {
    let calls = setup.aws.calls.lock().expect("lock");
    calls.iter().filter(|c| c.starts_with("Invoke")).count()
}

#[tokio::test]
async fn a_create_applies_the_schema_and_the_writer_and_reader_log_in_with_their_secrets_passwords()
{
    let setup = setup(0).await;
    assert!(login(&setup, PASSWORD).await.is_err(), "no writer before");
    assert!(
        login_as(&setup, READER, READER_PASSWORD).await.is_err(),
        "no reader before"
    );
    assert_eq!(serve(&setup, "Create").await, Status::Success);

    let writer = login(&setup, PASSWORD)
        .await
        .expect("the secret's password logs in");
    let rows = writer
        .query("SELECT count(*) FROM orders", &[])
        .await
        .expect("the writer reads the orders table");
    assert_eq!(rows[0].get::<_, i64>(0), 0);
    let reader = login_as(&setup, READER, READER_PASSWORD)
        .await
        .expect("the reader's secret's password logs in");
    reader
        .query("SELECT count(*) FROM order_conflicts", &[])
        .await
        .expect("the reader reads");

    let answers = setup.aws.answers.lock().expect("lock").clone();
    assert_eq!(answers.len(), 1);
    let answer = &answers[0];
    assert_eq!(answer["Status"], "SUCCESS");
    assert_eq!(answer["PhysicalResourceId"], "orders-schema");
    assert_eq!(answer["StackId"], STACK);
    assert_eq!(answer["RequestId"], "2b7e4a3c-8c1d-4f0e-9a55-2d1f6b7c8e90");
    assert_eq!(answer["LogicalResourceId"], "DatabaseSchema");
    assert_eq!(
        answer["Data"]["applied"],
        json!((1..=LATEST_VERSION).collect::<Vec<_>>())
    );
    // The password went nowhere but the secret's answer.
    let calls = setup.aws.calls.lock().expect("lock").clone();
    assert!(
        calls
            .iter()
            .all(|c| !c.contains(PASSWORD) && !c.contains(READER_PASSWORD)),
        "{calls:?}"
    );
}

#[tokio::test]
async fn an_update_after_a_rotation_gives_the_writer_the_secrets_new_password() {
    let setup = setup(0).await;
    // The writer exists with another password, as before a rotation.
    let old = Role::writer(
        ROLE,
        Some(&provision::password_verifier("the-old-password")),
    )
    .expect("valid");
    connect_and_prepare(
        DatabaseConfig::from_url(&setup.db.url).expect("url"),
        &[old],
    )
    .await
    .expect("migrated");
    assert_eq!(serve(&setup, "Update").await, Status::Success);
    login(&setup, PASSWORD)
        .await
        .expect("the new password logs in");
    assert!(login(&setup, "the-old-password").await.is_err());
    let answer = setup.aws.answers.lock().expect("lock")[0].clone();
    assert_eq!(
        answer["Data"]["applied"],
        json!([]),
        "nothing left to apply"
    );
}

#[tokio::test]
async fn a_proxy_that_admits_no_connection_yet_is_tried_again() {
    let setup = setup(1).await;
    assert_eq!(serve(&setup, "Create").await, Status::Success);
    assert_eq!(invokes(&setup), 2);
    login(&setup, PASSWORD).await.expect("the writer logs in");
}

#[tokio::test]
async fn a_delete_keeps_the_schema_and_reads_no_secret() {
    let setup = setup(0).await;
    assert_eq!(serve(&setup, "Create").await, Status::Success);
    setup.aws.calls.lock().expect("lock").clear();
    assert_eq!(serve(&setup, "Delete").await, Status::Success);
    assert!(setup.aws.calls.lock().expect("lock").is_empty());
    login(&setup, PASSWORD)
        .await
        .expect("the schema and the writer are kept");
    assert_eq!(
        setup.aws.answers.lock().expect("lock")[1]["Status"],
        "SUCCESS"
    );
}

#[tokio::test]
async fn a_migration_that_cannot_run_fails_the_resource_with_the_reason_and_where_to_look() {
    let setup = setup(0).await;
    // A table in the way: the first migration's CREATE TABLE fails in PostgreSQL.
    setup
        .db
        .connect()
        .await
        .batch_execute("CREATE TABLE orders (something_else int)")
        .await
        .expect("in the way");
    assert_eq!(serve(&setup, "Create").await, Status::Failed);
    let answer = setup.aws.answers.lock().expect("lock")[0].clone();
    assert_eq!(answer["Status"], "FAILED");
    let reason = answer["Reason"].as_str().expect("a reason");
    assert!(reason.contains("the migrate function failed"), "{reason}");
    assert!(reason.contains("/aws/lambda/orders-provision"), "{reason}");
    // Refused for good: not tried again.
    assert_eq!(invokes(&setup), 1);
}
