//! One delivery as the statements take it: its content hash, its items as
//! JSON, and the batch turned into columns.

use std::sync::OnceLock;

use aws_lc_rs::digest;
use chrono::{DateTime, Utc};
use order_contract::{Order, OrderPlaced, RequestId};
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use uuid::Uuid;

use super::Delivery;
use super::sql::COPY_TYPES;

/// SHA-256 of the order's content (id, customer, currency, line items): the
/// same for every copy of one order, whatever message or request carried it.
pub fn content_hash(placed: &OrderPlaced) -> [u8; 32] {
    hash_of(&placed.order, &items_json(&placed.order))
}

/// The line items as JSON: serialised once per row, then both hashed and
/// written (serialising is most of the client's work per row).
fn items_json(order: &Order) -> Vec<u8> {
    // Serialising validated items cannot fail (strings and numbers only).
    serde_json::to_vec(order.items()).unwrap_or_default()
}

fn hash_of(order: &Order, items_json: &[u8]) -> [u8; 32] {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(order.order_id().as_bytes());
    // Length-prefixed, so that no two orders feed the same bytes.
    for field in [
        order.customer_id().as_bytes(),
        order.currency().as_bytes(),
        items_json,
    ] {
        context.update(&(field.len() as u64).to_be_bytes());
        context.update(field);
    }
    let mut hash = [0; 32];
    hash.copy_from_slice(context.finish().as_ref());
    hash
}

/// One delivery, ready to be written. The write paths name rows by their
/// position in the batch, which is also their index in the slice of rows.
pub(super) struct Row<'a> {
    pub(super) delivery: &'a Delivery,
    /// Worked out when first needed: a large batch's rows are encoded while
    /// its lookup travels.
    encoded: OnceLock<Encoded>,
}

/// The items as JSON, and the content hash over them.
pub(super) struct Encoded {
    items: Vec<u8>,
    hash: [u8; 32],
}

impl<'a> Row<'a> {
    pub(super) fn new(delivery: &'a Delivery) -> Self {
        Self {
            delivery,
            encoded: OnceLock::new(),
        }
    }

    pub(super) fn order_id(&self) -> Uuid {
        self.delivery.placed.order.order_id()
    }

    /// The items' JSON and the hash, worked out now if not done yet.
    pub(super) fn encoded(&self) -> &Encoded {
        self.encoded.get_or_init(|| {
            let order = &self.delivery.placed.order;
            let items = items_json(order);
            let hash = hash_of(order, &items);
            Encoded { items, hash }
        })
    }

    pub(super) fn items(&self) -> &[u8] {
        &self.encoded().items
    }

    pub(super) fn hash(&self) -> &[u8; 32] {
        &self.encoded().hash
    }
}

/// JSON already serialised, sent as `jsonb` in the binary format (a version
/// byte, then the text).
#[derive(Debug)]
pub(super) struct Jsonb<'a>(pub(super) &'a [u8]);

impl ToSql for Jsonb<'_> {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&[1]);
        out.extend_from_slice(self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }

    to_sql_checked!();
}

/// Parameters with their types, as the statements take them.
pub(super) type Params<'p> = Vec<(&'p (dyn ToSql + Sync), Type)>;

/// Some rows of the batch turned inside out: one array per column, borrowed
/// from the rows.
pub(super) struct Columns<'a> {
    order_ids: Vec<Uuid>,
    customer_ids: Vec<&'a str>,
    currencies: Vec<&'a str>,
    items: Vec<Jsonb<'a>>,
    totals: Vec<i64>,
    received_at: Vec<DateTime<Utc>>,
    message_ids: Vec<&'a str>,
    hashes: Vec<&'a [u8]>,
    request_ids: Vec<Option<&'a str>>,
    catalogue_versions: Vec<Option<&'a str>>,
}

impl<'a> Columns<'a> {
    /// The rows of `rows` at the positions `which`, in that order.
    pub(super) fn of(rows: &'a [Row<'a>], which: &[usize]) -> Self {
        let rows = || which.iter().map(|&i| &rows[i]);
        let placed = || rows().map(|row| &row.delivery.placed);
        Columns {
            order_ids: rows().map(Row::order_id).collect(),
            customer_ids: placed().map(|p| p.order.customer_id()).collect(),
            currencies: placed().map(|p| p.order.currency()).collect(),
            items: rows().map(|row| Jsonb(row.items())).collect(),
            totals: placed().map(|p| p.order.total_cents()).collect(),
            received_at: placed().map(|p| p.received_at).collect(),
            message_ids: rows().map(|r| r.delivery.message_id.as_str()).collect(),
            hashes: rows().map(|row| row.hash().as_slice()).collect(),
            request_ids: rows()
                .map(|r| r.delivery.request_id.as_ref().map(RequestId::as_str))
                .collect(),
            catalogue_versions: placed().map(|p| p.catalogue_version.as_deref()).collect(),
        }
    }

    /// One array parameter per column, for `unnest`.
    pub(super) fn as_arrays(&self) -> Params<'_> {
        vec![
            (&self.order_ids, Type::UUID_ARRAY),
            (&self.customer_ids, Type::TEXT_ARRAY),
            (&self.currencies, Type::TEXT_ARRAY),
            (&self.items, Type::JSONB_ARRAY),
            (&self.totals, Type::INT8_ARRAY),
            (&self.received_at, Type::TIMESTAMPTZ_ARRAY),
            (&self.message_ids, Type::TEXT_ARRAY),
            (&self.hashes, Type::BYTEA_ARRAY),
            (&self.request_ids, Type::TEXT_ARRAY),
            (&self.catalogue_versions, Type::TEXT_ARRAY),
        ]
    }

    /// The number of rows.
    pub(super) fn len(&self) -> usize {
        self.order_ids.len()
    }

    /// The cells of row `i`, in the order of [`COPY_TYPES`].
    pub(super) fn row(&self, i: usize) -> [&(dyn ToSql + Sync); 10] {
        [
            &self.order_ids[i],
            &self.customer_ids[i],
            &self.currencies[i],
            &self.items[i],
            &self.totals[i],
            &self.received_at[i],
            &self.message_ids[i],
            &self.hashes[i],
            &self.request_ids[i],
            &self.catalogue_versions[i],
        ]
    }

    /// One parameter per cell, row after row, for `VALUES`.
    pub(super) fn by_row(&self) -> Params<'_> {
        (0..self.len())
            .flat_map(|i| self.row(i).into_iter().zip(COPY_TYPES.iter().cloned()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use order_contract::fixtures;

    /// The fixture's one-line order of customer 0 (EUR, one `SKU-0-0` at 0
    /// cents), always under one order id, for `customer`: only the customer
    /// differs between two of them.
    fn placed(customer: &str) -> OrderPlaced {
        let id = Uuid::from_u128(0x5f0c6f43_3c4e_4a2b_9d4e_0a4f3f7b8c21);
        let mut request = fixtures::order_request_with_id(id, 0, 1);
        request["customer_id"] = customer.into();
        OrderPlaced::new(fixtures::order_from_request(&request), Utc::now())
    }

    #[test]
    fn copies_of_one_order_hash_the_same_whenever_they_were_received() {
        let first = placed("c-1");
        let mut later = placed("c-1");
        later.received_at = first.received_at + chrono::Duration::hours(3);
        assert_eq!(content_hash(&first), content_hash(&later));
    }

    /// Stored hashes outlive releases: a new definition would make every
    /// redelivery of an order stored before it look like a conflict.
    #[test]
    fn the_content_hash_is_the_same_in_every_release() {
        let placed = placed("c-1");
        let order = &placed.order;
        let items = String::from_utf8(items_json(order)).expect("JSON is UTF-8");
        assert_eq!(
            (order.customer_id(), order.currency(), items.as_str()),
            (
                "c-1",
                "EUR",
                r#"[{"sku":"SKU-0-0","quantity":1,"unit_price_cents":0}]"#
            ),
            "the content the hash below was computed for: the fixture changed"
        );
        let hex: String = content_hash(&placed)
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        // sha256(id bytes, then customer, currency and the items JSON, each after
        // its length as a big-endian u64), computed outside Rust for the content
        // above.
        assert_eq!(
            hex,
            "23c63c4254fe4d3132432d051f35e92ea77971cf1073552395e1963d91fa23f6"
        );
    }

    #[test]
    fn different_content_under_one_order_id_hashes_differently() {
        assert_ne!(content_hash(&placed("c-1")), content_hash(&placed("c-2")));
    }
}
