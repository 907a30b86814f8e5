//! Where orders go: the [`OrderStore`] seam and its PostgreSQL implementation.
//!
//! One batch is one write in one transaction, pipelined (`write`): the
//! stored orders are looked up with the write and not written again, a
//! *duplicate* when the content is the same, a *conflict* when it differs
//! (kept in `order_conflicts`, `conflicts`). A row PostgreSQL refuses for its
//! data (SQLSTATE classes 22, 23, 54) is bisected out and refused alone
//! (`bisect`), the order's fault or the release's (`fault`); every other
//! error fails the call as a whole ([`StoreError`]). `plan` dedupes the batch
//! and classifies its rows without a database, `row` encodes a delivery,
//! `sql` holds the SQL text.

mod bisect;
mod conflicts;
mod fault;
mod plan;
mod row;
mod sql;
mod write;

use std::future::Future;

use deadpool::managed::{Object, PoolError};
use order_contract::{OrderPlaced, RequestId};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use uuid::Uuid;

use self::conflicts::keep_conflicts;
pub use self::fault::{COLUMNS, CONSTRAINTS, Fault};
use self::plan::{Deduped, Kept};
use self::row::Row;
pub use self::row::content_hash;
pub use self::sql::COPY_TYPES;
use crate::config::DatabaseConfig;
use crate::database::{ConnectError, Connector, Pool};
use crate::message_id::MessageId;

/// A valid order as one SQS message delivered it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message_id: MessageId,
    pub placed: OrderPlaced,
    /// The producer's request id, when the message carried a well-formed one.
    pub request_id: Option<RequestId>,
}

/// What storing a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreOutcome {
    /// What became of each delivery, by position in the batch.
    pub by_delivery: Vec<Outcome>,
    /// Orders written now.
    pub stored: u64,
    /// Orders already stored with the same content: skipped.
    pub duplicates: u64,
    /// Orders already stored with other content, newly kept in `order_conflicts`
    /// (once per distinct content: a conflict seen again counts as a duplicate).
    pub conflicts: u64,
    /// Deliveries PostgreSQL refused, and whose fault it is.
    pub refused: Vec<Refused>,
}

/// What became of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Stored,
    Duplicate,
    /// Another order is stored under its `order_id`; this one is kept in
    /// `order_conflicts`, by this call (`kept_now`) or an earlier one.
    Conflict {
        kept_now: bool,
    },
    /// Why, and whose fault: [`StoreOutcome::refused`].
    Refused,
}

/// A delivery the database refuses as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Its position in the slice given to [`OrderStore::insert`].
    pub index: usize,
    /// The SQLSTATE and PostgreSQL's message (`22001: value too long …`).
    pub reason: String,
    pub fault: Fault,
}

impl Refused {
    pub(crate) fn by(index: usize, err: &tokio_postgres::Error, fault: Fault) -> Self {
        let reason = match err.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => support::error_chain(err),
        };
        Self {
            index,
            reason,
            fault,
        }
    }
}

/// Storing failed as a whole, for a reason that is not the data's: nothing of
/// the batch can be assumed written, and all of it is worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("could not get a database connection (is PostgreSQL up and reachable?)")]
    Connect(#[source] PoolError<ConnectError>),
    #[error("storing {count} orders failed")]
    Write {
        count: usize,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(
        "the database refused the writer's check (is the schema migrated and the writer granted?)"
    )]
    Check(#[source] tokio_postgres::Error),
}

/// Stores a batch of orders idempotently.
pub trait OrderStore: Send + Sync {
    fn insert(
        &self,
        deliveries: &[&Delivery],
    ) -> impl Future<Output = Result<StoreOutcome, StoreError>> + Send;
}

impl<T: OrderStore> OrderStore for &T {
    fn insert(
        &self,
        deliveries: &[&Delivery],
    ) -> impl Future<Output = Result<StoreOutcome, StoreError>> + Send {
        (**self).insert(deliveries)
    }
}

tokio::task_local! {
    /// Set while the breaker's probe writes ([`rolled_back`]).
    static ROLL_BACK: ();
}

/// Runs `write` with every transaction it opens ended by `ROLLBACK`: the
/// probe's order takes the batches' own path and leaves no row.
pub async fn rolled_back<F: Future>(write: F) -> F::Output {
    ROLL_BACK.scope((), write).await
}

fn end_of_transaction() -> &'static str {
    if ROLL_BACK.try_with(|()| ()).is_ok() {
        "ROLLBACK"
    } else {
        "COMMIT"
    }
}

/// The SQLSTATE anywhere in an error's chain (a refused login is inside a
/// connect error), so that logs name the class of a failure.
pub fn sqlstate<'e>(err: &'e (dyn std::error::Error + 'static)) -> Option<&'e str> {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(code) = err
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::code)
        {
            return Some(code.code());
        }
        next = err.source();
    }
    None
}

/// Is this error the row's fault, so that retrying the same row cannot help?
/// Data exceptions (22), integrity violations (23, but the duplicate key is
/// handled before) and program limits (54); anything else is retried.
pub fn is_permanent(err: &tokio_postgres::Error) -> bool {
    err.code().is_some_and(|code| {
        let class = &code.code()[..2];
        matches!(class, "22" | "23" | "54") && code != &SqlState::UNIQUE_VIOLATION
    })
}

/// PostgreSQL behind a small pool that connects lazily and replaces a broken
/// connection. It needs only the writer role's privileges.
pub struct PgStore {
    pool: Pool,
}

impl PgStore {
    /// Prepares the pool without connecting. In Lambda `max_connections` is
    /// 1: an execution environment handles one batch at a time.
    pub async fn new(config: DatabaseConfig, max_connections: usize) -> Result<Self, ConnectError> {
        Ok(Self {
            pool: Connector::new(config).await?.into_pool(max_connections),
        })
    }

    /// Is an order with this id stored? What `scripts/deploy`'s canary asks.
    pub async fn is_stored(&self, order_id: Uuid) -> Result<bool, StoreError> {
        let mut checkout = Checkout(Some(self.pool.get().await.map_err(StoreError::Connect)?));
        let rows = checkout
            .client()
            .query_typed(sql::IS_STORED, &[(&order_id, Type::UUID)])
            .await
            .map_err(StoreError::Check)?;
        let stored = rows.first().is_some_and(|row| row.get::<_, bool>(0));
        checkout.release();
        Ok(stored)
    }
}

impl OrderStore for PgStore {
    async fn insert(&self, deliveries: &[&Delivery]) -> Result<StoreOutcome, StoreError> {
        let mut checkout = Checkout(Some(self.pool.get().await.map_err(StoreError::Connect)?));
        let write_error = |source| StoreError::Write {
            count: deliveries.len(),
            source,
        };
        let outcome = store(checkout.client(), deliveries)
            .await
            .map_err(write_error)?;
        checkout.release();
        Ok(outcome)
    }
}

/// A pooled connection that goes back to the pool only when the work on it
/// finished cleanly. Dropped any other way (an error, or the handler's deadline
/// dropping the future mid-statement), it is closed instead, so no batch ever
/// inherits a connection in an unknown state.
struct Checkout(Option<Object<Connector>>);

impl Checkout {
    fn client(&mut self) -> &mut tokio_postgres::Client {
        self.0
            .as_deref_mut()
            .map(|connection| &mut **connection)
            .unwrap_or_else(|| unreachable!("a checkout holds its connection until released"))
    }

    fn release(mut self) {
        drop(self.0.take());
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(connection) = self.0.take() {
            tracing::debug!("closing a database connection left in an unknown state");
            drop(Object::take(connection));
        }
    }
}

/// Stores one batch: dedupes it, writes its first copies, looks up what the
/// write found stored meanwhile, and keeps the conflicting newcomers aside.
async fn store(
    client: &Client,
    deliveries: &[&Delivery],
) -> Result<StoreOutcome, tokio_postgres::Error> {
    let rows: Vec<Row> = deliveries
        .iter()
        .map(|&delivery| Row::new(delivery))
        .collect();
    let order_ids: Vec<Uuid> = rows.iter().map(Row::order_id).collect();
    let batch = Deduped::new(&order_ids);
    let mut written = write::write(client, &rows, &batch.first_copies).await?;
    let not_looked_up: Vec<Uuid> = written
        .found_stored
        .iter()
        .map(|&row| order_ids[row])
        .filter(|id| !written.stored_hashes.contains_key(id))
        .collect();
    let found = write::stored_hashes(client, &not_looked_up).await?;
    written.stored_hashes.extend(found);
    let classified = plan::classify(&order_ids, &batch, written, |row| *rows[row].hash());
    let kept = if classified.conflicts.is_empty() {
        Kept::default()
    } else {
        keep_conflicts(client, &rows, &classified.conflicts).await?
    };
    Ok(classified.with_kept(kept))
}
