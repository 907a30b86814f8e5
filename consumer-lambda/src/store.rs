//! Where orders go: the [`OrderStore`] seam and its PostgreSQL implementation.

use std::collections::HashSet;
use std::future::Future;

use chrono::{DateTime, Utc};
use deadpool::managed::PoolError;
use order_contract::{LineItem, OrderPlaced};
use tokio::sync::OnceCell;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{Json, ToSql, Type};
use uuid::Uuid;

use crate::config::DatabaseConfig;
use crate::database::{ConnectError, Connector, Pool};
use crate::migrations::{MigrationError, migrate};

/// A valid order together with the SQS message that carried it.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub message_id: String,
    pub placed: OrderPlaced,
}

/// What one bulk insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InsertOutcome {
    /// Orders written now.
    pub stored: u64,
    /// Orders already present (a redelivery, a retried POST, a replay): skipped.
    pub duplicates: u64,
}

/// Storing failed as a whole; nothing of the batch can be assumed written.
/// Every variant is transient: the same orders will be retried.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("could not get a database connection (is PostgreSQL up and reachable?)")]
    Connect(#[source] PoolError<ConnectError>),
    #[error(transparent)]
    Migrate(#[from] MigrationError),
    #[error("the bulk insert of {count} orders failed")]
    Insert {
        count: usize,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// Stores a batch of orders idempotently, all or nothing.
pub trait OrderStore: Send + Sync {
    fn insert(
        &self,
        orders: &[Accepted],
    ) -> impl Future<Output = Result<InsertOutcome, StoreError>> + Send;
}

impl<T: OrderStore> OrderStore for &T {
    fn insert(
        &self,
        orders: &[Accepted],
    ) -> impl Future<Output = Result<InsertOutcome, StoreError>> + Send {
        (**self).insert(orders)
    }
}

/// The fast path: binary `COPY` straight into the table, one statement, as fast as
/// PostgreSQL loads rows. `COPY` has no `ON CONFLICT`, so an `order_id` that is
/// already stored fails the whole statement (and writes nothing); duplicates are
/// rare (a redelivery, a retried POST, a replay), and the batch then takes
/// [`INSERT_ORDERS`]. Chosen by measurement: see `scripts/bench consumer`.
const COPY_ORDERS: &str =
    "COPY orders (order_id, customer_id, currency, items, total_cents, received_at, sqs_message_id)
    FROM STDIN (FORMAT binary)";

/// Column types of [`COPY_ORDERS`], in order.
const COPY_TYPES: [Type; 7] = [
    Type::UUID,
    Type::TEXT,
    Type::BPCHAR,
    Type::JSONB,
    Type::INT8,
    Type::TIMESTAMPTZ,
    Type::TEXT,
];

/// The idempotent path, when the batch holds an order already stored: the arrays
/// travel in the binary protocol, `unnest` turns them back into rows, and
/// `ON CONFLICT DO NOTHING` makes every repeat of an `order_id` a counted no-op.
///
/// It is sent as an unnamed statement with its parameter types given
/// (`execute_typed`): one round trip, and no named prepared statement left behind.
const INSERT_ORDERS: &str = "
    INSERT INTO orders (order_id, customer_id, currency, items, total_cents, received_at, sqs_message_id)
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::int8[], $6::timestamptz[], $7::text[])
    ON CONFLICT (order_id) DO NOTHING";

/// PostgreSQL behind a small pool that connects lazily, on the first batch, and
/// replaces a connection that broke, so the store outlives a database restart.
pub struct PgStore {
    pool: Pool,
    migrated: OnceCell<()>,
}

impl PgStore {
    /// Prepares the pool (reading the CA bundle and AWS credentials chain when
    /// configured) without connecting. In Lambda `max_connections` is 1: an
    /// execution environment handles one batch at a time.
    pub async fn new(config: DatabaseConfig, max_connections: usize) -> Result<Self, ConnectError> {
        Ok(Self {
            pool: Connector::new(config).await?.into_pool(max_connections),
            migrated: OnceCell::new(),
        })
    }

    /// Applies pending migrations (once per process; later calls return at once).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrated
            .get_or_try_init(|| async {
                let mut client = self.pool.get().await.map_err(StoreError::Connect)?;
                migrate(&mut client).await?;
                Ok::<_, StoreError>(())
            })
            .await?;
        Ok(())
    }
}

impl OrderStore for PgStore {
    async fn insert(&self, orders: &[Accepted]) -> Result<InsertOutcome, StoreError> {
        self.migrate().await?;
        let client = self.pool.get().await.map_err(StoreError::Connect)?;
        // The first copy of an order wins within the batch, as it would across batches.
        let mut seen = HashSet::with_capacity(orders.len());
        let unique: Vec<&Accepted> = orders
            .iter()
            .filter(|o| seen.insert(o.placed.order.order_id()))
            .collect();
        let insert_error = |source| StoreError::Insert {
            count: orders.len(),
            source,
        };
        let stored = match copy(&client, &unique).await {
            Ok(stored) => stored,
            Err(err) if err.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                tracing::debug!(
                    "the batch holds an order already stored; inserting with ON CONFLICT"
                );
                insert_on_conflict(&client, &unique)
                    .await
                    .map_err(insert_error)?
            }
            Err(err) => return Err(insert_error(err)),
        };
        Ok(InsertOutcome {
            stored,
            duplicates: orders.len() as u64 - stored,
        })
    }
}

async fn copy(
    client: &tokio_postgres::Client,
    orders: &[&Accepted],
) -> Result<u64, tokio_postgres::Error> {
    let sink = client.copy_in(COPY_ORDERS).await?;
    let writer = BinaryCopyInWriter::new(sink, &COPY_TYPES);
    let mut writer = std::pin::pin!(writer);
    for Accepted { message_id, placed } in orders.iter().copied() {
        let order = &placed.order;
        writer
            .as_mut()
            .write(&[
                &order.order_id(),
                &order.customer_id(),
                &order.currency(),
                &Json(order.items()),
                &order.total_cents(),
                &placed.received_at,
                &message_id.as_str(),
            ])
            .await?;
    }
    writer.finish().await
}

async fn insert_on_conflict(
    client: &tokio_postgres::Client,
    orders: &[&Accepted],
) -> Result<u64, tokio_postgres::Error> {
    let columns = Columns::from(orders);
    let params: [(&(dyn ToSql + Sync), Type); 7] = [
        (&columns.order_ids, Type::UUID_ARRAY),
        (&columns.customer_ids, Type::TEXT_ARRAY),
        (&columns.currencies, Type::TEXT_ARRAY),
        (&columns.items, Type::JSONB_ARRAY),
        (&columns.totals, Type::INT8_ARRAY),
        (&columns.received_at, Type::TIMESTAMPTZ_ARRAY),
        (&columns.message_ids, Type::TEXT_ARRAY),
    ];
    client.execute_typed(INSERT_ORDERS, &params).await
}

/// The batch turned inside out: one array per column, borrowed from the orders.
struct Columns<'a> {
    order_ids: Vec<Uuid>,
    customer_ids: Vec<&'a str>,
    currencies: Vec<&'a str>,
    items: Vec<Json<&'a [LineItem]>>,
    totals: Vec<i64>,
    received_at: Vec<DateTime<Utc>>,
    message_ids: Vec<&'a str>,
}

impl<'a> From<&[&'a Accepted]> for Columns<'a> {
    fn from(orders: &[&'a Accepted]) -> Self {
        let n = orders.len();
        let mut columns = Columns {
            order_ids: Vec::with_capacity(n),
            customer_ids: Vec::with_capacity(n),
            currencies: Vec::with_capacity(n),
            items: Vec::with_capacity(n),
            totals: Vec::with_capacity(n),
            received_at: Vec::with_capacity(n),
            message_ids: Vec::with_capacity(n),
        };
        for Accepted { message_id, placed } in orders.iter().copied() {
            let order = &placed.order;
            columns.order_ids.push(order.order_id());
            columns.customer_ids.push(order.customer_id());
            columns.currencies.push(order.currency());
            columns.items.push(Json(order.items()));
            columns.totals.push(order.total_cents());
            columns.received_at.push(placed.received_at);
            columns.message_ids.push(message_id);
        }
        columns
    }
}
