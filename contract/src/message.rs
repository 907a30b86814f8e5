//! `OrderPlaced`: the JSON message on the queue, one per order.
//!
//! ```json
//! {"schema_version": 1, "order_id": "…", "customer_id": "cust-42", "currency": "EUR",
//!  "items": [{"sku": "BOOK-1", "quantity": 2, "unit_price_cents": 1299}],
//!  "received_at": "2026-11-24T18:27:15.123Z"}
//! ```

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ContractError;
use crate::json::from_json;
use crate::object::Object;
use crate::order::{LineItemRequest, Order, OrderRequest, objects};

/// The version this code writes and the only one it reads. A consumer meeting a
/// newer version rejects the message, which then waits in the DLQ until the
/// consumer is upgraded and the DLQ replayed.
pub const SCHEMA_VERSION: u32 = 1;

/// An accepted order, as the producer enqueues it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderPlaced {
    pub order: Order,
    /// When the producer accepted the order.
    pub received_at: DateTime<Utc>,
}

/// The wire shape. Kept separate so that `Order` can only come out of validation.
#[derive(Serialize)]
struct Outgoing<'a> {
    schema_version: u32,
    #[serde(flatten)]
    order: &'a Order,
    received_at: DateTime<Utc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Incoming {
    schema_version: u32,
    order_id: Uuid,
    customer_id: String,
    currency: String,
    #[serde(deserialize_with = "objects")]
    items: Vec<LineItemRequest>,
    received_at: DateTime<Utc>,
}

impl OrderPlaced {
    pub fn new(order: Order, received_at: DateTime<Utc>) -> Self {
        Self { order, received_at }
    }

    /// The message body, as sent to SQS.
    pub fn to_json(&self) -> String {
        let outgoing = Outgoing {
            schema_version: SCHEMA_VERSION,
            order: &self.order,
            received_at: self.received_at,
        };
        // Serializing plain strings and integers into a String cannot fail.
        serde_json::to_string(&outgoing).unwrap_or_else(|err| unreachable!("{err}"))
    }

    /// Reads and re-validates a message body taken off the queue. A body
    /// that declares another `schema_version` is [`ContractError::UnsupportedVersion`]
    /// whatever else is wrong with it by this version's rules: a newer
    /// producer's message likely has fields this one does not know.
    pub fn from_json(json: &str) -> Result<Self, ContractError> {
        Self::read(json).map_err(|err| match other_version(json) {
            Some(found) => ContractError::UnsupportedVersion { found },
            None => err,
        })
    }

    fn read(json: &str) -> Result<Self, ContractError> {
        let Object(incoming) = from_json::<Object<Incoming>>(json)?;
        if incoming.schema_version != SCHEMA_VERSION {
            return Err(ContractError::UnsupportedVersion {
                found: incoming.schema_version,
            });
        }
        let order = Order::try_from(OrderRequest {
            order_id: incoming.order_id,
            customer_id: incoming.customer_id,
            currency: incoming.currency,
            items: incoming.items,
        })?;
        Ok(Self::new(order, incoming.received_at))
    }
}

/// The `schema_version` a body declares, read leniently, when it is not
/// [`SCHEMA_VERSION`]. Only called once the strict read failed, so a valid
/// message is parsed once.
fn other_version(json: &str) -> Option<u32> {
    #[derive(Deserialize)]
    struct Declared {
        schema_version: u32,
    }
    serde_json::from_str::<Declared>(json)
        .ok()
        .map(|declared| declared.schema_version)
        .filter(|&version| version != SCHEMA_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> Order {
        Order::from_request_json(
            r#"{"order_id":"3f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10","customer_id":"cust-42",
                "currency":"EUR","items":[{"sku":"BOOK-1","quantity":2,"unit_price_cents":1299}]}"#,
        )
        .expect("valid")
    }

    #[test]
    fn a_message_reads_back_as_the_order_that_was_written() {
        let placed = OrderPlaced::new(order(), Utc::now());
        let json = placed.to_json();
        assert!(json.contains("\"schema_version\":1"), "{json}");
        assert_eq!(OrderPlaced::from_json(&json), Ok(placed));
    }

    #[test]
    fn a_message_from_a_newer_schema_is_rejected_with_a_way_out() {
        let json = OrderPlaced::new(order(), Utc::now())
            .to_json()
            .replace("\"schema_version\":1", "\"schema_version\":2");
        let err = OrderPlaced::from_json(&json).expect_err("newer version");
        assert_eq!(err, ContractError::UnsupportedVersion { found: 2 });
        assert_eq!(err.field(), Some("schema_version"));
        assert!(err.to_string().contains("replay the DLQ"), "{err}");
    }

    #[test]
    fn a_newer_message_with_fields_this_version_does_not_know_is_still_a_newer_version() {
        let json = OrderPlaced::new(order(), Utc::now()).to_json().replace(
            "\"schema_version\":1",
            "\"schema_version\":2,\"gift_wrap\":true",
        );
        assert_eq!(
            OrderPlaced::from_json(&json),
            Err(ContractError::UnsupportedVersion { found: 2 })
        );
        let unknown_field_at_this_version =
            OrderPlaced::new(order(), Utc::now()).to_json().replace(
                "\"schema_version\":1",
                "\"schema_version\":1,\"gift_wrap\":true",
            );
        let err =
            OrderPlaced::from_json(&unknown_field_at_this_version).expect_err("unknown field");
        assert_eq!(err.field(), Some("gift_wrap"));
    }

    #[test]
    fn a_message_is_validated_again_on_the_way_in() {
        let json = OrderPlaced::new(order(), Utc::now())
            .to_json()
            .replace("\"quantity\":2", "\"quantity\":0");
        let err = OrderPlaced::from_json(&json).expect_err("invalid quantity");
        assert_eq!(err.field(), Some("items[0].quantity"));
    }

    #[test]
    fn a_request_body_is_not_a_message() {
        let err = OrderPlaced::from_json(
            r#"{"order_id":"3f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10","customer_id":"c","currency":"EUR","items":[]}"#,
        )
        .expect_err("no schema_version");
        assert!(err.to_string().contains("schema_version"), "{err}");
    }
}
