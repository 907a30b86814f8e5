//! The HTTP surface. Bad input is answered before anything reaches the queue;
//! a 202 is only sent once the queue has acknowledged the message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, FromRef, Request, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
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

use crate::auth::{self, SignedIn, Verifier};
use crate::catalogue::{Catalogue, Prices, Unpriced};
use crate::client_ip::TrustedProxies;
use crate::extract::{BodyReadTimeout, MAX_BODY_BYTES, ValidOrder};
use crate::limits::{self, ClientCap, InFlight, Limits};
use crate::metrics::Metrics;
use crate::openapi::{NewOrder, ProblemBody, Status};
use crate::problem::Problem;
use crate::queue::{EnqueueError, OrderMessage, OrderQueue};
use crate::rate_limit::RateLimit;
use crate::readiness::{DEFAULT_READY_CACHE, ReadinessCache};
use crate::request_id;

/// What `Retry-After` tells clients when the queue is unavailable.
pub const RETRY_AFTER_SECS: u64 = 5;

/// What the handlers share.
#[derive(Debug)]
pub struct AppState<Q> {
    queue: Arc<Q>,
    /// The longest a request may take before it is answered 503.
    request_timeout: Duration,
    readiness: ReadinessCache,
    pub(crate) limits: Limits,
    /// `POST /orders` requests in progress with their body in.
    in_flight: InFlight,
    rate_limit: Option<RateLimit>,
    client_cap: Option<ClientCap>,
    /// Whose `X-Forwarded-For` tells the rate limit and the cap who the client is.
    proxies: TrustedProxies,
    metrics: Metrics,
    prices: Prices,
    /// `None` is trial mode.
    verifier: Option<Arc<Verifier>>,
}

impl<Q> AppState<Q> {
    /// With the default [`Limits`] and no catalogue (not ready, and no order
    /// can be priced, until [`Self::with_prices`]).
    pub fn new(queue: Arc<Q>, request_timeout: Duration) -> Self {
        let limits = Limits::default();
        Self {
            queue,
            request_timeout,
            readiness: ReadinessCache::new(DEFAULT_READY_CACHE),
            limits,
            in_flight: InFlight::new(limits.max_in_flight),
            rate_limit: None,
            client_cap: None,
            proxies: TrustedProxies::default(),
            metrics: Metrics::new(),
            prices: Prices::default(),
            verifier: None,
        }
    }

    #[must_use]
    pub fn with_prices(mut self, prices: Prices) -> Self {
        self.prices = prices;
        self
    }

    /// Requires a sign-in for `POST /orders` and `GET /me` (`None`: trial mode).
    #[must_use]
    pub fn with_sign_in(mut self, verifier: Option<Arc<Verifier>>) -> Self {
        self.verifier = verifier;
        self
    }

    #[must_use]
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    #[must_use]
    pub fn with_rate_limit(mut self, rate_limit: impl Into<Option<RateLimit>>) -> Self {
        self.rate_limit = rate_limit.into();
        self
    }

    #[must_use]
    pub fn with_client_cap(mut self, client_cap: impl Into<Option<ClientCap>>) -> Self {
        self.client_cap = client_cap.into();
        self
    }

    #[must_use]
    pub fn with_trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.proxies = proxies;
        self
    }

    /// Applies `limits` (`max_waiting` is the queue's, see [`crate::SqsOptions`]).
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self.in_flight = InFlight::new(limits.max_in_flight);
        self
    }
}

// What the order extractor needs from the state.
impl<Q> FromRef<Arc<AppState<Q>>> for BodyReadTimeout {
    fn from_ref(state: &Arc<AppState<Q>>) -> Self {
        Self(state.limits.body_read_timeout)
    }
}

/// The answer to an accepted order: SQS has stored it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Accepted {
    order_id: Uuid,
    /// The SQS message id.
    message_id: String,
}

/// The whole service, with its layers: body limit, request timeout, request
/// ids, a tracing span and the metrics of every request.
pub fn router<Q: OrderQueue>(state: AppState<Q>) -> Router {
    let request_timeout = state.request_timeout;
    let metrics = state.metrics.clone();
    let state = Arc::new(state);
    let mut orders = post(place_order::<Q>);
    if state.rate_limit.is_some() || state.client_cap.is_some() {
        orders = orders.route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            per_client::<Q>,
        ));
    }
    // Outermost: a request without a valid sign-in takes no rate or slot.
    let sign_in = middleware::from_fn_with_state(state.verifier.clone(), auth::sign_in);
    orders = orders.route_layer(sign_in.clone());
    Router::new()
        .route("/orders", orders.get(read_elsewhere))
        .route("/orders/{order_id}", get(read_elsewhere))
        .route("/catalogue", get(catalogue::<Q>))
        .route("/me", get(me).route_layer(sign_in))
        .route("/sign-out", {
            let verifier = state.verifier.clone();
            get(move || async move { auth::sign_out(verifier.as_deref()) })
        })
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
        client = tracing::field::Empty,
        order_id = tracing::field::Empty,
        catalogue_version = tracing::field::Empty,
    )
}

/// Middleware of `POST /orders` for the rate limit and the client's cap, with
/// the client told apart once: over its rate it takes no slot; the cap's slot
/// is held while the body arrives. The shared in-flight slot is taken in the
/// handler, once the body is in.
async fn per_client<Q>(
    State(state): State<Arc<AppState<Q>>>,
    request: Request,
    next: Next,
) -> Result<Response, Problem> {
    let client = state.proxies.client_of(&request);
    tracing::Span::current().record("client", tracing::field::display(&client));
    if let Some(rate_limit) = &state.rate_limit {
        rate_limit.admit(&client, &state.metrics)?;
    }
    let cap = state.client_cap.as_ref();
    let _slot = cap
        .map(|cap| cap.admit(client, &state.metrics))
        .transpose()?;
    Ok(next.run(request).await)
}

/// `POST /orders`: validate, enqueue, answer once SQS has stored the order.
#[utoipa::path(post, path = "/orders", request_body = NewOrder,
    responses(
        (status = 202, description = "Accepted for processing: SQS has stored the order, and the consumer stores it in the database shortly after. An order whose order_id was already used for different content is kept aside (order_conflicts), counted and alarmed on, and not stored", body = Accepted,
            headers(("x-request-id" = String, description = "The request id"))),
        (status = 400, description = "The body is not JSON (or not UTF-8)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Sign-in is on and the request carries no valid sign-in from the load balancer (the load balancer's own 401 has no body)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The customer_id is not the signed-in customer's, or the signed-in user id is not a valid customer id", body = ProblemBody, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive in time; the connection is closed", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "The body is over 64 KiB", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "The content type is not application/json", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "A line's unit_price_cents is not the catalogue's (the customer saw an old price); nothing was queued. `catalogue` holds the current catalogue: show its prices and send the order again at them (the same order_id may be reused, since nothing was queued)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "A field is missing, unknown, of the wrong type or out of range, a SKU is not in the catalogue, or the currency is not the catalogue's; `field` names it (e.g. `items[2].sku`)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "This client is over its rate, or already has too many requests in progress; nothing was queued: send the same request again after Retry-After", body = ProblemBody, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds until a retry may succeed"))),
        (status = 503, description = "Shed or no valid catalogue (nothing was queued), or SQS did not confirm in time: the order may have been queued, retry with the same order_id", body = ProblemBody, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds until a retry may succeed"))),
    )
)]
async fn place_order<Q: OrderQueue>(
    State(state): State<Arc<AppState<Q>>>,
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
    let catalogue_version = state.prices.check(&order).map_err(|unpriced| {
        let problem = Problem::from(unpriced);
        tracing::info!(status = problem.body.status, field = ?problem.body.field, "order not priced by the catalogue");
        problem
    })?;
    tracing::Span::current().record("catalogue_version", catalogue_version.as_str());

    let body = OrderPlaced::new(order, received_at)
        .priced_by(catalogue_version)
        .to_json();
    let started = Instant::now();
    let sent = state.queue.send(OrderMessage { body, request_id }).await;
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
            tracing::warn!(%order_id, error = %support::sqs::sqs_error_chain(&err), "order not confirmed");
            Err(not_confirmed())
        }
    }
}

/// The answer when SQS did not confirm an order. A batch in flight is not
/// cancelled, so the message may still have been stored: the client must retry
/// with the same `order_id`, which the consumer stores once.
fn not_confirmed() -> Problem {
    unavailable(format!(
        "The order was not confirmed in time. It may have been queued: retry with the same \
         order_id in {RETRY_AFTER_SECS} seconds. An order is stored once per order_id, so \
         retrying never duplicates it."
    ))
}

fn unavailable(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, detail).with_retry_after(RETRY_AFTER_SECS)
}

/// Who `GET /me` says is signed in.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Me {
    /// `on` behind a load balancer that signs customers in; `off` in trial mode.
    sign_in: &'static str,
    /// The signed-in customer (absent when sign-in is off).
    #[serde(skip_serializing_if = "Option::is_none")]
    customer_id: Option<String>,
}

/// `GET /me`: who is signed in.
#[utoipa::path(get, path = "/me", responses(
    (status = 200, description = "`sign_in` is `on` with the signed-in `customer_id`, or `off` (trial mode: orders name their customer)", body = Me),
    (status = 401, description = "Sign-in is on and the request carries no valid sign-in", body = ProblemBody, content_type = "application/problem+json"),
))]
async fn me(Extension(SignedIn(customer_id)): Extension<SignedIn>) -> Json<Me> {
    let sign_in = if customer_id.is_some() { "on" } else { "off" };
    Json(Me {
        sign_in,
        customer_id,
    })
}

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", responses(
    (status = 200, description = "The OpenAPI 3.1 description of this API", content_type = "application/json"),
))]
async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::json(),
    )
}

/// How long clients may reuse `GET /catalogue`. Safe because a price replaced
/// since is still accepted for [`crate::catalogue::RETAINED_FOR`], far longer,
/// and anything older gets a `409` with the current prices, never a wrong charge.
const CATALOGUE_MAX_AGE_SECS: u64 = 60;

/// `GET /catalogue`: what the shop sells, at what price.
#[utoipa::path(get, path = "/catalogue", responses(
    (status = 200, description = "The catalogue orders are priced by; cacheable for a minute (a price replaced since is still accepted for 15 minutes)", body = Catalogue),
    (status = 503, description = "No valid catalogue has been loaded", body = ProblemBody, content_type = "application/problem+json",
        headers(("retry-after" = u64, description = "Seconds until a retry may succeed"))),
))]
async fn catalogue<Q>(State(state): State<Arc<AppState<Q>>>) -> Result<Response, Problem> {
    let catalogue = state.prices.current().ok_or(Unpriced::NoCatalogue)?;
    let cache = format!("public, max-age={CATALOGUE_MAX_AGE_SECS}");
    Ok(([(header::CACHE_CONTROL, cache)], Json(catalogue)).into_response())
}

/// `GET /healthz`: the process is up.
#[utoipa::path(get, path = "/healthz", responses(
    (status = 200, description = "Alive", body = Status),
))]
async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "alive" }))
}

/// `GET /readyz`: orders can be accepted.
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, description = "The sender runs and the queue was reachable at the last check", body = Status),
    (status = 503, description = "No valid catalogue has been loaded, the queue cannot be reached, or this instance's sender has stopped", body = ProblemBody, content_type = "application/problem+json",
        headers(("retry-after" = u64, description = "Seconds until a retry may succeed"))),
))]
async fn readyz<Q: OrderQueue>(State(state): State<Arc<AppState<Q>>>) -> Result<Response, Problem> {
    if state.prices.current().is_none() {
        tracing::warn!("no valid catalogue: orders cannot be priced");
        return Err(unavailable(
            "No valid catalogue has been loaded, so orders cannot be priced; the log says what \
             is wrong with the file at CATALOGUE_PATH.",
        ));
    }
    match state.readiness.check(&*state.queue).await {
        Ok(()) => Ok(Json(serde_json::json!({ "status": "ready" })).into_response()),
        Err(EnqueueError::Stopped) => {
            tracing::error!("the order sender has stopped: this process cannot queue orders");
            Err(unavailable(
                "This instance can no longer queue orders and needs a restart.",
            ))
        }
        Err(err) => {
            tracing::warn!(error = %support::sqs::sqs_error_chain(&err), "the queue is not reachable");
            Err(unavailable(
                "The order queue cannot be reached, so orders cannot be accepted right now.",
            ))
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

/// `GET /orders` and `GET /orders/{order_id}` are the status function's: the
/// load balancer forwards them there, as `local-alb` does. Routed here too so
/// that the API's other methods on them answer 405, as its document says.
async fn read_elsewhere() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "Orders are shown by the shop's status function behind the load balancer; this \
         server only takes them. Open the shop through its load balancer.",
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
        tracing::error!(error = %support::error_chain(&*err), "request failed in a layer");
    }
    if method == Method::POST {
        // The order's send is not cancelled with the request.
        return not_confirmed();
    }
    unavailable(format!(
        "The request was not completed within {} seconds; retry in {RETRY_AFTER_SECS} seconds.",
        request_timeout.as_secs_f64()
    ))
}

#[cfg(test)]
mod tests;
