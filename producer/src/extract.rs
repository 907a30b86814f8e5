//! [`ValidOrder`], the typed extractor of `POST /orders`.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRef, FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use order_contract::order::check_customer_id;
use order_contract::{ContractError, Order, OrderRequest};

use crate::auth::SignedIn;

use crate::problem::Problem;

pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyReadTimeout(pub Duration);

/// A valid order, from a body that was
/// - sent as `application/json` (optionally `; charset=utf-8`), else 415;
/// - received within the [`BodyReadTimeout`], else 408 and the connection closed;
/// - at most [`MAX_BODY_BYTES`], else 413;
/// - UTF-8 JSON, else 400;
/// - for the signed-in customer, if there is one, else 403;
/// - an order by the contract's rules, else 422 naming the field.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidOrder(pub Order);

impl<S> FromRequest<S> for ValidOrder
where
    S: Send + Sync,
    BodyReadTimeout: FromRef<S>,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        check_content_type(request.headers())?;
        let signed_in = request
            .extensions()
            .get::<SignedIn>()
            .and_then(|SignedIn(customer)| customer.clone());
        let BodyReadTimeout(read_timeout) = BodyReadTimeout::from_ref(state);
        let body = tokio::time::timeout(read_timeout, Bytes::from_request(request, state))
            .await
            .map_err(|_| body_too_slow(read_timeout))?
            .map_err(body_problem)?;
        let body = std::str::from_utf8(&body).map_err(|_| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "The body is not valid UTF-8; send the order as UTF-8 encoded JSON.",
            )
        })?;
        let mut order = OrderRequest::from_json(body).map_err(contract_problem)?;
        if let Some(customer) = signed_in {
            for_the_signed_in_customer(&mut order, customer)?;
        }
        Order::try_from(order).map(Self).map_err(contract_problem)
    }
}

/// A signed-in customer orders for themselves only: a `customer_id` left out is
/// theirs, another customer's is `403` (one that breaks the rule is left for the
/// contract's `422`).
fn for_the_signed_in_customer(order: &mut OrderRequest, customer: String) -> Result<(), Problem> {
    match &order.customer_id {
        None => order.customer_id = Some(customer),
        Some(id) if *id == customer || check_customer_id(id).is_err() => {}
        Some(_) => {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "You can only order for yourself: leave customer_id out, or send the customer you \
                 are signed in as (GET /me).",
            )
            .with_field("customer_id"));
        }
    }
    Ok(())
}

/// Only `application/json`, with no charset or UTF-8 (RFC 8259 allows no other).
fn check_content_type(headers: &HeaderMap) -> Result<(), Problem> {
    let unsupported = |detail: String| Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, detail);
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(unsupported(
            "The request has no Content-Type; send the order as JSON with \
             `Content-Type: application/json`."
                .to_owned(),
        ));
    };
    let text = value.to_str().unwrap_or_default();
    let media = text.parse::<mime::Mime>().ok().filter(|media| {
        (media.type_(), media.subtype(), media.suffix()) == (mime::APPLICATION, mime::JSON, None)
    });
    let Some(media) = media else {
        let shown: String = text.chars().take(100).collect();
        return Err(unsupported(format!(
            "Content-Type {shown:?} is not supported; send the order as JSON with \
             `Content-Type: application/json`."
        )));
    };
    match media.get_param(mime::CHARSET) {
        Some(charset) if charset != mime::UTF_8 => {
            let shown: String = charset.as_str().chars().take(40).collect();
            Err(unsupported(format!(
                "charset {shown:?} is not supported; JSON must be sent as UTF-8 \
                 (`Content-Type: application/json; charset=utf-8`, or no charset)."
            )))
        }
        _ => Ok(()),
    }
}

fn body_too_slow(read_timeout: Duration) -> Problem {
    tracing::info!(
        timeout_ms = read_timeout.as_millis(),
        "the request body did not arrive in time"
    );
    Problem::new(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "The request body did not arrive within {} seconds; send the request again.",
            read_timeout.as_secs_f64()
        ),
    )
    .with_connection_close()
}

fn body_problem(rejection: BytesRejection) -> Problem {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "The body is larger than {} KiB; an order is far smaller, so check what is being sent.",
                MAX_BODY_BYTES / 1024
            ),
        )
    } else {
        tracing::info!(error = %support::error_chain(&rejection), "could not read the request body");
        Problem::new(
            StatusCode::BAD_REQUEST,
            "The request body could not be read completely; send it again.",
        )
    }
}

fn contract_problem(err: ContractError) -> Problem {
    match &err {
        ContractError::Malformed { .. } => Problem::new(StatusCode::BAD_REQUEST, err.to_string()),
        ContractError::Invalid { .. } | ContractError::UnsupportedVersion { .. } => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, err.to_string())
                .with_field(err.field().unwrap_or_default())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::extract::DefaultBodyLimit;
    use axum::routing::post;
    use tower::ServiceExt;
    use uuid::Uuid;

    const TIMEOUT: BodyReadTimeout = BodyReadTimeout(Duration::from_secs(5));

    const ORDER_ID: Uuid = Uuid::from_u128(0x3f0c1b6e_6a3b_4f7e_9d43_1b8d6f2a9c10);

    /// The fixture's one-line order request under [`ORDER_ID`].
    fn order_request() -> serde_json::Value {
        order_contract::fixtures::order_request_with_id(ORDER_ID, 42, 1)
    }

    fn order() -> String {
        order_request().to_string()
    }

    fn request(content_type: Option<&str>, body: impl Into<Body>) -> Request {
        let mut request = Request::post("/orders");
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        request.body(body.into()).expect("request")
    }

    async fn extract(request: Request) -> Result<ValidOrder, Problem> {
        ValidOrder::from_request(request, &TIMEOUT).await
    }

    #[tokio::test]
    async fn a_valid_json_order_is_extracted() {
        let ValidOrder(order) = extract(request(Some("application/json"), order()))
            .await
            .expect("valid");
        assert_eq!(
            order.order_id().to_string(),
            "3f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10"
        );
    }

    #[tokio::test]
    async fn json_with_a_utf8_charset_in_any_case_or_quoting_is_accepted() {
        for content_type in [
            "application/json; charset=utf-8",
            "Application/JSON; Charset=\"UTF-8\"",
        ] {
            assert!(
                extract(request(Some(content_type), order())).await.is_ok(),
                "{content_type}"
            );
        }
    }

    #[tokio::test]
    async fn other_media_types_and_charsets_are_415_naming_what_was_sent() {
        let cases = [
            (None, "no Content-Type"),
            (Some("text/plain"), "text/plain"),
            (Some("application/jsonp"), "application/jsonp"),
            (Some("application/problem+json"), "problem+json"),
            (Some("json"), "json"),
            (Some("application/json; charset=latin1"), "latin1"),
        ];
        for (content_type, named) in cases {
            let problem = extract(request(content_type, order()))
                .await
                .expect_err("unsupported");
            assert_eq!(problem.body.status, 415, "{content_type:?}");
            assert!(
                problem.body.detail.contains(named),
                "{}",
                problem.body.detail
            );
            assert!(
                problem.body.detail.contains("application/json"),
                "{}",
                problem.body.detail
            );
        }
    }

    #[tokio::test]
    async fn a_body_that_is_not_utf8_is_400_and_an_invalid_field_is_422() {
        let problem = extract(request(Some("application/json"), vec![0xff, 0xfe]))
            .await
            .expect_err("not UTF-8");
        assert_eq!(problem.body.status, 400);
        let mut invalid = order_request();
        invalid["items"][0]["quantity"] = 0.into();
        let invalid = invalid.to_string();
        let problem = extract(request(Some("application/json"), invalid))
            .await
            .expect_err("invalid");
        assert_eq!(problem.body.status, 422);
        assert_eq!(problem.body.field.as_deref(), Some("items[0].quantity"));
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_413() {
        // The limit is the router's DefaultBodyLimit, so go through a router.
        let app = axum::Router::new()
            .route("/orders", post(|ValidOrder(_): ValidOrder| async { "ok" }))
            .with_state(TIMEOUT)
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
        let mut body = order_request();
        body["customer_id"] = "x".repeat(MAX_BODY_BYTES).into();
        let body = body.to_string();
        let response = app
            .oneshot(request(Some("application/json"), body))
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_arriving_is_408_with_connection_close() {
        // Sends the first bytes, then nothing.
        let (sender, body) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        sender
            .send(Ok(Bytes::from_static(b"{\"order_id\":")))
            .await
            .expect("first bytes");
        let stream = tokio_stream_from(body);
        let problem = extract(request(Some("application/json"), Body::from_stream(stream)))
            .await
            .expect_err("too slow");
        assert_eq!(problem.body.status, 408);
        assert!(problem.close_connection);
        drop(sender);
    }

    /// A receiver as a stream of body chunks, without another dependency.
    fn tokio_stream_from(
        mut receiver: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    ) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
    }
}
