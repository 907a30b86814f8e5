//! The migrations against a real PostgreSQL: a lock another session holds
//! makes them fail in time, saying what to do, and leaves nothing half-done.

use std::time::Duration;

use consumer_lambda::migrations::{LATEST_VERSION, migrate};
use testkit::TestDatabase;

#[tokio::test]
async fn a_migration_blocked_by_another_sessions_lock_fails_in_time_and_says_what_to_do() {
    let db = TestDatabase::create().await;
    let owner = db.connect().await;
    // The schema as the first release left it: migration 1 applied.
    owner
        .batch_execute(include_str!("../migrations/0001_create_orders.sql"))
        .await
        .expect("migration 1");
    owner
        .batch_execute(
            "CREATE TABLE schema_migrations (
                 version integer PRIMARY KEY, name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO schema_migrations (version, name) VALUES (1, 'create_orders')",
        )
        .await
        .expect("recorded");
    // A reader in a long transaction: its lock on `orders` blocks migration
    // 2's ALTER TABLE, and every insert would queue behind that ALTER.
    let reader = db.connect().await;
    reader
        .batch_execute("BEGIN; SELECT count(*) FROM orders")
        .await
        .expect("a lock");

    let mut client = db.connect().await;
    let err = tokio::time::timeout(Duration::from_secs(120), migrate(&mut client))
        .await
        .expect("failed in time instead of waiting for the lock")
        .expect_err("blocked by the reader's lock");
    let text = support::error_chain(&err);
    assert!(
        text.contains("lock") && text.contains("scripts/deploy --migrate"),
        "{text}"
    );

    reader.batch_execute("COMMIT").await.expect("released");
    let versions: Vec<i32> = owner
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .expect("versions")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(versions, [1], "nothing half-applied");
    assert_eq!(
        migrate(&mut client).await.expect("applied"),
        (2..=LATEST_VERSION).collect::<Vec<_>>()
    );
}
