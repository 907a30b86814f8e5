//! What happens to a valid order the database could not take: a database outage
//! must never push it into the DLQ.
//!
//! SQS moves a message to the DLQ when a receive would make its receive count
//! exceed `maxReceiveCount` (R): the function sees a record R times, and the
//! delay that follows the R-th failure protects nothing.
//! <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-dead-letter-queues.html>
//! So:
//!
//! - after each of the receives 1 … R−2 the record is **postponed**: its
//!   visibility is stretched with `ChangeMessageVisibility`, growing with every
//!   attempt ([`Backoff`]);
//! - on receive R−1 it is **requeued**: sent to the queue again as a new message
//!   (same body and attributes, so a fresh receive count, with a `requeued`
//!   attribute counting the generations), and only once SQS has acknowledged
//!   the copy is the original reported done, so the event source mapping
//!   deletes it. A crash between the two leaves a duplicate, which the
//!   idempotent store absorbs, and the original still has its R-th receive to
//!   spare, so that crash cannot push it into the DLQ either.
//!
//! The attempt number keeps growing across generations (generation × R plus the
//! receive count), so a long outage settles at the longest delay SQS allows and
//! costs a few requests per order per day. [`RetryPolicy::budget`] is how long
//! the backoff alone holds an order before its first requeue: 6.5 h with the
//! defaults (30 s × 5ⁿ) and the template's R = 6 (a test derives it from the
//! template). Only poison (invalid orders, rows PostgreSQL refuses) reaches the DLQ.

use std::future::Future;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsMessageAttribute;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, MessageAttributeValue, SendMessageBatchRequestEntry,
};
use futures::stream::{self, StreamExt};

/// The longest delay asked for. SQS counts its 12-hour ceiling from when the
/// message was received, and the event source mapping received it before the
/// invocation began (batching window plus the invocation so far, 15 minutes at
/// the very most), so a full 12 h would be refused.
/// <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_ChangeMessageVisibility.html>
pub const MAX_DELAY: Duration = Duration::from_secs(12 * 60 * 60 - 20 * 60);

/// The longest `DelaySeconds` SQS accepts on a sent message.
pub const MAX_SEND_DELAY: Duration = Duration::from_secs(15 * 60);

/// The message attribute that counts how often a record was requeued.
pub const REQUEUED_ATTRIBUTE: &str = "requeued";

/// SQS's limit on entries per batch call.
const SQS_BATCH: usize = 10;
/// Batch calls in flight at once: 1,000 records take 100 calls, which must fit
/// in the deadline margin.
const CALLS_IN_FLIGHT: usize = 16;

/// Exponential backoff: after attempt n, wait `base × multiplierⁿ`, at most [`MAX_DELAY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub multiplier: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(30),
            multiplier: 5,
        }
    }
}

impl Backoff {
    /// How long a record stays hidden after its `attempt`-th failure (from 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = self.multiplier.max(1).saturating_pow(attempt.max(1));
        self.base.saturating_mul(factor).min(MAX_DELAY)
    }
}

/// The backoff together with the queue's `maxReceiveCount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub backoff: Backoff,
    /// The queue's `maxReceiveCount`; `None` never requeues (no queue to send to).
    pub max_receive_count: Option<u32>,
}

/// What to do with a valid record that could not be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Hide it for this long; it comes back with one more receive.
    Postpone(Duration),
    /// The receive before its last: send a fresh copy of generation
    /// `generation`, delayed by `delay` (at most [`MAX_SEND_DELAY`]), then let
    /// the original go.
    Requeue { generation: u32, delay: Duration },
}

impl RetryPolicy {
    /// The decision for a record on its `receive_count`-th receive of copy `generation`.
    pub fn after_failure(&self, receive_count: u32, generation: u32) -> Retry {
        let receive_count = receive_count.max(1);
        match self.max_receive_count {
            Some(max) if receive_count.saturating_add(1) >= max => Retry::Requeue {
                generation: generation.saturating_add(1),
                delay: self
                    .backoff
                    .delay(attempt(generation, receive_count, max))
                    .min(MAX_SEND_DELAY),
            },
            max => Retry::Postpone(self.backoff.delay(attempt(
                generation,
                receive_count,
                max.unwrap_or(0),
            ))),
        }
    }

    /// How long an outage the backoff alone covers before the first requeue:
    /// the delays after receives 1 … R−2 (receive R−1 requeues).
    pub fn budget(&self) -> Option<Duration> {
        let max = self.max_receive_count?;
        Some(
            (1..max.saturating_sub(1))
                .map(|n| self.backoff.delay(n))
                .sum(),
        )
    }
}

/// Attempts run on across generations, so a requeued copy keeps the long delays.
fn attempt(generation: u32, receive_count: u32, max_receive_count: u32) -> u32 {
    generation
        .saturating_mul(max_receive_count)
        .saturating_add(receive_count)
}

/// A record to hide for longer before it is received again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Postponed {
    pub message_id: String,
    pub receipt_handle: String,
    pub delay: Duration,
}

/// A record to send again as a new message.
#[derive(Debug, Clone, PartialEq)]
pub struct Requeued {
    pub message_id: String,
    pub body: String,
    /// The original's message attributes; [`REQUEUED_ATTRIBUTE`] is set on top.
    pub attributes: std::collections::HashMap<String, SqsMessageAttribute>,
    pub generation: u32,
    pub delay: Duration,
}

/// Some records could not be postponed; they return after the queue's visibility timeout.
#[derive(Debug, thiserror::Error)]
#[error(
    "could not postpone {failed} of the failed records; they return after the queue's visibility timeout: {detail}"
)]
pub struct PostponeError {
    pub failed: usize,
    pub detail: String,
}

/// What a requeue did, by message id of the originals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequeueOutcome {
    /// A copy is on the queue: the original may be deleted.
    pub sent: Vec<String>,
    /// No copy was acknowledged: the original must stay (it will reach the DLQ
    /// if this keeps happening, so it is logged as an error).
    pub failed: Vec<String>,
}

/// The queue operations of a retry: stretching visibility and sending copies.
pub trait RetryQueue: Send + Sync {
    fn postpone(
        &self,
        records: &[Postponed],
    ) -> impl Future<Output = Result<(), PostponeError>> + Send;

    fn requeue(&self, records: &[Requeued]) -> impl Future<Output = RequeueOutcome> + Send;
}

/// `ChangeMessageVisibilityBatch` and `SendMessageBatch` on the orders queue.
#[derive(Debug, Clone)]
pub struct SqsRetryQueue {
    client: Client,
    queue_url: String,
}

impl SqsRetryQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }

    async fn change_visibility(&self, chunk: &[Postponed]) -> (usize, Option<String>) {
        let entries = chunk
            .iter()
            .enumerate()
            .filter_map(|(index, record)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(&record.receipt_handle)
                    .visibility_timeout(seconds(record.delay))
                    .build()
                    .ok()
            })
            .collect();
        let call = self
            .client
            .change_message_visibility_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await;
        match call {
            Ok(output) => (
                output.failed().len(),
                output
                    .failed()
                    .first()
                    .map(|f| format!("{}: {}", f.code(), f.message().unwrap_or_default())),
            ),
            Err(err) => (chunk.len(), Some(DisplayErrorContext(err).to_string())),
        }
    }

    /// Sends one chunk; returns the message ids whose copy SQS acknowledged.
    async fn send_copies(&self, chunk: &[Requeued]) -> Vec<String> {
        let entries = chunk
            .iter()
            .enumerate()
            .filter_map(|(index, record)| {
                let mut entry = SendMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .message_body(&record.body)
                    .delay_seconds(seconds(record.delay.min(MAX_SEND_DELAY)));
                for (name, value) in copied_attributes(record) {
                    entry = entry.message_attributes(name, value);
                }
                entry.build().ok()
            })
            .collect();
        let call = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await;
        match call {
            Ok(output) => {
                for failure in output.failed() {
                    tracing::error!(
                        code = failure.code(),
                        message = failure.message().unwrap_or_default(),
                        "SQS refused a requeued copy; the original stays"
                    );
                }
                output
                    .successful()
                    .iter()
                    .filter_map(|ok| ok.id().parse::<usize>().ok())
                    .filter_map(|index| chunk.get(index))
                    .map(|record| record.message_id.clone())
                    .collect()
            }
            Err(err) => {
                tracing::error!(error = %DisplayErrorContext(err), records = chunk.len(), "requeueing failed; the originals stay");
                Vec::new()
            }
        }
    }
}

/// The original's attributes as SQS wants them back, with the generation set.
fn copied_attributes(record: &Requeued) -> Vec<(String, MessageAttributeValue)> {
    let mut attributes: Vec<(String, MessageAttributeValue)> = record
        .attributes
        .iter()
        .filter(|(name, _)| name.as_str() != REQUEUED_ATTRIBUTE)
        .filter_map(|(name, value)| {
            let data_type = value.data_type.as_deref()?;
            let mut copy = MessageAttributeValue::builder().data_type(data_type);
            if let Some(text) = &value.string_value {
                copy = copy.string_value(text);
            }
            if let Some(bytes) = &value.binary_value {
                copy = copy.binary_value(Blob::new(bytes.to_vec()));
            }
            Some((name.clone(), copy.build().ok()?))
        })
        .collect();
    if let Ok(generation) = MessageAttributeValue::builder()
        .data_type("Number")
        .string_value(record.generation.to_string())
        .build()
    {
        attributes.push((REQUEUED_ATTRIBUTE.to_owned(), generation));
    }
    attributes
}

fn seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)
}

impl RetryQueue for SqsRetryQueue {
    async fn postpone(&self, records: &[Postponed]) -> Result<(), PostponeError> {
        let calls: Vec<_> = records
            .chunks(SQS_BATCH)
            .map(|chunk| self.change_visibility(chunk))
            .collect();
        let results: Vec<(usize, Option<String>)> = stream::iter(calls)
            .buffer_unordered(CALLS_IN_FLIGHT)
            .collect()
            .await;
        let failed = results.iter().map(|(failed, _)| failed).sum();
        match failed {
            0 => Ok(()),
            failed => Err(PostponeError {
                failed,
                detail: results
                    .into_iter()
                    .find_map(|(_, detail)| detail)
                    .unwrap_or_default(),
            }),
        }
    }

    async fn requeue(&self, records: &[Requeued]) -> RequeueOutcome {
        let calls: Vec<_> = records
            .chunks(SQS_BATCH)
            .map(|chunk| self.send_copies(chunk))
            .collect();
        let sent: Vec<String> = stream::iter(calls)
            .buffer_unordered(CALLS_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await
            .concat();
        let failed = records
            .iter()
            .map(|r| &r.message_id)
            .filter(|id| !sent.contains(id))
            .cloned()
            .collect();
        RequeueOutcome { sent, failed }
    }
}

/// For runs without a queue to talk to (unit tests, tools): nothing is
/// postponed, and nothing can be requeued.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRetryQueue;

impl RetryQueue for NoRetryQueue {
    async fn postpone(&self, _records: &[Postponed]) -> Result<(), PostponeError> {
        Ok(())
    }

    async fn requeue(&self, records: &[Requeued]) -> RequeueOutcome {
        RequeueOutcome {
            sent: Vec::new(),
            failed: records.iter().map(|r| r.message_id.clone()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: u32 = 6;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            backoff: Backoff::default(),
            max_receive_count: Some(R),
        }
    }

    #[test]
    fn the_delay_grows_by_the_multiplier_with_each_attempt() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay(1), Duration::from_secs(150));
        assert_eq!(backoff.delay(2), Duration::from_secs(750));
        assert_eq!(backoff.delay(4), Duration::from_secs(18_750));
    }

    #[test]
    fn the_delay_never_exceeds_what_sqs_accepts_after_a_receive() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay(50), MAX_DELAY);
        assert_eq!(backoff.delay(u32::MAX), MAX_DELAY);
        assert!(MAX_DELAY < Duration::from_secs(12 * 60 * 60));
    }

    #[test]
    fn a_zero_receive_count_is_treated_as_the_first_receive() {
        assert_eq!(policy().after_failure(0, 0), policy().after_failure(1, 0));
    }

    #[test]
    fn every_receive_before_the_last_two_postpones() {
        for receive in 1..R - 1 {
            assert_eq!(
                policy().after_failure(receive, 0),
                Retry::Postpone(Backoff::default().delay(receive))
            );
        }
    }

    #[test]
    fn the_receive_before_the_last_requeues_so_that_a_crash_leaves_one_to_spare() {
        match policy().after_failure(R - 1, 0) {
            Retry::Requeue { generation, delay } => {
                assert_eq!(generation, 1);
                assert_eq!(delay, MAX_SEND_DELAY);
            }
            other => panic!("expected a requeue, got {other:?}"),
        }
        // The last receive, or an approximate count past it, requeues too.
        assert!(matches!(
            policy().after_failure(R, 0),
            Retry::Requeue { generation: 1, .. }
        ));
        assert!(matches!(
            policy().after_failure(R + 2, 3),
            Retry::Requeue { generation: 4, .. }
        ));
    }

    #[test]
    fn a_requeued_copy_keeps_the_long_delays_of_its_generation() {
        let first_of_copy = policy().after_failure(1, 1);
        let last_of_original = policy().backoff.delay(R - 2);
        match first_of_copy {
            Retry::Postpone(delay) => assert!(delay > last_of_original, "{delay:?}"),
            other => panic!("expected a postponement, got {other:?}"),
        }
    }

    #[test]
    fn without_a_max_receive_count_nothing_is_requeued() {
        let policy = RetryPolicy {
            max_receive_count: None,
            ..policy()
        };
        assert!(matches!(policy.after_failure(99, 0), Retry::Postpone(_)));
        assert_eq!(policy.budget(), None);
    }

    #[test]
    fn the_budget_counts_the_delays_before_the_requeue() {
        // Receives at 0, 150, 900, 4,650 and 23,400 s: the fifth requeues.
        assert_eq!(policy().budget(), Some(Duration::from_secs(23_400)));
    }

    #[test]
    fn a_copy_carries_the_original_attributes_and_its_generation() {
        let mut attributes = std::collections::HashMap::new();
        let mut request_id = SqsMessageAttribute::default();
        request_id.data_type = Some("String".into());
        request_id.string_value = Some("req-1".into());
        attributes.insert("request_id".to_owned(), request_id);
        let mut old = SqsMessageAttribute::default();
        old.data_type = Some("Number".into());
        old.string_value = Some("1".into());
        attributes.insert(REQUEUED_ATTRIBUTE.to_owned(), old);
        let record = Requeued {
            message_id: "m".into(),
            body: "{}".into(),
            attributes,
            generation: 2,
            delay: Duration::ZERO,
        };
        let mut copied = copied_attributes(&record);
        copied.sort_by(|a, b| a.0.cmp(&b.0));
        let shown: Vec<(&str, Option<&str>)> = copied
            .iter()
            .map(|(name, value)| (name.as_str(), value.string_value()))
            .collect();
        assert_eq!(
            shown,
            [("request_id", Some("req-1")), ("requeued", Some("2"))]
        );
    }
}
