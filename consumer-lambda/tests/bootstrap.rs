//! The real `bootstrap` binary under cargo-lambda's Runtime API emulator
//! (`cargo lambda watch`), invoked through the Lambda Invoke API with the SQS
//! event files in `events/`, against a database of its own.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use consumer_lambda::DatabaseConfig;
use consumer_lambda::migrations::{DEFAULT_WRITER, WriterRole, connect_and_prepare};
use serde_json::{Value, json};
use testkit::{TestDatabase, free_port};

/// `cargo lambda watch` on a free port; the process group dies with the test.
struct Watch {
    child: Child,
    invoke_url: String,
    log_path: std::path::PathBuf,
}

impl Watch {
    fn start(database_url: &str) -> Self {
        let port = free_port();
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        // Its own target dir: the outer `cargo test` may hold the workspace's lock,
        // and cargo-lambda builds with settings of its own anyway.
        let target_dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/lambda-watch");
        let log_path = std::env::temp_dir().join(format!("cargo-lambda-watch-{port}.log"));
        let log = std::fs::File::create(&log_path)
            .expect("a log file outside the crate, so the watcher does not rebuild on it");
        let child = Command::new("cargo")
            .args(["lambda", "watch", "--ignore-changes"])
            .args(["--invoke-address", "127.0.0.1", "--invoke-port", &port.to_string()])
            .args(["--manifest-path", manifest, "--bin", "bootstrap"])
            .env("CARGO_TARGET_DIR", &target_dir)
            .args(["--env-var", &format!("DATABASE_URL={database_url}")])
            .args(["--env-var", "QUEUE_URL=http://127.0.0.1:9/000000000000/orders"])
            // Nobody listens there: the poison's DLQ copies fail, so the real
            // binary is seen leaving poison unacknowledged for the redrive policy.
            .args(["--env-var", "DLQ_URL=http://127.0.0.1:9/000000000000/orders-dlq"])
            .args(["--env-var", "MAX_RECEIVE_COUNT=6"])
            .args(["--env-var", "AWS_REGION=eu-west-1"])
            .args(["--env-var", "AWS_ACCESS_KEY_ID=test", "--env-var", "AWS_SECRET_ACCESS_KEY=test"])
            .args(["--env-var", "RUST_LOG=info"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|err| {
                panic!("cannot run `cargo lambda` ({err}): run the tests through scripts/test, which installs cargo-lambda")
            });
        Self {
            child,
            invoke_url: format!(
                "http://127.0.0.1:{port}/2015-03-31/functions/bootstrap/invocations"
            ),
            log_path,
        }
    }

    /// Invokes the function with an event file; the first call waits for the build.
    async fn invoke(&mut self, event_file: &str) -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("events")
            .join(event_file);
        let event = std::fs::read_to_string(&path).expect("the event file");
        let http = reqwest::Client::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(600);
        loop {
            // Connection refused until the emulator listens; the build happens on the first invoke.
            match http
                .post(&self.invoke_url)
                .body(event.clone())
                .timeout(Duration::from_secs(600))
                .send()
                .await
            {
                Ok(response) => {
                    let status = response.status();
                    let body = response.text().await.expect("a body");
                    assert!(status.is_success(), "invoke answered {status}: {body}");
                    return serde_json::from_str(&body)
                        .unwrap_or_else(|_| panic!("not JSON: {body}"));
                }
                Err(err) if err.is_connect() && std::time::Instant::now() < deadline => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
                        panic!("cargo lambda watch exited ({status}):\n{log}");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(err) => panic!("invoking the function failed: {err}"),
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // The watcher runs the function as a child of its own: end the whole group.
        let _ = Command::new("kill")
            .arg("--")
            .arg(format!("-{}", self.child.id()))
            .status();
        let _ = self.child.wait();
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
    let writer = WriterRole::new(DEFAULT_WRITER, None).expect("a name");
    connect_and_prepare(DatabaseConfig::from_url(&db.url).expect("a URL"), &writer)
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
}
