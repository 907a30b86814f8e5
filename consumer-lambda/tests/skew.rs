//! Skew is ours, not the order's, against a real PostgreSQL and the SQS
//! emulator: rows refused for a schema this build did not make, or most of a
//! batch refused alike, are a release fault (postponed, never dead-lettered),
//! an isolated refused row stays poison, the bisection stays bounded, and
//! orders caught by a too-early migration or a newer `schema_version` end
//! stored, each once, when the schema or the code that takes them arrives.

use std::sync::Mutex;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use chrono::{TimeZone, Utc};
use consumer_lambda::migrations::{DEFAULT_WRITER, Role, connect_and_prepare};
use consumer_lambda::store::Fault;
use consumer_lambda::{
    Backoff, BatchMetrics, Consumer, DatabaseConfig, Delivery, MaxReceiveCount, MessageId,
    OrderStore, PgStore, RetryPolicy, SqsDeadLetterQueue, SqsRetryQueue,
};
use local_esm::{BatchHandler, Driver, EventSourceSettings, InvocationError};
use order_contract::OrderPlaced;
use order_contract::fixtures::{
    order, order_from_request, order_placed_body, order_request_with_id,
};
use testkit::{QueueSettings, TestDatabase, TestQueues};
use tokio::time::Instant;

async fn migrated() -> TestDatabase {
    let db = TestDatabase::create().await;
    let writer = Role::writer(DEFAULT_WRITER, None).expect("a valid name");
    connect_and_prepare(
        DatabaseConfig::from_url(&db.url).expect("valid URL"),
        &[writer],
    )
    .await
    .expect("migrated");
    db
}

async fn writer_store(db: &TestDatabase) -> PgStore {
    let config = DatabaseConfig::from_url(&db.url_as(DEFAULT_WRITER)).expect("valid URL");
    PgStore::new(config, 1).await.expect("no TLS or IAM")
}

/// A constraint that refuses every new row, under a name this build's
/// migrations do not create: a migration released before its code.
const TOO_EARLY: &str =
    "ALTER TABLE orders ADD CONSTRAINT orders_gift_wrap_check CHECK (false) NOT VALID";

async fn owner_runs(db: &TestDatabase, sql: &str) {
    db.connect().await.batch_execute(sql).await.expect(sql);
}

fn deliveries(n: usize) -> Vec<Delivery> {
    (0..n)
        .map(|i| Delivery {
            message_id: MessageId::new(format!("m-{i}")).expect("an id"),
            placed: OrderPlaced::new(order(i, 1), Utc::now()),
            request_id: None,
        })
        .collect()
}

/// The faults of what `store` refused of `batch`, by position.
async fn faults(store: &PgStore, batch: &[Delivery]) -> Vec<(usize, Fault)> {
    let refs: Vec<&Delivery> = batch.iter().collect();
    let outcome = store.insert(&refs).await.expect("not a transient failure");
    outcome.refused.iter().map(|r| (r.index, r.fault)).collect()
}

#[tokio::test]
async fn rows_refused_for_a_constraint_this_build_did_not_make_are_a_release_fault_one_alone_too() {
    let db = migrated().await;
    owner_runs(&db, TOO_EARLY).await;
    let store = writer_store(&db).await;
    for size in [1, 3, 60] {
        let refused = faults(&store, &deliveries(size)).await;
        assert_eq!(refused.len(), size, "{size} rows");
        assert!(
            refused.iter().all(|(_, fault)| *fault == Fault::Release),
            "{size} rows: {refused:?}"
        );
    }
}

#[tokio::test]
async fn a_column_this_build_does_not_fill_is_a_release_fault() {
    let db = migrated().await;
    owner_runs(
        &db,
        "ALTER TABLE orders ADD COLUMN gift_wrap boolean NOT NULL",
    )
    .await;
    let store = writer_store(&db).await;
    assert_eq!(faults(&store, &deliveries(1)).await, [(0, Fault::Release)]);
}

/// A constraint under a name this build's migrations create, made stricter
/// by hand: only the pattern tells a release fault from a bad order.
const STRICTER_KNOWN: &str = "ALTER TABLE orders DROP CONSTRAINT orders_total_cents_check;
     ALTER TABLE orders ADD CONSTRAINT orders_total_cents_check
         CHECK (total_cents >= 0 AND customer_id <> 'refused') NOT VALID";

/// `delivery` from the customer [`STRICTER_KNOWN`] refuses.
fn refused_as_known(mut delivery: Delivery) -> Delivery {
    let mut request = order_request_with_id(delivery.placed.order.order_id(), 1, 1);
    request["customer_id"] = "refused".into();
    delivery.placed.order = order_from_request(&request);
    delivery
}

#[tokio::test]
async fn an_isolated_row_refused_among_stored_ones_stays_poison_one_alone_too() {
    let db = migrated().await;
    owner_runs(&db, STRICTER_KNOWN).await;
    let store = writer_store(&db).await;
    // The data exception of a year PostgreSQL cannot hold, and a known constraint.
    let mut ancient = deliveries(4);
    ancient[2].placed.received_at = Utc
        .with_ymd_and_hms(-5000, 1, 1, 0, 0, 0)
        .single()
        .expect("a date chrono can hold");
    assert_eq!(faults(&store, &ancient).await, [(2, Fault::Order)]);
    let mut known = deliveries(60);
    known[17] = refused_as_known(known[17].clone());
    assert_eq!(faults(&store, &known).await, [(17, Fault::Order)]);
    let alone = vec![refused_as_known(deliveries(1).remove(0))];
    assert_eq!(faults(&store, &alone).await, [(0, Fault::Order)]);
}

#[tokio::test]
async fn most_rows_of_a_batch_refused_alike_are_a_release_fault_even_under_a_known_name() {
    let db = migrated().await;
    owner_runs(&db, STRICTER_KNOWN).await;
    let store = writer_store(&db).await;
    let mut batch: Vec<Delivery> = deliveries(5).into_iter().map(refused_as_known).collect();
    batch.extend(deliveries(8).split_off(5));
    let refused = faults(&store, &batch).await;
    // Both halves are refused alike, so the bisection stops there: the three
    // good rows wait with the five (postponed, not lost).
    assert!(
        (0..5).all(|bad| refused.contains(&(bad, Fault::Release))),
        "{refused:?}"
    );
    assert!(
        refused.iter().all(|(_, f)| *f == Fault::Release),
        "{refused:?}"
    );
}

/// Counts every write statement PostgreSQL is asked to run on `orders` (a
/// `COPY` or an `INSERT`), in a sequence that no rollback resets.
async fn count_write_statements(db: &TestDatabase) {
    owner_runs(
        db,
        "CREATE SEQUENCE write_statements;
         CREATE FUNCTION count_write_statement() RETURNS trigger LANGUAGE plpgsql
             SECURITY DEFINER AS $$ BEGIN PERFORM nextval('write_statements'); RETURN NULL; END $$;
         CREATE TRIGGER count_write_statement BEFORE INSERT ON orders
             FOR EACH STATEMENT EXECUTE FUNCTION count_write_statement();",
    )
    .await;
}

#[tokio::test]
async fn ten_thousand_rows_refused_alike_take_a_few_statements_not_twenty_thousand() {
    let db = migrated().await;
    owner_runs(&db, TOO_EARLY).await;
    count_write_statements(&db).await;
    let store = writer_store(&db).await;
    let refused = faults(&store, &deliveries(10_000)).await;
    assert_eq!(refused.len(), 10_000);
    assert!(refused.iter().all(|(_, f)| *f == Fault::Release));
    let statements: i64 = db
        .connect()
        .await
        .query_one("SELECT last_value FROM write_statements", &[])
        .await
        .expect("counted")
        .get(0);
    // The whole batch, then its two halves.
    assert_eq!(statements, 3);
}

/// The consumer's handler, adding up what its batches did.
struct Counting<S, Q, D> {
    consumer: Consumer<S, Q, D>,
    total: Mutex<BatchMetrics>,
}

impl<S, Q, D> BatchHandler for Counting<S, Q, D>
where
    S: OrderStore,
    Q: consumer_lambda::RetryQueue,
    D: consumer_lambda::DeadLetterQueue,
{
    async fn handle(
        &self,
        event: SqsEvent,
        deadline: Instant,
    ) -> Result<SqsBatchResponse, InvocationError> {
        let handled = self
            .consumer
            .handle(event, deadline)
            .await
            .map_err(|err| InvocationError(Box::new(err)))?;
        let mut total = self.total.lock().expect("lock");
        let m = handled.metrics;
        total.skewed += m.skewed;
        total.stored += m.stored;
        total.invalid += m.invalid;
        total.refused += m.refused;
        total.dead_lettered += m.dead_lettered;
        Ok(handled.response)
    }
}

/// Three receives before the DLQ: a record retried as a store failure would
/// be (postponed once, then requeued) never reaches it.
const QUEUES: QueueSettings = QueueSettings {
    visibility_timeout_secs: 5,
    max_receive_count: 3,
    ..QueueSettings::SQS_DEFAULTS
};

/// The consumer as deployed, reading `schema_version`s up to `newest`, with
/// one-second delays, driven by the local event source mapping.
async fn driver(
    db: &TestDatabase,
    queues: &TestQueues,
    newest: u32,
) -> Driver<Counting<PgStore, SqsRetryQueue, SqsDeadLetterQueue>> {
    let second = Duration::from_secs(1);
    let policy = RetryPolicy {
        backoff: Backoff::new(second, 1, second).expect("valid"),
        max_receive_count: MaxReceiveCount::new(QUEUES.max_receive_count).expect("valid"),
    };
    let consumer = Consumer::new(
        writer_store(db).await,
        SqsRetryQueue::new(queues.sqs.clone(), &queues.queue_url),
        SqsDeadLetterQueue::new(queues.sqs.clone(), &queues.dlq_url),
        policy,
    )
    .reading_up_to(newest);
    let settings = EventSourceSettings {
        batch_size: 10,
        batching_window: Duration::from_millis(100),
        max_concurrency: 1,
        function_timeout: Duration::from_secs(30),
    };
    let handler = Counting {
        consumer,
        total: Mutex::new(BatchMetrics::default()),
    };
    Driver::new(queues.sqs.clone(), &queues.queue_url, settings, handler)
        .await
        .expect("driver")
}

/// Steps `driver` until `done` says so of its totals.
async fn until(
    driver: &Driver<Counting<PgStore, SqsRetryQueue, SqsDeadLetterQueue>>,
    what: &str,
    done: impl Fn(&BatchMetrics) -> bool,
) -> BatchMetrics {
    let steps = async {
        loop {
            driver.poll_once().await.expect("polled");
            let total = *driver.handler().total.lock().expect("lock");
            if done(&total) {
                return total;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), steps)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within two minutes"))
}

async fn stored(db: &TestDatabase) -> (i64, i64) {
    let row = db
        .connect()
        .await
        .query_one("SELECT count(*), count(DISTINCT order_id) FROM orders", &[])
        .await
        .expect("count");
    (row.get(0), row.get(1))
}

const ORDERS: usize = 20;

fn bodies(version: u32) -> Vec<String> {
    (0..ORDERS)
        .map(|i| {
            order_placed_body(i, 2, Utc::now()).replace(
                &format!("\"schema_version\":{}", order_contract::SCHEMA_VERSION),
                &format!("\"schema_version\":{version}"),
            )
        })
        .collect()
}

/// Every order went through more receives than the queue's
/// `maxReceiveCount`, each postponed or requeued as skew, none dead-lettered.
fn each_outlived_max_receive_count(total: &BatchMetrics) -> bool {
    total.skewed >= ORDERS * (QUEUES.max_receive_count as usize + 1)
}

#[tokio::test]
async fn orders_a_too_early_migration_refuses_wait_and_are_stored_once_when_it_is_gone() {
    testkit::init_tracing();
    let db = migrated().await;
    owner_runs(&db, TOO_EARLY).await;
    let queues = TestQueues::create(QUEUES).await;
    queues.send_bodies(&bodies(1)).await;

    let driver = driver(&db, &queues, order_contract::SCHEMA_VERSION).await;
    let total = until(&driver, "skewed past maxReceiveCount", |total| {
        total.dead_lettered > 0 || each_outlived_max_receive_count(total)
    })
    .await;
    assert_eq!((total.dead_lettered, total.refused), (0, 0), "{total:?}");
    assert_eq!(queues.dlq_depth().await, 0);
    assert_eq!(stored(&db).await, (0, 0));

    owner_runs(
        &db,
        "ALTER TABLE orders DROP CONSTRAINT orders_gift_wrap_check",
    )
    .await;
    until(&driver, "every order stored", |total| {
        total.stored >= ORDERS as u64
    })
    .await;
    assert_eq!(
        stored(&db).await,
        (ORDERS as i64, ORDERS as i64),
        "each once"
    );
    assert_eq!(queues.dlq_depth().await, 0);
}

#[tokio::test]
async fn orders_of_a_newer_schema_version_wait_and_are_stored_once_code_that_reads_them_arrives() {
    testkit::init_tracing();
    let db = migrated().await;
    let queues = TestQueues::create(QUEUES).await;
    let next = order_contract::SCHEMA_VERSION + 1;
    queues.send_bodies(&bodies(next)).await;

    let this_build = driver(&db, &queues, order_contract::SCHEMA_VERSION).await;
    let total = until(&this_build, "skewed past maxReceiveCount", |total| {
        total.dead_lettered > 0 || each_outlived_max_receive_count(total)
    })
    .await;
    assert_eq!((total.dead_lettered, total.invalid), (0, 0), "{total:?}");
    assert_eq!(queues.dlq_depth().await, 0);

    let next_build = driver(&db, &queues, next).await;
    until(&next_build, "every order stored", |total| {
        total.stored >= ORDERS as u64
    })
    .await;
    assert_eq!(
        stored(&db).await,
        (ORDERS as i64, ORDERS as i64),
        "each once"
    );
    assert_eq!(queues.dlq_depth().await, 0);
}
