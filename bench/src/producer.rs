//! The producer under load from `oha` against its baseline, the same producer
//! built with [`OneCallPerOrder`] instead of its batching queue (`bench
//! baseline-producer`), at several concurrencies, against the SQS emulator;
//! then each one's CPU time per 1,000 orders against an SQS stub that answers
//! at once. SQS calls are read from each one's own metrics, not estimated.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use support::FromEnv;

use anyhow::{Context, bail};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::MessageAttributeValue;
use axum::Router;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

use order_contract::REQUEST_ID_ATTRIBUTE;
use producer::{EnqueueError, Metrics, OrderMessage, OrderQueue, SqsOptions};

/// The baseline: one `SendMessage` call per order, the usual sample code.
struct OneCallPerOrder {
    client: Client,
    queue_url: String,
    timeout: Duration,
    metrics: Metrics,
}

impl OneCallPerOrder {
    fn new(sqs: aws_sdk_sqs::Config, queue_url: String, options: SqsOptions) -> Self {
        Self {
            client: Client::from_conf(sqs),
            queue_url,
            timeout: options.timeout,
            metrics: options.metrics,
        }
    }
}

impl OrderQueue for OneCallPerOrder {
    async fn send(&self, message: OrderMessage) -> Result<String, EnqueueError> {
        self.metrics.sqs_call("SendMessage");
        let mut call = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(message.body);
        if let Some(id) = message.request_id {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(id)
                .build()
                .map_err(EnqueueError::sqs)?;
            call = call.message_attributes(REQUEST_ID_ATTRIBUTE, value);
        }
        match tokio::time::timeout(self.timeout, call.send()).await {
            Ok(sent) => sent
                .map_err(EnqueueError::sqs)?
                .message_id
                .ok_or(EnqueueError::Unanswered),
            Err(_) => Err(EnqueueError::TimedOut(self.timeout)),
        }
    }

    /// Not asked: the benchmark never calls `/readyz`.
    async fn check(&self) -> Result<(), EnqueueError> {
        Ok(())
    }
}

/// Runs the producer, configured from the environment as the real one, with
/// [`OneCallPerOrder`] as its queue.
pub(crate) async fn baseline() -> anyhow::Result<()> {
    producer::telemetry::init().context("setting up logging")?;
    let config = producer::Config::from_env().context("reading the configuration")?;
    producer::run_with(config, OneCallPerOrder::new)
        .await
        .context("running the baseline producer")
}

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The producer binary (release build).
    #[arg(long)]
    producer: PathBuf,
    /// The `oha` load generator.
    #[arg(long)]
    oha: PathBuf,
    /// The SQS emulator's endpoint.
    #[arg(long)]
    sqs_endpoint: String,
    /// The queue the producer sends to, on that endpoint.
    #[arg(long)]
    queue_url: String,
    /// Concurrencies to run at.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Requests per run at concurrency 1 (more at higher concurrency).
    #[arg(long, default_value_t = 500)]
    requests: usize,
}

/// One run's figures: oha's, and the producer's own over the measured requests.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    accepted: u64,
    sqs_calls_per_1000: f64,
    cpu_ms_per_1000: f64,
}

const ORDER: &str = r#"{"order_id":"3f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10","customer_id":"bench","currency":"EUR","items":[{"sku":"NOTEBOOK-A5","quantity":2,"unit_price_cents":1299}]}"#;
/// The catalogue that prices [`ORDER`]: the repository's.
const CATALOGUE_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../producer/catalogue.json");

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    println!(
        "| concurrency | batching: orders/s | p50 ms | p99 ms | SQS calls / 1,000 | baseline: orders/s | p50 ms | p99 ms | SQS calls / 1,000 |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let (mut at_64, emulator) = (None, (&*args.sqs_endpoint, &*args.queue_url));
    for &c in &args.concurrency {
        let (requests, warm_up) = (args.requests * c.clamp(1, 8), 50.max(c * 2));
        let b = measure(&args, emulator, true, c, warm_up, requests).await?;
        let n = measure(&args, emulator, false, c, warm_up, requests).await?;
        for (run, batching) in [(b, true), (n, false)] {
            if run.accepted < requests as u64 {
                bail!(
                    "only {} of {requests} orders were accepted (batching={batching}, c={c})",
                    run.accepted
                );
            }
        }
        println!("| {c} | {} | {} |", b.cells(), n.cells());
        if c == 64 {
            at_64 = Some((b, n));
        }
    }

    // CPU time against a stub that answers every SQS call at once.
    let endpoint = format!("http://{}", sqs_stub().await?);
    let stub = (endpoint.as_str(), &*format!("{endpoint}/000000000000/stub"));
    let cpu_batched = measure(&args, stub, true, 64, 500, 20_000)
        .await?
        .cpu_ms_per_1000;
    let cpu_baseline = measure(&args, stub, false, 64, 500, 20_000)
        .await?
        .cpu_ms_per_1000;
    println!(
        "producer CPU per 1,000 orders against an instant SQS stub (c=64): batching {cpu_batched:.0} ms, baseline {cpu_baseline:.0} ms"
    );
    if let Some((b, n)) = at_64 {
        println!(
            "producer concurrency=64 rps={:.0} baseline_rps={:.0} p99_ms={:.1} sqs_calls_per_1000={:.0} baseline_sqs_calls_per_1000={:.0}",
            b.rps, n.rps, b.p99_ms, b.sqs_calls_per_1000, n.sqs_calls_per_1000
        );
    }
    Ok(())
}

impl Run {
    fn cells(&self) -> String {
        let calls = self.sqs_calls_per_1000;
        format!(
            "{:.0} | {:.1} | {:.1} | {calls:.0}",
            self.rps, self.p50_ms, self.p99_ms
        )
    }
}

/// Starts the producer (`batching`) or its baseline against `(endpoint,
/// queue_url)`, warms up connections and the SDK, then measures `requests`.
async fn measure(
    args: &Args,
    (endpoint, queue_url): (&str, &str),
    batching: bool,
    concurrency: usize,
    warm_up: usize,
    requests: usize,
) -> anyhow::Result<Run> {
    let producer = Producer::start(&args.producer, endpoint, queue_url, batching).await?;
    oha(&args.oha, producer.addr, concurrency, warm_up).await?;
    let calls = producer.sqs_calls().await?;
    let cpu = producer.cpu_ms()?;
    let mut run = oha(&args.oha, producer.addr, concurrency, requests).await?;
    let thousands_accepted = run.accepted.max(1) as f64 / 1000.0;
    run.cpu_ms_per_1000 = (producer.cpu_ms()? - cpu) / thousands_accepted;
    run.sqs_calls_per_1000 = (producer.sqs_calls().await? - calls) / thousands_accepted;
    producer.stop().await;
    Ok(run)
}

/// Answers `SendMessageBatch` and `SendMessage` (AWS JSON 1.0) at once.
async fn sqs_stub() -> anyhow::Result<SocketAddr> {
    async fn answer(
        headers: HeaderMap,
        body: Bytes,
    ) -> ([(&'static str, &'static str); 1], String) {
        let target = headers
            .get("x-amz-target")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let sent = || {
            serde_json::json!({
                "MessageId": uuid::Uuid::new_v4().to_string(),
                "MD5OfMessageBody": "00000000000000000000000000000000",
            })
        };
        let reply = if target.ends_with("SendMessageBatch") {
            let entries = request["Entries"].as_array().into_iter().flatten();
            let successful: Vec<_> = entries
                .map(|entry| {
                    let mut sent = sent();
                    sent["Id"] = entry["Id"].clone();
                    sent
                })
                .collect();
            serde_json::json!({ "Successful": successful, "Failed": [] })
        } else {
            sent()
        };
        (
            [("content-type", "application/x-amz-json-1.0")],
            reply.to_string(),
        )
    }
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // AWS JSON 1.0 posts every operation to the endpoint's root.
    let app = Router::new().route("/", post(answer));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// A producer process of ours.
struct Producer {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
}

impl Producer {
    /// The producer `binary`, or with `batching` false, the baseline (`bench
    /// baseline-producer`).
    async fn start(
        binary: &Path,
        endpoint: &str,
        queue_url: &str,
        batching: bool,
    ) -> anyhow::Result<Self> {
        let addr = free_addr().await?;
        let metrics = free_addr().await?;
        let program = if batching {
            binary.to_owned()
        } else {
            std::env::current_exe()?
        };
        let child = Command::new(program)
            .args((!batching).then_some("baseline-producer"))
            .env("QUEUE_URL", queue_url)
            .env("BIND_ADDR", addr.to_string())
            .env("METRICS_ADDR", metrics.to_string())
            .env("RATE_LIMIT_PER_SECOND", "0")
            .env("MAX_IN_FLIGHT_PER_CLIENT", "0")
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("RUST_LOG", "warn")
            .env("CATALOGUE_PATH", CATALOGUE_PATH)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let producer = Self {
            child,
            addr,
            metrics,
        };
        for _ in 0..200 {
            if get(producer.addr, "/healthz").await.is_ok() {
                return Ok(producer);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the producer did not answer /healthz within 10 s")
    }

    /// SQS calls made so far (`SendMessageBatch` and `SendMessage`).
    async fn sqs_calls(&self) -> anyhow::Result<f64> {
        let text = get(self.metrics, "/metrics").await?;
        Ok(text
            .lines()
            .filter(|line| line.starts_with("producer_sqs_calls_total{operation=\"SendMessage"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// User + system CPU time of the process so far, from /proc.
    fn cpu_ms(&self) -> anyhow::Result<f64> {
        let pid = self.child.id().context("the producer has exited")?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // utime and stime, fields 14 and 15: the 12th and 13th after the
        // command name (which may hold spaces), in ticks of 1/100 s.
        let after_name = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
        let fields = after_name.split(' ').skip(11).take(2);
        let ticks: f64 = fields.filter_map(|f| f.parse::<f64>().ok()).sum();
        Ok(ticks * 10.0)
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SIGTERM: the producer drains and exits.
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        let exited = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        if exited.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

async fn free_addr() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    Ok(listener.local_addr()?)
}

/// The body of a GET answered 200.
async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let answer = reqwest::get(format!("http://{addr}{path}")).await?;
    Ok(answer.error_for_status()?.text().await?)
}

/// Runs oha: requests/s, p50 and p99 in ms, and the number of 202s.
async fn oha(
    oha: &Path,
    addr: SocketAddr,
    concurrency: usize,
    requests: usize,
) -> anyhow::Result<Run> {
    let output = Command::new(oha)
        .args(["--no-tui", "--output-format", "json", "-m", "POST"])
        .args(["-H", "content-type: application/json", "-d", ORDER])
        .args(["-c", &concurrency.to_string(), "-n", &requests.to_string()])
        .arg(format!("http://{addr}/orders"))
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", oha.display()))?;
    if !output.status.success() {
        bail!("oha failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).context("oha's JSON")?;
    let seconds = |value: &serde_json::Value| value.as_f64().unwrap_or(f64::NAN);
    let accepted = report["statusCodeDistribution"]["202"]
        .as_u64()
        .unwrap_or(0);
    Ok(Run {
        rps: seconds(&report["summary"]["requestsPerSec"]),
        p50_ms: seconds(&report["latencyPercentiles"]["p50"]) * 1000.0,
        p99_ms: seconds(&report["latencyPercentiles"]["p99"]) * 1000.0,
        accepted,
        ..Run::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use producer::{OrderMessage, OrderQueue, SqsOptions};
    use testkit::{QueueSettings, TestQueues};

    #[tokio::test]
    async fn the_baseline_makes_one_send_message_call_per_order() {
        let queues = TestQueues::create(QueueSettings::default()).await;
        let options = SqsOptions::new(Duration::from_secs(5));
        let metrics = options.metrics.clone();
        let queue = OneCallPerOrder::new(
            queues.sqs.config().clone(),
            queues.queue_url.clone(),
            options,
        );
        let sends = (0..5).map(|_| queue.send(OrderMessage::from(ORDER)));
        for sent in futures::future::join_all(sends).await {
            sent.expect("sent");
        }
        let text = metrics.render();
        assert!(
            text.contains("producer_sqs_calls_total{operation=\"SendMessage\"} 5\n"),
            "{text}"
        );
        assert!(!text.contains("operation=\"SendMessageBatch\""), "{text}");
        assert_eq!(queues.depth().await, 5);
    }
}
