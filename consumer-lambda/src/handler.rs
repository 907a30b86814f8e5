//! The Lambda handler: one SQS batch in, the records that were not stored out.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures::FutureExt;
use order_contract::OrderPlaced;
use tracing::{Instrument, Span, error, info, info_span, warn};

use crate::metrics::BatchMetrics;
use crate::retry::{Backoff, Postpone, Postponed};
use crate::store::{Accepted, InsertOutcome, OrderStore};

/// How long before the invocation's deadline the handler stops waiting on the
/// database, to postpone what it could not store and answer in time. An
/// invocation that runs into the function timeout returns no partial response,
/// and Lambda retries its whole batch without any backoff.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(5);

/// The batch cannot be answered record by record; Lambda then retries all of it.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// An empty `itemIdentifier` would make Lambda fail the whole batch anyway; say why.
    #[error("a record of the batch has no messageId, so its failure cannot be reported")]
    MissingMessageId,
}

/// The answer for Lambda and what the batch did.
#[derive(Debug, Clone, Default)]
pub struct Handled {
    pub response: SqsBatchResponse,
    pub metrics: BatchMetrics,
}

/// The consumer: a store for orders and a way to postpone records on transient failures.
/// Built once per execution environment; [`Consumer::handle`] runs once per batch.
pub struct Consumer<S, P> {
    store: S,
    postpone: P,
    backoff: Backoff,
}

/// A valid record waiting for the bulk insert, with what a retry needs.
struct Pending {
    span: Span,
    receipt_handle: Option<String>,
    receive_count: u32,
}

impl<S: OrderStore, P: Postpone> Consumer<S, P> {
    pub fn new(store: S, postpone: P, backoff: Backoff) -> Self {
        Self {
            store,
            postpone,
            backoff,
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Handles one batch: every record is parsed on its own, the valid orders go
    /// to the store in one bulk insert, and the response names exactly the records
    /// that were not stored, so SQS redelivers those and deletes the rest.
    ///
    /// Invalid records are permanent failures (they reach the DLQ after
    /// `maxReceiveCount`). A store failure is transient: every valid record of the
    /// batch fails and is postponed with exponential backoff, so an outage does not
    /// exhaust its receives. A panic, in parsing or in storing, fails what it
    /// touched: an order is never acknowledged unless it is in the database.
    pub async fn handle(&self, event: SqsEvent) -> Result<Handled, BatchError> {
        let started = Instant::now();
        let records = event.records.len();
        let mut failed: Vec<String> = Vec::new();
        let mut orders: Vec<Accepted> = Vec::with_capacity(records);
        let mut pending: Vec<Pending> = Vec::with_capacity(records);

        for record in event.records {
            let message_id = record.message_id.clone().unwrap_or_default();
            let span =
                info_span!("record", message_id = %message_id, order_id = tracing::field::Empty);
            match span.in_scope(|| parse(&record)) {
                Some(placed) => {
                    span.record("order_id", tracing::field::display(placed.order.order_id()));
                    pending.push(Pending {
                        span,
                        receive_count: receive_count(&record),
                        receipt_handle: record.receipt_handle,
                    });
                    orders.push(Accepted { message_id, placed });
                }
                None if message_id.is_empty() => return Err(BatchError::MissingMessageId),
                None => failed.push(message_id),
            }
        }

        let rejected = failed.len();
        let outcome = if orders.is_empty() {
            InsertOutcome::default()
        } else {
            match self.store_all(&orders).await {
                Some(outcome) => outcome,
                None => {
                    self.retry_later(&orders, &pending, &mut failed).await?;
                    InsertOutcome::default()
                }
            }
        };

        let metrics = BatchMetrics {
            records,
            stored: outcome.stored,
            duplicates: outcome.duplicates,
            rejected,
            retried: failed.len() - rejected,
            latency: started.elapsed(),
        };
        info!(
            records,
            stored = metrics.stored,
            duplicates = metrics.duplicates,
            rejected,
            retried = metrics.retried,
            latency_ms = metrics.latency.as_millis() as u64,
            "batch handled"
        );
        let mut response = SqsBatchResponse::default();
        response.set_failures(failed);
        Ok(Handled { response, metrics })
    }

    /// The bulk insert; `None` when it failed or panicked (already logged).
    async fn store_all(&self, orders: &[Accepted]) -> Option<InsertOutcome> {
        let insert = AssertUnwindSafe(self.store.insert(orders)).catch_unwind();
        match insert
            .instrument(info_span!("bulk_insert", count = orders.len()))
            .await
        {
            Ok(Ok(outcome)) => Some(outcome),
            Ok(Err(err)) => {
                error!(error = %error_chain(&err), count = orders.len(), "storing the batch failed; its valid records will be retried");
                None
            }
            Err(panic) => {
                error!(
                    panic = panic_message(&*panic),
                    count = orders.len(),
                    "storing the batch panicked; its valid records will be retried"
                );
                None
            }
        }
    }

    /// Fails every valid record and hides it for a backoff that grows with its receives.
    async fn retry_later(
        &self,
        orders: &[Accepted],
        pending: &[Pending],
        failed: &mut Vec<String>,
    ) -> Result<(), BatchError> {
        let mut postponed = Vec::with_capacity(orders.len());
        for (order, pending) in orders.iter().zip(pending) {
            if order.message_id.is_empty() {
                return Err(BatchError::MissingMessageId);
            }
            let delay = self.backoff.delay(pending.receive_count);
            pending.span.in_scope(|| {
                warn!(
                    receive_count = pending.receive_count,
                    retry_in_s = delay.as_secs(),
                    "not stored; will be retried"
                )
            });
            failed.push(order.message_id.clone());
            if let Some(receipt_handle) = &pending.receipt_handle {
                postponed.push(Postponed {
                    message_id: order.message_id.clone(),
                    receipt_handle: receipt_handle.clone(),
                    delay,
                });
            }
        }
        if let Err(err) = self.postpone.postpone(&postponed).await {
            warn!(error = %err, "backoff not applied");
        }
        Ok(())
    }
}

/// Convenience for callers without retry scheduling (tests, tools): no postponing.
pub async fn handle_batch<S: OrderStore>(event: SqsEvent, store: S) -> Result<Handled, BatchError> {
    Consumer::new(store, crate::retry::NoPostpone, Backoff::default())
        .handle(event)
        .await
}

/// Lambda's `ApproximateReceiveCount` (1 on the first delivery).
fn receive_count(record: &SqsMessage) -> u32 {
    record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|count| count.parse().ok())
        .unwrap_or(1)
}

/// Parses one record, logging why it is rejected; `None` means a permanent failure.
fn parse(record: &SqsMessage) -> Option<OrderPlaced> {
    let Some(body) = record.body.as_deref() else {
        warn!("rejected: the message has no body");
        return None;
    };
    match std::panic::catch_unwind(|| OrderPlaced::from_json(body)) {
        Ok(Ok(placed)) => Some(placed),
        Ok(Err(err)) => {
            warn!(error = %err, bytes = body.len(), "rejected: not a valid OrderPlaced message");
            None
        }
        Err(panic) => {
            error!(
                panic = panic_message(&*panic),
                "rejected: parsing the message panicked"
            );
            None
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

/// `error: cause: cause`, so one log line tells the whole story.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::store::StoreError;

    /// Remembers what it was asked to store; fails or panics on demand.
    #[derive(Default)]
    struct FakeStore {
        batches: Mutex<Vec<Vec<String>>>,
        behaviour: Behaviour,
    }

    #[derive(Default, Clone, Copy)]
    enum Behaviour {
        #[default]
        Store,
        Fail,
        Panic,
    }

    impl FakeStore {
        fn failing(behaviour: Behaviour) -> Self {
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
        async fn insert(&self, orders: &[Accepted]) -> Result<InsertOutcome, StoreError> {
            match self.behaviour {
                Behaviour::Store => {
                    let ids = orders.iter().map(|o| o.message_id.clone()).collect();
                    self.batches.lock().expect("lock").push(ids);
                    Ok(InsertOutcome {
                        stored: orders.len() as u64,
                        duplicates: 0,
                    })
                }
                Behaviour::Fail => Err(StoreError::Migrate(
                    crate::migrations::MigrationError::from(closed_connection_error().await),
                )),
                Behaviour::Panic => panic!("the database driver panicked"),
            }
        }
    }

    /// A real `tokio_postgres::Error`, from connecting to a port nobody listens on.
    async fn closed_connection_error() -> tokio_postgres::Error {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        tokio_postgres::connect(
            &format!("postgres://x@127.0.0.1:{port}/x"),
            tokio_postgres::NoTls,
        )
        .await
        .err()
        .expect("nobody listens there")
    }

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
        record.body = body;
        record
    }

    fn event(records: Vec<SqsMessage>) -> SqsEvent {
        let mut event = SqsEvent::default();
        event.records = records;
        event
    }

    async fn handle(event: SqsEvent, store: &FakeStore) -> Result<SqsBatchResponse, BatchError> {
        handle_batch(event, store)
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
    async fn a_batch_of_valid_orders_is_stored_in_one_insert_and_nothing_fails() {
        let store = FakeStore::default();
        let records = (0..5)
            .map(|n| record(Some(&format!("m-{n}")), Some(valid_body(n))))
            .collect();
        let response = handle(event(records), &store).await.expect("handled");
        assert!(response.batch_item_failures.is_empty());
        assert_eq!(store.batches.lock().expect("lock").len(), 1);
        assert_eq!(store.stored_message_ids().len(), 5);
    }

    #[tokio::test]
    async fn only_the_bad_records_of_a_mixed_batch_are_reported_failed() {
        let store = FakeStore::default();
        let response = handle(mixed_batch(), &store).await.expect("handled");
        assert_eq!(
            failed_ids(&response),
            ["m-not-json", "m-not-an-order", "m-invalid", "m-no-body"]
        );
        assert_eq!(store.stored_message_ids(), ["m-valid-1", "m-valid-2"]);
    }

    #[tokio::test]
    async fn when_the_store_fails_every_record_is_reported_failed() {
        let store = FakeStore::failing(Behaviour::Fail);
        let response = handle(mixed_batch(), &store).await.expect("handled");
        let mut failed = failed_ids(&response);
        failed.sort_unstable();
        assert_eq!(
            failed,
            [
                "m-invalid",
                "m-no-body",
                "m-not-an-order",
                "m-not-json",
                "m-valid-1",
                "m-valid-2"
            ]
        );
    }

    #[tokio::test]
    async fn a_record_whose_storing_panics_is_reported_failed_never_acknowledged() {
        let store = FakeStore::failing(Behaviour::Panic);
        let response = handle(mixed_batch(), &store)
            .await
            .expect("a panic is contained");
        let failed = failed_ids(&response);
        assert!(
            failed.contains(&"m-valid-1") && failed.contains(&"m-valid-2"),
            "{failed:?}"
        );
        assert_eq!(failed.len(), 6);
    }

    #[tokio::test]
    async fn the_response_never_contains_an_empty_item_identifier() {
        for behaviour in [Behaviour::Store, Behaviour::Fail, Behaviour::Panic] {
            let store = FakeStore::failing(behaviour);
            // A valid record without an id can be stored without naming it...
            let mut batch = mixed_batch();
            batch.records.push(record(None, Some(valid_body(9))));
            batch.records.push(record(Some(""), Some(valid_body(8))));
            match handle(batch, &store).await {
                Ok(response) => {
                    assert!(matches!(behaviour, Behaviour::Store));
                    assert!(
                        response
                            .batch_item_failures
                            .iter()
                            .all(|f| !f.item_identifier.is_empty())
                    );
                }
                // ...but when it must be reported failed, the whole batch fails instead.
                Err(BatchError::MissingMessageId) => {
                    assert!(!matches!(behaviour, Behaviour::Store))
                }
            }
        }
    }

    #[tokio::test]
    async fn an_invalid_record_without_a_message_id_fails_the_whole_batch() {
        let store = FakeStore::default();
        let batch = event(vec![
            record(Some("m-1"), Some(valid_body(1))),
            record(None, Some("not json".into())),
        ]);
        let err = handle(batch, &store).await.expect_err("cannot be reported");
        assert!(matches!(err, BatchError::MissingMessageId));
    }

    #[tokio::test]
    async fn an_empty_batch_touches_nothing() {
        let store = FakeStore::failing(Behaviour::Panic);
        let response = handle(event(vec![]), &store).await.expect("handled");
        assert!(response.batch_item_failures.is_empty());
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
        let response = handle(event, &store).await.expect("handled");
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
}

#[cfg(test)]
mod backoff_tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::retry::PostponeError;
    use crate::store::StoreError;

    struct DownStore;

    impl OrderStore for DownStore {
        async fn insert(&self, _orders: &[Accepted]) -> Result<InsertOutcome, StoreError> {
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
            Err(StoreError::Migrate(
                crate::migrations::MigrationError::from(err),
            ))
        }
    }

    #[derive(Default)]
    struct Recorded(Mutex<Vec<Postponed>>);

    impl Postpone for &Recorded {
        async fn postpone(&self, records: &[Postponed]) -> Result<(), PostponeError> {
            self.0.lock().expect("lock").extend_from_slice(records);
            Ok(())
        }
    }

    fn record(id: &str, body: &str, receive_count: u32) -> SqsMessage {
        let mut record = SqsMessage::default();
        record.message_id = Some(id.to_owned());
        record.receipt_handle = Some(format!("handle-{id}"));
        record.body = Some(body.to_owned());
        record
            .attributes
            .insert("ApproximateReceiveCount".into(), receive_count.to_string());
        record
    }

    fn valid() -> String {
        format!(
            r#"{{"schema_version":1,"order_id":"{}","customer_id":"c","currency":"EUR","items":[{{"sku":"S","quantity":1,"unit_price_cents":1}}],"received_at":"2026-11-24T18:27:15Z"}}"#,
            uuid::Uuid::new_v4()
        )
    }

    #[tokio::test]
    async fn a_store_failure_postpones_valid_records_by_their_receive_count_and_leaves_poison_alone()
     {
        let recorded = Recorded::default();
        let backoff = Backoff {
            base: Duration::from_secs(10),
            multiplier: 2,
        };
        let consumer = Consumer::new(DownStore, &recorded, backoff);
        let mut event = SqsEvent::default();
        event.records = vec![
            record("first", &valid(), 1),
            record("poison", "{}", 4),
            record("third", &valid(), 3),
        ];
        let handled = consumer.handle(event).await.expect("handled");
        assert_eq!(handled.response.batch_item_failures.len(), 3);
        assert_eq!((handled.metrics.rejected, handled.metrics.retried), (1, 2));
        let postponed = recorded.0.lock().expect("lock").clone();
        let delays: Vec<(&str, &str, u64)> = postponed
            .iter()
            .map(|p| {
                (
                    p.message_id.as_str(),
                    p.receipt_handle.as_str(),
                    p.delay.as_secs(),
                )
            })
            .collect();
        assert_eq!(
            delays,
            [("first", "handle-first", 20), ("third", "handle-third", 80)]
        );
    }

    #[tokio::test]
    async fn a_stored_batch_postpones_nothing() {
        struct Fine;
        impl OrderStore for Fine {
            async fn insert(&self, orders: &[Accepted]) -> Result<InsertOutcome, StoreError> {
                Ok(InsertOutcome {
                    stored: orders.len() as u64,
                    duplicates: 0,
                })
            }
        }
        let recorded = Recorded::default();
        let consumer = Consumer::new(Fine, &recorded, Backoff::default());
        let mut event = SqsEvent::default();
        event.records = vec![record("a", &valid(), 2), record("poison", "nope", 1)];
        let handled = consumer.handle(event).await.expect("handled");
        assert_eq!(handled.metrics.stored, 1);
        assert!(recorded.0.lock().expect("lock").is_empty());
    }
}
