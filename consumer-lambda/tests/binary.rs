//! The real binary, as Lambda runs it, under cargo-lambda's Runtime API emulator
//! (`cargo lambda watch --only-lambda-apis`), invoked through the Lambda Invoke API with the SQS
//! event files in `events/`, against a database of its own; and checked by the
//! release's pre-traffic hook (`breaker::hook`), which reports to a
//! CodeDeploy-shaped endpoint through the real `aws-sdk-codedeploy`.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_credential_types::Credentials;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use breaker::hook::{HookEvent, Verdict, check_and_report};
use consumer_lambda::DatabaseConfig;
use consumer_lambda::migrations::{DEFAULT_WRITER, Role, connect_and_prepare};
use serde_json::{Value, json};
use testkit::{TestDatabase, free_port};

/// cargo-lambda's Runtime API emulator (`cargo lambda watch --only-lambda-apis`)
/// on a free port, and the `bootstrap` that `cargo test` built (not a second
/// build of cargo-lambda's own) polling it; both die with the test.
struct Watch {
    function: Child,
    // Dropped after `Watch::drop` has ended the function.
    _emulator: Group,
    /// The emulator's Lambda API (`/2015-03-31/functions/_/invocations`).
    endpoint: String,
    invoke_url: String,
    log_path: std::path::PathBuf,
}

impl Watch {
    fn start(database_url: &str) -> Self {
        let port = free_port();
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let log_path = std::env::temp_dir().join(format!("cargo-lambda-watch-{port}.log"));
        let log = std::fs::File::create(&log_path).expect("a log file");
        let emulator = Command::new("cargo")
            .args(["lambda", "watch", "--only-lambda-apis"])
            .args(["--invoke-address", "127.0.0.1", "--invoke-port", &port.to_string()])
            .args(["--manifest-path", manifest])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log.try_clone().expect("log"))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|err| {
                panic!("cannot run `cargo lambda` ({err}): run the tests through scripts/test, which installs cargo-lambda")
            });
        let mut emulator = Group(emulator);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = emulator.0.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("cargo lambda watch exited ({status}):\n{log}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "cargo lambda watch did not listen on {port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The variables the emulator says a function it does not start must have.
        let function = Command::new(env!("CARGO_BIN_EXE_consumer-lambda"))
            .env_clear()
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{port}/.rt"),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", "_")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
            .env("DATABASE_URL", database_url)
            .env("QUEUE_URL", "http://127.0.0.1:9/000000000000/orders")
            // Nobody listens there: the poison's DLQ copies fail, so the real
            // binary is seen leaving poison unacknowledged for the redrive policy.
            .env("DLQ_URL", "http://127.0.0.1:9/000000000000/orders-dlq")
            .env("MAX_RECEIVE_COUNT", "6")
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .env("AWS_REGION", "eu-west-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("the bootstrap that cargo test built");
        Self {
            function,
            _emulator: emulator,
            endpoint: format!("http://127.0.0.1:{port}"),
            invoke_url: format!("http://127.0.0.1:{port}/2015-03-31/functions/_/invocations"),
            log_path,
        }
    }

    /// Invokes the function with an event file.
    async fn invoke(&mut self, event_file: &str) -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("events")
            .join(event_file);
        let event = std::fs::read_to_string(&path).expect("the event file");
        let response = reqwest::Client::new()
            .post(&self.invoke_url)
            .body(event)
            .timeout(Duration::from_secs(60))
            .send()
            .await;
        let log = || std::fs::read_to_string(&self.log_path).unwrap_or_default();
        if let Ok(Some(status)) = self.function.try_wait() {
            panic!("the bootstrap exited ({status}):\n{}", log());
        }
        let response = response.unwrap_or_else(|err| panic!("invoking failed: {err}\n{}", log()));
        let status = response.status();
        let body = response.text().await.expect("a body");
        assert!(status.is_success(), "invoke answered {status}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"))
    }
}

/// A process group of ours, ended when dropped (also when a panic unwinds):
/// cargo-lambda runs as a child of `cargo`.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("--")
            .arg(format!("-{}", self.0.id()))
            .status();
        let _ = self.0.wait();
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.function.kill();
        let _ = self.function.wait();
    }
}

fn failures(response: &Value) -> Vec<&str> {
    response["batchItemFailures"]
        .as_array()
        .expect("an SqsBatchResponse")
        .iter()
        .map(|f| f["itemIdentifier"].as_str().expect("an identifier"))
        .collect()
}

async fn count(db: &TestDatabase) -> i64 {
    db.connect()
        .await
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .expect("count")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_stores_valid_events_reports_poison_and_absorbs_duplicates() {
    testkit::init_tracing();
    let db = TestDatabase::create().await;
    // Migrated once as the owner, as the deploy's migrate task does; the
    // bootstrap then writes as the writer role, as in AWS.
    let writer = Role::writer(DEFAULT_WRITER, None).expect("a name");
    connect_and_prepare(DatabaseConfig::from_url(&db.url).expect("a URL"), &[writer])
        .await
        .expect("migrated");
    let mut watch = Watch::start(&db.url_as(DEFAULT_WRITER));

    let response = watch.invoke("all-valid.json").await;
    assert_eq!(response, json!({"batchItemFailures": []}));
    assert_eq!(count(&db).await, 5);
    let total: i64 = db
        .connect()
        .await
        .query_one(
            "SELECT total_cents FROM orders WHERE order_id = '3f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c13'",
            &[],
        )
        .await
        .expect("the fourth order")
        .get(0);
    assert_eq!(total, 4 * 1299);

    let response = watch.invoke("mixed-with-poison.json").await;
    assert_eq!(
        failures(&response),
        [
            "7a1c0000-0000-4000-8000-000000000002",
            "7a1c0000-0000-4000-8000-000000000003",
            "7a1c0000-0000-4000-8000-000000000004"
        ]
    );
    assert_eq!(
        count(&db).await,
        7,
        "the two valid orders of the mixed batch"
    );

    // The same message twice, and an order all-valid.json stored already: one new row.
    let response = watch.invoke("duplicate-delivery.json").await;
    assert_eq!(response, json!({"batchItemFailures": []}));
    assert_eq!(count(&db).await, 8);
    let response = watch.invoke("duplicate-delivery.json").await;
    assert_eq!(response, json!({"batchItemFailures": []}));
    assert_eq!(
        count(&db).await,
        8,
        "a redelivered batch stores nothing new"
    );

    // The breaker's probe: a synthetic batch through the same path, rolled back.
    let response = watch.invoke("probe.json").await;
    assert_eq!(response["healthy"], true, "{response}");
    assert_eq!(count(&db).await, 8, "the probe leaves no row");
}

/// CodeDeploy as the SDK meets it: JSON 1.1 (`POST /`, `X-Amz-Target`),
/// `PutLifecycleEventHookExecutionStatus` only, keeping each status reported.
struct CodeDeploy {
    client: aws_sdk_codedeploy::Client,
    reported: Arc<Mutex<Vec<Value>>>,
}

impl CodeDeploy {
    async fn start() -> Self {
        let reported = Arc::new(Mutex::new(Vec::new()));
        let seen = reported.clone();
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move |headers: HeaderMap, body: String| async move {
                let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok());
                if target != Some("CodeDeploy_20141006.PutLifecycleEventHookExecutionStatus") {
                    return (StatusCode::BAD_REQUEST, format!("unexpected target {target:?}"))
                        .into_response();
                }
                let request: Value = serde_json::from_str(&body).expect("a JSON body");
                let answer = json!({"lifecycleEventHookExecutionId": request["lifecycleEventHookExecutionId"]});
                seen.lock().expect("lock").push(request);
                let mut response = answer.to_string().into_response();
                response.headers_mut().insert(
                    "content-type",
                    "application/x-amz-json-1.1".parse().expect("header"),
                );
                response
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let address = listener.local_addr().expect("an address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let config = aws_sdk_codedeploy::Config::builder()
            .behavior_version_latest()
            .endpoint_url(format!("http://{address}"))
            .region(aws_sdk_codedeploy::config::Region::new("eu-west-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
            .build();
        Self {
            client: aws_sdk_codedeploy::Client::from_conf(config),
            reported,
        }
    }

    fn statuses(&self) -> Vec<String> {
        self.reported
            .lock()
            .expect("lock")
            .iter()
            .map(|r| {
                format!(
                    "{} {} {}",
                    r["deploymentId"], r["lifecycleEventHookExecutionId"], r["status"]
                )
                .replace('"', "")
            })
            .collect()
    }
}

fn lambda_client(watch: &Watch) -> aws_sdk_lambda::Client {
    let config = aws_sdk_lambda::Config::builder()
        .behavior_version_latest()
        .endpoint_url(&watch.endpoint)
        .region(aws_sdk_lambda::config::Region::new("eu-west-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .build();
    aws_sdk_lambda::Client::from_conf(config)
}

fn hook_event(n: u32) -> HookEvent {
    HookEvent {
        deployment_id: format!("d-{n}"),
        lifecycle_event_hook_execution_id: format!("hook-{n}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_release_hook_passes_a_good_build_and_fails_one_whose_batches_fail_or_that_cannot_start()
 {
    testkit::init_tracing();
    let db = TestDatabase::create().await;
    let writer = Role::writer(DEFAULT_WRITER, None).expect("a name");
    connect_and_prepare(DatabaseConfig::from_url(&db.url).expect("a URL"), &[writer])
        .await
        .expect("migrated");
    let codedeploy = CodeDeploy::start().await;
    // The emulator serves one function, `_`: it stands for the version's ARN.
    let version = "_";
    let watch = Watch::start(&db.url_as(DEFAULT_WRITER));
    let lambda = lambda_client(&watch);
    let limit = Duration::from_secs(60);

    let good = check_and_report(&lambda, &codedeploy.client, version, &hook_event(1), limit)
        .await
        .expect("reported");
    // The bootstrap's DLQ_URL answers nothing: a poison sent to the real DLQ
    // would stay unacknowledged and fail the check.
    assert_eq!(good, Verdict::Succeeded);
    assert_eq!(codedeploy.statuses(), ["d-1 hook-1 Succeeded"]);
    assert_eq!(
        count(&db).await,
        0,
        "the canary order never becomes an order"
    );

    // A build whose batches all fail: every row it writes is refused, as by a
    // migration this build does not match.
    db.connect()
        .await
        .batch_execute(
            "ALTER TABLE orders ADD CONSTRAINT newer_than_this_build CHECK (false) NOT VALID",
        )
        .await
        .expect("a constraint every new row violates");
    let broken = check_and_report(&lambda, &codedeploy.client, version, &hook_event(2), limit)
        .await
        .expect("reported");
    match &broken {
        Verdict::Failed(reason) => assert!(reason.contains("newer_than_this_build"), "{reason}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(codedeploy.statuses()[1], "d-2 hook-2 Failed");
    drop(watch);

    // A build that cannot start (it exits before polling for work): no answer
    // in time, and the hook still reports.
    let watch = Watch::start("not a connection string");
    let lambda = lambda_client(&watch);
    let silent = check_and_report(
        &lambda,
        &codedeploy.client,
        version,
        &hook_event(3),
        Duration::from_secs(3),
    )
    .await
    .expect("reported");
    match &silent {
        Verdict::Failed(reason) => assert!(reason.contains("did not answer"), "{reason}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(codedeploy.statuses()[2], "d-3 hook-3 Failed");
}
