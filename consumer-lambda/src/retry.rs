//! Backing off on transient failures, so a database outage does not push valid
//! orders into the DLQ.
//!
//! A record that fails is received again after its visibility timeout, and moves
//! to the DLQ on the receive after `maxReceiveCount`. When the database is down,
//! the handler therefore stretches the visibility timeout of every valid record it
//! could not store, growing with each receive: with the defaults (30 s × 3ⁿ after
//! the n-th receive) and the template's `maxReceiveCount` of 5, a record waits
//! 90 s + 270 s + 810 s + 2430 s + 7290 s = 10,890 s ≈ 3 h before it could reach
//! the DLQ. [`Backoff::survives`] computes the figure; a test pins it.

use std::future::Future;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry;

/// SQS's ceiling on a visibility timeout.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);

/// Exponential backoff by receive count: `base × multiplierⁿ`, capped at 12 h.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub multiplier: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(30),
            multiplier: 3,
        }
    }
}

impl Backoff {
    /// How long a record received `receive_count` times stays hidden after failing.
    pub fn delay(&self, receive_count: u32) -> Duration {
        let factor = self.multiplier.max(1).saturating_pow(receive_count.max(1));
        self.base.saturating_mul(factor).min(MAX_VISIBILITY)
    }

    /// How long an outage a record survives before its receive count sends it to the DLQ.
    pub fn survives(&self, max_receive_count: u32) -> Duration {
        (1..=max_receive_count).map(|n| self.delay(n)).sum()
    }
}

/// A record to hide for longer before it is received again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Postponed {
    pub message_id: String,
    pub receipt_handle: String,
    pub delay: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "could not postpone {failed} of the failed records; they return after the queue's visibility timeout: {detail}"
)]
pub struct PostponeError {
    pub failed: usize,
    pub detail: String,
}

/// Changes the visibility of records that will be retried.
pub trait Postpone: Send + Sync {
    fn postpone(
        &self,
        records: &[Postponed],
    ) -> impl Future<Output = Result<(), PostponeError>> + Send;
}

/// `ChangeMessageVisibilityBatch` on the source queue, ten records per call.
#[derive(Debug, Clone)]
pub struct SqsPostpone {
    client: Client,
    queue_url: String,
}

impl SqsPostpone {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}

impl Postpone for SqsPostpone {
    async fn postpone(&self, records: &[Postponed]) -> Result<(), PostponeError> {
        let mut failed = 0;
        let mut detail = String::new();
        for chunk in records.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .filter_map(|(index, record)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(index.to_string())
                        .receipt_handle(&record.receipt_handle)
                        .visibility_timeout(
                            i32::try_from(record.delay.as_secs()).unwrap_or(i32::MAX),
                        )
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
                Ok(output) => {
                    failed += output.failed().len();
                    if let Some(first) = output.failed().first() {
                        detail =
                            format!("{}: {}", first.code(), first.message().unwrap_or_default());
                    }
                }
                Err(err) => {
                    failed += chunk.len();
                    detail = DisplayErrorContext(err).to_string();
                }
            }
        }
        match failed {
            0 => Ok(()),
            failed => Err(PostponeError { failed, detail }),
        }
    }
}

/// For runs without a queue to talk to (unit tests, or no `QUEUE_URL`).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPostpone;

impl Postpone for NoPostpone {
    async fn postpone(&self, _records: &[Postponed]) -> Result<(), PostponeError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_grows_by_the_multiplier_with_each_receive() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay(1), Duration::from_secs(90));
        assert_eq!(backoff.delay(2), Duration::from_secs(270));
        assert_eq!(backoff.delay(5), Duration::from_secs(7290));
    }

    #[test]
    fn the_delay_never_exceeds_what_sqs_accepts() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay(50), MAX_VISIBILITY);
        assert_eq!(backoff.delay(u32::MAX), MAX_VISIBILITY);
    }

    #[test]
    fn with_the_template_defaults_an_outage_of_three_hours_is_survived() {
        // maxReceiveCount is 5 in infra/template.yaml.
        let survives = Backoff::default().survives(5);
        assert_eq!(survives, Duration::from_secs(10_890));
        assert!(
            survives >= Duration::from_secs(60 * 60),
            "at least one hour is the requirement"
        );
    }

    #[test]
    fn a_zero_receive_count_is_treated_as_the_first_receive() {
        assert_eq!(Backoff::default().delay(0), Backoff::default().delay(1));
    }
}
