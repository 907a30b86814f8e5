//! `GET /openapi.json`: the API described in OpenAPI 3.1, generated from the
//! code (utoipa): the request schema and the problem body here, every status
//! of a route on its handler in `routes` (of the status function's two, here).
//! `scripts/test` runs schemathesis against it.
// The types and functions here exist for the derives (and the tests) only.
#![allow(dead_code)]

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use crate::catalogue::Catalogue;
// By name: listed as `routes::…`, utoipa would tag the paths `routes`.
use crate::routes::{
    __path_catalogue, __path_healthz, __path_me, __path_openapi_json, __path_place_order,
    __path_readyz,
};

/// A new order: the body of `POST /orders`. Mirrors the contract's rules
/// (`order_contract::OrderRequest` and its validation); a unit test keeps the
/// two in step on examples.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "order_id": "3f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10",
    "customer_id": "cust-42",
    "currency": "EUR",
    "items": [{"sku": "NOTEBOOK-A5", "quantity": 2, "unit_price_cents": 1299}]
}))]
pub struct NewOrder {
    /// Chosen by the client, fresh for every order: its idempotency key. A retry
    /// of the same order with the same id is stored once. A different order
    /// under an id already used is not stored: it is kept aside (in the
    /// consumer's `order_conflicts`), counted and alarmed on for someone to
    /// look at, though it was answered 202. Generate a new UUID per order.
    #[schema(format = Uuid, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    order_id: String,
    /// 1–64 characters of `A-Z a-z 0-9 _ -`. Required in trial mode. Behind a
    /// load balancer that signs customers in it may be left out: the order is
    /// the signed-in customer's (`GET /me`), and another customer's id is
    /// refused with 403.
    #[schema(
        pattern = "^[A-Za-z0-9_-]{1,64}$",
        min_length = 1,
        max_length = 64,
        nullable = false
    )]
    #[serde(default)]
    customer_id: Option<String>,
    /// The catalogue's currency (three upper-case letters, ISO 4217).
    #[schema(pattern = "^[A-Z]{3}$", min_length = 3, max_length = 3)]
    currency: String,
    /// 1–100 line items.
    #[schema(min_items = 1, max_items = 100)]
    items: Vec<NewLineItem>,
}

/// One line of a new order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLineItem {
    /// A SKU of the catalogue (`GET /catalogue`); 1–64 printable ASCII characters.
    #[schema(pattern = "^[ -~]{1,64}$", min_length = 1, max_length = 64)]
    sku: String,
    /// 1–10000, written without a fraction (`2`, not `2.0`).
    #[schema(minimum = 1, maximum = 10000)]
    quantity: i64,
    /// The catalogue's price for the SKU (0–1000000000, written without a fraction).
    #[schema(minimum = 0, maximum = 1000000000)]
    unit_price_cents: i64,
}

// [`crate::problem::Problem`] as the document shows it: the fields it serializes.
/// One error answer (`application/problem+json`, RFC 9457).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub(crate) struct ProblemBody {
    /// A URI naming the kind of problem; `about:blank` means "see the status".
    #[serde(rename = "type")]
    #[schema(example = "about:blank")]
    kind: &'static str,
    /// The status phrase, the same for every occurrence.
    title: &'static str,
    /// The HTTP status, repeated in the body for clients that log only bodies.
    status: u16,
    /// What went wrong with this request and what to do about it.
    detail: String,
    /// The order field at fault (e.g. `items[0].quantity`), for validation problems.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    /// The current catalogue, on a `409` for a price that changed: the prices to
    /// show the customer before the order is sent again.
    catalogue: Option<Catalogue>,
}

/// `/healthz` and `/readyz` when all is well.
#[derive(Debug, ToSchema)]
pub struct Status {
    /// `alive` or `ready`.
    #[schema(example = "ready")]
    status: String,
}

/// An order as its customer sees it (`GET /orders/{order_id}`), by `status`.
/// Mirrors the status function's `status::orders::OrderStatus`; schemathesis
/// checks the function's answers against it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum OrderStatus {
    /// The shop has stored it.
    Stored {
        order_id: Uuid,
        /// When the shop stored it.
        #[schema(format = DateTime)]
        stored_at: String,
        /// When the shop accepted it (the 202).
        #[schema(format = DateTime)]
        received_at: String,
        currency: String,
        /// The lines as stored.
        items: Vec<NewLineItem>,
        total_cents: i64,
        /// A sentence for the customer.
        message: String,
    },
    /// Its `order_id` was already used for a different order: it was not
    /// placed, and `message` says what to do.
    KeptAside {
        order_id: Uuid,
        #[schema(format = DateTime)]
        kept_aside_at: String,
        #[schema(format = DateTime)]
        received_at: String,
        currency: String,
        items: Vec<NewLineItem>,
        message: String,
    },
}

/// `GET /orders`: the signed-in customer's newest orders first.
#[derive(Debug, Deserialize, ToSchema)]
pub struct MyOrders {
    /// At most 20.
    orders: Vec<OrderStatus>,
}

const STATUS_FUNCTION: &str = "Answered by the status function, to which the load balancer \
    forwards GET /orders* after signing the customer in (locally, local-alb does the same); \
    never cached.";

/// `GET /orders/{order_id}`: one of the signed-in customer's orders.
#[utoipa::path(get, path = "/orders/{order_id}", description = STATUS_FUNCTION,
    params(("order_id" = Uuid, Path, description = "The order's id, as placed", example = "3f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10")),
    responses(
        (status = 200, description = "Stored, or kept aside because its id was already used for a different order", body = OrderStatus),
        (status = 401, description = "The request carries no valid sign-in", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No order with this id is stored for this customer, yet: an order answered 202 a moment ago is on its way. Another customer's order is answered the same", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The shop's database cannot be reached: an accepted order is safe in the queue; look again after Retry-After", body = ProblemBody, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds until a retry may succeed"))),
    )
)]
fn order_status() {}

/// `GET /orders`: the signed-in customer's recent orders.
#[utoipa::path(get, path = "/orders", description = STATUS_FUNCTION,
    responses(
        (status = 200, description = "The customer's newest orders first, stored or kept aside", body = MyOrders),
        (status = 401, description = "The request carries no valid sign-in", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The shop's database cannot be reached: accepted orders are safe in the queue; look again after Retry-After", body = ProblemBody, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds until a retry may succeed"))),
    )
)]
fn my_orders() {}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Orders producer",
        description = "Takes orders and queues them to SQS; a consumer stores them. A 202 means accepted for processing, not yet stored. The order_id is the client's idempotency key: retry an order under its own id (it is stored once), and give every new order a fresh id, since a different order under a used id is kept aside (order_conflicts), counted and alarmed on, and not stored. Errors are application/problem+json (RFC 9457).",
    ),
    paths(
        place_order,
        my_orders,
        order_status,
        catalogue,
        me,
        healthz,
        readyz,
        openapi_json
    )
)]
struct ApiDoc;

/// The document, rendered once.
pub fn json() -> &'static str {
    static JSON: LazyLock<String> = LazyLock::new(|| {
        ApiDoc::openapi().to_pretty_json().unwrap_or_else(|err| {
            tracing::error!(error = %err, "cannot render the OpenAPI document");
            String::from("{}")
        })
    });
    &JSON
}

#[cfg(test)]
mod tests {
    use super::*;
    use order_contract::Order;

    fn document() -> serde_json::Value {
        serde_json::from_str(json()).expect("JSON")
    }

    #[test]
    fn the_document_is_openapi_3_1_with_every_route_and_status() {
        let doc = document();
        assert!(
            doc["openapi"]
                .as_str()
                .unwrap_or_default()
                .starts_with("3.1"),
            "{doc}"
        );
        let orders = &doc["paths"]["/orders"]["post"]["responses"];
        for status in [
            "202", "400", "401", "403", "408", "409", "413", "415", "422", "429", "503",
        ] {
            assert!(orders.get(status).is_some(), "POST /orders {status}");
        }
        assert!(
            doc["paths"]["/readyz"]["get"]["responses"]
                .get("503")
                .is_some()
        );
        assert!(doc["paths"]["/healthz"]["get"].is_object());
        for (path, statuses) in [
            ("/orders", &["200", "401", "503"][..]),
            ("/orders/{order_id}", &["200", "401", "404", "503"]),
        ] {
            let responses = &doc["paths"][path]["get"]["responses"];
            for status in statuses {
                assert!(responses.get(status).is_some(), "GET {path} {status}");
            }
        }
        let statuses: Vec<_> = doc["components"]["schemas"]["OrderStatus"]["oneOf"]
            .as_array()
            .expect("one schema per status")
            .iter()
            .map(|variant| variant["properties"]["status"]["enum"][0].clone())
            .collect();
        assert_eq!(statuses, ["stored", "kept_aside"], "{doc}");
        let catalogue = &doc["components"]["schemas"]["Catalogue"];
        assert_eq!(
            catalogue["required"],
            serde_json::json!(["currency", "items", "version"])
        );
        assert_eq!(
            doc["components"]["schemas"]["CatalogueItem"]["required"],
            serde_json::json!(["sku", "name", "unit_price_cents"])
        );
        assert!(
            doc["paths"]["/catalogue"]["get"]["responses"]
                .get("200")
                .is_some()
        );
        let problem = &doc["components"]["schemas"]["Problem"]["properties"];
        for member in ["type", "title", "status", "detail", "field", "catalogue"] {
            assert!(problem.get(member).is_some(), "Problem.{member}");
        }
        assert!(
            problem.get("retry_after_secs").is_none(),
            "not a body member"
        );
        let accepted = &doc["components"]["schemas"]["Accepted"];
        assert_eq!(
            accepted["properties"]["order_id"]["format"], "uuid",
            "{accepted}"
        );
        assert_eq!(
            accepted["required"],
            serde_json::json!(["order_id", "message_id"])
        );
    }

    #[test]
    fn integrators_are_told_what_a_202_means_and_what_a_reused_order_id_does() {
        let doc = document();
        let accepted = doc["paths"]["/orders"]["post"]["responses"]["202"]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(
            accepted.starts_with("Accepted for processing"),
            "{accepted}"
        );
        let order_id =
            doc["components"]["schemas"]["NewOrder"]["properties"]["order_id"]["description"]
                .as_str()
                .unwrap_or_default();
        for words in ["fresh for every order", "not stored", "order_conflicts"] {
            assert!(order_id.contains(words), "{words}: {order_id}");
        }
    }

    #[test]
    fn the_schema_rejects_unknown_fields_like_the_contract() {
        let doc = document();
        let order = &doc["components"]["schemas"]["NewOrder"];
        assert_eq!(order["additionalProperties"], false, "{order}");
        assert_eq!(
            doc["components"]["schemas"]["NewLineItem"]["additionalProperties"],
            false
        );
    }

    #[test]
    fn the_schema_and_the_contract_agree_on_examples() {
        let accepted = [
            r#"{"order_id":"3f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10","customer_id":"c","currency":"EUR","items":[{"sku":" ~","quantity":10000,"unit_price_cents":0}]}"#,
        ];
        for body in accepted {
            assert!(Order::from_request_json(body).is_ok(), "{body}");
            assert!(serde_json::from_str::<NewOrder>(body).is_ok(), "{body}");
        }
        let rejected_by_both = [
            r#"{"order_id":"3f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10","customer_id":"c","currency":"EUR","items":[],"x":1}"#,
        ];
        for body in rejected_by_both {
            assert!(Order::from_request_json(body).is_err(), "{body}");
            assert!(serde_json::from_str::<NewOrder>(body).is_err(), "{body}");
        }
    }
}
