//! The edge of the service over real TCP, with a queue stub (no SQS needed):
//! load shedding, the header-read and body-read timeouts, rate limits and caps
//! per client.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use std::num::{NonZeroU32, NonZeroUsize};

use producer::catalogue::fixtures;
use producer::{
    AppState, ClientCap, EnqueueError, Limits, Metrics, OrderMessage, OrderQueue, RateLimit,
    TrustedProxies,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;

/// Bounds every wait of these tests; none is expected to come near it.
const PATIENCE: Duration = Duration::from_secs(10);

/// Answers every send once the test opens the gate.
#[derive(Debug)]
struct GatedQueue {
    arrived: Semaphore,
    release: Semaphore,
}

impl Default for GatedQueue {
    fn default() -> Self {
        Self {
            arrived: Semaphore::new(0),
            release: Semaphore::new(0),
        }
    }
}

impl OrderQueue for GatedQueue {
    async fn send(&self, _message: OrderMessage) -> Result<String, EnqueueError> {
        self.arrived.add_permits(1);
        if let Ok(permit) = self.release.acquire().await {
            permit.forget();
        }
        Ok("msg".into())
    }

    async fn check(&self) -> Result<(), EnqueueError> {
        Ok(())
    }
}

struct App {
    addr: SocketAddr,
    queue: Arc<GatedQueue>,
    metrics: Metrics,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

impl App {
    async fn spawn(limits: Limits) -> Self {
        Self::spawn_with(|state| state.with_limits(limits)).await
    }

    async fn spawn_limited(rate_limit: RateLimit) -> Self {
        Self::spawn_with(|state| state.with_rate_limit(rate_limit)).await
    }

    async fn spawn_capped(client_cap: ClientCap) -> Self {
        Self::spawn_with(|state| state.with_client_cap(client_cap)).await
    }

    async fn spawn_with(
        configure: impl FnOnce(AppState<GatedQueue>) -> AppState<GatedQueue>,
    ) -> Self {
        testkit::init_tracing();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().expect("address");
        let queue = Arc::new(GatedQueue::default());
        let state =
            configure(AppState::new(Arc::clone(&queue), PATIENCE).with_prices(fixtures::prices()));
        let metrics = state.metrics().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(producer::serve(listener, state, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            queue,
            metrics,
            stop: Some(stop),
            server,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn stop(mut self) {
        self.queue.release.add_permits(1000);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(PATIENCE, self.server)
            .await
            .expect("the server stops")
            .expect("server task")
            .expect("the server stops cleanly");
    }
}

/// An order the repository's catalogue prices.
fn order() -> serde_json::Value {
    fixtures::priced(order_contract::fixtures::order_request(42, 1))
}

fn post(http: &reqwest::Client, app: &App) -> reqwest::RequestBuilder {
    http.post(app.url("/orders"))
        .header("content-type", "application/json")
        .body(order().to_string())
}

/// Reads until the server closes the connection; what it sent before.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn requests_past_the_in_flight_cap_are_shed_at_once_with_retry_after() {
    let app = App::spawn(Limits {
        max_in_flight: 2,
        ..Limits::default()
    })
    .await;
    let http = reqwest::Client::new();
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(post(&http, &app).send()))
        .collect();
    // Both are inside, waiting for the queue.
    let arrived = app.queue.arrived.acquire_many(2).await.expect("arrived");
    arrived.forget();

    let shed = post(&http, &app).send().await.expect("an answer");
    assert_eq!(shed.status(), 503);
    assert_eq!(shed.headers()["retry-after"], "1");
    assert_eq!(shed.headers()["content-type"], "application/problem+json");
    let problem: Value = shed.json().await.expect("a problem");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("nothing was queued"), "{problem}");
    assert!(
        app.metrics
            .render()
            .contains("producer_requests_shed_total{reason=\"in_flight\"} 1"),
        "{}",
        app.metrics.render()
    );
    // Health checks are not orders: never shed.
    let health = http.get(app.url("/healthz")).send().await.expect("answer");
    assert_eq!(health.status(), 200);

    app.queue.release.add_permits(2);
    for request in held {
        let response = request.await.expect("task").expect("an answer");
        assert_eq!(response.status(), 202);
    }
    // Slots are given back: the next order is taken.
    app.queue.release.add_permits(1);
    assert_eq!(
        post(&http, &app).send().await.expect("answer").status(),
        202
    );
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let app = App::spawn(Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    stream
        .write_all(b"POST /orders HTTP/1.1\r\nHost: producer\r\nContent-Type: appl")
        .await
        .expect("half a header");
    let answer = read_until_closed(&mut stream).await;
    assert!(!answer.contains("202"), "{answer}");
    app.stop().await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_header_timeout_too() {
    let app = App::spawn(Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.is_empty(), "{answer}");
    app.stop().await;
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_a_408_and_the_connection_is_closed() {
    let app = App::spawn(Limits {
        body_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let body = order().to_string();
    let head = format!(
        "POST /orders HTTP/1.1\r\nHost: producer\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("headers");
    stream
        .write_all(&body.as_bytes()[..10])
        .await
        .expect("the start of the body");
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert_eq!(
        app.queue.arrived.available_permits(),
        0,
        "nothing reached the queue"
    );
    app.stop().await;
}

fn one_per_hour(burst: u32) -> governor::Quota {
    let hourly = governor::Quota::with_period(Duration::from_secs(3600)).expect("not zero");
    hourly.allow_burst(NonZeroU32::new(burst).expect("non-zero"))
}

async fn post_from(http: &reqwest::Client, app: &App, forwarded_for: &str) -> reqwest::Response {
    app.queue.release.add_permits(1);
    post(http, app)
        .header("x-forwarded-for", forwarded_for)
        .send()
        .await
        .expect("an answer")
}

#[tokio::test]
async fn a_client_past_its_rate_gets_429_with_retry_after_and_nothing_is_queued() {
    let app = App::spawn_limited(RateLimit::new(one_per_hour(2))).await;
    let http = reqwest::Client::new();
    for _ in 0..2 {
        assert_eq!(post_from(&http, &app, "198.51.100.7").await.status(), 202);
    }
    let limited = post(&http, &app).send().await.expect("an answer");
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("seconds");
    assert!(retry_after > 3000, "about an hour: {retry_after}");
    assert_eq!(
        limited.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = limited.json().await.expect("a problem");
    assert_eq!(problem["status"], 429);
    assert_eq!(
        app.queue.arrived.available_permits(),
        2,
        "only two reached the queue"
    );
    let metrics = app.metrics.render();
    assert!(
        metrics.contains("producer_requests_rate_limited_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "producer_http_requests_total{route=\"/orders\",method=\"POST\",status=\"429\"} 1"
        ),
        "{metrics}"
    );
    // Health checks are not limited.
    let health = http.get(app.url("/healthz")).send().await.expect("answer");
    assert_eq!(health.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn a_forwarded_for_header_from_an_untrusted_peer_does_not_escape_the_limit() {
    // The test's own address (127.0.0.1) is not a trusted proxy.
    let proxies = TrustedProxies::parse("10.0.0.0/24").expect("valid");
    let app = App::spawn_with(|state| {
        state
            .with_rate_limit(RateLimit::new(one_per_hour(1)))
            .with_trusted_proxies(proxies)
    })
    .await;
    let http = reqwest::Client::new();
    assert_eq!(post_from(&http, &app, "198.51.100.1").await.status(), 202);
    for spoofed in ["198.51.100.2", "203.0.113.9, 198.51.100.3", "10.0.0.7"] {
        assert_eq!(
            post_from(&http, &app, spoofed).await.status(),
            429,
            "X-Forwarded-For: {spoofed}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket() {
    let proxies = TrustedProxies::parse("127.0.0.1/32, 10.0.0.0/24").expect("valid");
    let app = App::spawn_with(|state| {
        state
            .with_rate_limit(RateLimit::new(one_per_hour(1)))
            .with_trusted_proxies(proxies)
    })
    .await;
    let http = reqwest::Client::new();
    assert_eq!(post_from(&http, &app, "198.51.100.1").await.status(), 202);
    assert_eq!(post_from(&http, &app, "198.51.100.2").await.status(), 202);
    // The client prepends addresses of its own: the balancer's entry (the
    // rightmost untrusted one) still names it.
    for spoofed in [
        "203.0.113.9, 198.51.100.1",
        "203.0.113.10, 198.51.100.1, 10.0.0.7",
    ] {
        assert_eq!(
            post_from(&http, &app, spoofed).await.status(),
            429,
            "X-Forwarded-For: {spoofed}"
        );
    }
    app.stop().await;
}

/// Sends an order's headers (`Expect: 100-continue`) and the start of its body
/// from 127.0.0.1, and returns once the server reads the body: the request is
/// then in progress until the connection is dropped.
async fn start_slow_order(app: &App) -> TcpStream {
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let body = order().to_string();
    let head = format!(
        "POST /orders HTTP/1.1\r\nHost: producer\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("headers");
    let mut continued = [0u8; 25];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut continued))
        .await
        .expect("an answer to the headers")
        .expect("read it");
    assert_eq!(&continued, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream
        .write_all(&body.as_bytes()[..10])
        .await
        .expect("the start of the body");
    stream
}

#[tokio::test]
async fn a_client_with_its_cap_of_requests_in_progress_gets_429_and_others_are_served() {
    let cap = ClientCap::new(NonZeroUsize::new(2).expect("2"));
    let app = App::spawn_capped(cap).await;
    let slow = [start_slow_order(&app).await, start_slow_order(&app).await];

    let http = reqwest::Client::new();
    let refused = post(&http, &app).send().await.expect("an answer");
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = refused.json().await.expect("a problem");
    assert_eq!(problem["status"], 429);
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("2 requests in progress"), "{problem}");
    assert!(detail.contains("nothing was queued"), "{problem}");
    let metrics = app.metrics.render();
    assert!(
        metrics.contains("producer_requests_over_client_cap_total 1"),
        "{metrics}"
    );

    // Another client is served meanwhile.
    let other = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()
        .expect("a client on 127.0.0.2");
    app.queue.release.add_permits(1);
    assert_eq!(
        post(&other, &app).send().await.expect("an answer").status(),
        202
    );

    // Hanging up gives the slots back.
    drop(slow);
    app.queue.release.add_permits(1);
    let status = testkit::eventually("the client's slots to come back", PATIENCE, || async {
        match post(&http, &app).send().await.map(|answer| answer.status()) {
            Ok(status) if status == 202 => Ok(status),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(status, 202);
    app.stop().await;
}

#[tokio::test]
async fn metrics_are_served_on_their_own_listener_only() {
    let app = App::spawn(Limits::default()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let metrics_addr = listener.local_addr().expect("address");
    let metrics_server = tokio::spawn(producer::server::serve_router(
        listener,
        producer::metrics::metrics_router(app.metrics.clone()),
        Limits::default(),
        std::future::pending(),
    ));
    let http = reqwest::Client::new();
    app.queue.release.add_permits(1);
    assert_eq!(
        post(&http, &app).send().await.expect("answer").status(),
        202
    );
    let on_the_public_port = http.get(app.url("/metrics")).send().await.expect("answer");
    assert_eq!(
        on_the_public_port.status(),
        404,
        "not where the load balancer sends"
    );

    let scraped = http
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .expect("a scrape");
    assert_eq!(scraped.status(), 200);
    assert!(
        scraped.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("application/openmetrics-text"),
    );
    let text = scraped.text().await.expect("text");
    for line in [
        "producer_http_requests_total{route=\"/orders\",method=\"POST\",status=\"202\"} 1",
        "producer_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1",
        "producer_enqueue_seconds_count{outcome=\"queued\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    metrics_server.abort();
    app.stop().await;
}
