//! The real `bootstrap` binary under cargo-lambda's Runtime API emulator
//! (`cargo lambda watch --only-lambda-apis`), invoked through the Lambda Invoke API with the SQS
//! event files in `events/`, against a database of its own.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use consumer_lambda::DatabaseConfig;
use consumer_lambda::migrations::{DEFAULT_WRITER, WriterRole, connect_and_prepare};
use serde_json::{Value, json};
use testkit::{TestDatabase, free_port};

/// cargo-lambda's Runtime API emulator (`cargo lambda watch --only-lambda-apis`)
/// on a free port, and the `bootstrap` that `cargo test` built (not a second
/// build of cargo-lambda's own) polling it; both die with the test.
struct Watch {
    function: Child,
    // Dropped after `Watch::drop` has ended the function.
    _emulator: Group,
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
        let function = Command::new(env!("CARGO_BIN_EXE_bootstrap"))
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

    // The breaker's probe: a synthetic batch through the same path, rolled back.
    let response = watch.invoke("probe.json").await;
    assert_eq!(response["healthy"], true, "{response}");
    assert_eq!(count(&db).await, 8, "the probe leaves no row");
}
