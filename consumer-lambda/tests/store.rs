//! The PostgreSQL store against a real server: idempotency, conflicts, rows the
//! database refuses, transactions, abandoned connections, migrations, restarts.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use consumer_lambda::migrations::{DEFAULT_WRITER, Role, connect_and_prepare, migrate};
use consumer_lambda::{
    DatabaseConfig, Delivery, MessageId, OrderStore, Outcome, PgStore, StoreError,
};
use order_contract::fixtures::{order_from_request, order_request, order_request_with_id};
use order_contract::{Order, OrderPlaced, RequestId};
use serde_json::{Value, json};
use testkit::{PostgresServer, TestDatabase};
use uuid::Uuid;

/// Migrated as the owner, then the store as the consumer runs it: as the writer role.
async fn store_on(db: &TestDatabase) -> PgStore {
    prepare(db).await;
    writer_store(db).await
}

async fn prepare(db: &TestDatabase) {
    let writer = Role::writer(DEFAULT_WRITER, None).expect("a valid name");
    connect_and_prepare(
        DatabaseConfig::from_url(&db.url).expect("valid URL"),
        &[writer],
    )
    .await
    .expect("migrated");
}

async fn writer_store(db: &TestDatabase) -> PgStore {
    let config = DatabaseConfig::from_url(&db.url_as(DEFAULT_WRITER)).expect("valid URL");
    PgStore::new(config, 1)
        .await
        .expect("no TLS or IAM to set up")
}

/// The order of [`request`].
fn order(order_id: Uuid, customer: &str) -> Order {
    order_from_request(&request(order_id, customer))
}

/// The fixture's two-line order request under `order_id`, for `customer`, in
/// SEK: a test below adds a constraint that refuses SEK.
fn request(order_id: Uuid, customer: &str) -> Value {
    let mut request = order_request_with_id(order_id, 7, 2);
    request["customer_id"] = json!(customer);
    request["currency"] = json!("SEK");
    request
}

/// The catalogue version the producer priced [`delivery`]'s orders by.
const CATALOGUE_VERSION: &str = "2026-12-06.1";

fn delivery(message_id: &str, order_id: Uuid) -> Delivery {
    let received_at: DateTime<Utc> = "2026-11-24T18:27:15.250Z".parse().expect("timestamp");
    Delivery {
        message_id: MessageId::new(message_id).expect("an id"),
        placed: OrderPlaced::new(order(order_id, "cust-7"), received_at)
            .priced_by(CATALOGUE_VERSION.into()),
        request_id: RequestId::parse(&format!("req-{message_id}")),
    }
}

/// A fresh database and its store, holding one order, stored from message `message_id`.
async fn store_holding(message_id: &str, order_id: Uuid) -> (TestDatabase, PgStore) {
    let db = TestDatabase::create().await;
    let store = store_on(&db).await;
    store
        .insert(&refs(&[delivery(message_id, order_id)]))
        .await
        .expect("stored");
    (db, store)
}

/// The same order id with other content: another customer.
fn conflicting(message_id: &str, order_id: Uuid) -> Delivery {
    Delivery {
        placed: OrderPlaced::new(order(order_id, "someone-else"), Utc::now()),
        ..delivery(message_id, order_id)
    }
}

fn refs(deliveries: &[Delivery]) -> Vec<&Delivery> {
    deliveries.iter().collect()
}

/// `n` new orders: padding that decides how a batch is written. The store uses
/// one `INSERT` below 50 rows and a `COPY` from 50 on; the tests that matter
/// for both run with `SMALL` and `LARGE` padding.
fn fresh(n: usize) -> Vec<Delivery> {
    (0..n)
        .map(|i| delivery(&format!("pad-{i}"), Uuid::new_v4()))
        .collect()
}

const SMALL: usize = 1;
const LARGE: usize = 60;

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.expect("count").get(0)
}

#[tokio::test]
async fn a_batch_is_stored_once_with_every_field_and_a_repeat_only_counts_duplicates() {
    testkit::init_tracing();
    let db = TestDatabase::create().await;
    let store = store_on(&db).await;
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let batch: Vec<Delivery> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| delivery(&format!("m-{i}"), *id))
        .collect();

    let first = store.insert(&refs(&batch)).await.expect("stored");
    assert_eq!((first.stored, first.duplicates, first.conflicts), (3, 0, 0));
    assert_eq!(first.by_delivery, [Outcome::Stored; 3]);
    let again = store.insert(&refs(&batch)).await.expect("idempotent");
    assert_eq!((again.stored, again.duplicates, again.conflicts), (0, 3, 0));
    assert_eq!(again.by_delivery, [Outcome::Duplicate; 3]);

    let client = db.connect().await;
    let row = client
        .query_one(
            "SELECT customer_id, currency, items, total_cents, received_at, sqs_message_id,
                    request_id, content_sha256, catalogue_version
             FROM orders WHERE order_id = $1",
            &[&ids[1]],
        )
        .await
        .expect("one row");
    // What was sent: the request, as the fixture wrote it.
    let sent = request(ids[1], "cust-7");
    let total: i64 = sent["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| {
            item["quantity"].as_i64().unwrap_or(0) * item["unit_price_cents"].as_i64().unwrap_or(0)
        })
        .sum();
    assert!(total > 0, "a total worth checking: {sent}");
    assert_eq!(row.get::<_, String>(0), "cust-7");
    assert_eq!(row.get::<_, String>(1), "SEK");
    assert_eq!(row.get::<_, Value>(2), sent["items"]);
    assert_eq!(row.get::<_, i64>(3), total);
    assert_eq!(row.get::<_, DateTime<Utc>>(4), batch[1].placed.received_at);
    assert_eq!(row.get::<_, String>(5), "m-1");
    assert_eq!(row.get::<_, String>(6), "req-m-1");
    assert_eq!(
        row.get::<_, Vec<u8>>(7),
        consumer_lambda::store::content_hash(&batch[1].placed)
    );
    assert_eq!(row.get::<_, String>(8), CATALOGUE_VERSION);
    assert_eq!(count(&client, "SELECT count(*) FROM orders").await, 3);
}

#[tokio::test]
async fn the_catalogue_version_is_stored_on_every_write_path_and_a_version_1_order_has_none() {
    let db = TestDatabase::create().await;
    let store = store_on(&db).await;
    // Small and large batches: every path.
    for n in [3, 300, 3000] {
        let batch: Vec<Delivery> = (0..n)
            .map(|i| delivery(&format!("m-{n}-{i}"), Uuid::new_v4()))
            .collect();
        let written = store.insert(&refs(&batch)).await.expect("stored");
        assert_eq!(written.stored, n);
    }
    let mut unversioned = delivery("m-v1", Uuid::new_v4());
    unversioned.placed.catalogue_version = None;
    store.insert(&[&unversioned]).await.expect("stored");
    let client = db.connect().await;
    let by_version = |version: &str| {
        format!(
            "SELECT count(*) FROM orders WHERE catalogue_version IS NOT DISTINCT FROM {version}"
        )
    };
    assert_eq!(
        count(&client, &by_version(&format!("'{CATALOGUE_VERSION}'"))).await,
        3303
    );
    assert_eq!(count(&client, &by_version("NULL")).await, 1);
}

#[tokio::test]
async fn the_same_order_twice_in_one_batch_is_one_row_and_one_duplicate() {
    let db = TestDatabase::create().await;
    let store = store_on(&db).await;
    let id = Uuid::new_v4();
    let batch = [delivery("first", id), delivery("redelivered", id)];
    let outcome = store.insert(&refs(&batch)).await.expect("stored");
    assert_eq!((outcome.stored, outcome.duplicates), (1, 1));
    let client = db.connect().await;
    let message: String = client
        .query_one(
            "SELECT sqs_message_id FROM orders WHERE order_id = $1",
            &[&id],
        )
        .await
        .expect("one row")
        .get(0);
    assert_eq!(message, "first");
}

#[tokio::test]
async fn a_batch_mixing_new_orders_with_one_already_stored_stores_the_new_ones_on_every_path() {
    for size in [SMALL + 1, LARGE] {
        let path = format!("{size} new rows");
        let old = Uuid::new_v4();
        let (db, store) = store_holding("old", old).await;
        let mut batch = fresh(size);
        batch.insert(size / 2, delivery("replayed", old));
        let outcome = store.insert(&refs(&batch)).await.expect("stored");
        assert_eq!(
            (outcome.stored, outcome.duplicates, outcome.conflicts),
            (size as u64, 1, 0),
            "{path}"
        );
        let mut expected = vec![Outcome::Stored; size + 1];
        expected[size / 2] = Outcome::Duplicate;
        assert_eq!(outcome.by_delivery, expected, "{path}");
        let client = db.connect().await;
        assert_eq!(
            count(&client, "SELECT count(*) FROM orders").await,
            size as i64 + 1,
            "{path}"
        );
        let message: String = client
            .query_one(
                "SELECT sqs_message_id FROM orders WHERE order_id = $1",
                &[&old],
            )
            .await
            .expect("one row")
            .get(0);
        assert_eq!(message, "old", "the first stored copy stays ({path})");
    }
}

/// Counts every row PostgreSQL is asked to write, in a sequence (which no
/// rollback resets), through a trigger the test adds.
async fn count_write_attempts(client: &tokio_postgres::Client) {
    client
        .batch_execute(
            "CREATE SEQUENCE write_attempts;
             CREATE FUNCTION count_write_attempt() RETURNS trigger LANGUAGE plpgsql
                 SECURITY DEFINER AS $$ BEGIN PERFORM nextval('write_attempts'); RETURN NEW; END $$;
             CREATE TRIGGER count_write_attempt BEFORE INSERT ON orders
                 FOR EACH ROW EXECUTE FUNCTION count_write_attempt();",
        )
        .await
        .expect("trigger");
}

async fn write_attempts(client: &tokio_postgres::Client) -> i64 {
    count(
        client,
        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM write_attempts",
    )
    .await
}

#[tokio::test]
async fn a_large_batch_with_a_stored_order_is_looked_up_first_so_no_write_is_thrown_away() {
    // `LARGE` new orders and, last, one stored before.
    let old = Uuid::new_v4();
    let (db, store) = store_holding("old", old).await;
    let client = db.connect().await;
    count_write_attempts(&client).await;
    let mut batch = fresh(LARGE);
    batch.push(delivery("again", old));
    let outcome = store.insert(&refs(&batch)).await.expect("stored");
    assert_eq!((outcome.stored, outcome.duplicates), (LARGE as u64, 1));
    assert_eq!(
        write_attempts(&client).await,
        LARGE as i64,
        "only the new rows were written"
    );
}

#[tokio::test]
async fn a_different_order_under_a_stored_id_is_kept_aside_once_and_never_stored_over_the_first() {
    testkit::init_tracing();
    let id = Uuid::new_v4();
    let (db, store) = store_holding("first", id).await;

    let newcomer = conflicting("newcomer", id);
    let outcome = store
        .insert(&refs(&[newcomer.clone(), delivery("redelivery", id)]))
        .await
        .expect("stored");
    assert_eq!(
        (outcome.stored, outcome.duplicates, outcome.conflicts),
        (0, 1, 1),
        "the newcomer is a conflict, the true redelivery a duplicate"
    );
    assert_eq!(
        outcome.by_delivery,
        [Outcome::Conflict { kept_now: true }, Outcome::Duplicate]
    );
    // The conflicting message delivered again is not a second conflict.
    let again = store.insert(&refs(&[newcomer])).await.expect("stored");
    assert_eq!((again.duplicates, again.conflicts), (1, 0));
    assert_eq!(again.by_delivery, [Outcome::Conflict { kept_now: false }]);

    let client = db.connect().await;
    let row = client
        .query_one(
            "SELECT sqs_message_id, request_id, body->>'customer_id' FROM order_conflicts WHERE order_id = $1",
            &[&id],
        )
        .await
        .expect("exactly one conflict kept");
    assert_eq!(row.get::<_, String>(0), "newcomer");
    assert_eq!(row.get::<_, String>(1), "req-newcomer");
    assert_eq!(row.get::<_, String>(2), "someone-else");
    let stored: String = client
        .query_one("SELECT customer_id FROM orders WHERE order_id = $1", &[&id])
        .await
        .expect("the first stays")
        .get(0);
    assert_eq!(stored, "cust-7");
}

#[tokio::test]
async fn two_different_orders_under_one_id_in_one_batch_store_the_first_and_keep_the_second() {
    let db = TestDatabase::create().await;
    let store = store_on(&db).await;
    let id = Uuid::new_v4();
    let batch = [delivery("first", id), conflicting("second", id)];
    let outcome = store.insert(&refs(&batch)).await.expect("stored");
    assert_eq!((outcome.stored, outcome.conflicts), (1, 1));
    assert_eq!(
        outcome.by_delivery,
        [Outcome::Stored, Outcome::Conflict { kept_now: true }]
    );
}

#[tokio::test]
async fn a_row_the_database_refuses_fails_alone_among_a_thousand_valid_orders() {
    testkit::init_tracing();
    let db = TestDatabase::create().await;
    let store = store_on(&db).await;
    let mut batch: Vec<Delivery> = (0..1_000)
        .map(|i| delivery(&format!("m-{i}"), Uuid::new_v4()))
        .collect();
    // The contract (and chrono) accept the year -5000; PostgreSQL's timestamptz
    // ends at 4713 BC and refuses it with a data exception (SQLSTATE 22008).
    let mut bad = delivery("m-ancient", Uuid::new_v4());
    bad.placed.received_at = Utc
        .with_ymd_and_hms(-5000, 1, 1, 0, 0, 0)
        .single()
        .expect("a date chrono can hold");
    batch.insert(617, bad);

    let outcome = store
        .insert(&refs(&batch))
        .await
        .expect("not a transient failure");
    assert_eq!(outcome.stored, 1_000);
    assert_eq!(outcome.refused.len(), 1, "{:?}", outcome.refused);
    assert_eq!(outcome.refused[0].index, 617);
    assert_eq!(outcome.by_delivery[617], Outcome::Refused);
    assert_eq!(
        outcome
            .by_delivery
            .iter()
            .filter(|o| **o == Outcome::Stored)
            .count(),
        1_000
    );
    assert!(
        outcome.refused[0].reason.contains("out of range"),
        "{}",
        outcome.refused[0].reason
    );
    let client = db.connect().await;
    assert_eq!(count(&client, "SELECT count(*) FROM orders").await, 1_000);
}

#[tokio::test]
async fn an_error_at_commit_is_a_failure_and_stores_nothing() {
    error_at_commit(SMALL).await;
}

#[tokio::test]
async fn an_error_at_commit_of_a_copy_is_a_failure_and_stores_nothing() {
    error_at_commit(LARGE).await;
}

async fn error_at_commit(size: usize) {
    let db = TestDatabase::create().await;
    let store = store_on(&db).await;
    let client = db.connect().await;
    // A deferred constraint trigger runs at COMMIT, after the write itself succeeded.
    client
        .batch_execute(
            "CREATE FUNCTION fail_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'refused at commit' USING ERRCODE = 'serialization_failure'; END $$;
             CREATE CONSTRAINT TRIGGER fail_at_commit AFTER INSERT ON orders
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_at_commit();",
        )
        .await
        .expect("trigger");
    let err = store
        .insert(&refs(&fresh(size)))
        .await
        .expect_err("a failed commit is not success");
    assert!(matches!(err, StoreError::Write { .. }), "{err:?}");
    assert_eq!(count(&client, "SELECT count(*) FROM orders").await, 0);
}

#[tokio::test]
async fn a_row_the_database_refuses_fails_alone_in_a_small_batch_with_a_stored_order() {
    let id = Uuid::new_v4();
    let (_db, store) = store_holding("stored", id).await;
    let mut bad = delivery("m-ancient", Uuid::new_v4());
    bad.placed.received_at = Utc
        .with_ymd_and_hms(-5000, 1, 1, 0, 0, 0)
        .single()
        .expect("a date chrono can hold");
    let mut batch = fresh(5);
    batch.insert(2, bad);
    batch.push(delivery("stored", id));

    let outcome = store.insert(&refs(&batch)).await.expect("not transient");
    assert_eq!((outcome.stored, outcome.duplicates), (5, 1));
    assert_eq!(
        outcome.refused.iter().map(|r| r.index).collect::<Vec<_>>(),
        [2]
    );
}

#[tokio::test]
async fn a_stored_order_that_a_newer_constraint_refuses_is_a_duplicate_and_blocks_no_one() {
    for new_orders in [1, LARGE] {
        let path = format!("{new_orders} new rows");
        let id = Uuid::new_v4();
        let (db, store) = store_holding("stored", id).await;
        // Valid when it was stored; a constraint added since (NOT VALID: old rows
        // are not checked) refuses its content. Written again, it would be refused,
        // but it is a duplicate: nothing of it needs writing.
        let client = db.connect().await;
        client
            .batch_execute(
                "ALTER TABLE orders ADD CONSTRAINT no_sek CHECK (currency <> 'SEK') NOT VALID",
            )
            .await
            .expect("constraint");
        // New orders beside it: the ones the store must not blame.
        let mut batch: Vec<Delivery> = (0..new_orders)
            .map(|i| {
                let mut request = order_request(i, 1);
                request["currency"] = json!("EUR");
                Delivery {
                    placed: OrderPlaced::new(order_from_request(&request), Utc::now()),
                    ..delivery(&format!("eur-{i}"), Uuid::new_v4())
                }
            })
            .collect();
        batch.push(delivery("stored", id));

        let outcome = store.insert(&refs(&batch)).await.expect("not transient");
        assert_eq!(
            (outcome.stored, outcome.duplicates),
            (new_orders as u64, 1),
            "{path}"
        );
        assert!(outcome.refused.is_empty(), "{path}: {:?}", outcome.refused);
    }
}

#[tokio::test]
async fn a_conflict_that_order_conflicts_refuses_fails_alone_and_its_batch_is_stored() {
    testkit::init_tracing();
    for new_orders in [2, LARGE] {
        let path = format!("{new_orders} new rows");
        let (kept, refused) = (Uuid::new_v4(), Uuid::new_v4());
        let (db, store) = store_holding("stored-1", kept).await;
        store
            .insert(&refs(&[delivery("stored-2", refused)]))
            .await
            .expect("stored");
        // A rule added to order_conflicts since (NOT VALID: rows kept before are
        // not checked) that one newcomer breaks; the other is kept as usual.
        db.connect()
            .await
            .batch_execute(
                "ALTER TABLE order_conflicts ADD CONSTRAINT no_unkeepable
                     CHECK (body->>'customer_id' <> 'unkeepable') NOT VALID",
            )
            .await
            .expect("constraint");
        let mut batch = fresh(new_orders);
        batch.insert(1, conflicting("conflict-kept", kept));
        let mut unkeepable = delivery("conflict-refused", refused);
        unkeepable.placed = OrderPlaced::new(order(refused, "unkeepable"), Utc::now());
        batch.push(unkeepable);

        let outcome = store
            .insert(&refs(&batch))
            .await
            .unwrap_or_else(|err| panic!("{path}: one refused conflict failed the batch: {err:?}"));
        assert_eq!(
            (outcome.stored, outcome.duplicates, outcome.conflicts),
            (new_orders as u64, 0, 1),
            "{path}"
        );
        assert_eq!(
            outcome.refused.iter().map(|r| r.index).collect::<Vec<_>>(),
            [new_orders + 1],
            "{path}"
        );
        assert!(
            outcome.refused[0].reason.contains("no_unkeepable"),
            "{path}: {}",
            outcome.refused[0].reason
        );
        let mut expected = vec![Outcome::Stored; new_orders + 2];
        expected[1] = Outcome::Conflict { kept_now: true };
        expected[new_orders + 1] = Outcome::Refused;
        assert_eq!(outcome.by_delivery, expected, "{path}");
        let client = db.connect().await;
        assert_eq!(
            count(&client, "SELECT count(*) FROM orders").await,
            new_orders as i64 + 2,
            "{path}"
        );
        let conflicts: Vec<String> = client
            .query("SELECT sqs_message_id FROM order_conflicts", &[])
            .await
            .expect("conflicts")
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(conflicts, ["conflict-kept"], "{path}");
    }
}

#[tokio::test]
async fn an_order_stored_by_someone_else_meanwhile_is_a_duplicate_not_an_error() {
    stored_meanwhile(SMALL).await;
}

#[tokio::test]
async fn an_order_stored_by_someone_else_during_a_copy_is_a_duplicate_not_an_error() {
    stored_meanwhile(LARGE).await;
}

async fn stored_meanwhile(size: usize) {
    testkit::init_tracing();
    let db = TestDatabase::create().await;
    drop(store_on(&db).await); // migrated
    let id = Uuid::new_v4();
    // Another consumer is inserting the same order and has not committed: the
    // store's lookup cannot see it, and its write waits on the key.
    let mut other = db.connect().await;
    let tx = other.transaction().await.expect("begin");
    tx.execute(
        "INSERT INTO orders (order_id, customer_id, currency, items, total_cents, received_at,
                             sqs_message_id, content_sha256)
         VALUES ($1, 'cust-7', 'SEK', '[]', 0, now(), 'other', $2)",
        &[
            &id,
            &consumer_lambda::store::content_hash(&delivery("x", id).placed).to_vec(),
        ],
    )
    .await
    .expect("insert");

    let mut batch = fresh(size);
    batch.push(delivery("mine", id));
    let store = writer_store(&db).await;
    let insert = tokio::spawn({
        let batch = batch.clone();
        async move { store.insert(&refs(&batch)).await }
    });
    let watcher = db.connect().await;
    testkit::eventually("the write to wait on the other insert", Duration::from_secs(10), || {
        let watcher = &watcher;
        async move {
            let waiting = count(
                watcher,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'orders-consumer' AND wait_event_type = 'Lock'",
            )
            .await;
            if waiting == 1 { Ok(()) } else { Err(format!("{waiting} waiting")) }
        }
    })
    .await;
    tx.commit().await.expect("the other consumer commits");

    let outcome = insert.await.expect("no panic").expect("stored");
    assert_eq!(
        (outcome.stored, outcome.duplicates, outcome.conflicts),
        (size as u64, 1, 0)
    );
}

#[tokio::test]
async fn a_call_abandoned_mid_statement_closes_its_connection_and_the_next_one_works() {
    testkit::init_tracing();
    let db = TestDatabase::create().await;
    let store = store_on(&db).await;
    let client = db.connect().await;
    let mut locker = db.connect().await;
    let lock = locker.transaction().await.expect("begin");
    lock.batch_execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");

    // The handler's deadline does this: drop the call while it waits.
    let batch = [delivery("stuck", Uuid::new_v4())];
    let abandoned =
        tokio::time::timeout(Duration::from_millis(500), store.insert(&refs(&batch))).await;
    assert!(abandoned.is_err(), "the insert waits on the lock");
    lock.rollback().await.expect("unlock");

    // The abandoned backend goes away. Its BEGIN, write and COMMIT were sent
    // together, so it may have committed the batch before noticing that no one
    // listens: all of it or none of it...
    testkit::eventually("the abandoned backend to end", Duration::from_secs(10), || {
        let client = &client;
        async move {
            match count(client, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'orders-consumer'").await {
                0 => Ok(()),
                n => Err(format!("{n} consumer backends")),
            }
        }
    })
    .await;
    // ...and the store goes on with a fresh connection. The retry stores the
    // order or finds it stored: once either way.
    let outcome = store.insert(&refs(&batch)).await.expect("stored");
    assert_eq!(outcome.stored + outcome.duplicates, 1, "{outcome:?}");
    assert_eq!(count(&client, "SELECT count(*) FROM orders").await, 1);
}

#[tokio::test]
async fn migrations_started_at_once_by_several_consumers_apply_exactly_once() {
    let db = TestDatabase::create().await;
    let runs = (0..4).map(|_| {
        let url = db.url.clone();
        tokio::spawn(async move {
            let mut client = testkit::connect(&url).await;
            migrate(&mut client).await.expect("migrate")
        })
    });
    let applied: Vec<Vec<i32>> = futures::future::try_join_all(runs).await.expect("no panic");
    let winners: Vec<&Vec<i32>> = applied.iter().filter(|v| !v.is_empty()).collect();
    assert_eq!(winners.len(), 1, "{applied:?}");
    let client = db.connect().await;
    assert_eq!(
        count(&client, "SELECT count(*) FROM schema_migrations").await,
        winners[0].len() as i64
    );
}

#[tokio::test]
async fn the_store_fails_while_the_database_is_down_and_reconnects_when_it_returns() {
    testkit::init_tracing();
    let server = PostgresServer::start().await;
    let db = TestDatabase::create_on(&server.admin_url()).await;
    let store = store_on(&db).await;
    store
        .insert(&refs(&[delivery("before", Uuid::new_v4())]))
        .await
        .expect("stored while up");

    server.stop();
    let during = [delivery("during", Uuid::new_v4())];
    let err = store
        .insert(&refs(&during))
        .await
        .expect_err("the database is down");
    // Either no connection could be made, or the pooled one broke under the call.
    let chain = support::error_chain(&err).to_lowercase();
    assert!(
        matches!(err, StoreError::Connect(_) | StoreError::Write { .. })
            && chain.contains("connect"),
        "{chain}"
    );

    server.start_again().await;
    let outcome = store
        .insert(&refs(&during))
        .await
        .expect("reconnected after the restart");
    assert_eq!(outcome.stored, 1);
}

#[tokio::test]
async fn a_lookup_finds_a_stored_order_by_its_id_and_no_other() {
    let db = TestDatabase::create().await;
    let store = store_on(&db).await;
    let stored = Uuid::new_v4();
    store
        .insert(&[&delivery("m-1", stored)])
        .await
        .expect("stored");
    assert!(store.is_stored(stored).await.expect("a lookup"));
    assert!(!store.is_stored(Uuid::new_v4()).await.expect("a lookup"));
}
