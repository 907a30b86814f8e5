//! Valid orders for tests, written once: the request a customer sends and the
//! message the producer enqueues. Behind the feature `fixtures`, so that no
//! shipped binary carries them.

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

/// The same order under `order_id`.
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

/// The validated order of [`order_request`].
pub fn order(customer: usize, lines: usize) -> Order {
    let request = order_request(customer, lines).to_string();
    Order::from_request_json(&request)
        .unwrap_or_else(|err| panic!("the fixture is a valid order: {err}: {request}"))
}

/// The `OrderPlaced` body the producer enqueues for such an order, received
/// at `received_at`.
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
}
