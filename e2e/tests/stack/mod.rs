//! The whole system in one test process, on real parts: the producer's router on
//! a free port, the SQS emulator, the local event source mapping running the
//! consumer's handler, and PostgreSQL. Each [`Stack`] has its own database and queues.
//! A module of the tests (`mod stack;`): each test file uses a part of it.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use consumer_lambda::probe::BatchProbe;
use consumer_lambda::{
    Backoff, Consumer, DatabaseConfig, MaxReceiveCount, PgStore, RetryPolicy, SqsDeadLetterQueue,
    SqsRetryQueue, migrations,
};
use e2e::CATALOGUE_PATH;
use local_esm::breaker::{Intervals, LocalProbe};
use local_esm::{
    BatchHandler, Driver, EventSourceSettings, FunctionState, InProcess, InvocationError, Switch,
};
use producer::catalogue;
use producer::{AppState, Metrics, SqsQueue};
use serde_json::Value;
use testkit::{QueueSettings, TestDatabase, TestQueues};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Backoff scaled for tests: records the database could not take come back after
/// 1 s, 2 s, 4 s, then every 5 s, instead of up to a minute.
pub const TEST_BACKOFF: Backoff =
    Backoff::new(Duration::from_secs(1), 2, Duration::from_secs(5)).expect("valid");

/// Event-source settings scaled for tests: small batches, a short window, and a
/// function timeout that leaves the store 5 s before the deadline margin.
pub const TEST_EVENT_SOURCE: EventSourceSettings = EventSourceSettings {
    batch_size: 100,
    batching_window: Duration::from_millis(200),
    max_concurrency: 2,
    function_timeout: Duration::from_secs(10),
};

/// How often a [`Stack`]'s producer looks at its catalogue file.
pub const CATALOGUE_CHECK_EVERY: Duration = Duration::from_millis(100);

pub struct Stack {
    pub db: TestDatabase,
    pub queues: TestQueues,
    pub queue_settings: QueueSettings,
    pub producer_url: String,
    pub http: reqwest::Client,
    producer: Option<Running>,
    /// The producer's catalogue file, a copy of the repository's that the
    /// test may change; the producer re-reads it every [`CATALOGUE_CHECK_EVERY`].
    catalogue_dir: PathBuf,
    catalogue_watch: JoinHandle<()>,
    /// The prices the producer serves, to shorten how long replaced ones stay acceptable.
    pub prices: catalogue::Prices,
    /// The consumer function's state: throttle it or fail its init with
    /// [`FunctionState::set`]. It outlives restarts of the consumer.
    pub function: FunctionState,
    /// The event source mapping feeding the consumer, while it runs.
    driver: Option<Running>,
    /// Its `Enabled` switch, while it runs.
    switch: Option<Switch>,
    /// The circuit breaker flipping that switch, while it runs.
    breaker: Option<Running>,
}

/// A background task and the trigger that stops it gracefully.
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("the task ends without panicking");
    }
}

impl Stack {
    /// A fresh database (on `TEST_DATABASE_URL`, or on `admin_url`), fresh queues
    /// and a producer; the consumer is started separately.
    pub async fn start(queue_settings: QueueSettings, admin_url: Option<&str>) -> Self {
        testkit::init_tracing();
        let db = match admin_url {
            Some(url) => TestDatabase::create_on(url).await,
            None => TestDatabase::create().await,
        };
        let queues = TestQueues::create(queue_settings).await;
        Self::start_with(db, queues, queue_settings).await
    }

    /// Like [`Stack::start`], with the queues on the SQS emulator at `sqs_endpoint`:
    /// one the test runs for itself, so that it may stop it.
    pub async fn start_on_sqs(queue_settings: QueueSettings, sqs_endpoint: &str) -> Self {
        testkit::init_tracing();
        let db = TestDatabase::create().await;
        let queues = TestQueues::create_at(sqs_endpoint, queue_settings).await;
        Self::start_with(db, queues, queue_settings).await
    }

    async fn start_with(
        db: TestDatabase,
        queues: TestQueues,
        queue_settings: QueueSettings,
    ) -> Self {
        // Migrated as the owner, once, as a deploy does; the consumer writes as
        // the writer role, the status function reads as the reader.
        let roles = [
            migrations::Role::writer(migrations::DEFAULT_WRITER, None).expect("a name"),
            migrations::Role::reader(migrations::DEFAULT_READER, None).expect("a name"),
        ];
        migrations::connect_and_prepare(DatabaseConfig::from_url(&db.url).expect("a URL"), &roles)
            .await
            .expect("migrated");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let producer_url = format!("http://{}", listener.local_addr().expect("address"));
        let queue = SqsQueue::new(
            queues.sqs.config().clone(),
            &queues.queue_url,
            Duration::from_secs(5),
        );
        let catalogue_dir = std::env::temp_dir().join(testkit::unique_name("catalogue"));
        std::fs::create_dir_all(&catalogue_dir).expect("a directory for the catalogue");
        let catalogue_path = catalogue_dir.join("catalogue.json");
        std::fs::copy(CATALOGUE_PATH, &catalogue_path).expect("copy the catalogue");
        let metrics = Metrics::new();
        let watcher = catalogue::Watcher::start(catalogue_path, metrics.clone());
        let prices = watcher.prices();
        let catalogue_watch = tokio::spawn(watcher.run(CATALOGUE_CHECK_EVERY));
        let state = AppState::new(Arc::new(queue), Duration::from_secs(10))
            .with_metrics(metrics)
            .with_prices(prices.clone());
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            producer::serve(listener, state, async {
                let _ = stopped.await;
            })
            .await
            .expect("the producer serves");
        });
        Self {
            db,
            queues,
            queue_settings,
            producer_url,
            http: reqwest::Client::new(),
            producer: Some(Running { stop, task }),
            catalogue_dir,
            catalogue_watch,
            prices,
            function: FunctionState::default(),
            driver: None,
            switch: None,
            breaker: None,
        }
    }

    /// The producer's catalogue file: write it to change the prices.
    pub fn catalogue_path(&self) -> PathBuf {
        self.catalogue_dir.join("catalogue.json")
    }

    /// Starts the event source mapping with the consumer's real handler, store and backoff.
    pub async fn start_consumer(&mut self) {
        let consumer = self.consumer().await;
        self.start_consumer_with(InProcess(consumer, None)).await;
    }

    /// Starts the event source mapping with a handler of the test's choosing.
    pub async fn start_consumer_with<H: BatchHandler + 'static>(&mut self, handler: H) {
        assert!(self.driver.is_none(), "the consumer is already running");
        let driver = Driver::new(
            self.queues.sqs.clone(),
            &self.queues.queue_url,
            TEST_EVENT_SOURCE,
            handler,
        )
        .await
        .expect("the driver finds its queue")
        .with_function(self.function.clone());
        self.switch = Some(driver.switch());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            driver
                .run(async {
                    let _ = stopped.await;
                })
                .await;
        });
        self.driver = Some(Running { stop, task });
    }

    /// Starts the circuit breaker on the running mapping, as `local-esm run`
    /// does: the same loop and probe, on `intervals`.
    pub async fn start_breaker(&mut self, intervals: Intervals) {
        assert!(self.breaker.is_none(), "the breaker is already running");
        let switch = self
            .switch
            .clone()
            .expect("the consumer runs before its breaker");
        let config = DatabaseConfig::from_url(&self.db.url_as(migrations::DEFAULT_WRITER))
            .expect("a valid URL");
        // The probe's own connection, as the probe is its own invocation.
        let store = PgStore::new(config, 1)
            .await
            .expect("no TLS or IAM to set up");
        let function = self.function.clone();
        let policy = self.policy();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let batch_probe = BatchProbe::of(&store, policy);
            let probe = LocalProbe::new(function, &batch_probe);
            // No batch log here: the breaker decides on its probe alone.
            let figures = local_esm::breaker::LocalFigures::default();
            tokio::select! {
                () = local_esm::breaker::run(&probe, &switch, &figures, local_esm::breaker::TripPolicy::new(policy.max_receive_count.get()), intervals) => {}
                _ = stopped => {}
            }
        });
        self.breaker = Some(Running { stop, task });
    }

    /// Is the running mapping enabled (not paused by the breaker)?
    pub fn mapping_enabled(&self) -> Option<bool> {
        self.switch.as_ref().map(Switch::enabled)
    }

    /// Stops the breaker, then the event source mapping after its in-flight batches.
    pub async fn stop_consumer(&mut self) {
        if let Some(breaker) = self.breaker.take() {
            breaker.stop().await;
        }
        if let Some(consumer) = self.driver.take() {
            consumer.stop().await;
        }
        self.switch = None;
    }

    /// The consumer as Lambda runs it, on this stack's database and queue, with
    /// the test backoff and the queue's own `maxReceiveCount`.
    pub async fn consumer(&self) -> Consumer<PgStore, SqsRetryQueue, SqsDeadLetterQueue> {
        let config = DatabaseConfig::from_url(&self.db.url_as(migrations::DEFAULT_WRITER))
            .expect("a valid URL");
        let store = PgStore::new(config, TEST_EVENT_SOURCE.max_concurrency)
            .await
            .expect("no TLS or IAM to set up");
        let queue = SqsRetryQueue::new(self.queues.sqs.clone(), &self.queues.queue_url);
        let dead_letters = SqsDeadLetterQueue::new(self.queues.sqs.clone(), &self.queues.dlq_url);
        Consumer::new(store, queue, dead_letters, self.policy())
    }

    /// The test backoff and the queue's own `maxReceiveCount`.
    fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            backoff: TEST_BACKOFF,
            max_receive_count: MaxReceiveCount::new(self.queue_settings.max_receive_count)
                .expect("the test queues' maxReceiveCount leaves a retry"),
        }
    }

    /// Posts a JSON body to `/orders`; returns the status and the JSON answer.
    pub async fn post_order(&self, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/orders", self.producer_url))
            .json(body)
            .send()
            .await
            .expect("the producer answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Rows in `orders`; 0 while the consumer has not created the table yet.
    pub async fn stored_count(&self) -> i64 {
        let client = self.db.connect().await;
        match client.query_one("SELECT count(*) FROM orders", &[]).await {
            Ok(row) => row.get(0),
            Err(_) => 0,
        }
    }

    /// The ids of every stored order.
    pub async fn stored_order_ids(&self) -> std::collections::HashSet<String> {
        let client = self.db.connect().await;
        let rows = client
            .query("SELECT order_id::text FROM orders", &[])
            .await
            .expect("read the stored order ids");
        rows.iter().map(|row| row.get(0)).collect()
    }

    /// Awaits `expected` rows; panics with the last count after `timeout`.
    pub async fn await_stored(&self, expected: i64, timeout: Duration) {
        testkit::eventually(&format!("{expected} stored orders"), timeout, || async {
            match self.stored_count().await {
                n if n == expected => Ok(()),
                n => Err(n),
            }
        })
        .await;
    }

    /// Waits until exactly `expected` messages sit in the DLQ and none is left in the queue.
    pub async fn await_dead_lettered(&self, expected: u64, timeout: Duration) {
        let what = format!("{expected} messages in the DLQ and the queue empty");
        testkit::eventually(&what, timeout, || async {
            match (self.queues.dlq_depth().await, self.queues.depth().await) {
                (dead, 0) if dead == expected => Ok(()),
                state => Err(state),
            }
        })
        .await;
    }

    pub async fn shutdown(mut self) {
        self.stop_consumer().await;
        if let Some(producer) = self.producer.take() {
            producer.stop().await;
        }
        self.catalogue_watch.abort();
        let _ = std::fs::remove_dir_all(&self.catalogue_dir);
    }
}

/// Wraps the real handler and reports a failed invocation the first `n` times,
/// after the orders were stored: the acknowledgement is lost, SQS redelivers.
pub struct LoseAcks<H> {
    pub inner: H,
    pub remaining: std::sync::atomic::AtomicUsize,
}

impl<H: BatchHandler> BatchHandler for LoseAcks<H> {
    async fn handle(
        &self,
        event: SqsEvent,
        deadline: tokio::time::Instant,
    ) -> Result<SqsBatchResponse, InvocationError> {
        let response = self.inner.handle(event, deadline).await?;
        let lose = self
            .remaining
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            )
            .is_ok();
        if lose {
            return Err(InvocationError("the acknowledgement was lost".into()));
        }
        Ok(response)
    }
}
