//! Where accepted orders go: the [`OrderQueue`] seam, and [`SqsQueue`], its SQS
//! implementation.
//!
//! [`SqsQueue`] does not call `SendMessage` per order: concurrent sends are
//! coalesced by a background batcher into `SendMessageBatch` calls of up to ten
//! entries, each caller getting its own message id (or error) back. Every call to
//! SQS is bounded by the configured timeout, the SDK's retries included.

mod batcher;

use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::timeout::TimeoutConfig;
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName, SendMessageBatchRequestEntry};

use crate::metrics::{Metrics, sqs_error_kind};
use batcher::{BatchEntry, BatchSender, Batcher, BatcherSettings, EntryOutcome};

/// How long `/readyz` waits for SQS at most.
const MAX_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a send may wait for a free batch slot on top of the SQS timeout.
const MAX_QUEUE_WAIT: Duration = Duration::from_secs(1);
/// `SendMessageBatch` calls in flight at once. Few, so that orders arriving
/// while they are out coalesce: with 16, 16 concurrent clients each got a call
/// of their own (measured: 974 calls per 1,000 orders at concurrency 16); 4
/// calls of 10 entries still carry about 2,500 orders/s at a 15 ms round trip.
const MAX_BATCHES_IN_FLIGHT: usize = 4;
/// Sends waiting for a batch slot when not configured; beyond this they fail at once.
pub const DEFAULT_MAX_WAITING: usize = 1024;

/// One order's message and the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderMessage {
    /// The `OrderPlaced` JSON.
    pub body: String,
    /// The HTTP request's id, sent as the `request_id` message attribute so
    /// that the order can be followed from the request to its row.
    pub request_id: Option<String>,
}

impl From<String> for OrderMessage {
    fn from(body: String) -> Self {
        Self {
            body,
            request_id: None,
        }
    }
}

impl From<&str> for OrderMessage {
    fn from(body: &str) -> Self {
        Self::from(body.to_owned())
    }
}

/// The name of the message attribute that carries the request id.
pub const REQUEST_ID_ATTRIBUTE: &str = "request_id";

/// A queue that stores order messages.
///
/// The HTTP routes only see this trait, so they can be tested with a fake.
pub trait OrderQueue: Send + Sync + 'static {
    /// Stores one message and resolves to the queue's message id once the
    /// queue has acknowledged it, or fails within a bounded time.
    fn send(
        &self,
        message: OrderMessage,
    ) -> impl Future<Output = Result<String, EnqueueError>> + Send;

    /// Resolves to `Ok` when the queue is reachable now.
    fn check(&self) -> impl Future<Output = Result<(), EnqueueError>> + Send;

    /// Whether sending has stopped for good in this process (its sender task
    /// died): the queue may be reachable, but no order would get there.
    fn is_stopped(&self) -> bool {
        false
    }
}

/// Why a message was not (known to be) stored. Every variant is temporary from
/// the client's point of view: retrying the same order later is safe.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EnqueueError {
    /// The call to SQS failed: unreachable, refused, throttled, unknown queue, …
    #[error("the call to SQS failed")]
    Sqs(#[source] Arc<dyn StdError + Send + Sync>),
    /// SQS answered the batch but refused this message.
    #[error("SQS refused the message ({code}, sender fault: {sender_fault}): {message}")]
    Refused {
        code: String,
        message: String,
        sender_fault: bool,
    },
    /// SQS answered the batch without a result for this message.
    #[error("SQS answered without a result for the message")]
    Unanswered,
    /// No answer in time.
    #[error("SQS did not answer within {0:?}")]
    TimedOut(Duration),
    /// The sender stopped (shutting down, or a crash) before SQS answered.
    #[error("the queue sender stopped before SQS answered")]
    Stopped,
    /// Too many messages are waiting for a batch already; this one was not
    /// taken, so it certainly was not sent.
    #[error("too many messages are waiting to be sent")]
    Overloaded,
}

impl EnqueueError {
    pub fn sqs(err: impl StdError + Send + Sync + 'static) -> Self {
        Self::Sqs(Arc::new(err))
    }
}

/// The SQS queue, with sends coalesced into `SendMessageBatch` calls.
#[derive(Debug)]
pub struct SqsQueue {
    /// For `/readyz`; sends go through the batcher, which holds its own clone.
    client: Client,
    /// The queue `/readyz` checks (sends use the batcher's copy).
    queue_url: String,
    /// Turns single sends into batches and answers each sender.
    /// Coalesces sends into batches; `None` when batching is off.
    batcher: Option<Batcher>,
    /// How long one `SendMessage` may take, when batching is off.
    timeout: Duration,
    /// How long `/readyz` waits for SQS.
    check_timeout: Duration,
    /// Counts `/readyz`'s calls; the batcher's sender counts the sends.
    metrics: Metrics,
}

/// How an [`SqsQueue`] sends.
#[derive(Debug, Clone)]
pub struct SqsOptions {
    /// Bounds every SQS call, retries included.
    pub timeout: Duration,
    /// Sends that may wait for a batch; further ones fail at once.
    pub max_waiting: usize,
    /// Coalesce sends into `SendMessageBatch` calls (`SQS_BATCHING=on`, the
    /// default), or make one `SendMessage` call per order (`off`, the baseline).
    pub batching: bool,
    /// Where calls, batch sizes and errors are counted.
    pub metrics: Metrics,
}

impl SqsOptions {
    /// The defaults, with `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            max_waiting: DEFAULT_MAX_WAITING,
            batching: true,
            metrics: Metrics::new(),
        }
    }
}

impl SqsQueue {
    /// Sends to `queue_url` with the region, credentials and endpoint of `sqs`.
    ///
    /// Every SQS call (retries included) is bounded by `timeout`; a send that
    /// also has to wait for a free batch slot fails after at most `timeout` + 1 s.
    /// Must be called inside a Tokio runtime: it starts the batcher task.
    pub fn new(sqs: aws_sdk_sqs::Config, queue_url: impl Into<String>, timeout: Duration) -> Self {
        Self::with_options(sqs, queue_url, SqsOptions::new(timeout))
    }

    /// As [`SqsQueue::new`], with at most `max_waiting` sends waiting for a
    /// batch; further sends fail at once with [`EnqueueError::Overloaded`].
    pub fn with_max_waiting(
        sqs: aws_sdk_sqs::Config,
        queue_url: impl Into<String>,
        timeout: Duration,
        max_waiting: usize,
    ) -> Self {
        Self::with_options(
            sqs,
            queue_url,
            SqsOptions {
                max_waiting,
                ..SqsOptions::new(timeout)
            },
        )
    }

    /// As [`SqsQueue::new`], with every option.
    pub fn with_options(
        sqs: aws_sdk_sqs::Config,
        queue_url: impl Into<String>,
        options: SqsOptions,
    ) -> Self {
        let SqsOptions {
            timeout,
            max_waiting,
            batching,
            metrics,
        } = options;
        let connect_timeout = timeout.min(Duration::from_secs(3));
        let sqs = sqs
            .to_builder()
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(connect_timeout)
                    // Leave room for a retry when one attempt hangs.
                    .operation_attempt_timeout(timeout / 2)
                    .operation_timeout(timeout)
                    .build(),
            )
            .build();
        let client = Client::from_conf(sqs);
        let queue_url = queue_url.into();
        let batcher = batching.then(|| {
            Batcher::spawn(
                SqsBatchSender {
                    client: client.clone(),
                    queue_url: queue_url.clone(),
                    metrics: metrics.clone(),
                },
                BatcherSettings {
                    max_in_flight: MAX_BATCHES_IN_FLIGHT,
                    capacity: max_waiting,
                    deadline: timeout + MAX_QUEUE_WAIT,
                },
            )
        });
        Self {
            client,
            queue_url,
            batcher,
            timeout,
            check_timeout: timeout.min(MAX_CHECK_TIMEOUT),
            metrics,
        }
    }

    /// Stops taking sends and waits until every batch in flight has been answered.
    pub async fn close(self) {
        if let Some(batcher) = self.batcher {
            batcher.close().await;
        }
    }

    /// One `SendMessage` call for one order: the usual sample code, kept as the
    /// baseline `scripts/bench producer` compares batching with.
    async fn send_one(&self, message: OrderMessage) -> Result<String, EnqueueError> {
        const OPERATION: &str = "SendMessage";
        self.metrics.sqs_call(OPERATION);
        let call = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(message.body)
            .set_message_attributes(
                request_id_attribute(message.request_id).map_err(EnqueueError::sqs)?,
            )
            .send();
        let output = bounded(&self.metrics, OPERATION, self.timeout, call).await?;
        output.message_id.ok_or(EnqueueError::Unanswered)
    }
}

impl OrderQueue for SqsQueue {
    async fn send(&self, message: OrderMessage) -> Result<String, EnqueueError> {
        match &self.batcher {
            Some(batcher) => batcher.send(message).await,
            None => self.send_one(message).await,
        }
    }

    async fn check(&self) -> Result<(), EnqueueError> {
        const OPERATION: &str = "GetQueueAttributes";
        self.metrics.sqs_call(OPERATION);
        let call = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send();
        bounded(&self.metrics, OPERATION, self.check_timeout, call).await?;
        Ok(())
    }

    fn is_stopped(&self) -> bool {
        self.batcher.as_ref().is_some_and(Batcher::is_stopped)
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

/// Sends one batch with `SendMessageBatch`.
#[derive(Debug)]
struct SqsBatchSender {
    /// Built once with the timeouts; cloning it shares its connection pool.
    client: Client,
    /// Where the batches go.
    queue_url: String,
    /// Counts calls, batch sizes and errors.
    metrics: Metrics,
}

impl BatchSender for SqsBatchSender {
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
