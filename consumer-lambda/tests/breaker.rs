//! The circuit breaker's probe as the consumer function answers it: a
//! synthetic batch through the batch path, against a real PostgreSQL.

use breaker::{Health, Probe};
use consumer_lambda::migrations::{DEFAULT_WRITER, Role, connect_and_prepare};
use consumer_lambda::probe::BatchProbe;
use consumer_lambda::{Backoff, DatabaseConfig, MaxReceiveCount, PgStore, RetryPolicy};
use testkit::{PostgresServer, TestDatabase};

fn policy() -> RetryPolicy {
    RetryPolicy {
        backoff: Backoff::default(),
        max_receive_count: MaxReceiveCount::new(6).expect("a count"),
    }
}

async fn probe(store: &PgStore) -> Health {
    BatchProbe::of(store, policy()).probe().await
}

async fn rows(db: &TestDatabase) -> i64 {
    db.connect()
        .await
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .expect("count")
        .get(0)
}

async fn writer_store(db: &TestDatabase) -> PgStore {
    PgStore::new(
        DatabaseConfig::from_url(&db.url_as(DEFAULT_WRITER)).expect("url"),
        1,
    )
    .await
    .expect("a pool")
}

async fn migrate(db: &TestDatabase) {
    let writer = Role::writer(DEFAULT_WRITER, None).expect("a valid name");
    connect_and_prepare(DatabaseConfig::from_url(&db.url).expect("url"), &[writer])
        .await
        .expect("migrated");
}

fn unhealthy(health: Health) -> String {
    match health {
        Health::Unhealthy(reason) => reason,
        other => panic!("expected unhealthy, got {other:?}"),
    }
}

#[tokio::test]
async fn the_writer_on_a_migrated_database_is_healthy_and_the_probe_leaves_no_row() {
    let db = TestDatabase::create().await;
    migrate(&db).await;
    assert_eq!(probe(&writer_store(&db).await).await, Health::Healthy);
    assert_eq!(rows(&db).await, 0, "the probe's write is rolled back");
}

#[tokio::test]
async fn a_missing_table_is_unhealthy_and_named_by_its_sqlstate() {
    let db = TestDatabase::create().await;
    migrate(&db).await;
    db.connect()
        .await
        .batch_execute("ALTER TABLE orders RENAME TO orders_elsewhere")
        .await
        .expect("dropped");
    let reason = unhealthy(probe(&writer_store(&db).await).await);
    assert!(reason.contains("SQLSTATE 42P01"), "{reason}");
}

#[tokio::test]
async fn a_writer_without_insert_is_unhealthy_and_told_to_migrate() {
    let db = TestDatabase::create().await;
    migrate(&db).await;
    db.connect()
        .await
        .batch_execute(&format!("REVOKE INSERT ON orders FROM {DEFAULT_WRITER}"))
        .await
        .expect("revoked");
    let reason = unhealthy(probe(&writer_store(&db).await).await);
    assert!(reason.contains("42501"), "{reason}");
    assert!(reason.contains("run the migrations"), "{reason}");
}

#[tokio::test]
async fn a_database_that_refuses_every_new_row_is_unhealthy_though_the_writer_may_insert() {
    let db = TestDatabase::create().await;
    migrate(&db).await;
    // A constraint newer than this build, as a too-early migration adds: the
    // writer keeps its privileges, and every batch's write is refused.
    db.connect()
        .await
        .batch_execute("ALTER TABLE orders ADD CONSTRAINT too_early CHECK (false) NOT VALID")
        .await
        .expect("constraint added");
    let reason = unhealthy(probe(&writer_store(&db).await).await);
    assert!(reason.contains("too_early"), "{reason}");
}

#[tokio::test]
async fn a_stopped_database_is_unhealthy_and_healthy_again_once_started() {
    let server = PostgresServer::start().await;
    let db = TestDatabase::create_on(&server.admin_url()).await;
    migrate(&db).await;
    let store = writer_store(&db).await;
    assert_eq!(probe(&store).await, Health::Healthy);
    server.stop();
    let reason = unhealthy(probe(&store).await);
    assert!(!reason.is_empty());
    server.start_again().await;
    // The broken connection is replaced on the next checkout.
    testkit::eventually(
        "the probe to pass",
        std::time::Duration::from_secs(30),
        || async {
            match probe(&store).await {
                Health::Healthy => Ok(()),
                other => Err(other),
            }
        },
    )
    .await;
}
