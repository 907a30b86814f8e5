//! `local-esm status` against the SQS emulator with messages in its queues, a
//! real producer serving its `/metrics`, and the batch log the event source
//! mapping writes while the consumer stores into a real PostgreSQL.

use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use consumer_lambda::metrics::{DEAD_LETTERED, INVALID, RECORDS, STORED};
use consumer_lambda::migrations::{self, DEFAULT_WRITER, Role};
use consumer_lambda::{
    Backoff, Consumer, DatabaseConfig, MaxReceiveCount, PgStore, RetryPolicy, SqsDeadLetterQueue,
    SqsRetryQueue,
};
use local_esm::batches::{BatchLog, DEFAULT_KEEP};
use local_esm::status::queues::Oldest;
use local_esm::status::{Places, Snapshot, Sources, render};
use local_esm::{Driver, EventSourceSettings, InProcess};
use testkit::{QueueSettings, TestDatabase, TestQueues, eventually, free_port, sqs_endpoint};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const SETTINGS: EventSourceSettings = EventSourceSettings {
    batch_size: 10,
    batching_window: Duration::from_millis(200),
    max_concurrency: 1,
    function_timeout: Duration::from_secs(30),
};

/// A producer serving orders and its metrics on ports of its own.
struct Producer {
    url: String,
    metrics_url: String,
    stop: oneshot::Sender<()>,
}

impl Producer {
    async fn start(queues: &TestQueues) -> Self {
        let metrics = producer::Metrics::new();
        let queue = producer::SqsQueue::new(
            queues.sqs.config().clone(),
            &queues.queue_url,
            producer::SqsOptions {
                metrics: metrics.clone(),
                ..producer::SqsOptions::new(Duration::from_secs(5))
            },
        );
        let state = producer::AppState::new(Arc::new(queue), Duration::from_secs(10))
            .with_metrics(metrics.clone())
            .with_prices(producer::catalogue::fixtures::prices());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let metrics_listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let metrics_url = format!(
            "http://{}/metrics",
            metrics_listener.local_addr().expect("address")
        );
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(producer::server::serve_router(
            metrics_listener,
            producer::metrics::metrics_router(metrics),
            producer::Limits::default(),
            std::future::pending(),
        ));
        tokio::spawn(producer::serve(listener, state, async {
            let _ = stopped.await;
        }));
        Self {
            url,
            metrics_url,
            stop,
        }
    }

    async fn post(&self, body: String) -> u16 {
        reqwest::Client::new()
            .post(format!("{}/orders", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("the producer answers")
            .status()
            .as_u16()
    }
}

async fn consumer(
    db: &TestDatabase,
    queues: &TestQueues,
) -> Consumer<PgStore, SqsRetryQueue, SqsDeadLetterQueue> {
    let writer = Role::writer(DEFAULT_WRITER, None).expect("a name");
    migrations::connect_and_prepare(DatabaseConfig::from_url(&db.url).expect("a URL"), &[writer])
        .await
        .expect("migrated");
    let config = DatabaseConfig::from_url(&db.url_as(DEFAULT_WRITER)).expect("a URL");
    let store = PgStore::new(config, 1).await.expect("a store");
    let policy = RetryPolicy {
        backoff: Backoff::default(),
        max_receive_count: MaxReceiveCount::new(QueueSettings::default().max_receive_count)
            .expect("a count"),
    };
    Consumer::new(
        store,
        SqsRetryQueue::new(queues.sqs.clone(), &queues.queue_url),
        SqsDeadLetterQueue::new(queues.sqs.clone(), &queues.dlq_url),
        policy,
    )
}

fn batch_log_path(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(testkit::unique_name(test));
    std::fs::create_dir_all(&dir).expect("a directory");
    dir.join("batches.jsonl")
}

/// Runs the `local-esm status` binary with the environment `scripts/dev` writes.
async fn status_command(
    queues: &TestQueues,
    metrics_url: &str,
    batch_log: &PathBuf,
    endpoint: &str,
) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_local-esm"))
        .arg("status")
        .env("QUEUE_URL", &queues.queue_url)
        .env("DLQ_URL", &queues.dlq_url)
        .env("METRICS_URL", metrics_url)
        .env("BATCH_LOG", batch_log)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("AWS_PROFILE")
        .kill_on_drop(true)
        .output()
        .await
        .expect("local-esm status runs")
}

fn queue<'a>(snapshot: &'a Snapshot, url: &str) -> &'a local_esm::status::queues::QueueFigures {
    let name = local_esm::status::queues::name_of(url);
    let row = snapshot
        .queues
        .iter()
        .find(|q| q.name == name)
        .unwrap_or_else(|| panic!("no row {name}"));
    row.figures
        .as_ref()
        .unwrap_or_else(|err| panic!("{name} was read: {err}"))
}

#[tokio::test]
async fn status_shows_the_queues_the_consumers_batches_and_the_producers_counters() {
    let db = TestDatabase::create().await;
    let queues = TestQueues::create(QueueSettings::default()).await;
    let producer = Producer::start(&queues).await;
    let log_path = batch_log_path("status");

    // Three orders accepted and one refused at the edge; one poison message
    // sent around the producer, as a hand-made message would be.
    for customer in 0..3 {
        let order = order_contract::fixtures::order_request(customer, 2);
        let body = producer::catalogue::fixtures::priced(order).to_string();
        assert_eq!(producer.post(body).await, 202);
    }
    let refused = producer
        .post(r#"{"order_id":"not-a-uuid"}"#.to_owned())
        .await;
    assert!((400..500).contains(&refused), "refused with {refused}");
    queues.send_bodies(&["not an order".to_owned()]).await;

    let driver = Driver::new(
        queues.sqs.clone(),
        &queues.queue_url,
        SETTINGS,
        InProcess(
            consumer(&db, &queues).await,
            Some(BatchLog::create(&log_path, DEFAULT_KEEP).expect("a batch log")),
        ),
    )
    .await
    .expect("the queue is there");
    let mut handled = 0;
    while handled < 4 {
        handled += driver.poll_once().await.expect("a poll").received;
    }

    // The poison message now waits out its visibility timeout (in flight); a
    // delayed message and one already in the DLQ complete the picture.
    queues
        .sqs
        .send_message()
        .queue_url(&queues.queue_url)
        .message_body("later")
        .delay_seconds(60)
        .send()
        .await
        .expect("a delayed message");
    queues
        .sqs
        .send_message()
        .queue_url(&queues.dlq_url)
        .message_body("poison of yesterday")
        .send()
        .await
        .expect("a message in the DLQ");

    let sources = Sources {
        sqs: queues.sqs.clone(),
        http: reqwest::Client::new(),
        sqs_endpoint: Some(sqs_endpoint()),
        places: Places {
            queue_url: queues.queue_url.clone(),
            dlq_url: queues.dlq_url.clone(),
            batch_log: log_path.clone(),
            batches_shown: 5,
            metrics_url: producer.metrics_url.clone(),
        },
    };
    // The consumer sends the poison message to the DLQ, beside the one there already.
    let snapshot = eventually("the queues settle", Duration::from_secs(10), || async {
        let snapshot = sources.read().await;
        let depths = |i: usize| {
            snapshot.queues[i]
                .figures
                .as_ref()
                .map(|f| (f.depth.visible, f.depth.in_flight, f.depth.delayed))
                .ok()
        };
        let settled = match (depths(0), depths(1)) {
            (Some((0, in_flight, 1)), Some((dlq_visible, 0, 0))) => in_flight + dlq_visible == 2,
            _ => false,
        };
        if settled {
            Ok(snapshot)
        } else {
            Err((depths(0), depths(1)))
        }
    })
    .await;

    let orders = queue(&snapshot, &queues.queue_url);
    let dlq = queue(&snapshot, &queues.dlq_url);
    assert!(
        matches!(dlq.oldest, Oldest::Age(age) if age < Duration::from_secs(60)),
        "the emulator's listing gives the DLQ message's age: {:?}",
        dlq.oldest
    );
    assert!(
        matches!(orders.oldest, Oldest::Age(_)),
        "{:?}",
        orders.oldest
    );

    let batches = snapshot.batches.as_ref().expect("the batch log was read");
    let sum = |name| -> u64 { batches.batches.iter().map(|b| b.count(name)).sum() };
    assert_eq!(sum(RECORDS), 4);
    assert_eq!(sum(STORED), 3);
    assert_eq!(sum(INVALID), 1);
    assert_eq!(sum(DEAD_LETTERED), 1);
    assert!(
        batches
            .batches
            .iter()
            .any(|b| b.oldest_order_age_s.is_some()),
        "a batch with a valid order reports its oldest order's age"
    );

    let figures = snapshot.producer.as_ref().expect("the metrics were read");
    assert_eq!(figures.accepted, 3, "{figures:?}");
    assert_eq!(
        figures.refused.get(&refused.to_string()),
        Some(&1),
        "{figures:?}"
    );
    assert_eq!(figures.queued.count, 3);
    assert!(figures.queued.p99_at_most_seconds.is_some());

    let text = render(&snapshot);
    assert!(!text.contains("DOWN"), "{text}");

    // The command itself, as scripts/dev status runs it: exit status 0 and the same table.
    let output = status_command(&queues, &producer.metrics_url, &log_path, &sqs_endpoint()).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for row in ["orders accepted (202)", consumer_lambda::metrics::STORED] {
        assert!(
            stdout
                .lines()
                .any(|line| line.trim_start().starts_with(row)),
            "{row} in:\n{stdout}"
        );
    }
    let _ = producer.stop.send(());
}

#[tokio::test]
async fn a_part_that_is_down_says_so_and_only_nothing_read_fails_the_command() {
    let queues = TestQueues::create(QueueSettings::default()).await;
    let nothing_there = format!("http://127.0.0.1:{}/metrics", free_port());
    let missing_log = batch_log_path("status-down").with_file_name("never-written.jsonl");

    // The producer down and no batch log: the queues alone are shown, and that is enough.
    let output = status_command(&queues, &nothing_there, &missing_log, &sqs_endpoint()).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let producer_row = stdout
        .lines()
        .find(|line| line.starts_with("producer"))
        .unwrap_or_else(|| panic!("a producer row in:\n{stdout}"));
    assert!(
        producer_row.contains("DOWN") && producer_row.contains("METRICS_URL"),
        "{producer_row}"
    );
    assert!(
        stdout.contains("DOWN: no batch log"),
        "the consumer's row says why: {stdout}"
    );

    // The emulator unreachable too: every row says so, and the command fails.
    let emulator_gone = format!("http://127.0.0.1:{}", free_port());
    let output = status_command(&queues, &nothing_there, &missing_log, &emulator_gone).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert_eq!(
        stdout.lines().filter(|line| line.contains("DOWN")).count(),
        4,
        "both queues, the consumer and the producer: {stdout}"
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("scripts/dev"),
        "the error says what to start"
    );
}

#[tokio::test]
async fn watch_prints_the_table_again_until_sigterm_and_then_exits_cleanly() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let queues = TestQueues::create(QueueSettings::default()).await;
    let nothing_there = format!("http://127.0.0.1:{}/metrics", free_port());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_local-esm"))
        .args(["status", "--watch", "0.2"])
        .env("QUEUE_URL", &queues.queue_url)
        .env("DLQ_URL", &queues.dlq_url)
        .env("METRICS_URL", &nothing_there)
        .env("BATCH_LOG", batch_log_path("status-watch"))
        .env("AWS_ENDPOINT_URL", sqs_endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("AWS_PROFILE")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("local-esm status --watch starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut tables = 0;
    while tables < 3 {
        let line = tokio::time::timeout(Duration::from_secs(15), lines.next_line())
            .await
            .expect("the table comes again within 15 s")
            .expect("stdout is readable")
            .expect("status keeps running");
        if line.contains("Local system at") {
            tables += 1;
        }
    }
    let pid = child.id().expect("still running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("it stops on SIGTERM")
        .expect("its status");
    assert!(
        status.success(),
        "a watch stopped on purpose exits 0: {status}"
    );
}
