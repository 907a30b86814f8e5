//! The PostgreSQL store against a real server: idempotency, migrations, restarts.

use chrono::{DateTime, Utc};
use consumer_lambda::{Accepted, DatabaseConfig, OrderStore, PgStore, migrations::migrate};
use order_contract::{Order, OrderPlaced};
use testkit::{PostgresServer, TestDatabase};
use uuid::Uuid;

async fn store_for(url: &str) -> PgStore {
    let config = DatabaseConfig::from_url(url).expect("valid URL");
    PgStore::new(config, 1)
        .await
        .expect("no TLS or IAM to set up")
}

fn accepted(message_id: &str, order_id: Uuid) -> Accepted {
    let order = Order::from_request_json(&format!(
        r#"{{"order_id":"{order_id}","customer_id":"cust-7","currency":"SEK",
            "items":[{{"sku":"MUG-2","quantity":3,"unit_price_cents":450}},{{"sku":"TEA 9","quantity":1,"unit_price_cents":0}}]}}"#
    ))
    .expect("valid order");
    let received_at: DateTime<Utc> = "2026-11-24T18:27:15.250Z".parse().expect("timestamp");
    Accepted {
        message_id: message_id.to_owned(),
        placed: OrderPlaced::new(order, received_at),
    }
}

#[tokio::test]
async fn a_batch_is_stored_once_with_every_field_and_a_repeat_only_counts_duplicates() {
    testkit::init_tracing();
    let db = TestDatabase::create().await;
    let store = store_for(&db.url).await;
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let batch: Vec<Accepted> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| accepted(&format!("m-{i}"), *id))
        .collect();

    let first = store.insert(&batch).await.expect("stored");
    assert_eq!((first.stored, first.duplicates), (3, 0));
    let again = store.insert(&batch).await.expect("idempotent");
    assert_eq!((again.stored, again.duplicates), (0, 3));

    let client = db.connect().await;
    let row = client
        .query_one(
            "SELECT customer_id, currency, items, total_cents, received_at, sqs_message_id FROM orders WHERE order_id = $1",
            &[&ids[1]],
        )
        .await
        .expect("one row");
    assert_eq!(row.get::<_, String>(0), "cust-7");
    assert_eq!(row.get::<_, String>(1), "SEK");
    assert_eq!(
        row.get::<_, serde_json::Value>(2),
        serde_json::json!([{"sku":"MUG-2","quantity":3,"unit_price_cents":450},{"sku":"TEA 9","quantity":1,"unit_price_cents":0}])
    );
    assert_eq!(row.get::<_, i64>(3), 1350);
    assert_eq!(row.get::<_, DateTime<Utc>>(4), batch[1].placed.received_at);
    assert_eq!(row.get::<_, String>(5), "m-1");
    let count: i64 = client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 3);
}

#[tokio::test]
async fn the_same_order_twice_in_one_batch_is_one_row_and_one_duplicate() {
    let db = TestDatabase::create().await;
    let store = store_for(&db.url).await;
    let id = Uuid::new_v4();
    let outcome = store
        .insert(&[accepted("first", id), accepted("redelivered", id)])
        .await
        .expect("stored");
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
async fn a_batch_mixing_new_orders_with_one_already_stored_stores_the_new_ones() {
    let db = TestDatabase::create().await;
    let store = store_for(&db.url).await;
    let old = Uuid::new_v4();
    store.insert(&[accepted("old", old)]).await.expect("stored");
    let batch = [
        accepted("new-1", Uuid::new_v4()),
        accepted("replayed", old),
        accepted("new-2", Uuid::new_v4()),
    ];
    let outcome = store.insert(&batch).await.expect("stored");
    assert_eq!((outcome.stored, outcome.duplicates), (2, 1));
    let client = db.connect().await;
    let count: i64 = client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 3);
    let message: String = client
        .query_one(
            "SELECT sqs_message_id FROM orders WHERE order_id = $1",
            &[&old],
        )
        .await
        .expect("one row")
        .get(0);
    assert_eq!(message, "old", "the first stored copy stays");
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
    assert_eq!(
        applied
            .iter()
            .filter(|versions| !versions.is_empty())
            .count(),
        1,
        "{applied:?}"
    );
    let client = db.connect().await;
    let versions: i64 = client
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(versions, 1);
}

#[tokio::test]
async fn the_store_fails_while_the_database_is_down_and_reconnects_when_it_returns() {
    testkit::init_tracing();
    let server = PostgresServer::start().await;
    let db = TestDatabase::create_on(&server.admin_url()).await;
    let store = store_for(&db.url).await;
    store
        .insert(&[accepted("before", Uuid::new_v4())])
        .await
        .expect("stored while up");

    server.stop();
    let during = [accepted("during", Uuid::new_v4())];
    let err = store
        .insert(&during)
        .await
        .expect_err("the database is down");
    assert!(!err.to_string().is_empty());

    server.start_again().await;
    let outcome = store
        .insert(&during)
        .await
        .expect("reconnected after the restart");
    assert_eq!(outcome.stored, 1);
}
