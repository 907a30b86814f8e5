//! The Lambda handler: one SQS batch in, the records not acknowledged out.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures::FutureExt;
use order_contract::{
    Failure, FailureClass, OrderPlaced, REQUEST_ID_ATTRIBUTE, RequestId, SCHEMA_VERSION,
};
use support::error_chain;
use tokio::time::Instant;
use tracing::{Instrument, Span, error, info, info_span, warn};

use crate::dead_letter::{CONSUMER_VERSION, DeadLetter, DeadLetterQueue};
use crate::message_id::MessageId;
use crate::metrics::BatchMetrics;
use crate::retry::{Postponed, REQUEUED_ATTRIBUTE, Requeued, Retry, RetryPolicy, RetryQueue};
use crate::store::{Delivery, Fault, OrderStore, Outcome, StoreOutcome};

/// How long before the invocation's deadline the handler stops waiting on the
/// database, to postpone what it could not store and answer in time: a timed
/// out invocation has its whole batch retried without any backoff.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(5);

/// Kept back from the deadline even for the queue calls, so the answer gets out.
const ANSWER_MARGIN: Duration = Duration::from_millis(500);

/// The batch cannot be answered record by record; Lambda then retries all of it.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("a record of the batch has no messageId, so its failure could not be reported")]
    MissingMessageId,
}

/// The answer for Lambda and what the batch did.
#[derive(Debug, Clone, Default)]
pub struct Handled {
    pub response: SqsBatchResponse,
    pub metrics: BatchMetrics,
}

/// The consumer: a store for orders, a queue to retry through and a
/// dead-letter queue for poison.
pub struct Consumer<S, Q, D> {
    store: S,
    queue: Q,
    dead_letters: D,
    policy: RetryPolicy,
    /// The newest `schema_version` this consumer reads.
    reads_up_to: u32,
}

/// A record that holds a valid order.
struct Valid {
    span: Span,
    message: SqsMessage,
    delivery: Delivery,
}

/// A record that holds a valid order not stored now, to be retried later.
struct Waiting {
    span: Span,
    message_id: MessageId,
    message: SqsMessage,
    /// [`STORE_FAILED`], the database's trouble; any other reason is skew
    /// (metric `Skewed`): [`NEWER_VERSION`] or [`RELEASE_FAULT`].
    reason: &'static str,
}

const STORE_FAILED: &str = "store_failed";
/// A `schema_version` newer than this build reads.
const NEWER_VERSION: &str = "newer_schema_version";
/// PostgreSQL refused it for a schema this build did not make.
const RELEASE_FAULT: &str = "release_fault";

impl Waiting {
    fn of(record: &Valid, reason: &'static str) -> Self {
        Self {
            span: record.span.clone(),
            message_id: record.delivery.message_id.clone(),
            message: record.message.clone(),
            reason,
        }
    }
}

impl<S: OrderStore, Q: RetryQueue, D: DeadLetterQueue> Consumer<S, Q, D> {
    pub fn new(store: S, queue: Q, dead_letters: D, policy: RetryPolicy) -> Self {
        Self {
            store,
            queue,
            dead_letters,
            policy,
            reads_up_to: SCHEMA_VERSION,
        }
    }

    /// A consumer that reads `schema_version`s up to `newest`: how a test
    /// stands in for the next release.
    pub fn reading_up_to(self, newest: u32) -> Self {
        Self {
            reads_up_to: newest,
            ..self
        }
    }

    /// Handles one batch that must be answered by `deadline`: each record is
    /// parsed on its own, the valid orders are stored together, and the
    /// response names exactly the records not acknowledged.
    ///
    /// Poison (an invalid record, a row PostgreSQL refuses for its data) goes
    /// to the DLQ at once and is acknowledged once SQS has the copy
    /// ([`crate::dead_letter`]). Any other store failure, and skew (a newer
    /// `schema_version`, a [`Fault::Release`]), is retried later
    /// ([`crate::retry`]). The store gets the time up to [`DEADLINE_MARGIN`]
    /// before the deadline, so an invocation never runs into its timeout. An
    /// order is never acknowledged unless it is in the database or a copy of
    /// it is on a queue, even after a panic.
    ///
    /// A record without a message id fails the batch before anything is
    /// stored: its outcome could not be reported (SQS always sets one).
    pub async fn handle(&self, event: SqsEvent, deadline: Instant) -> Result<Handled, BatchError> {
        let started = Instant::now();
        let mut metrics = BatchMetrics {
            records: event.records.len(),
            ..BatchMetrics::default()
        };
        let mut unacknowledged: Vec<MessageId> = Vec::new();
        let mut valid: Vec<Valid> = Vec::with_capacity(event.records.len());
        let mut waiting: Vec<Waiting> = Vec::new();
        let mut poison: Vec<(Span, DeadLetter)> = Vec::new();

        for mut message in event.records {
            let message_id = message
                .message_id
                .take()
                .and_then(|id| MessageId::new(id).ok())
                .ok_or(BatchError::MissingMessageId)?;
            let span = info_span!(
                "record",
                message_id = %message_id,
                order_id = tracing::field::Empty,
                request_id = tracing::field::Empty
            );
            match span.in_scope(|| parse(&message, self.reads_up_to)) {
                Parsed::Order(placed) => {
                    let request_id = request_id(&message);
                    span.record("order_id", tracing::field::display(placed.order.order_id()));
                    if let Some(id) = &request_id {
                        span.record("request_id", id.as_str());
                    }
                    valid.push(Valid {
                        span,
                        message,
                        delivery: Delivery {
                            message_id,
                            placed,
                            request_id,
                        },
                    });
                }
                Parsed::Newer => waiting.push(Waiting {
                    span,
                    message_id,
                    message,
                    reason: NEWER_VERSION,
                }),
                Parsed::Poison(class, detail) => {
                    metrics.invalid += 1;
                    poison.push((span, dead_letter(message_id, message, class, detail)));
                }
                Parsed::Unreadable => {
                    metrics.invalid += 1;
                    metrics.dead_letter_failed += 1;
                    unacknowledged.push(message_id);
                }
            }
        }

        metrics.oldest_received_at = valid.iter().map(|v| v.delivery.placed.received_at).min();
        if !valid.is_empty() {
            let store_by = deadline.checked_sub(DEADLINE_MARGIN).unwrap_or(started);
            match self.store_all(&valid, store_by).await {
                Some(outcome) => {
                    metrics.stored = outcome.stored;
                    metrics.duplicates = outcome.duplicates;
                    metrics.conflicts = outcome.conflicts;
                    for (record, outcome) in valid.iter().zip(&outcome.by_delivery) {
                        record.span.in_scope(|| log_outcome(*outcome));
                    }
                    // Refusals are rare: their records are copied, the batch is not moved.
                    for refused in outcome.refused {
                        let Some(record) = valid.get(refused.index) else {
                            continue;
                        };
                        if refused.fault == Fault::Release {
                            waiting.push(Waiting::of(record, RELEASE_FAULT));
                        } else {
                            metrics.refused += 1;
                            let letter = dead_letter(
                                record.delivery.message_id.clone(),
                                record.message.clone(),
                                FailureClass::RowRefused,
                                refused.reason,
                            );
                            poison.push((record.span.clone(), letter));
                        }
                    }
                }
                None => waiting.extend(valid.iter().map(|r| Waiting::of(r, STORE_FAILED))),
            }
        }

        if !waiting.is_empty() {
            self.retry_later(waiting, deadline, &mut unacknowledged, &mut metrics)
                .await;
        }

        if !poison.is_empty() {
            self.dead_letter(poison, deadline, &mut unacknowledged, &mut metrics)
                .await;
        }

        metrics.latency = started.elapsed();
        info!(%metrics, "batch handled");
        let mut response = SqsBatchResponse::default();
        response.set_failures(unacknowledged.into_iter().map(String::from));
        Ok(Handled { response, metrics })
    }

    /// The store call, bounded by `by`; `None` when it failed, panicked or ran
    /// out of time (already logged).
    async fn store_all(&self, valid: &[Valid], by: Instant) -> Option<StoreOutcome> {
        let deliveries: Vec<&Delivery> = valid.iter().map(|v| &v.delivery).collect();
        let count = deliveries.len();
        let insert = AssertUnwindSafe(self.store.insert(&deliveries))
            .catch_unwind()
            .instrument(info_span!("store", count));
        match tokio::time::timeout_at(by, insert).await {
            Ok(Ok(Ok(outcome))) => Some(outcome),
            Ok(Ok(Err(err))) => {
                // The SQLSTATE names the class at once: 28 a refused login, 42 a
                // missing table or privilege, 08 and 57 the server going away.
                error!(
                    error = %error_chain(&err),
                    sqlstate = crate::store::sqlstate(&err).unwrap_or("none"),
                    count,
                    "storing the batch failed; its valid records will be retried"
                );
                None
            }
            Ok(Err(panic)) => {
                error!(
                    panic = panic_message(&*panic),
                    count, "storing the batch panicked; its valid records will be retried"
                );
                None
            }
            Err(_elapsed) => {
                error!(
                    count,
                    margin_s = DEADLINE_MARGIN.as_secs(),
                    "the database did not answer before the invocation's deadline; the connection is abandoned and the valid records will be retried"
                );
                None
            }
        }
    }

    /// Sends poison to the DLQ; what SQS did not take stays unacknowledged,
    /// for the redrive policy to move.
    async fn dead_letter(
        &self,
        poison: Vec<(Span, DeadLetter)>,
        deadline: Instant,
        unacknowledged: &mut Vec<MessageId>,
        metrics: &mut BatchMetrics,
    ) {
        let (spans, letters): (Vec<Span>, Vec<DeadLetter>) = poison.into_iter().unzip();
        let by = deadline.checked_sub(ANSWER_MARGIN).unwrap_or(deadline);
        // Past the deadline, whether a copy got out is unknown: the original
        // stays (a copy that did get out is a duplicate in the DLQ).
        let sent: HashSet<MessageId> =
            tokio::time::timeout_at(by, self.dead_letters.send(&letters))
                .await
                .unwrap_or_default()
                .into_iter()
                .collect();
        metrics.dead_lettered = sent.len();
        for (span, record) in spans.into_iter().zip(letters) {
            if sent.contains(&record.message_id) {
                span.in_scope(|| info!(class = %record.failure.class, "sent to the DLQ"));
            } else {
                span.in_scope(|| {
                    error!(
                        class = %record.failure.class,
                        "could not send to the DLQ; the record stays, and the redrive policy moves it after its last receive"
                    )
                });
                metrics.dead_letter_failed += 1;
                unacknowledged.push(record.message_id);
            }
        }
    }

    /// Postpones or requeues every waiting record, as its receive count says;
    /// what is not requeued stays unacknowledged. Skew is counted apart from
    /// the database's failures, which the breaker reads.
    async fn retry_later(
        &self,
        waiting: Vec<Waiting>,
        deadline: Instant,
        unacknowledged: &mut Vec<MessageId>,
        metrics: &mut BatchMetrics,
    ) {
        let mut postponed = Vec::new();
        let mut copies = Vec::new();
        let mut skewed: HashSet<MessageId> = HashSet::new();
        for record in waiting {
            let receive_count = receive_count(&record.message);
            let requeued = requeued(&record.message);
            let (reason, skew) = (record.reason, record.reason != STORE_FAILED);
            if skew {
                metrics.skewed += 1;
                skewed.insert(record.message_id.clone());
            }
            match self.policy.after_failure(receive_count, requeued) {
                Retry::Postpone(delay) => {
                    record.span.in_scope(|| {
                        warn!(
                            reason,
                            receive_count,
                            requeued,
                            retry_in_s = delay.as_secs(),
                            "not stored; will be retried"
                        )
                    });
                    unacknowledged.push(record.message_id.clone());
                    if !skew {
                        metrics.postponed += 1;
                    }
                    if let Some(receipt_handle) = record.message.receipt_handle {
                        postponed.push(Postponed {
                            message_id: record.message_id,
                            receipt_handle,
                            delay,
                        });
                    }
                }
                Retry::Requeue { requeued, delay } => {
                    record.span.in_scope(|| {
                        warn!(
                            reason,
                            receive_count,
                            requeued,
                            "not stored, and few receives are left; sending a fresh copy"
                        )
                    });
                    copies.push(Requeued {
                        message_id: record.message_id,
                        body: record.message.body.unwrap_or_default(),
                        attributes: record.message.message_attributes,
                        requeued,
                        delay,
                    });
                }
            }
        }
        let of_the_database =
            |ids: &[MessageId]| ids.iter().filter(|id| !skewed.contains(id)).count();
        let by = deadline.checked_sub(ANSWER_MARGIN).unwrap_or(deadline);
        let calls =
            futures::future::join(self.queue.postpone(&postponed), self.queue.requeue(&copies));
        let sent = match tokio::time::timeout_at(by, calls).await {
            Ok((postponing, sent)) => {
                if let Err(err) = postponing {
                    warn!(error = %err, "backoff not applied");
                }
                if sent.len() < copies.len() {
                    error!(
                        records = copies.len() - sent.len(),
                        "could not requeue; these records stay and are retried once more"
                    );
                }
                sent
            }
            Err(_elapsed) => {
                // Whether the copies got out is unknown: keep the originals (a
                // copy that did get out is a duplicate the store absorbs).
                error!(
                    "SQS did not answer before the deadline; records not postponed return after the visibility timeout"
                );
                Vec::new()
            }
        };
        // A set: a batch may requeue thousands of records at once.
        let acknowledged: HashSet<&MessageId> = sent.iter().collect();
        let failed: Vec<MessageId> = copies
            .into_iter()
            .map(|r| r.message_id)
            .filter(|id| !acknowledged.contains(id))
            .collect();
        metrics.requeued = of_the_database(&sent);
        metrics.requeue_failed = of_the_database(&failed);
        unacknowledged.extend(failed);
    }
}

/// One line per order in its span (message id, order id, request id), saying
/// what became of it: how an order is followed to its row. scripts/deploy's
/// canary check greps for `order (already )?stored`: a canary stored now or
/// before passes, one in conflict does not.
fn log_outcome(outcome: Outcome) {
    match outcome {
        Outcome::Stored => info!("order stored"),
        Outcome::Duplicate => info!("order already stored (duplicate)"),
        Outcome::Conflict { kept_now: true } => {
            warn!("order conflicts with a stored one; kept aside in order_conflicts")
        }
        Outcome::Conflict { kept_now: false } => {
            info!("order conflicts with a stored one; already kept aside in order_conflicts")
        }
        // The store logged why, and the record is left unacknowledged.
        Outcome::Refused => {}
    }
}

/// Lambda's `ApproximateReceiveCount` (1 on the first delivery).
fn receive_count(record: &SqsMessage) -> u32 {
    record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|count| count.parse().ok())
        .unwrap_or(1)
}

/// How many times the record was requeued (0 for an original).
fn requeued(record: &SqsMessage) -> u32 {
    record
        .message_attributes
        .get(REQUEUED_ATTRIBUTE)
        .and_then(|value| value.string_value.as_deref())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// The producer's request id, if the message carries a well-formed one.
fn request_id(record: &SqsMessage) -> Option<RequestId> {
    let value = record
        .message_attributes
        .get(REQUEST_ID_ATTRIBUTE)?
        .string_value
        .as_deref()?;
    RequestId::parse(value)
}

enum Parsed {
    Order(OrderPlaced),
    /// A newer `schema_version` than this build reads: retried, never poison.
    Newer,
    /// The contract refuses it: a permanent failure, with its class and why.
    Poison(FailureClass, String),
    /// No body, or parsing panicked: left to the redrive policy, since SQS
    /// takes no message without a body, and a panic is this code's fault.
    Unreadable,
}

/// Parses one record, reading `schema_version`s up to `newest`.
fn parse(record: &SqsMessage, newest: u32) -> Parsed {
    let Some(body) = record.body.as_deref() else {
        warn!("rejected: the message has no body");
        return Parsed::Unreadable;
    };
    match std::panic::catch_unwind(|| OrderPlaced::from_json_up_to(body, newest)) {
        Ok(Ok(placed)) => Parsed::Order(placed),
        Ok(Err(err)) if err.is_newer_version() => {
            warn!(error = %err, "not read yet: a newer schema_version than this build reads");
            Parsed::Newer
        }
        Ok(Err(err)) => {
            warn!(error = %err, bytes = body.len(), "rejected: not a valid OrderPlaced message");
            Parsed::Poison(FailureClass::of(&err), err.to_string())
        }
        Err(panic) => {
            error!(
                panic = panic_message(&*panic),
                "rejected: parsing the message panicked"
            );
            Parsed::Unreadable
        }
    }
}

fn dead_letter(
    message_id: MessageId,
    message: SqsMessage,
    class: FailureClass,
    detail: String,
) -> DeadLetter {
    let receive_count = receive_count(&message);
    DeadLetter {
        failure: Failure {
            class,
            detail: Some(detail),
            message_id: Some(message_id.to_string()),
            receive_count: Some(receive_count),
            failed_at: Some(chrono::Utc::now()),
            consumer_version: Some(CONSUMER_VERSION.to_owned()),
        },
        message_id,
        body: message.body.unwrap_or_default(),
        attributes: message.message_attributes,
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

#[cfg(test)]
mod tests;
