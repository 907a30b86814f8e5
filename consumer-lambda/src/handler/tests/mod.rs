//! The handler's tests against a fake store and fake queues, by subject:
//! storing a batch (`storing`), poison sent to the DLQ (`poison`), what a
//! store failure does to valid records (`retrying`), and skew (`skew`).
use std::sync::Mutex;

use super::*;
use crate::retry::{Backoff, MaxReceiveCount, PostponeError};
use crate::store::{Fault, Refused, StoreError};

/// Remembers what it was asked to store; fails, stalls, refuses or panics on demand.
#[derive(Default)]
struct FakeStore {
    batches: Mutex<Vec<Vec<String>>>,
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
    /// Refuses the record at this position for a release fault, stores the rest.
    RefuseForRelease(usize),
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
            Behaviour::Refuse(index) | Behaviour::RefuseForRelease(index) => {
                (Some(index), Some(index))
            }
            Behaviour::Duplicate(index) | Behaviour::Conflict(index) => (None, Some(index)),
            Behaviour::Store => (None, None),
        };
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
                    fault: if matches!(self.behaviour, Behaviour::RefuseForRelease(_)) {
                        Fault::Release
                    } else {
                        Fault::Order
                    },
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

    async fn requeue(&self, records: &[Requeued]) -> Vec<MessageId> {
        if self.refuse_requeues {
            return Vec::new();
        }
        self.requeued
            .lock()
            .expect("lock")
            .extend_from_slice(records);
        records.iter().map(|r| r.message_id.clone()).collect()
    }
}

const POLICY: RetryPolicy = RetryPolicy {
    backoff: Backoff::new(Duration::from_secs(10), 2, Duration::from_secs(60)).expect("valid"),
    max_receive_count: MaxReceiveCount::new(5).expect("2 to 1,000"),
};

/// The fixture's `OrderPlaced` body for customer `n`: a fresh order id, one
/// line, received at 2026-11-24T18:27:15Z (which some tests replace).
fn valid_body(n: u32) -> String {
    let received_at = "2026-11-24T18:27:15Z".parse().expect("a timestamp");
    order_contract::fixtures::order_placed_body(n as usize, 1, received_at)
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
            Some(with_currency(valid_body(3), "euro")),
        ),
        record(Some("m-no-body"), None),
    ])
}

/// `body` with its `currency` set to `currency`.
fn with_currency(body: String, currency: &str) -> String {
    let mut body: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
    body["currency"] = currency.into();
    body.to_string()
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

mod poison;
mod retrying;
mod skew;
mod storing;
