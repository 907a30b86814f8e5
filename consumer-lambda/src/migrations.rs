//! Versioned SQL migrations, embedded in the binary and applied on first connection.
//!
//! Safe when several execution environments start at once: everything runs in one
//! transaction holding a transaction-scoped advisory lock, so the second waits for
//! the first and then finds nothing left to do.

use tokio_postgres::Client;
use tokio_postgres::types::Type;

/// Arbitrary but fixed: the advisory lock key that serialises migrations.
const LOCK_KEY: i64 = 0x6f72_6465_7273; // "orders"

struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

/// In order; never edit one that has shipped, add the next instead.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "create_orders",
        sql: include_str!("../migrations/0001_create_orders.sql"),
    },
    Migration {
        version: 2,
        name: "content_hash_conflicts_request_id",
        sql: include_str!("../migrations/0002_content_hash_conflicts_request_id.sql"),
    },
];

#[derive(Debug, thiserror::Error)]
#[error(
    "could not apply the database migrations (is DATABASE_URL a role allowed to create tables?)"
)]
pub struct MigrationError(#[from] tokio_postgres::Error);

/// Applies the migrations this database lacks; returns the versions applied now.
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>, MigrationError> {
    let tx = client.transaction().await?;
    // Typed, unnamed statements throughout: no named prepared statement is left
    // behind to pin the connection behind RDS Proxy.
    tx.execute_typed(
        "SELECT pg_advisory_xact_lock($1)",
        &[(&LOCK_KEY, Type::INT8)],
    )
    .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer     PRIMARY KEY,
             name       text        NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let applied: Vec<i32> = tx
        .query_typed("SELECT version FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut now_applied = Vec::new();
    for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applying migration"
        );
        tx.batch_execute(migration.sql).await?;
        tx.execute_typed(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[
                (&migration.version, Type::INT4),
                (&migration.name, Type::TEXT),
            ],
        )
        .await?;
        now_applied.push(migration.version);
    }
    tx.commit().await?;
    Ok(now_applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_one_by_one_from_one() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                migration.version,
                i32::try_from(index).expect("few") + 1,
                "{}",
                migration.name
            );
        }
    }
}
