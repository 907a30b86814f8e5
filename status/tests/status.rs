//! The status handler against a real PostgreSQL: every test its own migrated
//! database, orders written by the consumer's own store, requests shaped as
//! the load balancer sends them, claims signed as it signs them.

use std::time::Duration;

use aws_lambda_events::alb::{AlbTargetGroupRequest, AlbTargetGroupResponse};
use aws_lambda_events::encodings::Body;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use chrono::{DateTime, Duration as Days, Utc};
use consumer_lambda::database::Pool;
use consumer_lambda::migrations::{DEFAULT_WRITER, Role, connect_and_prepare};
use consumer_lambda::{DatabaseConfig, Delivery, MessageId, OrderStore, Outcome, PgStore};
use order_contract::OrderPlaced;
use order_contract::fixtures::{order_from_request, order_request_with_id};
use serde_json::{Value, json};
use testkit::TestDatabase;
use uuid::Uuid;

const SIGNER: &str =
    "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/shop/50dc6c495c0c9188";
const NOW: i64 = 1_800_000_000;
const DEADLINE: Duration = status::DEADLINE;

/// A migrated database, the consumer's store on it (as the writer) and the
/// status function's pool.
struct Shop {
    store: PgStore,
    pool: Pool,
}

async fn shop() -> Shop {
    testkit::init_tracing();
    let db = TestDatabase::create().await;
    let writer = Role::writer(DEFAULT_WRITER, None).expect("a valid name");
    connect_and_prepare(DatabaseConfig::from_url(&db.url).expect("URL"), &[writer])
        .await
        .expect("migrated");
    let store = PgStore::new(
        DatabaseConfig::from_url(&db.url_as(DEFAULT_WRITER)).expect("URL"),
        1,
    )
    .await
    .expect("store");
    let pool = status::pool(DatabaseConfig::from_url(&db.url).expect("URL"))
        .await
        .expect("pool");
    Shop { store, pool }
}

fn received(minutes_ago: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(NOW, 0).expect("a time") - Days::minutes(minutes_ago)
}

/// `customer`'s order `order_id` of `lines` lines, as the consumer stores it.
async fn store(
    shop: &Shop,
    order_id: Uuid,
    customer: &str,
    lines: usize,
    minutes_ago: i64,
) -> Outcome {
    let mut request = order_request_with_id(order_id, 1, lines);
    request["customer_id"] = json!(customer);
    let delivery = Delivery {
        message_id: MessageId::new(format!("msg-{}", Uuid::new_v4())).expect("an id"),
        placed: OrderPlaced::new(order_from_request(&request), received(minutes_ago)),
        request_id: None,
    };
    shop.store
        .insert(&[&delivery])
        .await
        .expect("stored")
        .by_delivery[0]
}

fn claims(customer: &str, signer: &str, exp: i64) -> String {
    let key = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &support::claims::new_signing_key().expect("a key"),
    )
    .expect("a P-256 key");
    let header = json!({"alg": "ES256", "kid": "k1", "signer": signer, "iss": "idp", "client": "c", "exp": exp});
    support::claims::sign(&key, &header, &json!({"sub": customer, "exp": exp})).expect("signed")
}

/// `GET path` as the load balancer invokes the target, with `claims` if any.
fn request(path: &str, claims: Option<String>) -> AlbTargetGroupRequest {
    let mut headers = json!({
        "host": "shop.example.com",
        "x-amzn-trace-id": "Root=1-5c536348-3d683b8b04734faae651f476",
        "x-forwarded-for": "72.12.164.125",
    });
    if let Some(claims) = claims {
        headers["x-amzn-oidc-data"] = json!(claims);
    }
    serde_json::from_value(json!({
        "requestContext": {"elb": {"targetGroupArn": "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/status/49e9d65c45c6791a"}},
        "httpMethod": "GET",
        "path": path,
        "queryStringParameters": {},
        "headers": headers,
        "body": "",
        "isBase64Encoded": false,
    }))
    .expect("an ALB event")
}

fn signed_in(path: &str, customer: &str) -> AlbTargetGroupRequest {
    request(path, Some(claims(customer, SIGNER, NOW + 60)))
}

async fn get(pool: &Pool, request: &AlbTargetGroupRequest) -> AlbTargetGroupResponse {
    status::handle(pool, SIGNER, request, NOW, DEADLINE).await
}

fn body(answer: &AlbTargetGroupResponse) -> &str {
    match &answer.body {
        Some(Body::Text(text)) => text,
        other => panic!("a text body, not {other:?}"),
    }
}

fn json_of(answer: &AlbTargetGroupResponse) -> Value {
    serde_json::from_str(body(answer)).expect("a JSON body")
}

fn header<'a>(answer: &'a AlbTargetGroupResponse, name: &str) -> Option<&'a str> {
    answer.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn a_stored_order_answers_stored_with_when_its_lines_and_its_total() {
    let shop = shop().await;
    let order_id = Uuid::new_v4();
    assert_eq!(
        store(&shop, order_id, "cust-42", 2, 3).await,
        Outcome::Stored
    );

    let answer = get(
        &shop.pool,
        &signed_in(&format!("/orders/{order_id}"), "cust-42"),
    )
    .await;

    assert_eq!(answer.status_code, 200, "{}", body(&answer));
    assert_eq!(header(&answer, "content-type"), Some("application/json"));
    let order = json_of(&answer);
    assert_eq!(order["status"], "stored");
    assert_eq!(order["order_id"], order_id.to_string());
    assert_eq!(order["items"].as_array().map(Vec::len), Some(2));
    let total: i64 = order["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| {
            item["quantity"].as_i64().expect("q") * item["unit_price_cents"].as_i64().expect("p")
        })
        .sum();
    assert_eq!(order["total_cents"], total);
    assert!(
        order["stored_at"].is_string() && order["received_at"].is_string(),
        "{order}"
    );
    assert!(
        order["message"]
            .as_str()
            .is_some_and(|m| m.contains("stored")),
        "{order}"
    );
}

#[tokio::test]
async fn an_id_already_used_for_another_order_answers_kept_aside_with_what_to_do() {
    let shop = shop().await;
    let order_id = Uuid::new_v4();
    store(&shop, order_id, "cust-7", 1, 5).await;
    assert!(matches!(
        store(&shop, order_id, "cust-42", 3, 2).await,
        Outcome::Conflict { kept_now: true }
    ));

    let answer = get(
        &shop.pool,
        &signed_in(&format!("/orders/{order_id}"), "cust-42"),
    )
    .await;

    assert_eq!(answer.status_code, 200, "{}", body(&answer));
    let order = json_of(&answer);
    assert_eq!(order["status"], "kept_aside");
    assert_eq!(
        order["items"].as_array().map(Vec::len),
        Some(3),
        "this customer's lines"
    );
    assert!(
        order["message"]
            .as_str()
            .is_some_and(|m| m.contains("Place it again")),
        "{order}"
    );
}

#[tokio::test]
async fn another_customer_s_order_is_answered_byte_for_byte_as_a_missing_one() {
    let shop = shop().await;
    let theirs = Uuid::new_v4();
    store(&shop, theirs, "cust-7", 1, 1).await;

    let for_theirs = get(
        &shop.pool,
        &signed_in(&format!("/orders/{theirs}"), "cust-42"),
    )
    .await;
    let missing = Uuid::new_v4();
    let for_missing = get(
        &shop.pool,
        &signed_in(&format!("/orders/{missing}"), "cust-42"),
    )
    .await;

    assert_eq!(for_theirs.status_code, 404, "{}", body(&for_theirs));
    assert_eq!(
        header(&for_theirs, "content-type"),
        Some("application/problem+json")
    );
    assert_eq!(for_theirs, for_missing);
    assert!(
        json_of(&for_missing)["detail"]
            .as_str()
            .is_some_and(|d| d.contains("on its way"))
    );
}

#[tokio::test]
async fn the_list_is_the_customer_s_own_newest_first_and_bounded() {
    let shop = shop().await;
    let count = usize::try_from(status::MAX_LISTED).expect("small") + 3;
    let mut mine = Vec::new();
    for minutes_ago in 0..count {
        let order_id = Uuid::new_v4();
        store(
            &shop,
            order_id,
            "cust-42",
            1,
            i64::try_from(minutes_ago).expect("small") + 10,
        )
        .await;
        mine.push(order_id.to_string());
    }
    store(&shop, Uuid::new_v4(), "cust-7", 1, 0).await;
    // The newest of all: this customer's, kept aside under someone else's id.
    let taken = Uuid::new_v4();
    store(&shop, taken, "cust-7", 1, 9).await;
    store(&shop, taken, "cust-42", 2, 1).await;

    let answer = get(&shop.pool, &signed_in("/orders", "cust-42")).await;

    assert_eq!(answer.status_code, 200, "{}", body(&answer));
    let listed = json_of(&answer)["orders"]
        .as_array()
        .expect("orders")
        .clone();
    let ids: Vec<&str> = listed
        .iter()
        .filter_map(|o| o["order_id"].as_str())
        .collect();
    let mut expected = vec![taken.to_string()];
    expected.extend(mine.iter().take(count - 4).cloned());
    assert_eq!(ids, expected);
    assert_eq!(listed[0]["status"], "kept_aside");
    assert!(listed[1..].iter().all(|o| o["status"] == "stored"));
}

#[tokio::test]
async fn without_valid_claims_nothing_is_answered_but_401() {
    let shop = shop().await;
    let order_id = Uuid::new_v4();
    store(&shop, order_id, "cust-42", 1, 1).await;
    let path = format!("/orders/{order_id}");
    for (why, claims) in [
        ("no claims", None),
        (
            "another load balancer's",
            Some(claims(
                "cust-42",
                &SIGNER.replace("shop", "other"),
                NOW + 60,
            )),
        ),
        ("expired", Some(claims("cust-42", SIGNER, NOW))),
        ("not a token", Some("x.y.z".to_owned())),
    ] {
        let answer = get(&shop.pool, &request(&path, claims)).await;
        assert_eq!(answer.status_code, 401, "{why}: {}", body(&answer));
        assert_eq!(
            header(&answer, "content-type"),
            Some("application/problem+json"),
            "{why}"
        );
        assert!(
            json_of(&answer)["detail"]
                .as_str()
                .is_some_and(|d| d.contains("sign in")),
            "{why}"
        );
    }
}

async fn assert_catching_up(pool: &Pool, deadline: Duration) {
    for path in ["/orders", "/orders/3f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10"] {
        let answer = status::handle(pool, SIGNER, &signed_in(path, "cust-42"), NOW, deadline).await;
        assert_eq!(answer.status_code, 503, "{path}: {}", body(&answer));
        assert_eq!(
            header(&answer, "retry-after"),
            Some(status::RETRY_AFTER_SECS.to_string().as_str())
        );
        assert!(
            json_of(&answer)["detail"]
                .as_str()
                .is_some_and(|d| d.contains("safe in the queue")),
            "{}",
            body(&answer)
        );
    }
}

#[tokio::test]
async fn a_database_that_refuses_connections_answers_503_with_retry_after() {
    let port = testkit::free_port();
    let pool = status::pool(
        DatabaseConfig::from_url(&format!("postgres://postgres@127.0.0.1:{port}/orders"))
            .expect("URL"),
    )
    .await
    .expect("pool");
    assert_catching_up(&pool, DEADLINE).await;
}

#[tokio::test]
async fn a_database_that_never_answers_is_given_up_at_the_deadline_with_503() {
    // Connections are accepted by the kernel's backlog and never answered:
    // only the function's own deadline ends the wait (the pool's would take 10 s).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("address").port();
    let pool = status::pool(
        DatabaseConfig::from_url(&format!(
            "postgres://postgres@127.0.0.1:{port}/orders?connect_timeout=600"
        ))
        .expect("URL"),
    )
    .await
    .expect("pool");
    assert_catching_up(&pool, Duration::from_millis(200)).await;
    drop(silent);
}

#[tokio::test]
async fn with_multi_value_headers_on_the_answer_uses_them_too() {
    let shop = shop().await;
    let mut event = serde_json::to_value(signed_in("/orders", "cust-42")).expect("JSON");
    let headers = event["headers"].take();
    let multi: serde_json::Map<String, Value> = headers
        .as_object()
        .expect("headers")
        .iter()
        .map(|(name, value)| (name.clone(), json!([value])))
        .collect();
    event["multiValueHeaders"] = Value::Object(multi);
    event["headers"] = json!({});
    let request: AlbTargetGroupRequest = serde_json::from_value(event).expect("an ALB event");

    let answer = get(&shop.pool, &request).await;

    assert_eq!(answer.status_code, 200, "{}", body(&answer));
    assert!(answer.headers.is_empty());
    assert_eq!(
        answer
            .multi_value_headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
}

#[tokio::test]
async fn each_read_goes_through_its_indexes() {
    let db = TestDatabase::create().await;
    let mut client = db.connect().await;
    consumer_lambda::migrations::migrate(&mut client)
        .await
        .expect("migrated");
    // Empty tables: without this the planner rightly prefers reading them whole.
    client
        .batch_execute("SET enable_seqscan = off")
        .await
        .expect("set");
    let plan = |sql: &'static str,
                params: Vec<(
        Box<dyn tokio_postgres::types::ToSql + Sync>,
        tokio_postgres::types::Type,
    )>| {
        let client = &client;
        async move {
            let params: Vec<(
                &(dyn tokio_postgres::types::ToSql + Sync),
                tokio_postgres::types::Type,
            )> = params
                .iter()
                .map(|(value, kind)| (value.as_ref(), kind.clone()))
                .collect();
            client
                .query_typed(&format!("EXPLAIN {sql}"), &params)
                .await
                .expect("a plan")
                .iter()
                .map(|row| row.get::<_, String>(0))
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    use tokio_postgres::types::Type;
    let one = plan(
        status::orders::ONE,
        vec![
            (Box::new(Uuid::new_v4()), Type::UUID),
            (Box::new("cust-42"), Type::TEXT),
        ],
    )
    .await;
    let recent = plan(
        status::orders::RECENT,
        vec![
            (Box::new("cust-42"), Type::TEXT),
            (Box::new(20_i64), Type::INT8),
        ],
    )
    .await;
    // A lookup by id may take either key; the list has one index per table
    // that leads with the customer.
    assert!(!one.contains("Seq Scan"), "{one}");
    for index in [
        "orders_customer_received",
        "order_conflicts_customer_recorded",
    ] {
        assert!(recent.contains(index), "{index} in\n{recent}");
    }
    assert!(!recent.contains("Seq Scan"), "{recent}");
}

#[test]
fn each_answer_is_one_emf_line_counted_by_status() {
    let line: Value =
        serde_json::from_str(&status::answer_emf("status-fn", 503, 1_700_000_000_000))
            .expect("JSON");
    assert_eq!(line["Status"], "503");
    assert_eq!(line[status::ANSWERS], 1);
    assert_eq!(
        line["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([["FunctionName", "Status"]])
    );
}
