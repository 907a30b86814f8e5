//! `OrderPlaced`: the JSON message on the queue, one per order.
//!
//! ```json
//! {"schema_version": 2, "order_id": "…", "customer_id": "cust-42", "currency": "EUR",
//!  "items": [{"sku": "BOOK-1", "quantity": 2, "unit_price_cents": 1299}],
//!  "received_at": "2026-11-24T18:27:15.123Z", "catalogue_version": "2026-12-06.1"}
//! ```
//!
//! Version 2 added `catalogue_version` (optional).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ContractError;
use crate::json::from_json;
use crate::object::Object;
use crate::order::{LineItemRequest, Order, OrderRequest, objects};

/// The version this code writes and the newest it reads. A consumer postpones
/// a newer one until a consumer that reads it is deployed: never poison.
pub const SCHEMA_VERSION: u32 = 2;

/// An accepted order, as the producer enqueues it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderPlaced {
    pub order: Order,
    pub received_at: DateTime<Utc>,
    /// The version of the catalogue that priced it.
    pub catalogue_version: Option<String>,
}

/// The wire shape. Kept separate so that `Order` can only come out of validation.
#[derive(Serialize)]
struct Outgoing<'a> {
    schema_version: u32,
    #[serde(flatten)]
    order: &'a Order,
    received_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    catalogue_version: Option<&'a str>,
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
    #[serde(default)]
    catalogue_version: Option<String>,
}

impl OrderPlaced {
    pub fn new(order: Order, received_at: DateTime<Utc>) -> Self {
        Self {
            order,
            received_at,
            catalogue_version: None,
        }
    }

    #[must_use]
    pub fn priced_by(mut self, version: String) -> Self {
        self.catalogue_version = Some(version);
        self
    }

    pub fn to_json(&self) -> String {
        let outgoing = Outgoing {
            schema_version: SCHEMA_VERSION,
            order: &self.order,
            received_at: self.received_at,
            catalogue_version: self.catalogue_version.as_deref(),
        };
        // Serializing plain strings and integers into a String cannot fail.
        serde_json::to_string(&outgoing).unwrap_or_else(|err| unreachable!("{err}"))
    }

    /// Reads and re-validates a message body taken off the queue, of a
    /// version up to [`SCHEMA_VERSION`].
    pub fn from_json(json: &str) -> Result<Self, ContractError> {
        Self::from_json_up_to(json, SCHEMA_VERSION)
    }

    /// As [`OrderPlaced::from_json`], reading versions 1 to `newest` (a test
    /// stands in for the next release with it). A body of another
    /// `schema_version` is [`ContractError::UnsupportedVersion`], whatever else
    /// is wrong with it: a newer message likely has fields this code does not know.
    pub fn from_json_up_to(json: &str, newest: u32) -> Result<Self, ContractError> {
        let unsupported = |found| ContractError::UnsupportedVersion {
            found,
            reads: newest,
        };
        let parsed =
            from_json::<Object<Incoming>>(json).map_err(|err| match declared_version(json) {
                Some(found) if !(1..=newest).contains(&found) => unsupported(found),
                _ => err,
            });
        let Object(incoming) = parsed?;
        if !(1..=newest).contains(&incoming.schema_version) {
            return Err(unsupported(incoming.schema_version));
        }
        let order = Order::try_from(OrderRequest {
            order_id: incoming.order_id,
            customer_id: Some(incoming.customer_id),
            currency: incoming.currency,
            items: incoming.items,
        })?;
        if let Some(version) = &incoming.catalogue_version {
            check_catalogue_version(version)?;
        }
        Ok(Self {
            order,
            received_at: incoming.received_at,
            catalogue_version: incoming.catalogue_version,
        })
    }
}

/// 1 to 64 printable ASCII characters (the producer refuses a catalogue whose
/// version breaks it, so that no order it prices is poison).
pub fn check_catalogue_version(version: &str) -> Result<(), ContractError> {
    if version.is_empty()
        || version.len() > 64
        || !version.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return Err(ContractError::invalid(
            "catalogue_version",
            "must be 1 to 64 printable ASCII characters".to_owned(),
        ));
    }
    Ok(())
}

/// The `schema_version` a body declares, read leniently once the strict read failed.
fn declared_version(json: &str) -> Option<u32> {
    let body: serde_json::Value = serde_json::from_str(json).ok()?;
    body.get("schema_version")?.as_u64()?.try_into().ok()
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
        let placed = OrderPlaced::new(order(), Utc::now()).priced_by("2026-12-06.1".into());
        let json = placed.to_json();
        assert!(json.contains("\"schema_version\":2"), "{json}");
        assert!(
            json.contains("\"catalogue_version\":\"2026-12-06.1\""),
            "{json}"
        );
        assert_eq!(OrderPlaced::from_json(&json).expect("read back"), placed);
    }

    #[test]
    fn a_version_1_message_without_a_catalogue_version_is_still_read() {
        let json = r#"{"schema_version":1,"order_id":"3f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10",
            "customer_id":"cust-42","currency":"EUR",
            "items":[{"sku":"BOOK-1","quantity":2,"unit_price_cents":1299}],
            "received_at":"2026-11-24T18:27:15.123Z"}"#;
        let placed = OrderPlaced::from_json(json).expect("a version 1 body");
        assert_eq!((placed.order, placed.catalogue_version), (order(), None));
    }

    #[test]
    fn a_catalogue_version_out_of_its_rule_is_refused_by_name() {
        let json = OrderPlaced::new(order(), Utc::now())
            .priced_by("x".repeat(65))
            .to_json();
        let err = OrderPlaced::from_json(&json).expect_err("too long");
        assert_eq!(err.field(), Some("catalogue_version"));
    }

    /// A message of this build's version turned into one declaring `version`.
    fn with_version(version: &str) -> String {
        OrderPlaced::new(order(), Utc::now()).to_json().replace(
            &format!("\"schema_version\":{SCHEMA_VERSION}"),
            &format!("\"schema_version\":{version}"),
        )
    }

    #[test]
    fn a_message_from_a_newer_schema_is_refused_as_newer_and_names_what_this_code_reads() {
        let err = OrderPlaced::from_json(&with_version("3")).expect_err("newer version");
        assert!(
            matches!(
                err,
                ContractError::UnsupportedVersion { found: 3, reads: 2 }
            ),
            "{err}"
        );
        assert!(err.is_newer_version());
        assert_eq!(err.field(), Some("schema_version"));
        assert!(err.to_string().contains("reads versions 1 to 2"), "{err}");
    }

    #[test]
    fn an_older_version_is_unsupported_but_not_newer() {
        let err = OrderPlaced::from_json(&with_version("0")).expect_err("older version");
        assert!(
            matches!(
                err,
                ContractError::UnsupportedVersion { found: 0, reads: 2 }
            ),
            "{err}"
        );
        assert!(!err.is_newer_version());
    }

    #[test]
    fn code_that_reads_the_next_version_reads_it_and_this_one() {
        let placed = OrderPlaced::from_json_up_to(&with_version("3"), 3).expect("read");
        assert_eq!(placed.order, order());
        assert!(OrderPlaced::from_json_up_to(&with_version("2"), 3).is_ok());
        assert!(matches!(
            OrderPlaced::from_json_up_to(&with_version("4"), 3),
            Err(ContractError::UnsupportedVersion { found: 4, reads: 3 })
        ));
    }

    #[test]
    fn a_newer_message_with_fields_this_version_does_not_know_is_still_a_newer_version() {
        let json = with_version("3,\"gift_wrap\":true");
        assert!(matches!(
            OrderPlaced::from_json(&json),
            Err(ContractError::UnsupportedVersion { found: 3, reads: 2 })
        ));
        let unknown_field_at_this_version = with_version("2,\"gift_wrap\":true");
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
