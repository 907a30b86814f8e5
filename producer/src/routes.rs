//! The HTTP surface: `POST /orders`, `GET /healthz`, `GET /readyz`.
//!
//! Bad input is answered before anything reaches the queue; a 202 is only sent
//! once the queue has acknowledged the message, and carries its message id.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::error::DisplayErrorContext;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, FromRef, Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{BoxError, Extension, Json, Router};
use chrono::Utc;
use order_contract::OrderPlaced;
use serde::Serialize;
use tower::ServiceBuilder;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use uuid::Uuid;

use crate::extract::{BodyReadTimeout, ValidOrder};
use crate::limits::{self, ClientCap, InFlight, Limits};
use crate::metrics::Metrics;
use crate::problem::Problem;
use crate::queue::{EnqueueError, OrderMessage, OrderQueue};
use crate::rate_limit::{self, RateLimit};
use crate::readiness::{DEFAULT_READY_CACHE, NotReady, ReadinessCache};
use crate::request_id;

pub use crate::extract::MAX_BODY_BYTES;
/// What `Retry-After` tells clients when the queue is unavailable.
pub const RETRY_AFTER_SECS: u64 = 5;

/// What the handlers share.
#[derive(Debug)]
pub struct AppState<Q> {
    /// Where accepted orders go.
    queue: Arc<Q>,
    /// The longest a request may take before it is answered 503.
    request_timeout: Duration,
    /// `/readyz`'s last check, reused for a few seconds.
    readiness: Arc<ReadinessCache>,
    /// Caps and client timeouts.
    limits: Limits,
    /// `POST /orders` requests in progress with their body in.
    in_flight: InFlight,
    /// Each client's bucket for `POST /orders`, when limited.
    rate_limit: Option<RateLimit>,
    /// Each client's `POST /orders` requests in progress, when capped.
    client_cap: Option<ClientCap>,
    /// What `/metrics` reports.
    metrics: Metrics,
}

impl<Q> AppState<Q> {
    /// With the default [`Limits`].
    pub fn new(queue: Arc<Q>, request_timeout: Duration) -> Self {
        let limits = Limits::default();
        Self {
            queue,
            request_timeout,
            readiness: Arc::new(ReadinessCache::new(DEFAULT_READY_CACHE)),
            limits,
            in_flight: InFlight::new(limits.max_in_flight),
            rate_limit: None,
            client_cap: None,
            metrics: Metrics::new(),
        }
    }

    /// Counts into `metrics` (by default a registry of its own).
    #[must_use]
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Limits each client's `POST /orders` (none by default).
    #[must_use]
    pub fn with_rate_limit(mut self, rate_limit: impl Into<Option<RateLimit>>) -> Self {
        self.rate_limit = rate_limit.into();
        self
    }

    /// Caps each client's `POST /orders` in progress (no cap by default).
    #[must_use]
    pub fn with_client_cap(mut self, client_cap: impl Into<Option<ClientCap>>) -> Self {
        self.client_cap = client_cap.into();
        self
    }

    /// Applies `limits` (`max_waiting` is the queue's, see [`crate::SqsQueue::with_max_waiting`]).
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self.in_flight = InFlight::new(limits.max_in_flight);
        self
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Reuses `/readyz`'s queue check for `ttl` (default [`DEFAULT_READY_CACHE`]).
    #[must_use]
    pub fn with_ready_cache(mut self, ttl: Duration) -> Self {
        self.readiness = Arc::new(ReadinessCache::new(ttl));
        self
    }
}

// Not derived: a derive would require `Q: Clone`.
impl<Q> Clone for AppState<Q> {
    fn clone(&self) -> Self {
        Self {
            queue: Arc::clone(&self.queue),
            request_timeout: self.request_timeout,
            readiness: Arc::clone(&self.readiness),
            limits: self.limits,
            in_flight: self.in_flight.clone(),
            rate_limit: self.rate_limit.clone(),
            client_cap: self.client_cap.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

// What the order extractor needs from the state.
impl<Q> FromRef<AppState<Q>> for BodyReadTimeout {
    fn from_ref(state: &AppState<Q>) -> Self {
        Self(state.limits.body_read_timeout)
    }
}

/// The answer to an accepted order: SQS has stored it. Its schema in
/// `/openapi.json` is derived from this type.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Accepted {
    order_id: Uuid,
    /// The SQS message id.
    message_id: String,
}

/// The whole service: routes, problem answers for unknown routes and methods,
/// a body limit, a request timeout, request ids and a tracing span per request.
pub fn router<Q: OrderQueue>(state: AppState<Q>) -> Router {
    let request_timeout = state.request_timeout;
    let metrics = state.metrics.clone();
    // The last layer added runs first: the rate limit (a client over its rate
    // takes no slot), then the client's cap, held while the body arrives. The
    // shared in-flight slot is taken in the handler, once the body is in.
    let mut orders = post(place_order::<Q>);
    if let Some(client_cap) = state.client_cap.clone() {
        orders = orders.route_layer(middleware::from_fn_with_state(
            (client_cap, metrics.clone()),
            limits::cap_per_client,
        ));
    }
    if let Some(rate_limit) = state.rate_limit.clone() {
        orders = orders.route_layer(middleware::from_fn_with_state(
            (rate_limit, metrics.clone()),
            rate_limit::limit_per_client,
        ));
    }
    Router::new()
        .route("/orders", orders)
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi_json))
        .route("/readyz", get(readyz::<Q>))
        .merge(crate::page::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(
            ServiceBuilder::new()
                .map_request(request_id::drop_malformed)
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_response(DefaultOnResponse::new().level(Level::INFO)),
                )
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(HandleErrorLayer::new(
                    move |method: Method, err: BoxError| {
                        request_failed(method, err, request_timeout)
                    },
                ))
                .timeout(request_timeout),
        )
        // Outermost, so that it counts the answers of every layer too.
        .layer(middleware::from_fn_with_state(
            metrics,
            crate::metrics::count_requests,
        ))
}

fn request_span(request: &Request) -> tracing::Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %request_id,
        client_ip = tracing::field::Empty,
        order_id = tracing::field::Empty,
    )
}

/// `POST /orders`: validate, take an in-flight slot, enqueue, then answer 202
/// with both ids.
async fn place_order<Q: OrderQueue>(
    State(state): State<AppState<Q>>,
    request_id: Option<Extension<RequestId>>,
    ValidOrder(order): ValidOrder,
) -> Result<impl IntoResponse, Problem> {
    // Only now that the body is in: a client still sending holds no shared slot.
    let _slot = state.in_flight.admit(&state.metrics)?;
    // Always set by the layers; well formed, so plain ASCII.
    let request_id =
        request_id.and_then(|Extension(id)| id.header_value().to_str().ok().map(str::to_owned));
    let received_at = Utc::now();
    let order_id = order.order_id();
    tracing::Span::current().record("order_id", tracing::field::display(order_id));

    let message = OrderPlaced::new(order, received_at).to_json();
    let started = Instant::now();
    let sent = state
        .queue
        .send(OrderMessage {
            body: message,
            request_id,
        })
        .await;
    state.metrics.enqueued(sent.is_ok(), started.elapsed());
    match sent {
        Ok(message_id) => {
            tracing::info!(%order_id, %message_id, "order queued");
            Ok((
                StatusCode::ACCEPTED,
                Json(Accepted {
                    order_id,
                    message_id,
                }),
            ))
        }
        Err(EnqueueError::Overloaded) => {
            tracing::warn!(%order_id, "order shed: too many waiting for SQS");
            state.metrics.shed("waiting");
            Err(limits::busy())
        }
        Err(err) => {
            tracing::warn!(%order_id, error = %DisplayErrorContext(&err), "order not confirmed");
            Err(not_confirmed())
        }
    }
}

/// The answer when SQS did not confirm an order. A batch in flight is not
/// cancelled, so the message may still have been stored: the client must retry
/// with the same `order_id`, which the consumer stores once.
fn not_confirmed() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "The order was not confirmed in time. It may have been queued: retry with the same \
             order_id in {RETRY_AFTER_SECS} seconds. An order is stored once per order_id, so \
             retrying never duplicates it."
        ),
    )
    .with_retry_after(RETRY_AFTER_SECS)
}

/// `GET /openapi.json`: the OpenAPI 3.1 description of this API.
async fn openapi_json() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        crate::openapi::json(),
    )
}

/// `GET /healthz`: the process is up and serving.
async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "alive" }))
}

/// `GET /readyz`: orders can be accepted (the sender runs and the queue was
/// reachable at the last check, at most a few seconds ago).
async fn readyz<Q: OrderQueue>(State(state): State<AppState<Q>>) -> Result<Response, Problem> {
    match state.readiness.check(&*state.queue).await {
        Ok(()) => Ok(Json(serde_json::json!({ "status": "ready" })).into_response()),
        Err(NotReady::SenderStopped) => {
            tracing::error!("the order sender has stopped: this process cannot queue orders");
            Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "This instance can no longer queue orders and needs a restart.",
            )
            .with_retry_after(RETRY_AFTER_SECS))
        }
        Err(NotReady::Unreachable(err)) => {
            tracing::warn!(error = %DisplayErrorContext(&err), "the queue is not reachable");
            Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The order queue cannot be reached, so orders cannot be accepted right now.",
            )
            .with_retry_after(RETRY_AFTER_SECS))
        }
    }
}

async fn not_found(method: Method, uri: Uri) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        format!(
            "There is nothing at {method} {}; orders are placed with POST /orders.",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} is not allowed on {}; the Allow header lists the methods that are.",
            uri.path()
        ),
    )
}

/// Answers for failures of the layers (the request timeout, in practice).
async fn request_failed(method: Method, err: BoxError, request_timeout: Duration) -> Problem {
    if err.is::<tower::timeout::error::Elapsed>() {
        tracing::warn!(
            timeout_ms = request_timeout.as_millis(),
            "request timed out"
        );
    } else {
        tracing::error!(error = %DisplayErrorContext(&*err), "request failed in a layer");
    }
    if method == Method::POST {
        // The order's send is not cancelled with the request.
        return not_confirmed();
    }
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "The request was not completed within {} seconds; retry in {RETRY_AFTER_SECS} seconds.",
            request_timeout.as_secs_f64()
        ),
    )
    .with_retry_after(RETRY_AFTER_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::PROBLEM_JSON;
    use crate::queue::EnqueueError;
    use axum::body::Body;
    use axum::http::{HeaderMap, header};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::ServiceExt;

    const ORDER_ID: &str = "3f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10";

    /// Records what it is sent and answers with a fixed result.
    #[derive(Debug, Default)]
    struct FakeQueue {
        sent: Mutex<Vec<OrderMessage>>,
        down: bool,
        stopped: bool,
        checks: AtomicUsize,
    }

    impl FakeQueue {
        fn request_ids(&self) -> Vec<Option<String>> {
            let sent = self.sent.lock().expect("sent lock");
            sent.iter()
                .map(|message| message.request_id.clone())
                .collect()
        }
    }

    impl OrderQueue for FakeQueue {
        async fn send(&self, message: OrderMessage) -> Result<String, EnqueueError> {
            if self.down {
                return Err(EnqueueError::TimedOut(Duration::from_secs(5)));
            }
            let mut sent = self.sent.lock().expect("sent lock");
            sent.push(message);
            Ok(format!("msg-{}", sent.len()))
        }

        async fn check(&self) -> Result<(), EnqueueError> {
            self.checks.fetch_add(1, Ordering::SeqCst);
            if self.down {
                Err(EnqueueError::sqs(std::io::Error::other(
                    "connection refused",
                )))
            } else {
                Ok(())
            }
        }

        fn is_stopped(&self) -> bool {
            self.stopped
        }
    }

    fn valid_order() -> serde_json::Value {
        serde_json::json!({
            "order_id": ORDER_ID,
            "customer_id": "cust-42",
            "currency": "EUR",
            "items": [{"sku": "BOOK-1", "quantity": 2, "unit_price_cents": 1299}]
        })
    }

    struct Answer {
        status: StatusCode,
        headers: HeaderMap,
        body: serde_json::Value,
    }

    async fn call(queue: &Arc<FakeQueue>, request: Request) -> Answer {
        let app = router(AppState::new(Arc::clone(queue), Duration::from_secs(10)));
        let response = app.oneshot(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let body = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON body")
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    fn post(content_type: Option<&str>, body: impl Into<Body>) -> Request {
        let mut request = Request::post("/orders");
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        request.body(body.into()).expect("request")
    }

    fn post_json(body: &serde_json::Value) -> Request {
        post(Some("application/json"), body.to_string())
    }

    /// Asserts a problem answer with `status` and returns its body.
    fn assert_problem(answer: &Answer, status: StatusCode) -> &serde_json::Value {
        assert_eq!(answer.status, status, "{}", answer.body);
        assert_eq!(answer.headers[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(answer.body["status"], status.as_u16());
        assert_eq!(answer.body["type"], "about:blank");
        assert!(answer.body["title"].is_string(), "{}", answer.body);
        assert!(answer.body["detail"].is_string(), "{}", answer.body);
        &answer.body
    }

    fn detail(body: &serde_json::Value) -> &str {
        body["detail"].as_str().unwrap_or_default()
    }

    #[tokio::test]
    async fn a_well_formed_request_id_is_echoed_and_sent_with_the_order() {
        let queue = Arc::new(FakeQueue::default());
        let mut request = post_json(&valid_order());
        request
            .headers_mut()
            .insert("x-request-id", "checkout-7f3a.1".parse().expect("value"));
        let answer = call(&queue, request).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED);
        assert_eq!(answer.headers["x-request-id"], "checkout-7f3a.1");
        assert_eq!(
            queue.request_ids(),
            vec![Some("checkout-7f3a.1".to_owned())]
        );
    }

    #[tokio::test]
    async fn every_log_line_of_a_request_names_its_request_id() {
        let (captured, _guard) = testkit::CapturedLogs::start();
        let queue = Arc::new(FakeQueue::default());
        let mut request = post_json(&valid_order());
        request
            .headers_mut()
            .insert("x-request-id", "follow-me-1".parse().expect("value"));
        assert_eq!(call(&queue, request).await.status, StatusCode::ACCEPTED);

        let text = captured.text();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines.iter().any(|line| line.contains("order queued")),
            "{text}"
        );
        for line in &lines {
            assert!(line.contains("request_id=follow-me-1"), "{line}");
        }
    }

    #[tokio::test]
    async fn a_missing_or_malformed_request_id_is_replaced_by_a_fresh_uuid() {
        let queue = Arc::new(FakeQueue::default());
        let mut malformed = post_json(&valid_order());
        malformed
            .headers_mut()
            .insert("x-request-id", "<script>".parse().expect("value"));
        for request in [post_json(&valid_order()), malformed] {
            let answer = call(&queue, request).await;
            let echoed = answer.headers["x-request-id"].to_str().expect("ASCII");
            assert!(Uuid::parse_str(echoed).is_ok(), "{echoed}");
            let sent = queue.request_ids().pop().flatten();
            assert_eq!(sent.as_deref(), Some(echoed));
        }
        // Problems carry it too, so a client can quote it.
        let answer = call(&queue, post(Some("text/plain"), "x")).await;
        assert!(answer.headers.contains_key("x-request-id"));
    }

    #[tokio::test]
    async fn a_json_content_type_with_a_utf8_charset_is_accepted() {
        let queue = Arc::new(FakeQueue::default());
        let request = post(
            Some("Application/JSON; charset=\"UTF-8\""),
            valid_order().to_string(),
        );
        assert_eq!(call(&queue, request).await.status, StatusCode::ACCEPTED);
    }

    #[tokio::test]
    async fn a_queue_failure_is_a_503_with_retry_after_and_no_internals() {
        let queue = Arc::new(FakeQueue {
            down: true,
            ..FakeQueue::default()
        });
        let answer = call(&queue, post_json(&valid_order())).await;
        let problem = assert_problem(&answer, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.headers[header::RETRY_AFTER], "5");
        assert!(
            detail(problem).contains("may have been queued: retry with the same order_id"),
            "{problem}"
        );
        assert!(!detail(problem).contains("SQS"), "{problem}");
    }

    #[tokio::test]
    async fn healthz_answers_while_the_queue_is_down() {
        let queue = Arc::new(FakeQueue {
            down: true,
            ..FakeQueue::default()
        });
        let request = Request::get("/healthz")
            .body(Body::empty())
            .expect("request");
        assert_eq!(call(&queue, request).await.status, StatusCode::OK);
    }

    fn get(path: &str) -> Request {
        Request::get(path).body(Body::empty()).expect("request")
    }

    #[tokio::test]
    async fn readyz_checks_the_queue_once_for_many_calls() {
        let queue = Arc::new(FakeQueue::default());
        let app = router(AppState::new(Arc::clone(&queue), Duration::from_secs(10)));
        for _ in 0..20 {
            let response = app
                .clone()
                .oneshot(get("/readyz"))
                .await
                .expect("infallible");
            assert_eq!(response.status(), StatusCode::OK);
        }
        assert_eq!(queue.checks.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn readyz_reports_a_stopped_sender_while_the_queue_is_reachable() {
        let queue = Arc::new(FakeQueue {
            stopped: true,
            ..FakeQueue::default()
        });
        let answer = call(&queue, get("/readyz")).await;
        let problem = assert_problem(&answer, StatusCode::SERVICE_UNAVAILABLE);
        assert!(detail(problem).contains("restart"), "{problem}");
        assert_eq!(queue.checks.load(Ordering::SeqCst), 0, "no SQS call needed");
    }

    #[tokio::test]
    async fn a_request_that_outlives_the_timeout_is_a_503() {
        /// A queue that never answers.
        struct Stuck;
        impl OrderQueue for Stuck {
            async fn send(&self, _message: OrderMessage) -> Result<String, EnqueueError> {
                std::future::pending().await
            }
            async fn check(&self) -> Result<(), EnqueueError> {
                std::future::pending().await
            }
        }
        let app = router(AppState::new(Arc::new(Stuck), Duration::from_millis(50)));
        let response = app
            .oneshot(post_json(&valid_order()))
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert!(response.headers().contains_key(header::RETRY_AFTER));
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let problem: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert!(
            detail(&problem).contains("may have been queued: retry with the same order_id"),
            "{problem}"
        );
    }
}
