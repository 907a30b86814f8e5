//! The producer's two SQS calls, each counted in the metrics:
//! `SendMessageBatch` for the batcher (`support::sqs::send_batch`, with its
//! failures classified by `support::sqs::SqsError`) and `GetQueueAttributes`
//! for `/readyz`.

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName, SendMessageBatchRequestEntry};
use support::sqs::{Outcome, SqsError};

use order_contract::REQUEST_ID_ATTRIBUTE;

use super::EnqueueError;
use super::batcher::{BatchEntry, BatchSender, EntryOutcome};
use crate::metrics::Metrics;

/// One queue's client. Cloning it shares the client's connection pool.
#[derive(Debug, Clone)]
pub(super) struct Sqs {
    /// Built once with the timeouts.
    client: Client,
    queue_url: String,
    /// Counts calls, batch sizes and errors.
    metrics: Metrics,
}

impl Sqs {
    pub(super) fn new(client: Client, queue_url: String, metrics: Metrics) -> Self {
        Self {
            client,
            queue_url,
            metrics,
        }
    }

    /// Whether the queue answers now (it exists and we may use it).
    pub(super) async fn check(&self, timeout: Duration) -> Result<(), EnqueueError> {
        const OPERATION: &str = "GetQueueAttributes";
        self.metrics.sqs_call(OPERATION);
        let call = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send();
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => {
                let action = format!("read the attributes of {}", self.queue_url);
                Err(self.failed(OPERATION, SqsError::new(action, err)))
            }
            Err(_) => {
                self.metrics.sqs_error(OPERATION, "timeout");
                Err(EnqueueError::TimedOut(timeout))
            }
        }
    }

    /// `err`, counted by its kind.
    fn failed(&self, operation: &'static str, err: SqsError) -> EnqueueError {
        self.metrics.sqs_error(operation, err.kind());
        EnqueueError::sqs(err)
    }
}

/// One entry as SQS takes it, its request id as the `request_id` attribute.
fn request_entry(
    entry: BatchEntry,
) -> Result<SendMessageBatchRequestEntry, aws_sdk_sqs::error::BuildError> {
    let mut request = SendMessageBatchRequestEntry::builder()
        .id(entry.id)
        .message_body(entry.body);
    if let Some(id) = entry.request_id {
        let value = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(id)
            .build()?;
        request = request.message_attributes(REQUEST_ID_ATTRIBUTE, value);
    }
    request.build()
}

/// Sends one batch with `SendMessageBatch`. Its time is bounded by the
/// client's operation timeout, and the batcher's deadline bounds each caller.
impl BatchSender for Sqs {
    async fn send_batch(
        &self,
        entries: Vec<BatchEntry>,
    ) -> Result<Vec<EntryOutcome>, EnqueueError> {
        const OPERATION: &str = "SendMessageBatch";
        self.metrics.sqs_call(OPERATION);
        self.metrics.batch(entries.len());
        let ids: Vec<String> = entries.iter().map(|entry| entry.id.clone()).collect();
        let entries = entries
            .into_iter()
            .map(request_entry)
            .collect::<Result<Vec<_>, _>>()
            .map_err(EnqueueError::sqs)?;
        let outcomes = support::sqs::send_batch(&self.client, &self.queue_url, entries)
            .await
            .map_err(|err| self.failed(OPERATION, err))?;
        let result = |outcome| match outcome {
            Outcome::Sent { message_id } => Ok(message_id),
            Outcome::Refused {
                code,
                message,
                sender_fault,
            } => {
                self.metrics.sqs_error(OPERATION, "entry_refused");
                Err(EnqueueError::Refused {
                    code,
                    message,
                    sender_fault,
                })
            }
            Outcome::Unreported => Err(EnqueueError::Unanswered),
            Outcome::NotSent(err) => Err(EnqueueError::Sqs(err)),
        };
        Ok(ids
            .into_iter()
            .zip(outcomes)
            .map(|(id, outcome)| EntryOutcome {
                id,
                result: result(outcome),
            })
            .collect())
    }
}
