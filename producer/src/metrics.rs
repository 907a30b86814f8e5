//! The producer's metrics as OpenMetrics text, on `GET /metrics` of a listener
//! of its own (`METRICS_ADDR`), never on the port the load balancer forwards to.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

/// The media type Prometheus asks for and the encoder writes.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Where `METRICS_ADDR` points when unset: loopback only, scraped on the instance.
pub const DEFAULT_METRICS_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9464);

/// Label values known when compiling; a request's route and method are not.
type Labels<const N: usize> = [(&'static str, &'static str); N];
type Counters<const N: usize> = Family<Labels<N>, Counter>;

#[derive(Debug)]
struct Inner {
    registry: Registry,
    requests: Family<[(&'static str, String); 3], Counter>,
    enqueue_seconds: Family<Labels<1>, Histogram, fn() -> Histogram>,
    batch_entries: Histogram,
    sqs_calls: Counters<1>,
    sqs_errors: Counters<2>,
    shed: Counters<1>,
    rate_limited: Counter,
    over_client_cap: Counter,
    catalogue_invalid: Gauge,
}

/// Every metric the producer keeps; clones share them.
#[derive(Clone, Debug)]
pub struct Metrics(Arc<Inner>);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    pub fn new() -> Self {
        let r = &mut Registry::with_prefix("producer");
        Self(Arc::new(Inner {
            requests: registered(
                r,
                "http_requests",
                "HTTP requests answered, by route, method and status",
                Family::default(),
            ),
            enqueue_seconds: registered(
                r,
                "enqueue_seconds",
                "Time from handing an order to the queue until SQS confirmed it (outcome=queued) or it failed",
                // 1 ms … about 16 s: a batch round trip up to past the longest SQS timeout.
                Family::new_with_constructor(|| {
                    Histogram::new(exponential_buckets(0.001, 2.0, 15))
                }),
            ),
            batch_entries: registered(
                r,
                "sqs_batch_entries",
                "Orders per SendMessageBatch call",
                Histogram::new((1..=10).map(f64::from)),
            ),
            sqs_calls: registered(
                r,
                "sqs_calls",
                "Calls made to SQS, by operation",
                Family::default(),
            ),
            sqs_errors: registered(
                r,
                "sqs_errors",
                "Failed SQS calls and refused batch entries, by operation and kind",
                Family::default(),
            ),
            shed: registered(
                r,
                "requests_shed",
                "Orders answered 503 at once because a cap was reached (in_flight or waiting)",
                Family::default(),
            ),
            rate_limited: registered(
                r,
                "requests_rate_limited",
                "Orders answered 429 because their client was over its rate",
                Counter::default(),
            ),
            over_client_cap: registered(
                r,
                "requests_over_client_cap",
                "Orders answered 429 at once because their client had MAX_IN_FLIGHT_PER_CLIENT requests in progress",
                Counter::default(),
            ),
            catalogue_invalid: registered(
                r,
                "catalogue_invalid",
                "1 while the catalogue file on disk is refused (the last valid one stays in use), else 0",
                Gauge::default(),
            ),
            // Last, once every metric above is registered in it.
            registry: std::mem::take(r),
        }))
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Err(err) = encode(&mut text, &self.0.registry) {
            // Writing into a String does not fail; say so if it ever does.
            tracing::error!(error = %err, "cannot encode the metrics");
        }
        text
    }

    pub(crate) fn request(&self, route: &str, method: &str, status: StatusCode) {
        let labels = [
            ("route", route.to_owned()),
            ("method", method.to_owned()),
            ("status", status.as_u16().to_string()),
        ];
        self.0.requests.get_or_create(&labels).inc();
    }

    pub(crate) fn enqueued(&self, queued: bool, took: Duration) {
        let outcome = if queued { "queued" } else { "failed" };
        self.0
            .enqueue_seconds
            .get_or_create(&[("outcome", outcome)])
            .observe(took.as_secs_f64());
    }

    /// Counts one call to SQS (`scripts/bench producer`'s baseline counts its own).
    pub fn sqs_call(&self, operation: &'static str) {
        let labels = [("operation", operation)];
        self.0.sqs_calls.get_or_create(&labels).inc();
    }

    pub(crate) fn batch(&self, entries: usize) {
        self.0.batch_entries.observe(entries as f64);
    }

    pub(crate) fn sqs_error(&self, operation: &'static str, kind: &'static str) {
        let labels = [("operation", operation), ("kind", kind)];
        self.0.sqs_errors.get_or_create(&labels).inc();
    }

    pub(crate) fn shed(&self, reason: &'static str) {
        self.0.shed.get_or_create(&[("reason", reason)]).inc();
    }

    pub(crate) fn rate_limited(&self) {
        self.0.rate_limited.inc();
    }

    pub(crate) fn over_client_cap(&self) {
        self.0.over_client_cap.inc();
    }

    pub(crate) fn catalogue_valid(&self, valid: bool) {
        self.0.catalogue_invalid.set(i64::from(!valid));
    }
}

/// Middleware: counts every answer by its route (the pattern, never the raw
/// path, so the label set stays small), method and status.
pub(crate) async fn count_requests(
    State(metrics): State<Metrics>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    metrics.request(&route, &method, response.status());
    response
}

/// The metrics listener's router: `GET /metrics` and nothing else.
pub fn metrics_router(metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(metrics)
}

async fn render(State(metrics): State<Metrics>) -> Response {
    let content_type = HeaderValue::from_static(OPENMETRICS_TEXT);
    ([(header::CONTENT_TYPE, content_type)], metrics.render()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_rendered_with_its_labels() {
        let metrics = Metrics::new();
        metrics.request("/orders", "POST", StatusCode::ACCEPTED);
        metrics.enqueued(true, Duration::from_millis(3));
        metrics.sqs_call("SendMessageBatch");
        metrics.batch(7);
        metrics.sqs_error("SendMessageBatch", "timeout");
        metrics.shed("in_flight");
        metrics.rate_limited();
        metrics.over_client_cap();
        metrics.catalogue_valid(false);
        let text = metrics.render();
        for line in [
            "producer_http_requests_total{route=\"/orders\",method=\"POST\",status=\"202\"} 1",
            "producer_enqueue_seconds_count{outcome=\"queued\"} 1",
            "producer_sqs_batch_entries_count 1",
            "producer_sqs_batch_entries_sum 7.0",
            "producer_sqs_calls_total{operation=\"SendMessageBatch\"} 1",
            "producer_sqs_errors_total{operation=\"SendMessageBatch\",kind=\"timeout\"} 1",
            "producer_requests_shed_total{reason=\"in_flight\"} 1",
            "producer_requests_rate_limited_total 1",
            "producer_requests_over_client_cap_total 1",
            "producer_catalogue_invalid 1",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
