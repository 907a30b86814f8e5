use super::*;
use crate::problem::PROBLEM_JSON;
use crate::queue::EnqueueError;
use axum::body::Body;
use axum::http::{HeaderMap, header};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use tower::ServiceExt;

use crate::catalogue::fixtures;

const ORDER_ID: Uuid = Uuid::from_u128(0x3f0c1b6e_6a3b_4f7e_9d43_1b8d6f2a9c10);

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
    fixtures::priced(order_contract::fixtures::order_request_with_id(
        ORDER_ID, 42, 1,
    ))
}

/// The state the tests serve: `queue`, with the repository's catalogue.
fn state<Q>(queue: Arc<Q>, request_timeout: Duration) -> AppState<Q> {
    AppState::new(queue, request_timeout).with_prices(fixtures::prices())
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: serde_json::Value,
}

async fn call(queue: &Arc<FakeQueue>, request: Request) -> Answer {
    let app = router(state(Arc::clone(queue), Duration::from_secs(10)));
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
    let app = router(state(Arc::clone(&queue), Duration::from_secs(10)));
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
    let app = router(state(Arc::new(Stuck), Duration::from_millis(50)));
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

#[tokio::test]
async fn a_stale_price_is_a_409_with_the_current_catalogue_and_nothing_is_queued() {
    let queue = Arc::new(FakeQueue::default());
    let mut order = valid_order();
    order["items"][0]["unit_price_cents"] = serde_json::json!(1);
    let answer = call(&queue, post_json(&order)).await;
    let problem = assert_problem(&answer, StatusCode::CONFLICT);
    assert_eq!(problem["field"], "items[0].unit_price_cents");
    assert_eq!(
        serde_json::from_value::<crate::catalogue::Catalogue>(problem["catalogue"].clone())
            .expect("the catalogue"),
        fixtures::catalogue()
    );
    assert!(queue.request_ids().is_empty(), "nothing queued");
}

#[tokio::test]
async fn an_unknown_sku_or_another_currency_is_a_422_naming_the_field_and_nothing_is_queued() {
    let queue = Arc::new(FakeQueue::default());
    let mut made_up = fixtures::priced(order_contract::fixtures::order_request(42, 3));
    made_up["items"][2]["sku"] = serde_json::json!("NOTEBOOK-A4");
    let answer = call(&queue, post_json(&made_up)).await;
    assert_eq!(
        assert_problem(&answer, StatusCode::UNPROCESSABLE_ENTITY)["field"],
        "items[2].sku"
    );
    let mut dollars = valid_order();
    dollars["currency"] = serde_json::json!("USD");
    let answer = call(&queue, post_json(&dollars)).await;
    assert_eq!(
        assert_problem(&answer, StatusCode::UNPROCESSABLE_ENTITY)["field"],
        "currency"
    );
    assert!(queue.request_ids().is_empty(), "nothing queued");
}

#[tokio::test]
async fn the_catalogue_is_served_publicly_and_cacheable_for_a_minute() {
    let queue = Arc::new(FakeQueue::default());
    let answer = call(&queue, get("/catalogue")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers[header::CACHE_CONTROL], "public, max-age=60");
    let expected = serde_json::to_value(fixtures::catalogue()).expect("JSON");
    assert_eq!(answer.body, expected);
    assert_eq!(answer.body["items"][0]["sku"], "NOTEBOOK-A5");
    assert_eq!(answer.body["items"][0]["unit_price_cents"], 1299);
}

#[tokio::test]
async fn without_a_valid_catalogue_the_service_is_not_ready_and_prices_nothing() {
    let queue = Arc::new(FakeQueue::default());
    let app = router(AppState::new(Arc::clone(&queue), Duration::from_secs(10)));
    for request in [get("/readyz"), get("/catalogue"), post_json(&valid_order())] {
        let response = app.clone().oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key(header::RETRY_AFTER));
    }
    assert!(queue.request_ids().is_empty(), "nothing queued");
    assert_eq!(queue.checks.load(Ordering::SeqCst), 0, "no SQS call needed");
}
