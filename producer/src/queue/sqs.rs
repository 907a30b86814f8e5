//! The producer's two SQS calls, each counted in the metrics:
//! `SendMessageBatch` for the batcher and `GetQueueAttributes` for `/readyz`.

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName, SendMessageBatchRequestEntry};
use order_contract::REQUEST_ID_ATTRIBUTE;
use support::sqs::{Outcome, SqsError};

use super::batcher::BatchSender;
use super::{EnqueueError, OrderMessage};
use crate::metrics::Metrics;

/// One queue's client. Cloning it shares the client's connection pool.
#[derive(Debug, Clone)]
pub(super) struct Sqs {
    pub(super) client: Client,
    pub(super) queue_url: String,
    pub(super) metrics: Metrics,
}

impl Sqs {
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
    message: OrderMessage,
) -> Result<SendMessageBatchRequestEntry, aws_sdk_sqs::error::BuildError> {
    let mut entry = SendMessageBatchRequestEntry::builder()
        // `send_batch` numbers the entries itself.
        .id("0")
        .message_body(message.body);
    if let Some(id) = message.request_id {
        let value = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(id)
            .build()?;
        entry = entry.message_attributes(REQUEST_ID_ATTRIBUTE, value);
    }
    entry.build()
}

impl BatchSender for Sqs {
    async fn send_batch(
        &self,
        messages: Vec<OrderMessage>,
    ) -> Result<Vec<Result<String, EnqueueError>>, EnqueueError> {
        const OPERATION: &str = "SendMessageBatch";
        self.metrics.sqs_call(OPERATION);
        self.metrics.batch(messages.len());
        let entries = messages
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
        Ok(outcomes.into_iter().map(result).collect())
    }
}
