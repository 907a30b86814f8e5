//! The real router and the real SQS queue against the SQS emulator
//! (`TEST_SQS_ENDPOINT`), driven over HTTP on a free port.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::FromEnv;

use aws_sdk_sqs::types::Message;
use order_contract::{Order, OrderPlaced, REQUEST_ID_ATTRIBUTE};
use producer::catalogue::{Catalogue, Prices};
use producer::{AppState, Config, EnqueueError, OrderMessage, OrderQueue, SqsQueue};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde_json::{Value, json};
use testkit::{QueueSettings, TestQueues};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

/// Short enough that failure cases finish quickly, long enough for a slow CI machine.
const SQS_TIMEOUT: Duration = Duration::from_secs(3);

/// The service on a free port, with a shutdown trigger.
struct App {
    addr: SocketAddr,
    http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

impl App {
    async fn spawn<Q: OrderQueue>(queue: Q) -> Self {
        Self::serve(AppState::new(Arc::new(queue), SQS_TIMEOUT * 2).with_prices(prices())).await
    }

    /// The service as `producer::run` sets it up from `config`, over `queue`.
    async fn spawn_configured<Q: OrderQueue>(queue: Q, config: &Config) -> Self {
        Self::serve(producer::configured_state(config, Arc::new(queue)).with_prices(prices())).await
    }

    async fn serve<Q: OrderQueue>(state: AppState<Q>) -> Self {
        testkit::init_tracing();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a free port");
        let addr = listener.local_addr().expect("local address");
        let (shutdown, stop) = oneshot::channel::<()>();
        let server = tokio::spawn(producer::serve(listener, state, async {
            let _ = stop.await;
        }));
        Self {
            addr,
            http: reqwest::Client::new(),
            shutdown: Some(shutdown),
            server,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn post_order(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url("/orders"))
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("POST /orders")
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("GET request")
    }

    /// Triggers graceful shutdown and waits for the server to finish.
    async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let served = tokio::time::timeout(Duration::from_secs(10), &mut self.server)
            .await
            .expect("the server stops within 10 s")
            .expect("server task");
        served.expect("the server stops cleanly");
    }
}

fn sqs_queue(queues: &TestQueues, queue_url: &str) -> SqsQueue {
    SqsQueue::new(queues.sqs.config().clone(), queue_url, SQS_TIMEOUT)
}

/// The fixture's two-line order request, with a fresh id: its first line is
/// free (customer 0's price), its second a SKU that needs escaping in JSON.
fn order() -> Value {
    let mut order = order_contract::fixtures::order_request(0, 2);
    order["items"][1]["sku"] = json!("PEN \"blue\"");
    order
}

/// A catalogue that prices [`order`]: customer 0's fixture lines.
fn prices() -> Prices {
    let catalogue = json!({"currency": "EUR", "version": "test", "items": [
        {"sku": "SKU-0-0", "name": "Sample", "unit_price_cents": 0},
        {"sku": "PEN \"blue\"", "name": "Pen, blue", "unit_price_cents": 100},
    ]});
    Prices::new(Catalogue::parse(&catalogue.to_string()).expect("a valid catalogue"))
}

/// Receives `count` messages from the queue (hiding them for a minute).
async fn receive(queues: &TestQueues, count: usize) -> Vec<Message> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut all = Vec::new();
    while all.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} messages arrived",
            all.len()
        );
        let received = queues
            .sqs
            .receive_message()
            .queue_url(&queues.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(60)
            .send()
            .await
            .expect("receive from the test queue");
        all.extend(received.messages.unwrap_or_default());
    }
    all
}

async fn problem(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()[CONTENT_TYPE],
        "application/problem+json",
        "{status}"
    );
    let body: Value = response.json().await.expect("a JSON problem");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert!(body["title"].is_string(), "{body}");
    assert!(body["type"].is_string(), "{body}");
    assert!(body["detail"].is_string(), "{body}");
    body
}

async fn assert_unavailable(response: reqwest::Response) {
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    assert!(
        retry_after.is_some_and(|secs| secs > 0),
        "Retry-After in seconds"
    );
    let body = problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    let detail = body["detail"].as_str().unwrap_or_default();
    for internal in [
        "SQS",
        "dispatch",
        "QueueDoesNotExist",
        "connection",
        "127.0.0.1",
    ] {
        assert!(!detail.contains(internal), "{detail}");
    }
}

#[tokio::test]
async fn a_valid_order_is_queued_as_posted_and_answered_with_its_message_id() {
    let queues = TestQueues::create(QueueSettings::default()).await;
    let app = App::spawn(sqs_queue(&queues, &queues.queue_url)).await;
    let posted = order();

    let response = app.post_order(&posted).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted: Value = response.json().await.expect("JSON answer");
    assert_eq!(accepted["order_id"], posted["order_id"]);
    let message_id = accepted["message_id"].as_str().expect("a message id");

    let messages = receive(&queues, 1).await;
    assert_eq!(messages[0].message_id(), Some(message_id));
    let placed = OrderPlaced::from_json(messages[0].body().unwrap_or_default())
        .expect("the queued body is a valid OrderPlaced");
    let expected = Order::from_request_json(&posted.to_string()).expect("valid order");
    assert_eq!(placed.order, expected);
    // Which catalogue priced it, for the record.
    assert_eq!(placed.catalogue_version.as_deref(), Some("test"));
    app.stop().await;
}

#[tokio::test]
async fn concurrent_orders_each_get_their_own_message_id() {
    let queues = TestQueues::create(QueueSettings::default()).await;
    let app = Arc::new(App::spawn(sqs_queue(&queues, &queues.queue_url)).await);
    let mut posts = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let app = Arc::clone(&app);
        posts.spawn(async move {
            let posted = order();
            let response = app.post_order(&posted).await;
            assert_eq!(response.status(), StatusCode::ACCEPTED);
            let accepted: Value = response.json().await.expect("JSON answer");
            (
                posted["order_id"].as_str().unwrap_or_default().to_owned(),
                accepted["message_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        });
    }
    let mut answered = std::collections::HashMap::new();
    while let Some(done) = posts.join_next().await {
        let (order_id, message_id) = done.expect("post task");
        answered.insert(message_id, order_id);
    }
    assert_eq!(answered.len(), 40, "every order has a distinct message id");

    for message in receive(&queues, 40).await {
        let placed =
            OrderPlaced::from_json(message.body().unwrap_or_default()).expect("valid message");
        let order_id = &answered[message.message_id().unwrap_or_default()];
        assert_eq!(*order_id, placed.order.order_id().to_string());
    }
    Arc::into_inner(app).expect("last handle").stop().await;
}

#[tokio::test]
async fn bad_requests_get_their_problem_and_never_reach_the_queue() {
    let queues = TestQueues::create(QueueSettings::default()).await;
    let app = App::spawn(sqs_queue(&queues, &queues.queue_url)).await;
    let post = |content_type: Option<&str>, body: String| {
        let mut request = app.http.post(app.url("/orders")).body(body);
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        request
    };
    let json = Some("application/json");
    let with = |key: &str, value: Value| {
        let mut body = order();
        body[key] = value;
        body.to_string()
    };
    let mut bad_quantity = order();
    bad_quantity["items"][1]["quantity"] = json!(0);

    // (case, request, status, the field named, words the detail must hold)
    let cases = [
        (
            "malformed",
            post(json, "{\"order_id\":".into()),
            400,
            None,
            "not valid JSON",
        ),
        (
            "empty",
            post(json, String::new()),
            400,
            None,
            "not valid JSON",
        ),
        (
            "two documents",
            post(json, "{} {}".into()),
            400,
            None,
            "not valid JSON",
        ),
        (
            "not UTF-8",
            app.http
                .post(app.url("/orders"))
                .header(CONTENT_TYPE, "application/json")
                .body(vec![0xff, 0xfe]),
            400,
            None,
            "UTF-8",
        ),
        (
            "invalid",
            post(json, bad_quantity.to_string()),
            422,
            Some("items[1].quantity"),
            "between 1 and 10000",
        ),
        (
            "wrong type",
            post(json, with("currency", json!(978))),
            422,
            Some("currency"),
            "",
        ),
        (
            "unknown field",
            post(json, with("coupon", json!("FREE"))),
            422,
            None,
            "coupon",
        ),
        (
            "no content type",
            post(None, order().to_string()),
            415,
            None,
            "no Content-Type",
        ),
        (
            "form",
            post(Some("text/plain"), order().to_string()),
            415,
            None,
            "text/plain",
        ),
        (
            "JSONP",
            post(Some("application/jsonp"), order().to_string()),
            415,
            None,
            "application/jsonp",
        ),
        (
            "latin1",
            post(
                Some("application/json; charset=latin1"),
                order().to_string(),
            ),
            415,
            None,
            "latin1",
        ),
        (
            "too large",
            post(json, with("customer_id", json!("x".repeat(70_000)))),
            413,
            None,
            "64 KiB",
        ),
    ];
    for (case, request, status, field, words) in cases {
        let response = request.send().await.expect(case);
        let body = problem(response, StatusCode::from_u16(status).expect("status")).await;
        match field {
            Some(field) => assert_eq!(body["field"], field, "{case}: {body}"),
            None if status == 422 => assert!(body["field"].is_string(), "{case}: {body}"),
            None => assert!(body.get("field").is_none(), "{case}: {body}"),
        }
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(words), "{case}: {body}");
        if status == 415 {
            assert!(detail.contains("application/json"), "{case}: {body}");
        }
    }
    let nowhere = app.get("/nowhere").await;
    let body = problem(nowhere, StatusCode::NOT_FOUND).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("POST /orders"),
        "{body}"
    );
    let wrong_method = app
        .http
        .delete(app.url("/orders/3f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10"))
        .send()
        .await
        .expect("DELETE request");
    assert_eq!(wrong_method.headers()["allow"], "GET,HEAD");
    problem(wrong_method, StatusCode::METHOD_NOT_ALLOWED).await;
    // Reads are the status function's, behind the load balancer.
    let read = problem(app.get("/orders").await, StatusCode::NOT_FOUND).await;
    assert!(
        read["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("status function"),
        "{read}"
    );

    assert_eq!(queues.depth().await, 0, "nothing was queued");
    app.stop().await;
}

#[tokio::test]
async fn readyz_is_200_when_the_queue_is_reachable() {
    let queues = TestQueues::create(QueueSettings::default()).await;
    let app = App::spawn(sqs_queue(&queues, &queues.queue_url)).await;
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn a_queue_that_does_not_exist_gives_503_with_retry_after() {
    let queues = TestQueues::create(QueueSettings::default()).await;
    let missing = format!("{}-missing", queues.queue_url);
    let app = App::spawn(sqs_queue(&queues, &missing)).await;

    assert_unavailable(app.post_order(&order()).await).await;
    assert_unavailable(app.get("/readyz").await).await;
    assert_eq!(
        app.get("/healthz").await.status(),
        StatusCode::OK,
        "still alive"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_unreachable_sqs_endpoint_gives_503_with_retry_after_in_bounded_time() {
    let queues = TestQueues::create(QueueSettings::default()).await;
    let closed_port = testkit::free_port();
    let config = queues
        .sqs
        .config()
        .to_builder()
        .endpoint_url(format!("http://127.0.0.1:{closed_port}"))
        .build();
    let app = App::spawn(SqsQueue::new(config, &queues.queue_url, SQS_TIMEOUT)).await;

    let started = Instant::now();
    assert_unavailable(app.post_order(&order()).await).await;
    assert!(
        started.elapsed() < SQS_TIMEOUT + Duration::from_secs(2),
        "bounded by the SQS timeout, took {:?}",
        started.elapsed()
    );
    assert_unavailable(app.get("/readyz").await).await;
    assert_eq!(
        app.get("/healthz").await.status(),
        StatusCode::OK,
        "still alive"
    );
    assert_eq!(queues.depth().await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_sqs_endpoint_that_never_answers_gives_503_within_the_timeout() {
    let queues = TestQueues::create(QueueSettings::default()).await;
    // Accepts connections and never says a word, like a black-holed network path.
    let silent = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let silent_addr = silent.local_addr().expect("local address");
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            connections.push(connection);
        }
    });
    let timeout = Duration::from_secs(1);
    let config = queues
        .sqs
        .config()
        .to_builder()
        .endpoint_url(format!("http://{silent_addr}"))
        .build();
    let app = App::spawn(SqsQueue::new(config, &queues.queue_url, timeout)).await;

    let started = Instant::now();
    assert_unavailable(app.post_order(&order()).await).await;
    let waited = started.elapsed();
    assert!(
        waited >= timeout && waited < timeout + Duration::from_secs(2),
        "answered after {waited:?}, bounded by the 1 s SQS timeout"
    );
    assert_unavailable(app.get("/readyz").await).await;
    app.stop().await;
    held.abort();
}

/// The real queue, holding each send until the test lets it through.
struct Gated {
    inner: SqsQueue,
    arrived: Arc<Notify>,
    release: Arc<Semaphore>,
}

impl OrderQueue for Gated {
    async fn send(&self, message: OrderMessage) -> Result<String, EnqueueError> {
        self.arrived.notify_one();
        if let Ok(permit) = self.release.acquire().await {
            permit.forget();
        }
        self.inner.send(message).await
    }

    async fn check(&self) -> Result<(), EnqueueError> {
        self.inner.check().await
    }
}

#[tokio::test]
async fn shutdown_stops_accepting_but_finishes_the_order_in_flight() {
    let queues = TestQueues::create(QueueSettings::default()).await;
    let arrived = Arc::new(Notify::new());
    let release = Arc::new(Semaphore::new(0));
    let mut app = App::spawn(Gated {
        inner: sqs_queue(&queues, &queues.queue_url),
        arrived: Arc::clone(&arrived),
        release: Arc::clone(&release),
    })
    .await;

    let posted = order();
    let in_flight = {
        let http = app.http.clone();
        let url = app.url("/orders");
        let body = posted.to_string();
        tokio::spawn(async move {
            http.post(url)
                .header(CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await
        })
    };
    arrived.notified().await;
    if let Some(shutdown) = app.shutdown.take() {
        let _ = shutdown.send(());
    }
    let addr = app.addr;
    testkit::eventually(
        "the listener to close",
        Duration::from_secs(5),
        || async move {
            match tokio::net::TcpStream::connect(addr).await {
                Err(_) => Ok(()),
                Ok(_) => Err("still accepting connections"),
            }
        },
    )
    .await;
    assert!(
        !app.server.is_finished(),
        "the server waits for the order in flight"
    );

    release.add_permits(1);
    let response = in_flight.await.expect("request task").expect("an answer");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted: Value = response.json().await.expect("JSON answer");
    assert_eq!(accepted["order_id"], posted["order_id"]);

    tokio::time::timeout(Duration::from_secs(10), &mut app.server)
        .await
        .expect("the server stops once the order is answered")
        .expect("server task")
        .expect("the server stops cleanly");
    let messages = receive(&queues, 1).await;
    assert_eq!(
        messages[0].message_id(),
        accepted["message_id"].as_str(),
        "the answered message id is the queued one"
    );
}

/// The value of one sample line of the metrics text, e.g. `producer_sqs_batch_entries_sum`.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

#[tokio::test]
async fn sqs_calls_and_batch_sizes_are_counted_not_estimated() {
    let queues = TestQueues::create(QueueSettings::default()).await;
    let metrics = producer::Metrics::new();
    let queue = SqsQueue::new(
        queues.sqs.config().clone(),
        &queues.queue_url,
        producer::SqsOptions {
            metrics: metrics.clone(),
            ..producer::SqsOptions::new(SQS_TIMEOUT)
        },
    );
    let app = Arc::new(App::spawn(queue).await);
    let mut posts = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let app = Arc::clone(&app);
        posts.spawn(async move { app.post_order(&order()).await.status() });
    }
    while let Some(status) = posts.join_next().await {
        assert_eq!(status.expect("post task"), StatusCode::ACCEPTED);
    }
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);

    let text = metrics.render();
    let calls = sample(
        &text,
        "producer_sqs_calls_total{operation=\"SendMessageBatch\"}",
    );
    assert!(
        (2.0..=12.0).contains(&calls),
        "at least two batches of ten at most: {calls}"
    );
    assert_eq!(
        sample(&text, "producer_sqs_batch_entries_count"),
        calls,
        "one batch size per call"
    );
    assert_eq!(sample(&text, "producer_sqs_batch_entries_sum"), 12.0);
    assert_eq!(
        sample(
            &text,
            "producer_sqs_calls_total{operation=\"GetQueueAttributes\"}"
        ),
        1.0
    );
    assert!(!text.contains("producer_sqs_errors_total{"), "{text}");
    Arc::into_inner(app).expect("last handle").stop().await;
}

#[tokio::test]
async fn sqs_errors_are_counted_by_kind() {
    let queues = TestQueues::create(QueueSettings::default()).await;
    let metrics = producer::Metrics::new();
    let missing = format!("{}-missing", queues.queue_url);
    let queue = SqsQueue::new(
        queues.sqs.config().clone(),
        &missing,
        producer::SqsOptions {
            metrics: metrics.clone(),
            ..producer::SqsOptions::new(SQS_TIMEOUT)
        },
    );
    let app = App::spawn(queue).await;
    assert_unavailable(app.post_order(&order()).await).await;
    let text = metrics.render();
    assert!(
        text.contains(
            "producer_sqs_errors_total{operation=\"SendMessageBatch\",kind=\"queue_missing\"} 1"
        ),
        "{text}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_request_id_travels_with_the_order_as_a_message_attribute() {
    let queues = TestQueues::create(QueueSettings::default()).await;
    let app = App::spawn(sqs_queue(&queues, &queues.queue_url)).await;
    let response = app
        .http
        .post(app.url("/orders"))
        .header(CONTENT_TYPE, "application/json")
        .header("x-request-id", "checkout-42.retry:1")
        .body(order().to_string())
        .send()
        .await
        .expect("POST /orders");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.headers()["x-request-id"], "checkout-42.retry:1");

    let received = queues
        .sqs
        .receive_message()
        .queue_url(&queues.queue_url)
        .message_attribute_names("All")
        .wait_time_seconds(5)
        .send()
        .await
        .expect("receive");
    let messages = received.messages.unwrap_or_default();
    assert_eq!(messages.len(), 1);
    let attribute = messages[0]
        .message_attributes()
        .and_then(|attributes| attributes.get(REQUEST_ID_ATTRIBUTE))
        .expect("a request_id attribute");
    assert_eq!(attribute.data_type(), "String");
    assert_eq!(attribute.string_value(), Some("checkout-42.retry:1"));
    app.stop().await;
}

/// How a slow sender's request was first answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FirstAnswer {
    /// `100 Continue`: the server has begun to read the body.
    Reading,
    /// A final status, before any of the body was sent.
    Refused(u16),
}

/// A client on `source` that sends an order's headers with `Expect:
/// 100-continue`, says how the server first answered, then dribbles the body a
/// byte at a time and never sends its last byte.
async fn slow_sender(server: SocketAddr, source: Ipv4Addr, answered: mpsc::Sender<FirstAnswer>) {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("bind a loopback source address");
    let mut stream = socket.connect(server).await.expect("connect");
    let body = order().to_string();
    let head = format!(
        "POST /orders HTTP/1.1\r\nHost: producer\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("headers");
    // The server sends 100 Continue when it starts reading the body; awaiting
    // it (or a refusal) means the request has been taken in, no guessing.
    let mut status_line = [0u8; 12];
    stream
        .read_exact(&mut status_line)
        .await
        .expect("a status line");
    let status = String::from_utf8_lossy(&status_line[9..])
        .parse::<u16>()
        .expect("a status code");
    let first = if status == 100 {
        FirstAnswer::Reading
    } else {
        FirstAnswer::Refused(status)
    };
    answered.send(first).await.expect("the test listens");
    let mut pace = tokio::time::interval(Duration::from_millis(200));
    for byte in &body.as_bytes()[..body.len() - 1] {
        pace.tick().await;
        if stream.write_all(&[*byte]).await.is_err() {
            return;
        }
    }
    std::future::pending::<()>().await;
}

#[tokio::test]
async fn slow_senders_on_many_addresses_do_not_lock_honest_customers_out() {
    const IN_FLIGHT: usize = 16;
    const ADDRESSES: u8 = 12;
    const PER_ADDRESS: usize = 4;
    const HONEST_ORDERS: usize = 20;
    let queues = TestQueues::create(QueueSettings::default()).await;
    // The defaults, rate limit included, with a small in-flight cap to keep it small.
    let config = Config::from_lookup(|name| match name {
        "QUEUE_URL" => Some(queues.queue_url.clone()),
        "MAX_IN_FLIGHT" => Some(IN_FLIGHT.to_string()),
        // Required; the test serves its own prices rather than loading a file.
        "CATALOGUE_PATH" => Some("catalogue.json".into()),
        _ => None,
    })
    .expect("a valid configuration");
    let app = App::spawn_configured(sqs_queue(&queues, &queues.queue_url), &config).await;

    // 127.0.0.2, 127.0.0.3, …: each within its rate, together three times the cap.
    let (answered, mut answers) = mpsc::channel(64);
    let mut slow = tokio::task::JoinSet::new();
    for host in 2..2 + ADDRESSES {
        for _ in 0..PER_ADDRESS {
            slow.spawn(slow_sender(
                app.addr,
                Ipv4Addr::new(127, 0, 0, host),
                answered.clone(),
            ));
        }
    }
    let mut first_answers = Vec::new();
    while first_answers.len() < usize::from(ADDRESSES) * PER_ADDRESS {
        let first = tokio::time::timeout(Duration::from_secs(10), answers.recv())
            .await
            .expect("every slow request is taken in or refused within 10 s")
            .expect("a slow sender's first answer");
        first_answers.push(first);
    }
    let reading = first_answers
        .iter()
        .filter(|first| **first == FirstAnswer::Reading)
        .count();
    assert!(
        reading >= IN_FLIGHT,
        "the slow senders hold at least as many requests as there are slots: {first_answers:?}"
    );

    // While they dribble (each for up to BODY_READ_TIMEOUT_MS), a customer orders.
    let mut statuses = Vec::new();
    for _ in 0..HONEST_ORDERS {
        statuses.push(app.post_order(&order()).await.status());
    }
    let refused = statuses
        .iter()
        .filter(|status| **status != StatusCode::ACCEPTED)
        .count();
    assert_eq!(
        refused, 0,
        "{refused} of {HONEST_ORDERS} honest orders refused: {statuses:?}"
    );
    assert_eq!(receive(&queues, HONEST_ORDERS).await.len(), HONEST_ORDERS);
    // The slow senders hang up.
    slow.abort_all();
    while slow.join_next().await.is_some() {}
    app.stop().await;
}
