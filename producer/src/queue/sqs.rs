//! The producer's two SQS calls, each bounded in time and counted in the
//! metrics: `SendMessageBatch` for the batcher and `GetQueueAttributes` for
//! `/readyz`.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName, SendMessageBatchRequestEntry};

use order_contract::REQUEST_ID_ATTRIBUTE;

use super::EnqueueError;
use super::batcher::{BatchEntry, BatchSender, EntryOutcome};
use crate::metrics::{Metrics, sqs_error_kind};

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
        bounded(&self.metrics, OPERATION, timeout, call).await?;
        Ok(())
    }
}

/// The message attributes that carry the request id, if there is one.
fn request_id_attribute(
    request_id: Option<String>,
) -> Result<Option<HashMap<String, MessageAttributeValue>>, aws_sdk_sqs::error::BuildError> {
    request_id
        .map(|id| {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(id)
                .build()?;
            Ok(HashMap::from([(REQUEST_ID_ATTRIBUTE.to_owned(), value)]))
        })
        .transpose()
}

/// One SQS call bounded by `timeout`, its failure counted by kind.
async fn bounded<T, E, R>(
    metrics: &Metrics,
    operation: &'static str,
    timeout: Duration,
    call: impl Future<Output = Result<T, aws_sdk_sqs::error::SdkError<E, R>>>,
) -> Result<T, EnqueueError>
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(err)) => {
            metrics.sqs_error(operation, sqs_error_kind(&err));
            Err(EnqueueError::sqs(err))
        }
        Err(_) => {
            metrics.sqs_error(operation, "timeout");
            Err(EnqueueError::TimedOut(timeout))
        }
    }
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
        let entries = entries
            .into_iter()
            .map(|entry| {
                SendMessageBatchRequestEntry::builder()
                    .id(entry.id)
                    .message_body(entry.body)
                    .set_message_attributes(request_id_attribute(entry.request_id)?)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(EnqueueError::sqs)?;
        let output = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|err| {
                self.metrics.sqs_error(OPERATION, sqs_error_kind(&err));
                EnqueueError::sqs(err)
            })?;
        for _ in &output.failed {
            self.metrics.sqs_error(OPERATION, "entry_refused");
        }
        let successful = output.successful.into_iter().map(|entry| EntryOutcome {
            id: entry.id,
            result: Ok(entry.message_id),
        });
        let failed = output.failed.into_iter().map(|entry| EntryOutcome {
            id: entry.id,
            result: Err(EnqueueError::Refused {
                code: entry.code,
                message: entry.message.unwrap_or_default(),
                sender_fault: entry.sender_fault,
            }),
        });
        Ok(successful.chain(failed).collect())
    }
}
