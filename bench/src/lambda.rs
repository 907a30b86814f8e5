//! The real `bootstrap` binary, measured the way Lambda runs it: a fake Runtime
//! API on loopback hands it events, and we time the process from spawn until its
//! first poll for an event (init, with the database connected lazily, later) and
//! read its peak RSS after it stored a batch of 1000.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use consumer_lambda::DatabaseConfig;
use consumer_lambda::migrations::{DEFAULT_WRITER, Role, connect_and_prepare};
use tokio::sync::{Mutex, mpsc};
use uuid::Uuid;

use crate::markdown::thousands;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The bootstrap built by `cargo lambda build --release`.
    #[arg(long)]
    bootstrap: PathBuf,
    /// The deployment zip (`cargo lambda build --release --output-format zip`).
    #[arg(long)]
    zip: PathBuf,
    /// A database the batch may be stored in.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Cold starts to time (the median is reported).
    #[arg(long, default_value_t = 7)]
    cold_starts: usize,
    /// Records in the measured batch.
    #[arg(long, default_value_t = 1000)]
    records: usize,
}

/// The fake Runtime API: what it hands out, and what it reports.
struct Runtime {
    /// The event for the next poll; `None` makes the poll wait forever (an idle environment).
    event: Mutex<Option<serde_json::Value>>,
    /// When each poll for an event came.
    polls: mpsc::UnboundedSender<Instant>,
    /// The bootstrap's response, or its error.
    answers: mpsc::UnboundedSender<Result<serde_json::Value, String>>,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    // The schema is the migrate task's, not the consumer's: apply it first, as
    // a deploy does, and run the bootstrap as the writer.
    let writer = Role::writer(DEFAULT_WRITER, None)?;
    connect_and_prepare(DatabaseConfig::from_url(&args.database_url)?, &[writer])
        .await
        .context("migrating the benchmark's database")?;
    let zip_mb = std::fs::metadata(&args.zip)
        .with_context(|| format!("reading {}", args.zip.display()))?
        .len() as f64
        / 1_048_576.0;
    let (polls, mut polled) = mpsc::unbounded_channel();
    let (answers, mut answered) = mpsc::unbounded_channel();
    let runtime = Arc::new(Runtime {
        event: Mutex::default(),
        polls,
        answers,
    });
    let address = serve(Arc::clone(&runtime)).await?;

    let mut inits = Vec::with_capacity(args.cold_starts);
    for _ in 0..args.cold_starts {
        let started = Instant::now();
        let mut child = spawn(&args, address)?;
        let polled_at = tokio::time::timeout(Duration::from_secs(10), polled.recv())
            .await
            .ok()
            .flatten()
            .context("the bootstrap never polled the Runtime API")?;
        inits.push(polled_at.duration_since(started).as_secs_f64() * 1000.0);
        child.kill().await.ok();
    }
    inits.sort_by(f64::total_cmp);
    let init = inits[inits.len() / 2];

    *runtime.event.lock().await = Some(event(args.records));
    let child = spawn(&args, address)?;
    let pid = child.id().context("the bootstrap exited at once")?;
    let response = tokio::time::timeout(Duration::from_secs(60), answered.recv())
        .await
        .context("the bootstrap did not answer the batch within 60 s")?
        .context("no answer")?
        .map_err(|error| anyhow::anyhow!("the bootstrap reported an error: {error}"))?;
    let failures = response["batchItemFailures"].as_array().map_or(0, Vec::len);
    if failures != 0 {
        bail!("the batch was not stored: {failures} failures (is DATABASE_URL reachable?)");
    }
    let peak_rss_mb = peak_rss_kb(pid)? as f64 / 1024.0;
    drop(child);

    println!(
        "| init (process start → first Runtime API poll, median of {}) | peak RSS after a batch of {} | deployment zip |",
        inits.len(),
        thousands(args.records as f64),
    );
    println!("| ---: | ---: | ---: |");
    println!("| {init:.1} ms | {peak_rss_mb:.1} MB | {zip_mb:.2} MB |");
    println!();
    println!(
        "every init: {:?} ms; targets: init <= 25 ms, peak RSS <= 32 MB, zip <= 8 MB ({})",
        inits
            .iter()
            .map(|ms| (ms * 10.0).round() / 10.0)
            .collect::<Vec<_>>(),
        args.zip.display()
    );
    println!("lambda init_ms={init:.1} peak_rss_mb={peak_rss_mb:.1} zip_mb={zip_mb:.2}");
    Ok(())
}

fn spawn(args: &Args, runtime_api: SocketAddr) -> anyhow::Result<tokio::process::Child> {
    tokio::process::Command::new(&args.bootstrap)
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "orders-consumer-bench")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            "/aws/lambda/orders-consumer-bench",
        )
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("DATABASE_URL", writer_url(&args.database_url)?)
        .env("QUEUE_URL", "http://127.0.0.1:9/000000000000/orders")
        .env("DLQ_URL", "http://127.0.0.1:9/000000000000/orders-dlq")
        // The consumer requires it; the template's, as deployed (nothing is
        // requeued here: every batch is stored).
        .env("MAX_RECEIVE_COUNT", max_receive_count()?.to_string())
        .env(
            "RUST_LOG",
            std::env::var("BOOTSTRAP_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", args.bootstrap.display()))
}

/// The same database as the writer role, as the consumer runs in AWS.
fn writer_url(url: &str) -> anyhow::Result<String> {
    let mut url = reqwest::Url::parse(url).context("DATABASE_URL")?;
    url.set_username(DEFAULT_WRITER)
        .and(url.set_password(None))
        .map_err(|()| anyhow::anyhow!("DATABASE_URL must name a host"))?;
    Ok(url.into())
}

/// The orders queue's maxReceiveCount, from the template the stack deploys.
fn max_receive_count() -> anyhow::Result<u32> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/template.yaml");
    Ok(local_esm::Template::from_file(path)
        .with_context(|| format!("reading {path}"))?
        .queues
        .max_receive_count)
}

/// Peak resident set size of a live process, from /proc (VmHWM).
fn peak_rss_kb(pid: u32) -> anyhow::Result<u64> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc status")
}

/// An SQS event of `records` valid orders, as Lambda would deliver it.
fn event(records: usize) -> serde_json::Value {
    let records: Vec<serde_json::Value> = (0..records)
        .map(|n| {
            let body = format!(
                r#"{{"schema_version":1,"order_id":"{}","customer_id":"cust-{n}","currency":"EUR","items":[{{"sku":"BOOK-{n}","quantity":{},"unit_price_cents":1299}}],"received_at":"2026-11-24T18:27:15Z"}}"#,
                Uuid::new_v4(),
                n % 9 + 1
            );
            serde_json::json!({
                "messageId": Uuid::new_v4().to_string(),
                "receiptHandle": format!("handle-{n}"),
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1795544835000"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:orders",
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    serde_json::json!({ "Records": records })
}

/// The three Runtime API routes the runtime client uses.
async fn serve(runtime: Arc<Runtime>) -> anyhow::Result<SocketAddr> {
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(error))
        .with_state(runtime);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(address)
}

async fn next(State(runtime): State<Arc<Runtime>>) -> impl axum::response::IntoResponse {
    let _ = runtime.polls.send(Instant::now());
    let Some(event) = runtime.event.lock().await.take() else {
        // An idle environment: no event comes.
        std::future::pending::<()>().await;
        unreachable!()
    };
    let deadline_ms = chrono::Utc::now().timestamp_millis() + 30_000;
    let headers = [
        ("lambda-runtime-aws-request-id", "bench-request".to_owned()),
        ("lambda-runtime-deadline-ms", deadline_ms.to_string()),
        (
            "lambda-runtime-invoked-function-arn",
            "arn:aws:lambda:us-east-1:000000000000:function:orders-consumer-bench".to_owned(),
        ),
        (
            "lambda-runtime-trace-id",
            "Root=1-00000000-000000000000000000000000".to_owned(),
        ),
    ];
    (headers, Json(event))
}

async fn response(State(runtime): State<Arc<Runtime>>, body: axum::body::Bytes) {
    let response =
        serde_json::from_slice(&body).map_err(|err| format!("the response is not JSON: {err}"));
    let _ = runtime.answers.send(response);
}

/// An invocation's error or the init's: the bootstrap failed.
async fn error(State(runtime): State<Arc<Runtime>>, body: String) {
    let _ = runtime.answers.send(Err(body));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bootstrap_connects_as_the_writer_without_a_password() {
        let url = writer_url("postgres://postgres:secret@127.0.0.1:5433/bench").expect("a URL");
        assert_eq!(
            url,
            format!("postgres://{DEFAULT_WRITER}@127.0.0.1:5433/bench")
        );
    }
}
