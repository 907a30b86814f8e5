//! Whose fault a row PostgreSQL refuses is: the order's (poison, for the
//! DLQ) or the release's (a schema this build did not make, or most of the
//! batch refused alike: postponed and alarmed on, never dead-lettered).
//!
//! The rule, for the rows one write refused (SQLSTATE classes 22, 23, 54):
//! 1. a refusal that names a constraint or a column this build's migrations
//!    do not create ([`CONSTRAINTS`], [`COLUMNS`]) is the release's: a
//!    migration newer than this build (or made by hand) refuses the row;
//! 2. otherwise, refusals alike (the same SQLSTATE and constraint) that are
//!    at least two and more than half of the rows written are the
//!    release's: orders fail one by one, a schema fails them all;
//! 3. every other refusal is the order's.
//!
//! A one-record batch is judged by rule 1 alone: one row shows no pattern.
//! Errors are told apart by the server's SQLSTATE and its constraint, table
//! and column fields, never by message text.

use std::collections::HashMap;

use tokio_postgres::Error;

use super::is_permanent;

/// Whose fault a refused row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The order's own data: poison, sent to the DLQ.
    Order,
    /// The release's: a schema newer than this build refuses a valid order.
    /// Postponed (EMF `Skewed`) until the code or schema that takes it arrives.
    Release,
}

/// The constraints this build's migrations create on the tables the consumer
/// writes, as `(table, constraint)`. `tests/schema.rs` applies the migrations
/// to a real PostgreSQL and checks this list against `pg_constraint`, so that
/// it cannot drift from them.
pub const CONSTRAINTS: &[(&str, &str)] = &[
    ("order_conflicts", "order_conflicts_content_sha256_check"),
    ("order_conflicts", "order_conflicts_pkey"),
    ("orders", "orders_catalogue_version_check"),
    ("orders", "orders_content_sha256_check"),
    ("orders", "orders_currency_check"),
    ("orders", "orders_customer_id_check"),
    ("orders", "orders_items_check"),
    ("orders", "orders_pkey"),
    ("orders", "orders_request_id_check"),
    ("orders", "orders_total_cents_check"),
];

/// The columns this build's migrations create, as `(table, column)`; checked
/// against `pg_attribute` by the same test.
pub const COLUMNS: &[(&str, &str)] = &[
    ("orders", "catalogue_version"),
    ("order_conflicts", "body"),
    ("order_conflicts", "content_sha256"),
    ("order_conflicts", "order_id"),
    ("order_conflicts", "recorded_at"),
    ("order_conflicts", "request_id"),
    ("order_conflicts", "sqs_message_id"),
    ("orders", "content_sha256"),
    ("orders", "currency"),
    ("orders", "customer_id"),
    ("orders", "items"),
    ("orders", "order_id"),
    ("orders", "received_at"),
    ("orders", "request_id"),
    ("orders", "sqs_message_id"),
    ("orders", "stored_at"),
    ("orders", "total_cents"),
];

/// A permanent refusal's signature, its SQLSTATE and the constraint it
/// names; `None` for any other error. Refusals with equal signatures are alike.
pub(super) fn refusal(err: &Error) -> Option<(String, Option<String>)> {
    if !is_permanent(err) {
        return None;
    }
    Some((
        err.code()?.code().to_owned(),
        err.as_db_error()
            .and_then(|db| db.constraint())
            .map(str::to_owned),
    ))
}

/// Does the refusal name a constraint or column this build did not create?
fn names_the_unknown(err: &Error) -> bool {
    let Some(db) = err.as_db_error() else {
        return false;
    };
    let table = db.table().unwrap_or_default();
    let unknown = |known: &[(&str, &str)], name: Option<&str>| {
        name.is_some_and(|name| !known.contains(&(table, name)))
    };
    unknown(CONSTRAINTS, db.constraint()) || unknown(COLUMNS, db.column())
}

/// Judges the refusals of one write of `rows` rows, each the rows refused
/// with one error (more than one row when the bisection stopped early): the
/// fault of each, by the rule above.
pub(super) fn judge(refusals: &[(Vec<usize>, Error)], rows: usize) -> Vec<Fault> {
    let mut alike: HashMap<_, usize> = HashMap::new();
    for (refused, err) in refusals {
        *alike.entry(refusal(err)).or_default() += refused.len();
    }
    refusals
        .iter()
        .map(|(_, err)| {
            let refused_alike = alike.get(&refusal(err)).copied().unwrap_or_default();
            if names_the_unknown(err) || (refused_alike >= 2 && refused_alike * 2 > rows) {
                Fault::Release
            } else {
                Fault::Order
            }
        })
        .collect()
}
