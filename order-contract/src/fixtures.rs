//! Valid orders for tests, behind the feature `fixtures` (no shipped binary
//! carries them).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{Order, OrderPlaced};

/// A valid order request with a fresh `order_id`: `customer` picks its
/// customer id (`cust-{customer}`), currency and prices, `lines` how many line
/// items it has (1 to 100).
pub fn order_request(customer: usize, lines: usize) -> Value {
    order_request_with_id(Uuid::new_v4(), customer, lines)
}

pub fn order_request_with_id(order_id: Uuid, customer: usize, lines: usize) -> Value {
    let items: Vec<Value> = (0..lines)
        .map(|line| {
            json!({
                "sku": format!("SKU-{customer}-{line}"),
                "quantity": line % 7 + 1,
                "unit_price_cents": 100 * line + customer % 1000,
            })
        })
        .collect();
    let currency = ["EUR", "USD", "SEK"][customer % 3];
    json!({
        "order_id": order_id,
        "customer_id": format!("cust-{customer}"),
        "currency": currency,
        "items": items,
    })
}

pub fn order(customer: usize, lines: usize) -> Order {
    order_from_request(&order_request(customer, lines))
}

/// The validated order of a fixture's request, for a test that set a field
/// on it first (`request["customer_id"] = json!("someone-else")`). Panics,
/// naming the field, if the edit made it invalid.
pub fn order_from_request(request: &Value) -> Order {
    let request = request.to_string();
    Order::from_request_json(&request)
        .unwrap_or_else(|err| panic!("the fixture is a valid order: {err}: {request}"))
}

pub fn order_placed_body(customer: usize, lines: usize, received_at: DateTime<Utc>) -> String {
    OrderPlaced::new(order(customer, lines), received_at).to_json()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixture_is_an_order_the_contract_accepts() {
        for customer in 0..30 {
            for lines in [1, 2, 7, 100] {
                let order = order(customer, lines);
                assert_eq!(order.items().len(), lines);
                let body = order_placed_body(customer, lines, Utc::now());
                assert!(OrderPlaced::from_json(&body).is_ok(), "{body}");
            }
        }
    }

    #[test]
    fn a_request_with_a_field_set_keeps_that_field() {
        let id = Uuid::new_v4();
        let mut request = order_request_with_id(id, 7, 2);
        request["customer_id"] = json!("someone-else");
        let order = order_from_request(&request);
        assert_eq!(order.order_id(), id);
        assert_eq!(order.customer_id(), "someone-else");
        assert_eq!(order.items().len(), 2);
    }

    #[test]
    #[should_panic(expected = "currency")]
    fn a_request_made_invalid_panics_naming_the_field() {
        let mut request = order_request(7, 1);
        request["currency"] = json!("euro");
        order_from_request(&request);
    }
}
