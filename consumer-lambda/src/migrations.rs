//! The schema, and the roles that log in to it: versioned SQL migrations
//! embedded in the binary, applied as the tables' owner once per deploy (the
//! `migrate` task, or `local-esm migrate`), never on the insert path.
//!
//! The consumer logs in as a *writer* that may only read and insert orders
//! and conflicts; the status function as a *reader* that may only read them,
//! over at most [`READER_CONNECTION_LIMIT`] connections, so that reads cannot
//! take the connections writes need. [`prepare`] creates each role, sets its
//! password as a SCRAM verifier (no password reaches the server) and grants it.
//!
//! Safe when several runs start at once: the migrations run in one
//! transaction holding an advisory lock, so the second waits for the first
//! and finds nothing left to do.

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

use crate::config::DatabaseConfig;
use crate::database::{ConnectError, Connector};

/// The advisory lock key that serialises migrations.
const LOCK_KEY: i64 = 0x6f72_6465_7273; // "orders"

/// How long a migration waits for a table lock another session holds. While
/// an ALTER TABLE waits, every insert queues behind it, so it gives up soon.
pub const LOCK_TIMEOUT_SECS: u32 = 5;
/// How long one statement of a migration may run: less than the migrate
/// function's Timeout, so that it fails with PostgreSQL's answer, not Lambda's.
pub const STATEMENT_TIMEOUT_SECS: u32 = 240;

/// `(version, name, SQL)`, in order; never edit one that has shipped, add the next instead.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "create_orders",
        include_str!("../migrations/0001_create_orders.sql"),
    ),
    (
        2,
        "content_hash_conflicts_request_id",
        include_str!("../migrations/0002_content_hash_conflicts_request_id.sql"),
    ),
    (
        3,
        "catalogue_version",
        include_str!("../migrations/0003_catalogue_version.sql"),
    ),
    (
        4,
        "order_status_reads",
        include_str!("../migrations/0004_order_status_reads.sql"),
    ),
];

/// The newest migration's version: the template's `DatabaseSchema` carries
/// it, so that a deploy that ships a migration runs it.
pub const LATEST_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// How a failed connection begins its message: the provision task tries again
/// on it (RDS Proxy admits connections some time after it is created).
pub const CONNECT_FAILED: &str = "could not connect to the database as the tables' owner";

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("{CONNECT_FAILED}")]
    Connect(#[source] ConnectError),
    #[error(
        "could not apply the database migrations (connect as the tables' owner: the master user in AWS, DATABASE_URL's user locally)"
    )]
    Apply(#[from] tokio_postgres::Error),
    #[error(
        "a migration gave up after waiting {LOCK_TIMEOUT_SECS} s for a lock another session holds, or after running {STATEMENT_TIMEOUT_SECS} s; nothing was applied: find the blocking session (pg_stat_activity, pg_blocking_pids), let it finish or end it, then run scripts/deploy --migrate"
    )]
    TimedOut(#[source] tokio_postgres::Error),
    #[error(
        "could not create or grant the role {role:?} (the owner needs CREATEROLE, which RDS's master user has)"
    )]
    Role {
        role: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("{0}")]
    InvalidRole(&'static str),
}

/// The roles' names unless configured otherwise (the template's defaults).
pub const DEFAULT_WRITER: &str = "orders_writer";
pub const DEFAULT_READER: &str = "orders_reader";
/// The reader's connections at most, RDS Proxy's among them.
pub const READER_CONNECTION_LIMIT: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Write,
    Read,
}

/// A role that logs in: the writer or the reader. `name`: a plain lower-case
/// identifier. `password_verifier`: the password as PostgreSQL stores it
/// (`SCRAM-SHA-256$<iterations>:<salt>$<stored key>:<server key>`), or `None`
/// to leave the password as it is (local trust authentication).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    name: String,
    password_verifier: Option<String>,
    access: Access,
}

impl Role {
    pub fn writer(name: &str, password_verifier: Option<&str>) -> Result<Self, MigrationError> {
        Self::new(name, password_verifier, Access::Write)
    }

    pub fn reader(name: &str, password_verifier: Option<&str>) -> Result<Self, MigrationError> {
        Self::new(name, password_verifier, Access::Read)
    }

    fn new(
        name: &str,
        password_verifier: Option<&str>,
        access: Access,
    ) -> Result<Self, MigrationError> {
        let plain_identifier = !name.is_empty()
            && name.len() <= 63
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !plain_identifier {
            return Err(MigrationError::InvalidRole(
                "a role's name must be a lower-case identifier: letters, digits and _, at most 63",
            ));
        }
        if let Some(verifier) = password_verifier
            && !is_scram_verifier(verifier)
        {
            return Err(MigrationError::InvalidRole(
                "a role's password must be given as a SCRAM-SHA-256 verifier (SCRAM-SHA-256$4096:salt$storedkey:serverkey), never in clear",
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            password_verifier: password_verifier.map(str::to_owned),
            access,
        })
    }
}

/// `SCRAM-SHA-256$<iterations>:<salt>$<stored key>:<server key>`, base64 parts:
/// nothing that could end the SQL string literal it is written into.
fn is_scram_verifier(text: &str) -> bool {
    let base64 = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
    };
    let parts = text.strip_prefix("SCRAM-SHA-256$").and_then(|rest| {
        let (iterations, rest) = rest.split_once(':')?;
        let (salt, keys) = rest.split_once('$')?;
        let (stored, server) = keys.split_once(':')?;
        Some((iterations, [salt, stored, server]))
    });
    parts.is_some_and(|(iterations, keys)| {
        !iterations.is_empty()
            && iterations.chars().all(|c| c.is_ascii_digit())
            && keys.into_iter().all(base64)
    })
}

/// Applies the migrations, then creates and grants the roles; returns the
/// migration versions applied now. Run as the tables' owner.
pub async fn prepare(client: &mut Client, roles: &[Role]) -> Result<Vec<i32>, MigrationError> {
    let applied = migrate(client).await?;
    for role in roles {
        grant(client, role)
            .await
            .map_err(|source| MigrationError::Role {
                role: role.name.clone(),
                source,
            })?;
    }
    Ok(applied)
}

/// Connects with `config` and runs [`prepare`].
pub async fn connect_and_prepare(
    config: DatabaseConfig,
    roles: &[Role],
) -> Result<Vec<i32>, MigrationError> {
    let connector = Connector::new(config)
        .await
        .map_err(MigrationError::Connect)?;
    let mut client = connector.connect().await.map_err(MigrationError::Connect)?;
    prepare(&mut client, roles).await
}

async fn grant(client: &mut Client, role: &Role) -> Result<(), tokio_postgres::Error> {
    // The name was checked to be a plain identifier and the verifier to be
    // base64 parts: both are safe to write into the statements.
    let (privileges, limit) = match role.access {
        Access::Write => ("SELECT, INSERT", -1),
        Access::Read => ("SELECT", i64::from(READER_CONNECTION_LIMIT)),
    };
    let verifier = role.password_verifier.as_ref();
    let role = format!("\"{}\"", role.name);
    let create = format!("CREATE ROLE {role} LOGIN CONNECTION LIMIT {limit}");
    match client.batch_execute(&create).await {
        Ok(()) => {}
        // Another run created it meanwhile (roles are cluster-wide): either
        // code, depending on who got to the catalog first.
        Err(err)
            if err.code() == Some(&SqlState::DUPLICATE_OBJECT)
                || err.code() == Some(&SqlState::UNIQUE_VIOLATION) => {}
        Err(err) => return Err(err),
    }
    let tx = client.transaction().await?;
    // Only with a password to set: two runs altering one role at once fail
    // with "tuple concurrently updated", and tests prepare many databases at once.
    if let Some(verifier) = verifier {
        tx.batch_execute(&format!(
            "ALTER ROLE {role} WITH LOGIN PASSWORD '{verifier}' CONNECTION LIMIT {limit}"
        ))
        .await?;
    }
    tx.batch_execute(&format!(
        "DO $$ BEGIN
             EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
             EXECUTE format('GRANT CONNECT ON DATABASE %I TO {role}', current_database());
         END $$;
         REVOKE CREATE ON SCHEMA public FROM PUBLIC;
         GRANT USAGE ON SCHEMA public TO {role};
         GRANT {privileges} ON orders, order_conflicts TO {role};"
    ))
    .await?;
    tx.commit().await
}

/// Applies the migrations this database lacks; returns the versions applied now.
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>, MigrationError> {
    apply(client).await.map_err(|err| match err.code() {
        Some(&SqlState::LOCK_NOT_AVAILABLE | &SqlState::QUERY_CANCELED) => {
            MigrationError::TimedOut(err)
        }
        _ => MigrationError::Apply(err),
    })
}

async fn apply(client: &mut Client) -> Result<Vec<i32>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    // For this transaction only. The statement timeout also bounds the wait
    // for another run's advisory lock; the lock timeout is set after it, so
    // that a second run waits for the first rather than failing.
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT_SECS}s'"
    ))
    .await?;
    // Typed, unnamed statements throughout: no named prepared statement is left
    // behind to pin the connection behind RDS Proxy.
    tx.execute_typed(
        "SELECT pg_advisory_xact_lock($1)",
        &[(&LOCK_KEY, Type::INT8)],
    )
    .await?;
    tx.batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT_SECS}s'"))
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
    for &(version, name, sql) in MIGRATIONS.iter().filter(|m| !applied.contains(&m.0)) {
        tracing::info!(version, name, "applying migration");
        tx.batch_execute(sql).await?;
        tx.execute_typed(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[(&version, Type::INT4), (&name, Type::TEXT)],
        )
        .await?;
        now_applied.push(version);
    }
    tx.commit().await?;
    Ok(now_applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_name_that_is_not_a_plain_identifier_is_refused() {
        for name in [
            "",
            "Orders",
            "orders-writer",
            "x\"; DROP TABLE orders; --",
            &"a".repeat(64),
        ] {
            assert!(Role::writer(name, None).is_err(), "{name}");
            assert!(Role::reader(name, None).is_err(), "{name}");
        }
        assert!(Role::writer(DEFAULT_WRITER, None).is_ok());
        assert!(Role::reader(DEFAULT_READER, None).is_ok());
    }

    #[test]
    fn only_a_scram_verifier_is_accepted_as_the_password() {
        let verifier = "SCRAM-SHA-256$4096:c2FsdHNhbHQ=$aGFzaGhhc2g+/=:c2VydmVyc2VydmVy";
        assert!(Role::writer("w", Some(verifier)).is_ok());
        for bad in [
            "hunter2",
            "SCRAM-SHA-256$4096:salt$stored",
            "SCRAM-SHA-256$4096:sa'lt$st:se",
            "md5abcdef",
            "SCRAM-SHA-256$x:salt$stored:server",
        ] {
            assert!(Role::reader("w", Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn migrations_are_numbered_one_by_one_from_one() {
        for (index, (version, name, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i32::try_from(index).expect("few") + 1, "{name}");
        }
    }
}
