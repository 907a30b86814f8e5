//! Real HTTP through local-alb, playing the template's listener, to a real
//! producer that verifies what local-alb signs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use infra::Document;
use local_alb::rules::Listener;
use local_alb::{KEYS_PATH, Keys, LOCAL_SIGNER, Target};
use producer::auth::{SignInConfig, Verifier};
use producer::{AppState, EnqueueError, OrderMessage, OrderQueue};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// Keeps the bodies it is sent.
#[derive(Debug, Default)]
struct Kept(Mutex<Vec<String>>);

impl OrderQueue for Kept {
    async fn send(&self, message: OrderMessage) -> Result<String, EnqueueError> {
        let mut kept = self.0.lock().expect("lock");
        kept.push(message.body);
        Ok(format!("msg-{}", kept.len()))
    }

    async fn check(&self) -> Result<(), EnqueueError> {
        Ok(())
    }
}

fn listener() -> Listener {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/template.yaml");
    Listener::from_document(&Document::from_file(path).expect("template")).expect("rules")
}

fn key_file() -> PathBuf {
    std::env::temp_dir()
        .join(testkit::unique_name("local-alb"))
        .join("signing-key.p8")
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    (listener, addr)
}

/// local-alb on `tcp` in front of `target`, signing with the key in `key`.
async fn start_alb(tcp: TcpListener, target: SocketAddr, key: &Path) {
    let keys = Keys::load_or_create(key, LOCAL_SIGNER).expect("key");
    let mut targets = HashMap::from([(
        "ProducerTargetGroup".to_owned(),
        Target::Http(format!("http://{target}")),
    )]);
    // The template's GET /orders* rule needs its status function; these tests
    // send nothing there, so its database (connected on first use) is never read.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/template.yaml");
    let database = std::env::var("TEST_DATABASE_URL").expect("TEST_DATABASE_URL");
    targets.extend(
        local_alb::lambda_targets(
            &Document::from_file(path).expect("template"),
            consumer_lambda::DatabaseConfig::from_url(&database).expect("URL"),
        )
        .await
        .expect("the status function"),
    );
    let router = local_alb::router(listener(), targets, keys).expect("router");
    tokio::spawn(local_alb::serve(tcp, router, std::future::pending()));
}

struct Stack {
    alb: SocketAddr,
    producer: SocketAddr,
    queue: Arc<Kept>,
    key: PathBuf,
    http: reqwest::Client,
}

/// A producer with sign-in on, behind local-alb, which serves its keys.
async fn stack() -> Stack {
    testkit::init_tracing();
    let (alb_tcp, alb) = bind().await;
    let (producer_tcp, producer) = bind().await;
    let queue = Arc::new(Kept::default());
    let verifier = Verifier::new(SignInConfig {
        signer: LOCAL_SIGNER.to_owned(),
        key_endpoint: format!("http://{alb}{KEYS_PATH}"),
        sign_out_url: local_alb::LOGOUT_PATH.to_owned(),
    })
    .expect("verifier");
    let state = AppState::new(Arc::clone(&queue), Duration::from_secs(10))
        .with_prices(producer::catalogue::fixtures::prices())
        .with_sign_in(Some(Arc::new(verifier)));
    tokio::spawn(producer::serve(producer_tcp, state, std::future::pending()));
    let key = key_file();
    start_alb(alb_tcp, producer, &key).await;
    Stack {
        alb,
        producer,
        queue,
        key,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
    }
}

impl Stack {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.alb)
    }

    async fn sign_in(&self, customer: &str) -> String {
        let response = self
            .http
            .post(self.url("/oauth2/idpresponse"))
            .form(&[("customer", customer), ("redirect", "/")])
            .send()
            .await
            .expect("sign in");
        assert!(response.status().is_redirection(), "{}", response.status());
        let set_cookie = response.headers()["set-cookie"].to_str().expect("ASCII");
        assert!(
            set_cookie.starts_with("AWSELBAuthSessionCookie-0="),
            "{set_cookie}"
        );
        set_cookie.split(';').next().expect("name=value").to_owned()
    }

    async fn post_order(&self, cookie: Option<&str>, order: &Value) -> reqwest::Response {
        let mut request = self
            .http
            .post(self.url("/orders"))
            .header("content-type", "application/json")
            .body(order.to_string());
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send().await.expect("POST /orders")
    }

    async fn me(&self, cookie: &str) -> Value {
        let response = self
            .http
            .get(self.url("/me"))
            .header("cookie", cookie)
            .send()
            .await
            .expect("GET /me");
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("JSON")
    }
}

fn order_without_customer() -> Value {
    let mut order =
        producer::catalogue::fixtures::priced(order_contract::fixtures::order_request(42, 1));
    order.as_object_mut().expect("object").remove("customer_id");
    order
}

#[tokio::test]
async fn the_api_answers_401_and_the_page_sends_the_browser_to_sign_in() {
    let stack = stack().await;
    let response = stack.post_order(None, &order_without_customer()).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // The load balancer's own 401, before the producer: no problem body.
    assert_eq!(response.text().await.expect("body"), "");
    let page = stack.http.get(stack.url("/")).send().await.expect("GET /");
    assert!(page.status().is_redirection(), "{}", page.status());
    assert_eq!(
        page.headers()["location"],
        "/_local-alb/sign-in?redirect=%2F"
    );
    let health = stack
        .http
        .get(stack.url("/healthz"))
        .send()
        .await
        .expect("GET /healthz");
    assert_eq!(health.status(), StatusCode::OK, "public");
    assert!(stack.queue.0.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn a_signed_in_customer_orders_as_themselves_and_no_one_else() {
    let stack = stack().await;
    let cookie = stack.sign_in("cust-7").await;
    assert_eq!(
        stack.me(&cookie).await,
        json!({"sign_in": "on", "customer_id": "cust-7"})
    );

    let response = stack
        .post_order(Some(&cookie), &order_without_customer())
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let mut someone_else = order_without_customer();
    someone_else["customer_id"] = json!("cust-42");
    let response = stack.post_order(Some(&cookie), &someone_else).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let kept = stack.queue.0.lock().expect("lock").clone();
    assert_eq!(kept.len(), 1);
    let message: Value = serde_json::from_str(&kept[0]).expect("JSON");
    assert_eq!(message["customer_id"], "cust-7");
}

#[tokio::test]
async fn a_session_outlives_a_restart_of_local_alb_with_the_same_key() {
    let stack = stack().await;
    let signed_in = stack.sign_in("cust-7").await;
    // What `local-alb sign-in` prints, made from the key file alone.
    let keys = Keys::load_or_create(&stack.key, LOCAL_SIGNER).expect("the same key");
    let printed = local_alb::session_cookie(&keys, &listener(), "cust-1001").expect("cookie");

    // Another local-alb on the same key file, in front of the same producer.
    let (tcp, addr) = bind().await;
    start_alb(tcp, stack.producer, &stack.key).await;
    let restarted = Stack { alb: addr, ..stack };
    assert_eq!(restarted.me(&signed_in).await["customer_id"], "cust-7");
    assert_eq!(restarted.me(&printed).await["customer_id"], "cust-1001");
}

#[tokio::test]
async fn client_sent_claims_are_dropped_and_the_client_address_is_appended() {
    let seen: Arc<Mutex<Option<HeaderMap>>> = Arc::default();
    let echo = {
        let seen = Arc::clone(&seen);
        Router::new().route(
            "/healthz",
            get(move |headers: HeaderMap| async move {
                *seen.lock().expect("lock") = Some(headers);
                "alive"
            }),
        )
    };
    let (echo_tcp, echo_addr) = bind().await;
    tokio::spawn(async move { axum::serve(echo_tcp, echo).await });
    let (tcp, alb) = bind().await;
    start_alb(tcp, echo_addr, &key_file()).await;

    let response = reqwest::Client::new()
        .get(format!("http://{alb}/healthz"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-amzn-oidc-data", "forged")
        .header("x-amzn-oidc-identity", "cust-1")
        .send()
        .await
        .expect("GET /healthz");
    assert_eq!(response.status(), StatusCode::OK);
    let headers = seen.lock().expect("lock").clone().expect("forwarded");
    assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert!(headers.get("x-amzn-oidc-data").is_none());
    assert!(headers.get("x-amzn-oidc-identity").is_none());
}
