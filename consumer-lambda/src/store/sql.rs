//! The store's SQL text. Unnamed statements with typed parameters throughout:
//! each travels in the round trip of its write, and no named prepared
//! statement pins the connection behind RDS Proxy.

use std::fmt::Write as _;

use tokio_postgres::types::Type;

/// The binary `COPY` of the common case: as fast as PostgreSQL loads rows.
/// `COPY` has no `ON CONFLICT`; ids already stored are filtered out first.
pub(super) const COPY_ORDERS: &str = "COPY orders (order_id, customer_id, currency, items, \
    total_cents, received_at, sqs_message_id, content_sha256, request_id, catalogue_version) \
    FROM STDIN (FORMAT binary)";

/// Column types of the consumer's `COPY`, in order (the benchmark loads the same).
pub const COPY_TYPES: [Type; 10] = [
    Type::UUID,
    Type::TEXT,
    Type::BPCHAR,
    Type::JSONB,
    Type::INT8,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::BYTEA,
    Type::TEXT,
    Type::TEXT,
];

/// Large batches after a `COPY` met a stored key: one array per column,
/// `unnest`ed into rows; `RETURNING` names the rows written.
pub(super) const INSERT_ORDERS: &str = "
    INSERT INTO orders (order_id, customer_id, currency, items, total_cents, received_at,
                        sqs_message_id, content_sha256, request_id, catalogue_version)
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::int8[],
                         $6::timestamptz[], $7::text[], $8::bytea[], $9::text[], $10::text[])
    ON CONFLICT (order_id) DO NOTHING
    RETURNING order_id";

/// Small batches: one `VALUES` row of parameters per order, which PostgreSQL
/// runs faster than `unnest` below some tens of rows.
pub(super) fn insert_values(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO orders (order_id, customer_id, currency, items, total_cents, received_at, \
         sqs_message_id, content_sha256, request_id, catalogue_version) VALUES ",
    );
    for row in 0..rows {
        let first = row * COPY_TYPES.len() + 1;
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for n in first..first + COPY_TYPES.len() {
            let separator = if n == first { "" } else { ", " };
            // Writing to a String cannot fail.
            let _ = write!(sql, "{separator}${n}");
        }
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT (order_id) DO NOTHING RETURNING order_id");
    sql
}

pub(super) const STORED_HASHES: &str =
    "SELECT order_id, content_sha256 FROM orders WHERE order_id = ANY($1::uuid[])";

pub(super) const RECORD_CONFLICTS: &str = "
    INSERT INTO order_conflicts (order_id, content_sha256, sqs_message_id, request_id, body)
    SELECT * FROM unnest($1::uuid[], $2::bytea[], $3::text[], $4::text[], $5::jsonb[])
    ON CONFLICT DO NOTHING
    RETURNING order_id, content_sha256";

/// Which of these newcomers `order_conflicts` holds already.
pub(super) const KEPT_CONFLICTS: &str = "
    SELECT order_id, content_sha256 FROM order_conflicts
    WHERE (order_id, content_sha256) IN (SELECT * FROM unnest($1::uuid[], $2::bytea[]))";

/// What `scripts/deploy`'s canary asks.
pub(super) const IS_STORED: &str = "SELECT EXISTS (SELECT 1 FROM orders WHERE order_id = $1)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_values_insert_numbers_ten_parameters_a_row_in_order() {
        let sql = insert_values(2);
        assert!(
            sql.contains("VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10), ($11, $12,"),
            "{sql}"
        );
        assert!(sql.ends_with("$20) ON CONFLICT (order_id) DO NOTHING RETURNING order_id"));
    }
}
