//! The two reads, each one statement on an index, and what they answer.
//!
//! A customer's order is in `orders` (`customer_id`), or, when its id was
//! already used for a different order, in `order_conflicts`, whose `body` is
//! the newcomer as the consumer read it (`customer_id`, `currency`, `items`,
//! `received_at`). Lookups by id use the primary keys; the list reads
//! `orders_customer_received` and `order_conflicts_customer_recorded`
//! backwards (migrations 0001 and 0004). Unnamed statements with typed
//! parameters, as the consumer's: nothing pins a connection behind RDS Proxy.

use chrono::{DateTime, Utc};
use consumer_lambda::database::ConnectError;
use serde::Serialize;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Row};
use uuid::Uuid;

/// Why a read could not answer; the customer hears "catching up" for each.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("could not get a database connection")]
    Connect(#[source] deadpool::managed::PoolError<ConnectError>),
    #[error("the read failed")]
    Query(#[from] tokio_postgres::Error),
}

/// One order as the customer sees it; `status` is `stored` or `kept_aside`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum OrderStatus {
    Stored {
        order_id: Uuid,
        /// When the shop stored it.
        stored_at: DateTime<Utc>,
        /// When the shop accepted it.
        received_at: DateTime<Utc>,
        currency: String,
        items: serde_json::Value,
        total_cents: i64,
        message: &'static str,
    },
    KeptAside {
        order_id: Uuid,
        /// When it was kept aside.
        kept_aside_at: DateTime<Utc>,
        received_at: DateTime<Utc>,
        currency: String,
        items: serde_json::Value,
        message: &'static str,
    },
}

const STORED: &str = "Your order is stored: the shop has it.";
const KEPT_ASIDE: &str = "This order number was already used for a different order, so this \
    order was kept aside and not placed. Place it again as a new order (it gets a new number); \
    the shop can see the one kept aside if you contact it.";

/// `GET /orders`: the newest first.
#[derive(Debug, Serialize)]
pub struct Recent {
    pub orders: Vec<OrderStatus>,
}

/// `$1` order id, `$2` customer. Both tables as one shape; the stored order
/// first, so that an id this customer used twice answers with the order the shop has.
pub const ONE: &str = "
    (SELECT 0 AS rank, order_id, currency::text, items, total_cents, received_at, stored_at AS at
     FROM orders WHERE order_id = $1 AND customer_id = $2)
    UNION ALL
    (SELECT 1, order_id, body ->> 'currency', body -> 'items', NULL,
            (body ->> 'received_at')::timestamptz, recorded_at
     FROM order_conflicts WHERE order_id = $1 AND body ->> 'customer_id' = $2)
    ORDER BY rank, at DESC
    LIMIT 1";

/// `$1` customer, `$2` how many.
pub const RECENT: &str = "
    SELECT * FROM (
        (SELECT 0 AS rank, order_id, currency::text, items, total_cents, received_at, stored_at AS at
         FROM orders WHERE customer_id = $1 ORDER BY received_at DESC LIMIT $2)
        UNION ALL
        (SELECT 1, order_id, body ->> 'currency', body -> 'items', NULL,
                (body ->> 'received_at')::timestamptz, recorded_at
         FROM order_conflicts WHERE body ->> 'customer_id' = $1 ORDER BY recorded_at DESC LIMIT $2)
    ) AS mine
    ORDER BY received_at DESC, rank
    LIMIT $2";

/// The customer's order `order_id`, or `None` when none of theirs has it.
pub async fn one(
    client: &Client,
    customer: &str,
    order_id: Uuid,
) -> Result<Option<OrderStatus>, ReadError> {
    let rows = client
        .query_typed(ONE, &[(&order_id, Type::UUID), (&customer, Type::TEXT)])
        .await?;
    rows.first().map(status_of).transpose()
}

/// The customer's `limit` newest orders, by when the shop accepted them.
pub async fn recent(
    client: &Client,
    customer: &str,
    limit: i64,
) -> Result<Vec<OrderStatus>, ReadError> {
    let rows = client
        .query_typed(RECENT, &[(&customer, Type::TEXT), (&limit, Type::INT8)])
        .await?;
    rows.iter().map(status_of).collect()
}

fn status_of(row: &Row) -> Result<OrderStatus, ReadError> {
    let (order_id, currency, items, received_at, at) = (
        row.try_get(1)?,
        row.try_get(2)?,
        row.try_get(3)?,
        row.try_get(5)?,
        row.try_get(6)?,
    );
    Ok(match row.try_get::<_, Option<i64>>(4)? {
        Some(total_cents) => OrderStatus::Stored {
            order_id,
            stored_at: at,
            received_at,
            currency,
            items,
            total_cents,
            message: STORED,
        },
        None => OrderStatus::KeptAside {
            order_id,
            kept_aside_at: at,
            received_at,
            currency,
            items,
            message: KEPT_ASIDE,
        },
    })
}
