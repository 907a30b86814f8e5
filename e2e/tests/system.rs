//! The system's promises, end to end: every accepted order is stored exactly once,
//! whatever fails in between.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use e2e::order_request;
mod stack;
use futures::StreamExt;
use local_esm::{BatchHandler, InProcess};
use order_contract::FailureClass;
use serde_json::Value;
use stack::{LoseAcks, Stack};
use testkit::{PostgresServer, QueueSettings, eventually};

/// The order id of a request body or a queued message, if it has one.
fn parse_order_id(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    value["order_id"].as_str().map(str::to_owned)
}

const FAST_RETRY: QueueSettings = QueueSettings {
    visibility_timeout_secs: 1,
    max_receive_count: 3,
    ..QueueSettings::SQS_DEFAULTS
};

/// Posts every order, `concurrency` at a time; returns order id → message id.
async fn post_all(stack: &Stack, orders: &[Value], concurrency: usize) -> HashMap<String, String> {
    let answers: Vec<(u16, Value)> = futures::stream::iter(orders)
        .map(|body| stack.post_order(body))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    answers
        .into_iter()
        .map(|(status, body)| {
            assert_eq!(status, 202, "{body}");
            let id = |key: &str| body[key].as_str().expect("ids in a 202").to_owned();
            (id("order_id"), id("message_id"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_orders_become_exactly_a_thousand_matching_rows() {
    let mut stack = Stack::start(QueueSettings::default(), None).await;
    stack.start_consumer().await;
    let orders: Vec<Value> = (0..1000).map(|n| order_request(n, n % 5 + 1)).collect();
    let accepted = post_all(&stack, &orders, 64).await;
    assert_eq!(accepted.len(), 1000);

    stack.await_stored(1000, Duration::from_secs(120)).await;
    let client = stack.db.connect().await;
    let rows = client
        .query(
            "SELECT order_id::text, customer_id, currency, items, total_cents, sqs_message_id FROM orders",
            &[],
        )
        .await
        .expect("rows");
    let posted: HashMap<String, &Value> = orders
        .iter()
        .map(|o| (o["order_id"].as_str().expect("id").to_owned(), o))
        .collect();
    for row in &rows {
        let order_id: String = row.get(0);
        let sent = posted[&order_id];
        assert_eq!(
            row.get::<_, String>(1),
            sent["customer_id"].as_str().expect("customer")
        );
        assert_eq!(
            row.get::<_, String>(2),
            sent["currency"].as_str().expect("currency")
        );
        assert_eq!(&row.get::<_, Value>(3), &sent["items"]);
        let total: i64 = sent["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| {
                i["quantity"].as_i64().expect("q") * i["unit_price_cents"].as_i64().expect("p")
            })
            .sum();
        assert_eq!(row.get::<_, i64>(4), total);
        assert_eq!(
            row.get::<_, String>(5),
            accepted[&order_id],
            "stored from the message the producer sent"
        );
    }
    assert_eq!(stack.queues.dlq_depth().await, 0);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_posted_twice_and_a_message_delivered_twice_are_each_one_row() {
    let mut stack = Stack::start(FAST_RETRY, None).await;
    // The first two invocations store their orders but "lose" the acknowledgement,
    // so SQS delivers the same messages again after the visibility timeout.
    let handler = LoseAcks {
        inner: InProcess(stack.consumer().await, None),
        remaining: AtomicUsize::new(2),
    };
    stack.start_consumer_with(handler).await;

    let retried = order_request(1, 2);
    let (first, a) = stack.post_order(&retried).await;
    let (second, b) = stack.post_order(&retried).await;
    assert_eq!(
        (first, second),
        (202, 202),
        "a retried POST is accepted again"
    );
    assert_ne!(
        a["message_id"], b["message_id"],
        "two messages for the same order"
    );
    stack.post_order(&order_request(2, 1)).await;

    stack.await_stored(2, Duration::from_secs(30)).await;
    eventually("the queue to drain", Duration::from_secs(30), || async {
        match stack.queues.depth().await {
            0 => Ok(()),
            n => Err(n),
        }
    })
    .await;
    assert_eq!(stack.stored_count().await, 2);
    assert_eq!(stack.queues.dlq_depth().await, 0);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_reaches_the_dlq_in_one_receive_saying_why_and_valid_orders_are_stored() {
    let mut stack = Stack::start(FAST_RETRY, None).await;
    let valid: Vec<String> = (0..5)
        .map(|n| {
            let request = order_request(n, 2).to_string();
            let order = order_contract::Order::from_request_json(&request).expect("valid");
            order_contract::OrderPlaced::new(order, "2026-11-24T18:00:00Z".parse().expect("time"))
                .to_json()
        })
        .collect();
    let poison = [
        "this is not JSON".to_owned(),
        r#"{"greeting": "hello, not an order"}"#.to_owned(),
        valid[0].replace(r#""currency":"#, r#""currency":"euro","was":"#),
        valid[1].replace(r#""quantity":1"#, r#""quantity":0"#),
    ];
    // Mixed in one batch: valid and poison interleaved.
    let mut mixed = Vec::new();
    for (index, body) in valid.iter().enumerate() {
        mixed.push(body.clone());
        mixed.extend(poison.get(index).cloned());
    }
    stack.queues.send_bodies(&mixed).await;
    let sent_at = std::time::Instant::now();
    stack.start_consumer().await;

    stack.await_dead_lettered(4, Duration::from_secs(60)).await;
    eprintln!(
        "the poison was in the DLQ {:.1} s after it was sent",
        sent_at.elapsed().as_secs_f64()
    );
    let dead = stack.queues.receive_dlq().await;
    let classes: HashMap<String, (FailureClass, u32)> = dead
        .iter()
        .map(|message| {
            let failure = e2e::failure_of(message).expect("every dead letter says why it failed");
            assert!(failure.detail.is_some_and(|d| !d.is_empty()));
            let body = message.body.clone().unwrap_or_default();
            (body, (failure.class, failure.receive_count.unwrap_or(0)))
        })
        .collect();
    // Sent by the consumer on the first receive, not moved by the redrive policy.
    let expected: HashMap<String, (FailureClass, u32)> = [
        FailureClass::InvalidJson,
        FailureClass::InvalidOrder,
        FailureClass::InvalidOrder,
        FailureClass::InvalidOrder,
    ]
    .into_iter()
    .zip(&poison)
    .map(|(class, body)| (body.clone(), (class, 1)))
    .collect();
    assert_eq!(classes, expected);
    // The two valid orders that were copied into poison messages are stored from their valid copy.
    assert_eq!(stack.stored_count().await, 5);
    let stored_ids = stack.stored_order_ids().await;
    let valid_ids: HashSet<String> = valid.iter().filter_map(|b| parse_order_id(b)).collect();
    assert_eq!(stored_ids, valid_ids);
    assert!(
        dead.iter()
            .all(|m| !valid.contains(&m.body.clone().unwrap_or_default())),
        "no valid order in the DLQ"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_consumer_stopped_orders_are_accepted_and_queued_then_all_stored_on_restart() {
    let mut stack = Stack::start(QueueSettings::default(), None).await;
    let orders: Vec<Value> = (0..200).map(|n| order_request(n, 1)).collect();
    let accepted = post_all(&stack, &orders, 16).await;
    assert_eq!(accepted.len(), 200);
    assert_eq!(
        stack.queues.depth().await,
        200,
        "the queue buffers every order"
    );
    assert_eq!(stack.stored_count().await, 0);

    stack.start_consumer().await;
    stack.await_stored(200, Duration::from_secs(60)).await;
    assert_eq!(stack.queues.dlq_depth().await, 0);
    stack.shutdown().await;
}

/// A database outage within the backoff: 1 s visibility timeout, 5 receives,
/// and the test backoff (1 s, 2 s, 4 s before the requeue on the fourth
/// receive) hold an order 7 s; the outage below lasts 5 s.
const WITHIN_BACKOFF: QueueSettings = QueueSettings {
    visibility_timeout_secs: 1,
    max_receive_count: 5,
    ..QueueSettings::SQS_DEFAULTS
};

/// The order id → SQS message id of every stored row.
async fn stored_message_ids(stack: &Stack) -> HashMap<String, String> {
    let client = stack.db.connect().await;
    client
        .query("SELECT order_id::text, sqs_message_id FROM orders", &[])
        .await
        .expect("rows")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

async fn await_drained(stack: &Stack) {
    eventually("the queue to drain", Duration::from_secs(60), || async {
        match stack.queues.depth().await {
            0 => Ok(()),
            n => Err(n),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_flowing_through_an_outage_within_the_backoff_are_stored_once_from_their_first_message()
 {
    let server = PostgresServer::start().await;
    let mut stack = Stack::start(WITHIN_BACKOFF, Some(&server.admin_url())).await;
    stack.start_consumer().await;
    let orders: Vec<Value> = (0..300).map(|n| order_request(n, 1)).collect();

    let mut accepted = post_all(&stack, &orders[..100], 8).await;
    stack.await_stored(100, Duration::from_secs(30)).await;
    server.stop();
    // Orders keep coming while the database is down: the producer never notices.
    accepted.extend(post_all(&stack, &orders[100..200], 8).await);
    tokio::time::sleep(Duration::from_secs(5)).await; // the outage itself: a duration, not a condition
    server.start_again().await;
    accepted.extend(post_all(&stack, &orders[200..], 8).await);

    stack.await_stored(300, Duration::from_secs(60)).await;
    await_drained(&stack).await;
    assert_eq!(stack.stored_count().await, 300);
    assert_eq!(
        stack.queues.dlq_depth().await,
        0,
        "no valid order reached the DLQ"
    );
    assert_eq!(
        stored_message_ids(&stack).await,
        accepted,
        "the backoff covered the outage: every order was stored from the message the producer sent"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_many_times_longer_than_the_backoff_requeues_orders_and_stores_each_once() {
    let server = PostgresServer::start().await;
    // 3 receives: postponed 2 s after the first, requeued on the second. The
    // outage lasts 15 s, over seven times the backoff, and twice as long as a
    // record would take to reach the DLQ without requeueing.
    let mut stack = Stack::start(FAST_RETRY, Some(&server.admin_url())).await;
    stack.start_consumer().await;
    let orders: Vec<Value> = (0..100).map(|n| order_request(n, 1)).collect();
    let mut accepted = post_all(&stack, &orders[..20], 8).await;
    stack.await_stored(20, Duration::from_secs(30)).await;

    server.stop();
    accepted.extend(post_all(&stack, &orders[20..], 8).await);
    tokio::time::sleep(Duration::from_secs(15)).await; // the outage itself
    assert_eq!(
        stack.queues.dlq_depth().await,
        0,
        "nothing valid was given up on during the outage"
    );
    server.start_again().await;

    stack.await_stored(100, Duration::from_secs(90)).await;
    await_drained(&stack).await;
    assert_eq!(
        stack.queues.dlq_depth().await,
        0,
        "the DLQ holds only poison"
    );
    let stored = stored_message_ids(&stack).await;
    assert_eq!(
        stored.keys().collect::<HashSet<_>>(),
        accepted.keys().collect::<HashSet<_>>(),
        "every accepted order stored, once"
    );
    let from_copies = accepted
        .iter()
        .filter(|(order_id, message_id)| stored[*order_id] != **message_id)
        .count();
    assert!(
        from_copies >= 80,
        "the orders queued during the outage were stored from requeued copies ({from_copies} of 80)"
    );
    stack.shutdown().await;
}

/// The real handler, watched: did any invocation run past its deadline (and so
/// lose its partial response, as a Lambda timeout does)?
struct Punctual<H> {
    inner: H,
    late: std::sync::atomic::AtomicUsize,
    with_failures: std::sync::atomic::AtomicUsize,
}

impl<H: BatchHandler> BatchHandler for Punctual<H> {
    async fn handle(
        &self,
        event: aws_lambda_events::event::sqs::SqsEvent,
        deadline: tokio::time::Instant,
    ) -> Result<aws_lambda_events::event::sqs::SqsBatchResponse, local_esm::InvocationError> {
        use std::sync::atomic::Ordering::SeqCst;
        let response = self.inner.handle(event, deadline).await;
        if tokio::time::Instant::now() > deadline {
            self.late.fetch_add(1, SeqCst);
        }
        if response
            .as_ref()
            .is_ok_and(|r| !r.batch_item_failures.is_empty())
        {
            self.with_failures.fetch_add(1, SeqCst);
        }
        response
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_frozen_longer_than_the_function_timeout_delays_orders_but_loses_none() {
    use std::sync::atomic::Ordering::SeqCst;
    let server = PostgresServer::start().await;
    let mut stack = Stack::start(WITHIN_BACKOFF, Some(&server.admin_url())).await;
    let handler = std::sync::Arc::new(Punctual {
        inner: InProcess(stack.consumer().await, None),
        late: AtomicUsize::new(0),
        with_failures: AtomicUsize::new(0),
    });
    stack.start_consumer_with(handler.clone()).await;
    let orders: Vec<Value> = (0..200).map(|n| order_request(n, 1)).collect();
    post_all(&stack, &orders[..50], 8).await;
    stack.await_stored(50, Duration::from_secs(30)).await;

    // Frozen, not down: connections stay open and nothing is ever answered.
    server.freeze();
    post_all(&stack, &orders[50..150], 8).await;
    let frozen_for = stack::TEST_EVENT_SOURCE.function_timeout + Duration::from_secs(3);
    tokio::time::sleep(frozen_for).await; // the stall itself: a duration, not a condition
    server.thaw();
    post_all(&stack, &orders[150..], 8).await;

    stack.await_stored(200, Duration::from_secs(90)).await;
    await_drained(&stack).await;
    assert_eq!(stack.stored_count().await, 200);
    assert_eq!(stack.queues.dlq_depth().await, 0);
    assert_eq!(
        handler.late.load(SeqCst),
        0,
        "every invocation answered before its deadline"
    );
    assert!(
        handler.with_failures.load(SeqCst) > 0,
        "records were postponed while the database was frozen"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_followed_by_its_request_id_from_the_http_request_to_its_row() {
    let mut stack = Stack::start(QueueSettings::default(), None).await;
    stack.start_consumer().await;
    let body = order_request(7, 2);
    let response = stack
        .http
        .post(format!("{}/orders", stack.producer_url))
        .header("x-request-id", "req-follow-me-01")
        .json(&body)
        .send()
        .await
        .expect("the producer answers");
    assert_eq!(response.status().as_u16(), 202);
    assert_eq!(
        response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("req-follow-me-01"),
        "echoed to the client"
    );
    stack.await_stored(1, Duration::from_secs(30)).await;
    let row = stack
        .db
        .connect()
        .await
        .query_one(
            "SELECT request_id FROM orders WHERE order_id = $1::text::uuid",
            &[&body["order_id"].as_str().expect("an id")],
        )
        .await
        .expect("the row");
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("req-follow-me-01"),
        "stored with the order"
    );
    stack.shutdown().await;
}
