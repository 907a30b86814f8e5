use std::sync::Mutex;

use super::*;
use crate::retry::{Backoff, MaxReceiveCount, PostponeError, RequeueOutcome};
use crate::store::{Refused, StoreError};

/// Remembers what it was asked to store; fails, stalls, refuses or panics on demand.
#[derive(Default)]
struct FakeStore {
    batches: Mutex<Vec<Vec<String>>>,
    /// The message ids of the deliveries marked as redelivered.
    redelivered: Mutex<Vec<String>>,
    behaviour: Behaviour,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    #[default]
    Store,
    Fail,
    Panic,
    /// Never answers, as a database frozen mid-statement.
    Stall,
    /// Refuses the record at this position for its data, stores the rest.
    Refuse(usize),
    /// Finds the record at this position stored already, stores the rest.
    Duplicate(usize),
    /// Finds another order stored under the id of the record at this
    /// position and keeps it aside, stores the rest.
    Conflict(usize),
}

impl FakeStore {
    fn with(behaviour: Behaviour) -> Self {
        Self {
            behaviour,
            ..Self::default()
        }
    }

    fn stored_message_ids(&self) -> Vec<String> {
        self.batches.lock().expect("lock").concat()
    }
}

impl OrderStore for FakeStore {
    async fn insert(&self, deliveries: &[&Delivery]) -> Result<StoreOutcome, StoreError> {
        let (refused, not_written) = match self.behaviour {
            Behaviour::Fail => return Err(closed_connection_error().await),
            Behaviour::Panic => panic!("the database driver panicked"),
            Behaviour::Stall => std::future::pending().await,
            Behaviour::Refuse(index) => (Some(index), Some(index)),
            Behaviour::Duplicate(index) | Behaviour::Conflict(index) => (None, Some(index)),
            Behaviour::Store => (None, None),
        };
        self.redelivered.lock().expect("lock").extend(
            deliveries
                .iter()
                .filter(|d| d.redelivered)
                .map(|d| d.message_id.to_string()),
        );
        let ids = deliveries
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != not_written)
            .map(|(_, d)| d.message_id.to_string())
            .collect::<Vec<_>>();
        let stored = ids.len() as u64;
        self.batches.lock().expect("lock").push(ids);
        let not_written_as = match self.behaviour {
            Behaviour::Duplicate(_) => Outcome::Duplicate,
            Behaviour::Conflict(_) => Outcome::Conflict { kept_now: true },
            _ => Outcome::Refused,
        };
        Ok(StoreOutcome {
            by_delivery: (0..deliveries.len())
                .map(|i| {
                    if Some(i) == not_written {
                        not_written_as
                    } else {
                        Outcome::Stored
                    }
                })
                .collect(),
            stored,
            duplicates: u64::from(matches!(self.behaviour, Behaviour::Duplicate(_))),
            conflicts: u64::from(matches!(self.behaviour, Behaviour::Conflict(_))),
            refused: refused
                .map(|index| Refused {
                    index,
                    reason: "date/time field value out of range".into(),
                })
                .into_iter()
                .collect(),
        })
    }
}

/// A real transient `StoreError`: connecting to a port nobody listens on.
async fn closed_connection_error() -> StoreError {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let err = tokio_postgres::connect(
        &format!("postgres://x@127.0.0.1:{port}/x"),
        tokio_postgres::NoTls,
    )
    .await
    .err()
    .expect("nobody listens there");
    StoreError::Write {
        count: 1,
        source: err,
    }
}

/// Records what the handler asked of the queues; can refuse requeues and dead letters.
#[derive(Default)]
struct FakeQueue {
    postponed: Mutex<Vec<Postponed>>,
    requeued: Mutex<Vec<Requeued>>,
    dead_lettered: Mutex<Vec<DeadLetter>>,
    refuse_requeues: bool,
    refuse_dead_letters: bool,
}

impl DeadLetterQueue for &FakeQueue {
    async fn send(&self, records: &[DeadLetter]) -> Vec<MessageId> {
        if self.refuse_dead_letters {
            return Vec::new();
        }
        self.dead_lettered
            .lock()
            .expect("lock")
            .extend_from_slice(records);
        records.iter().map(|r| r.message_id.clone()).collect()
    }
}

impl RetryQueue for &FakeQueue {
    async fn postpone(&self, records: &[Postponed]) -> Result<(), PostponeError> {
        self.postponed
            .lock()
            .expect("lock")
            .extend_from_slice(records);
        Ok(())
    }

    async fn requeue(&self, records: &[Requeued]) -> RequeueOutcome {
        let ids = records.iter().map(|r| r.message_id.clone()).collect();
        if self.refuse_requeues {
            return RequeueOutcome {
                sent: Vec::new(),
                failed: ids,
            };
        }
        self.requeued
            .lock()
            .expect("lock")
            .extend_from_slice(records);
        RequeueOutcome {
            sent: ids,
            failed: Vec::new(),
        }
    }
}

const POLICY: RetryPolicy = RetryPolicy {
    backoff: Backoff::new(Duration::from_secs(10), 2, Duration::from_secs(60)).expect("valid"),
    max_receive_count: MaxReceiveCount::new(5).expect("2 to 1,000"),
};

fn valid_body(n: u32) -> String {
    format!(
        r#"{{"schema_version":1,"order_id":"{}","customer_id":"cust-{n}","currency":"EUR",
            "items":[{{"sku":"BOOK-1","quantity":{q},"unit_price_cents":1299}}],
            "received_at":"2026-11-24T18:27:15Z"}}"#,
        uuid::Uuid::new_v4(),
        q = n % 10 + 1
    )
}

fn record(message_id: Option<&str>, body: Option<String>) -> SqsMessage {
    let mut record = SqsMessage::default();
    record.message_id = message_id.map(str::to_owned);
    record.receipt_handle = message_id.map(|id| format!("handle-{id}"));
    record.body = body;
    record
}

fn received(id: &str, body: &str, receive_count: u32) -> SqsMessage {
    let mut record = record(Some(id), Some(body.to_owned()));
    record
        .attributes
        .insert("ApproximateReceiveCount".into(), receive_count.to_string());
    record
}

fn attribute(data_type: &str, value: &str) -> aws_lambda_events::event::sqs::SqsMessageAttribute {
    let mut attribute = aws_lambda_events::event::sqs::SqsMessageAttribute::default();
    attribute.data_type = Some(data_type.into());
    attribute.string_value = Some(value.into());
    attribute
}

fn event(records: Vec<SqsMessage>) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = records;
    event
}

fn in_a_minute() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

async fn handle(event: SqsEvent, store: &FakeStore) -> Result<SqsBatchResponse, BatchError> {
    let queue = FakeQueue::default();
    Consumer::new(store, &queue, &queue, POLICY)
        .handle(event, in_a_minute())
        .await
        .map(|handled| handled.response)
}

fn failed_ids(response: &SqsBatchResponse) -> Vec<&str> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect()
}

fn mixed_batch() -> SqsEvent {
    event(vec![
        record(Some("m-valid-1"), Some(valid_body(1))),
        record(Some("m-not-json"), Some("this is not json".into())),
        record(Some("m-valid-2"), Some(valid_body(2))),
        record(Some("m-not-an-order"), Some(r#"{"hello":"world"}"#.into())),
        record(
            Some("m-invalid"),
            Some(valid_body(3).replace("\"EUR\"", "\"euro\"")),
        ),
        record(Some("m-no-body"), None),
    ])
}

#[tokio::test]
async fn a_batch_of_valid_orders_is_stored_in_one_call_and_nothing_fails() {
    let store = FakeStore::default();
    let records = (0..5)
        .map(|n| record(Some(&format!("m-{n}")), Some(valid_body(n))))
        .collect();
    let response = handle(event(records), &store).await.expect("handled");
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(store.batches.lock().expect("lock").len(), 1);
    assert_eq!(store.stored_message_ids().len(), 5);
}

/// `(message id, class, detail)` of each record sent to the DLQ.
fn dead_lettered(queue: &FakeQueue) -> Vec<(String, FailureClass, String)> {
    queue
        .dead_lettered
        .lock()
        .expect("lock")
        .iter()
        .map(|d| {
            let detail = d.failure.detail.clone().unwrap_or_default();
            (d.message_id.to_string(), d.failure.class, detail)
        })
        .collect()
}

#[tokio::test]
async fn the_poison_of_a_mixed_batch_goes_to_the_dlq_at_once_with_its_class() {
    let store = FakeStore::default();
    let queue = FakeQueue::default();
    let handled = Consumer::new(&store, &queue, &queue, POLICY)
        .handle(mixed_batch(), in_a_minute())
        .await
        .expect("handled");
    // SQS takes no message without a body: that one is left to the redrive policy.
    assert_eq!(failed_ids(&handled.response), ["m-no-body"]);
    assert_eq!(store.stored_message_ids(), ["m-valid-1", "m-valid-2"]);
    let sent = dead_lettered(&queue);
    let classes: Vec<(&str, FailureClass)> = sent
        .iter()
        .map(|(id, class, _)| (id.as_str(), *class))
        .collect();
    assert_eq!(
        classes,
        [
            ("m-not-json", FailureClass::InvalidJson),
            ("m-not-an-order", FailureClass::InvalidOrder),
            ("m-invalid", FailureClass::InvalidOrder),
        ]
    );
    assert!(sent[2].2.starts_with("`currency`"), "{sent:?}");
    let m = handled.metrics;
    assert_eq!(
        (m.invalid, m.dead_lettered, m.dead_letter_failed),
        (4, 3, 1)
    );
}

#[tokio::test]
async fn a_dead_letter_keeps_the_body_and_attributes_and_says_where_and_when_it_failed() {
    let store = FakeStore::default();
    let queue = FakeQueue::default();
    let newer = valid_body(1).replace("\"schema_version\":1", "\"schema_version\":2");
    let mut poison = received("m-newer", &newer, 3);
    poison
        .message_attributes
        .insert(REQUEST_ID_ATTRIBUTE.into(), attribute("String", "req-7"));
    let before = chrono::Utc::now();
    Consumer::new(&store, &queue, &queue, POLICY)
        .handle(event(vec![poison]), in_a_minute())
        .await
        .expect("handled");
    let sent = queue.dead_lettered.lock().expect("lock").clone();
    let [letter] = sent.as_slice() else {
        panic!("one dead letter: {sent:?}")
    };
    assert_eq!(letter.body, newer);
    assert_eq!(
        letter.attributes[REQUEST_ID_ATTRIBUTE]
            .string_value
            .as_deref(),
        Some("req-7")
    );
    let failure = &letter.failure;
    assert_eq!(failure.class, FailureClass::UnsupportedSchemaVersion);
    assert_eq!(failure.message_id.as_deref(), Some("m-newer"));
    assert_eq!(failure.receive_count, Some(3));
    assert_eq!(failure.consumer_version.as_deref(), Some(CONSUMER_VERSION));
    assert!(failure.failed_at.is_some_and(|at| at >= before));
}

#[tokio::test]
async fn poison_whose_dlq_copy_sqs_does_not_take_stays_unacknowledged() {
    let store = FakeStore::default();
    let queue = FakeQueue {
        refuse_dead_letters: true,
        ..FakeQueue::default()
    };
    let handled = Consumer::new(&store, &queue, &queue, POLICY)
        .handle(mixed_batch(), in_a_minute())
        .await
        .expect("handled");
    assert_eq!(
        failed_ids(&handled.response),
        ["m-no-body", "m-not-json", "m-not-an-order", "m-invalid"]
    );
    assert_eq!(store.stored_message_ids(), ["m-valid-1", "m-valid-2"]);
    let m = handled.metrics;
    assert_eq!((m.dead_lettered, m.dead_letter_failed), (0, 4));
}

#[tokio::test]
async fn the_batch_reports_when_its_oldest_valid_order_was_received_whatever_its_copy() {
    let store = FakeStore::with(Behaviour::Fail);
    let queue = FakeQueue::default();
    let at = |time: &str| valid_body(1).replace("2026-11-24T18:27:15Z", time);
    // A requeued copy is a new message; its order keeps its received_at.
    let requeued = received("m-copy", &at("2026-11-24T17:00:00Z"), 1);
    let batch = event(vec![
        received("m-new", &at("2026-11-24T18:00:00Z"), 1),
        requeued,
        record(Some("m-poison"), Some("{}".into())),
    ]);
    let handled = Consumer::new(&store, &queue, &queue, POLICY)
        .handle(batch, in_a_minute())
        .await
        .expect("handled");
    assert_eq!(
        handled.metrics.oldest_received_at,
        "2026-11-24T17:00:00Z".parse().ok(),
        "the order's own received_at, even on a failing batch"
    );
}

#[tokio::test]
async fn a_row_the_database_refuses_fails_alone_and_its_batch_is_stored() {
    let store = FakeStore::with(Behaviour::Refuse(1));
    let queue = FakeQueue::default();
    let batch = event(vec![
        record(Some("m-0"), Some(valid_body(0))),
        record(Some("m-refused"), Some(valid_body(1))),
        record(Some("m-2"), Some(valid_body(2))),
    ]);
    let handled = Consumer::new(&store, &queue, &queue, POLICY)
        .handle(batch, in_a_minute())
        .await
        .expect("handled");
    assert!(failed_ids(&handled.response).is_empty());
    assert_eq!(store.stored_message_ids(), ["m-0", "m-2"]);
    assert_eq!(
        dead_lettered(&queue),
        [(
            "m-refused".to_owned(),
            FailureClass::RowRefused,
            "date/time field value out of range".to_owned()
        )]
    );
    let m = handled.metrics;
    assert_eq!((m.refused, m.dead_lettered, m.postponed), (1, 1, 0));
    assert!(queue.postponed.lock().expect("lock").is_empty());
}

/// The batch `m-new`, `m-old`, handled with `behaviour` for `m-old`: the
/// message of each record's log line about its order.
async fn said_about_each_order(behaviour: Behaviour) -> Vec<(String, String)> {
    let (captured, _guard) = testkit::CapturedLogs::start();
    let store = FakeStore::with(behaviour);
    let batch = event(vec![
        record(Some("m-new"), Some(valid_body(1))),
        record(Some("m-old"), Some(valid_body(2))),
    ]);
    let response = handle(batch, &store).await.expect("handled");
    assert!(response.batch_item_failures.is_empty());

    let text = captured.text();
    text.lines()
        .filter_map(|line| {
            let (span, message) = line.split_once("consumer_lambda::handler: ")?;
            let id = span.split("message_id=").nth(1)?.split([' ', '}']).next()?;
            message
                .starts_with("order ")
                .then(|| (id.to_owned(), message.to_owned()))
        })
        .collect()
}

#[tokio::test]
async fn the_log_says_whether_an_order_was_stored_or_a_duplicate() {
    assert_eq!(
        said_about_each_order(Behaviour::Duplicate(1)).await,
        [
            ("m-new".to_owned(), "order stored".to_owned()),
            (
                "m-old".to_owned(),
                "order already stored (duplicate)".to_owned()
            )
        ]
    );
}

#[tokio::test]
async fn the_log_says_when_an_order_conflicts_with_a_stored_one_and_was_kept_aside() {
    let said = said_about_each_order(Behaviour::Conflict(1)).await;
    assert_eq!(said[0], ("m-new".to_owned(), "order stored".to_owned()));
    assert_eq!(said[1].0, "m-old");
    assert!(
        said[1].1.starts_with("order conflicts with a stored one")
            && !said[1].1.contains("order stored"),
        "{said:?}"
    );
    assert_eq!(said.len(), 2, "{said:?}");
}

#[tokio::test]
async fn when_the_store_fails_every_valid_record_stays_and_the_poison_still_goes_to_the_dlq() {
    let store = FakeStore::with(Behaviour::Fail);
    let queue = FakeQueue::default();
    let handled = Consumer::new(&store, &queue, &queue, POLICY)
        .handle(mixed_batch(), in_a_minute())
        .await
        .expect("handled");
    let mut failed = failed_ids(&handled.response);
    failed.sort_unstable();
    assert_eq!(failed, ["m-no-body", "m-valid-1", "m-valid-2"]);
    assert_eq!(dead_lettered(&queue).len(), 3);
}

#[tokio::test]
async fn a_record_whose_storing_panics_is_reported_failed_never_acknowledged() {
    let store = FakeStore::with(Behaviour::Panic);
    let response = handle(mixed_batch(), &store)
        .await
        .expect("a panic is contained");
    let mut failed = failed_ids(&response);
    failed.sort_unstable();
    assert_eq!(failed, ["m-no-body", "m-valid-1", "m-valid-2"]);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_database_is_abandoned_in_time_to_postpone_and_answer() {
    let store = FakeStore::with(Behaviour::Stall);
    let queue = FakeQueue::default();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    let batch = event(vec![
        received("a", &valid_body(1), 1),
        received("b", &valid_body(2), 2),
    ]);
    let handled = Consumer::new(&store, &queue, &queue, POLICY)
        .handle(batch, deadline)
        .await
        .expect("handled");
    assert_eq!(
        Instant::now() - started,
        Duration::from_secs(30) - DEADLINE_MARGIN,
        "stops waiting exactly at the margin"
    );
    assert_eq!(failed_ids(&handled.response), ["a", "b"]);
    let delays: Vec<u64> = queue
        .postponed
        .lock()
        .expect("lock")
        .iter()
        .map(|p| p.delay.as_secs())
        .collect();
    assert_eq!(delays, [10, 20]);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_already_inside_the_margin_postpones_without_waiting() {
    let store = FakeStore::with(Behaviour::Stall);
    let queue = FakeQueue::default();
    let started = Instant::now();
    let handled = Consumer::new(&store, &queue, &queue, POLICY)
        .handle(
            event(vec![received("a", &valid_body(1), 1)]),
            started + Duration::from_secs(2),
        )
        .await
        .expect("handled");
    assert_eq!(Instant::now(), started);
    assert_eq!(failed_ids(&handled.response), ["a"]);
}

#[tokio::test]
async fn a_store_failure_postpones_valid_records_by_their_receive_count_and_dead_letters_poison() {
    let store = FakeStore::with(Behaviour::Fail);
    let queue = FakeQueue::default();
    let batch = event(vec![
        received("first", &valid_body(1), 1),
        received("poison", "{}", 3),
        received("third", &valid_body(3), 3),
    ]);
    let handled = Consumer::new(&store, &queue, &queue, POLICY)
        .handle(batch, in_a_minute())
        .await
        .expect("handled");
    assert_eq!(failed_ids(&handled.response), ["first", "third"]);
    assert_eq!((handled.metrics.invalid, handled.metrics.postponed), (1, 2));
    assert_eq!(dead_lettered(&queue)[0].0, "poison");
    let postponed: Vec<(String, String, u64)> = queue
        .postponed
        .lock()
        .expect("lock")
        .iter()
        .map(|p| {
            (
                p.message_id.to_string(),
                p.receipt_handle.clone(),
                p.delay.as_secs(),
            )
        })
        .collect();
    assert_eq!(
        postponed,
        [
            ("first".into(), "handle-first".into(), 10),
            ("third".into(), "handle-third".into(), 40)
        ]
    );
}

#[tokio::test]
async fn a_record_near_its_last_receive_is_requeued_and_acknowledged_once_the_copy_is_sent() {
    let store = FakeStore::with(Behaviour::Fail);
    let queue = FakeQueue::default();
    let body = valid_body(1);
    let mut near_the_end = received("old", &body, 4);
    near_the_end
        .message_attributes
        .insert(REQUEST_ID_ATTRIBUTE.into(), attribute("String", "req-7"));
    let batch = event(vec![near_the_end, received("young", &valid_body(2), 1)]);
    let handled = Consumer::new(&store, &queue, &queue, POLICY)
        .handle(batch, in_a_minute())
        .await
        .expect("handled");
    // The original is acknowledged (the copy carries it on); the young one waits.
    assert_eq!(failed_ids(&handled.response), ["young"]);
    assert_eq!(
        (handled.metrics.requeued, handled.metrics.postponed),
        (1, 1)
    );
    let requeued = queue.requeued.lock().expect("lock");
    assert_eq!(requeued.len(), 1);
    assert_eq!(requeued[0].body, body);
    assert_eq!(requeued[0].generation, 1);
    assert!(requeued[0].attributes.contains_key(REQUEST_ID_ATTRIBUTE));
}

#[tokio::test]
async fn a_record_received_before_or_requeued_tells_the_store_it_may_be_stored_already() {
    let store = FakeStore::default();
    let mut requeued = received("requeued", &valid_body(3), 1);
    requeued
        .message_attributes
        .insert(REQUEUED_ATTRIBUTE.into(), attribute("Number", "2"));
    let batch = event(vec![
        received("first", &valid_body(1), 1),
        received("again", &valid_body(2), 2),
        requeued,
        record(Some("no-count"), Some(valid_body(4))),
    ]);
    handle(batch, &store).await.expect("handled");
    assert_eq!(
        *store.redelivered.lock().expect("lock"),
        ["again", "requeued"]
    );
}

#[tokio::test]
async fn a_record_whose_copy_was_not_sent_stays_on_the_queue() {
    let store = FakeStore::with(Behaviour::Fail);
    let queue = FakeQueue {
        refuse_requeues: true,
        ..FakeQueue::default()
    };
    let handled = Consumer::new(&store, &queue, &queue, POLICY)
        .handle(
            event(vec![received("old", &valid_body(1), 4)]),
            in_a_minute(),
        )
        .await
        .expect("handled");
    assert_eq!(failed_ids(&handled.response), ["old"]);
    assert_eq!(
        (handled.metrics.requeued, handled.metrics.requeue_failed),
        (0, 1)
    );
}

#[tokio::test]
async fn a_record_without_a_message_id_fails_the_batch_before_anything_is_stored() {
    // Its outcome could not be named in the response (an empty
    // `itemIdentifier` fails the batch anyway), whatever the store would do.
    for behaviour in [Behaviour::Store, Behaviour::Fail, Behaviour::Panic] {
        for (id, body) in [(None, valid_body(9)), (Some(""), "not json".to_owned())] {
            let store = FakeStore::with(behaviour);
            let mut batch = mixed_batch();
            batch.records.push(record(id, Some(body)));
            let err = handle(batch, &store).await.expect_err("cannot be reported");
            assert!(matches!(err, BatchError::MissingMessageId));
            assert!(store.stored_message_ids().is_empty());
        }
    }
}

#[tokio::test]
async fn an_empty_batch_touches_nothing() {
    let store = FakeStore::with(Behaviour::Panic);
    let response = handle(event(vec![]), &store).await.expect("handled");
    assert!(response.batch_item_failures.is_empty());
}

#[test]
fn only_a_well_formed_request_id_is_taken_from_the_message() {
    let with = |value: &str| {
        let mut record = SqsMessage::default();
        record
            .message_attributes
            .insert(REQUEST_ID_ATTRIBUTE.into(), attribute("String", value));
        request_id(&record).map(|id| id.to_string())
    };
    assert_eq!(with("req-01HZX"), Some("req-01HZX".into()));
    assert_eq!(with(""), None);
    assert_eq!(with("has space"), None);
    assert_eq!(with("nul\0byte"), None);
    assert_eq!(with(&"x".repeat(129)), None);
    assert_eq!(request_id(&SqsMessage::default()), None);
}

#[tokio::test]
async fn a_lambda_event_in_json_is_handled_as_aws_sends_it() {
    let json = serde_json::json!({"Records": [
        {"messageId": "059f36b4-87a3-44ab-83d2-661975830a7d", "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
         "body": valid_body(1), "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1545082649183"},
         "messageAttributes": {}, "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
         "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-2:123456789012:my-queue", "awsRegion": "us-east-2"},
        {"messageId": "2e1424d4-f796-459a-8184-9c92662be6da", "receiptHandle": "AQEBzWwaftRI0KuVm4tP+/7q1rGgNqicHq",
         "body": "{}", "attributes": {"ApproximateReceiveCount": "3"}, "messageAttributes": {},
         "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-2:123456789012:my-queue", "awsRegion": "us-east-2"}
    ]});
    let event: SqsEvent = serde_json::from_value(json).expect("an SQS event");
    let store = FakeStore::default();
    // The poison stays unacknowledged when the DLQ refuses its copy.
    let queue = FakeQueue {
        refuse_dead_letters: true,
        ..FakeQueue::default()
    };
    let response = Consumer::new(&store, &queue, &queue, POLICY)
        .handle(event, in_a_minute())
        .await
        .expect("handled")
        .response;
    assert_eq!(
        failed_ids(&response),
        ["2e1424d4-f796-459a-8184-9c92662be6da"]
    );
    let body = serde_json::to_value(&response).expect("serialises");
    assert_eq!(
        body,
        serde_json::json!({"batchItemFailures": [{"itemIdentifier": "2e1424d4-f796-459a-8184-9c92662be6da"}]})
    );
}
