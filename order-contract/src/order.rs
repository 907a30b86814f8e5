//! What a customer may order, and the rules an order must follow.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ContractError;
use crate::json::from_json;
use crate::object::Object;

pub const MAX_ITEMS: usize = 100;
pub const MAX_CUSTOMER_ID_CHARS: usize = 64;
pub const MAX_SKU_CHARS: usize = 64;
pub const MAX_QUANTITY: i64 = 10_000;
pub const MAX_UNIT_PRICE_CENTS: i64 = 1_000_000_000;

/// The body of `POST /orders` before validation. Numbers are `i64`, so that
/// out-of-range values get a range message rather than a type error.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    pub order_id: Uuid,
    /// Left out, the producer fills in the signed-in customer; `null` is
    /// refused as the wrong type.
    #[serde(default, deserialize_with = "present")]
    pub customer_id: Option<String>,
    pub currency: String,
    #[serde(deserialize_with = "objects")]
    pub items: Vec<LineItemRequest>,
}

fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    String::deserialize(deserializer).map(Some)
}

/// A list of line items, each a JSON object (not a positional array).
pub(crate) fn objects<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<LineItemRequest>, D::Error> {
    let items: Vec<Object<LineItemRequest>> = Deserialize::deserialize(deserializer)?;
    Ok(items.into_iter().map(|Object(item)| item).collect())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineItemRequest {
    pub sku: String,
    #[serde(deserialize_with = "whole_number")]
    pub quantity: i64,
    #[serde(deserialize_with = "whole_number")]
    pub unit_price_cents: i64,
}

/// An integer as JSON Schema (and the OpenAPI document) counts one: `2` and
/// `2.0`, never `2.5`.
fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    struct Whole;

    impl serde::de::Visitor<'_> for Whole {
        type Value = i64;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a whole number")
        }

        fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<i64, E> {
            Ok(value)
        }

        fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<i64, E> {
            i64::try_from(value)
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(value), &self))
        }

        fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<i64, E> {
            // Whole, and small enough that the float is exact (2⁵³).
            if value.fract() == 0.0 && value.abs() <= 9_007_199_254_740_992.0 {
                Ok(value as i64)
            } else {
                Err(E::invalid_type(serde::de::Unexpected::Float(value), &self))
            }
        }
    }

    deserializer.deserialize_i64(Whole)
}

/// A valid order: only validation builds one, so holding one is proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Order {
    order_id: Uuid,
    customer_id: String,
    currency: String,
    items: Vec<LineItem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineItem {
    pub sku: String,
    pub quantity: u32,
    pub unit_price_cents: u32,
}

impl OrderRequest {
    pub fn from_json(json: &str) -> Result<Self, ContractError> {
        from_json::<Object<Self>>(json).map(|Object(request)| request)
    }
}

impl Order {
    pub fn from_request_json(json: &str) -> Result<Self, ContractError> {
        Self::try_from(OrderRequest::from_json(json)?)
    }

    /// The client-chosen id, which is also the idempotency key.
    pub fn order_id(&self) -> Uuid {
        self.order_id
    }

    pub fn customer_id(&self) -> &str {
        &self.customer_id
    }

    pub fn currency(&self) -> &str {
        &self.currency
    }

    pub fn items(&self) -> &[LineItem] {
        &self.items
    }

    /// Sum of quantity × unit price. At most 100 × 10⁴ × 10⁹ = 10¹⁵, so it fits an `i64`.
    pub fn total_cents(&self) -> i64 {
        self.items
            .iter()
            .map(|item| i64::from(item.quantity) * i64::from(item.unit_price_cents))
            .sum()
    }
}

impl TryFrom<OrderRequest> for Order {
    type Error = ContractError;

    fn try_from(request: OrderRequest) -> Result<Self, ContractError> {
        let customer_id = request.customer_id.unwrap_or_default();
        check_customer_id(&customer_id)?;
        check_currency(&request.currency)?;
        if request.items.is_empty() || request.items.len() > MAX_ITEMS {
            return Err(ContractError::invalid(
                "items",
                format!(
                    "must hold between 1 and {MAX_ITEMS} items, not {}",
                    request.items.len()
                ),
            ));
        }
        let items = request
            .items
            .into_iter()
            .enumerate()
            .map(|(index, item)| LineItem::validate(index, item))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            order_id: request.order_id,
            customer_id,
            currency: request.currency,
            items,
        })
    }
}

impl LineItem {
    fn validate(index: usize, item: LineItemRequest) -> Result<Self, ContractError> {
        let field = |name: &str| format!("items[{index}].{name}");
        let sku_chars = item.sku.chars().count();
        if sku_chars == 0 || sku_chars > MAX_SKU_CHARS {
            return Err(ContractError::invalid(
                field("sku"),
                format!("must be 1 to {MAX_SKU_CHARS} characters long, not {sku_chars}"),
            ));
        }
        if !item.sku.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
            return Err(ContractError::invalid(
                field("sku"),
                "may only contain printable ASCII characters",
            ));
        }
        let ranged = |name: &str, value: i64, min: i64, max: i64| {
            let problem = || format!("must be between {min} and {max}, not {value}");
            let value = u32::try_from(value)
                .ok()
                .filter(|_| (min..=max).contains(&value));
            value.ok_or_else(|| ContractError::invalid(field(name), problem()))
        };
        let quantity = ranged("quantity", item.quantity, 1, MAX_QUANTITY)?;
        let unit_price_cents = ranged(
            "unit_price_cents",
            item.unit_price_cents,
            0,
            MAX_UNIT_PRICE_CENTS,
        )?;
        Ok(Self {
            sku: item.sku,
            quantity,
            unit_price_cents,
        })
    }
}

/// The customer id rule: 1 to 64 characters of `A-Z a-z 0-9 _ -`.
pub fn check_customer_id(customer_id: &str) -> Result<(), ContractError> {
    let valid_chars = customer_id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if customer_id.is_empty() || customer_id.len() > MAX_CUSTOMER_ID_CHARS || !valid_chars {
        return Err(ContractError::invalid(
            "customer_id",
            format!("must be 1 to {MAX_CUSTOMER_ID_CHARS} characters of A-Z, a-z, 0-9, '_' or '-'"),
        ));
    }
    Ok(())
}

fn check_currency(currency: &str) -> Result<(), ContractError> {
    if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
        return Err(ContractError::invalid(
            "currency",
            format!(
                "must be an ISO 4217 code of three upper-case letters such as \"EUR\", not {currency:?}"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> serde_json::Value {
        json!({
            "order_id": "3f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10",
            "customer_id": "cust-42",
            "currency": "EUR",
            "items": [{"sku": "BOOK-1", "quantity": 2, "unit_price_cents": 1299}]
        })
    }

    fn field_of(body: serde_json::Value) -> String {
        let err = Order::from_request_json(&body.to_string()).expect_err("should be rejected");
        err.field().expect("names a field").to_owned()
    }

    #[test]
    fn the_documented_example_is_a_valid_order() {
        let order = Order::from_request_json(&valid().to_string()).expect("valid");
        assert_eq!(order.customer_id(), "cust-42");
        assert_eq!(order.total_cents(), 2598);
    }

    #[test]
    fn text_that_is_not_json_is_malformed() {
        let err = Order::from_request_json("{\"order_id\": ").expect_err("malformed");
        assert!(matches!(err, ContractError::Malformed { .. }), "{err:?}");
        let err = Order::from_request_json("{} trailing").expect_err("malformed");
        assert!(matches!(err, ContractError::Malformed { .. }), "{err:?}");
    }

    #[test]
    fn unknown_fields_are_rejected_by_name() {
        let mut body = valid();
        body["coupon"] = json!("FREE");
        let err = Order::from_request_json(&body.to_string()).expect_err("unknown field");
        assert!(err.to_string().contains("coupon"), "{err}");
        let mut body = valid();
        body["items"][0]["colour"] = json!("red");
        assert_eq!(field_of(body), "items[0].colour");
    }

    #[test]
    fn a_missing_field_is_named() {
        let mut body = valid();
        body.as_object_mut().expect("object").remove("currency");
        assert_eq!(field_of(body), "currency");
        let mut body = valid();
        body["items"][0]
            .as_object_mut()
            .expect("object")
            .remove("sku");
        assert_eq!(field_of(body), "items[0].sku");
    }

    #[test]
    fn positional_arrays_are_not_orders() {
        let id = "3f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10";
        let positional = format!(
            r#"["{id}","cust-42","EUR",[{{"sku":"B","quantity":1,"unit_price_cents":1}}]]"#
        );
        let err = Order::from_request_json(&positional).expect_err("an array is not an order");
        assert_eq!(err.field(), Some("body"));
        let mut body = valid();
        body["items"] = json!([["BOOK-1", 2, 1299]]);
        assert_eq!(field_of(body), "items[0]");
    }

    #[test]
    fn a_wrong_type_names_the_nested_field() {
        let mut body = valid();
        body["items"][0]["quantity"] = json!("two");
        assert_eq!(field_of(body), "items[0].quantity");
        let mut body = valid();
        body["order_id"] = json!("not-a-uuid");
        assert_eq!(field_of(body), "order_id");
    }

    #[test]
    fn every_rule_names_its_field() {
        let cases: Vec<(&str, serde_json::Value, &str)> = vec![
            ("customer_id", json!(""), "customer_id"),
            ("customer_id", json!(null), "customer_id"),
            ("customer_id", json!("a".repeat(65)), "customer_id"),
            ("customer_id", json!("cust 42"), "customer_id"),
            ("currency", json!("eur"), "currency"),
            ("currency", json!("EURO"), "currency"),
            ("items", json!([]), "items"),
        ];
        for (key, value, expected) in cases {
            let mut body = valid();
            body[key] = value;
            assert_eq!(field_of(body), expected);
        }
        let item_cases = [
            ("sku", json!(""), "items[0].sku"),
            ("sku", json!("x".repeat(65)), "items[0].sku"),
            ("sku", json!("tab\there"), "items[0].sku"),
            ("quantity", json!(2.5), "items[0].quantity"),
            ("quantity", json!(0), "items[0].quantity"),
            ("quantity", json!(10_001), "items[0].quantity"),
            ("unit_price_cents", json!(-1), "items[0].unit_price_cents"),
            (
                "unit_price_cents",
                json!(1_000_000_001),
                "items[0].unit_price_cents",
            ),
        ];
        for (key, value, expected) in item_cases {
            let mut body = valid();
            body["items"][0][key] = value;
            assert_eq!(field_of(body), expected);
        }
    }

    #[test]
    fn the_limits_themselves_are_allowed() {
        let mut body = valid();
        body["customer_id"] = json!("A".repeat(64));
        body["items"] = json!(vec![
            json!({"sku": "S".repeat(64), "quantity": 10_000, "unit_price_cents": 1_000_000_000});
            100
        ]);
        let order = Order::from_request_json(&body.to_string()).expect("limits are inclusive");
        assert_eq!(order.total_cents(), 100 * 10_000 * 1_000_000_000);
        body["items"] = json!(vec![
            json!({"sku": "S", "quantity": 1, "unit_price_cents": 0});
            101
        ]);
        assert_eq!(field_of(body), "items");
    }

    #[test]
    fn a_whole_number_written_with_a_fraction_is_the_same_number() {
        let mut body = valid();
        body["items"][0]["quantity"] = json!(2.0);
        body["items"][0]["unit_price_cents"] = json!(1299.0);
        let order = Order::from_request_json(&body.to_string()).expect("2.0 is an integer");
        assert_eq!(order.items()[0].quantity, 2);
        assert_eq!(order.items()[0].unit_price_cents, 1299);
    }
}
