//! Where accepted orders go: the [`OrderQueue`] seam, and [`SqsQueue`], which
//! coalesces concurrent sends into `SendMessageBatch` calls (`batcher`) made
//! by `sqs`, each bounded by the configured timeout, retries included.

mod batcher;
mod sqs;

use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::timeout::TimeoutConfig;

use crate::limits::Limits;
use crate::metrics::Metrics;
use batcher::{Batcher, BatcherSettings};
use sqs::Sqs;

/// How long `/readyz` waits for SQS at most.
const MAX_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a send may wait for a free batch slot on top of the SQS timeout.
const MAX_QUEUE_WAIT: Duration = Duration::from_secs(1);
/// `SendMessageBatch` calls in flight at once: few, so that orders arriving
/// while they are out coalesce (docs/performance.md).
const MAX_BATCHES_IN_FLIGHT: usize = 4;

/// One order's message and the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderMessage {
    /// The `OrderPlaced` JSON.
    pub body: String,
    /// Sent as the `request_id` message attribute.
    pub request_id: Option<String>,
}

impl From<&str> for OrderMessage {
    fn from(body: &str) -> Self {
        Self {
            body: body.to_owned(),
            request_id: None,
        }
    }
}

/// A queue that stores order messages; the routes see only this, so tests can fake it.
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

    /// Stops taking sends and waits until every send in flight has been answered.
    fn close(self) -> impl Future<Output = ()> + Send
    where
        Self: Sized,
    {
        async {}
    }
}

/// Why a message was not (known to be) stored. Every variant is temporary from
/// the client's point of view: retrying the same order later is safe.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EnqueueError {
    #[error("the call to SQS failed")]
    Sqs(#[source] Arc<dyn StdError + Send + Sync>),
    #[error("SQS refused the message ({code}, sender fault: {sender_fault}): {message}")]
    Refused {
        code: String,
        message: String,
        sender_fault: bool,
    },
    #[error("SQS answered without a result for the message")]
    Unanswered,
    #[error("SQS did not answer within {0:?}")]
    TimedOut(Duration),
    #[error("the queue sender stopped before SQS answered")]
    Stopped,
    /// Not taken, so certainly not sent.
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
    sqs: Sqs,
    batcher: Batcher,
    /// How long `/readyz` waits for SQS.
    check_timeout: Duration,
}

/// How an [`SqsQueue`] sends.
#[derive(Debug, Clone)]
pub struct SqsOptions {
    /// Bounds every SQS call, retries included.
    pub timeout: Duration,
    /// Sends that may wait for a batch; further ones fail at once with
    /// [`EnqueueError::Overloaded`].
    pub max_waiting: usize,
    /// Where calls, batch sizes and errors are counted.
    pub metrics: Metrics,
}

impl SqsOptions {
    /// The defaults ([`Limits`]' `max_waiting`), with `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            max_waiting: Limits::default().max_waiting,
            metrics: Metrics::new(),
        }
    }
}

impl From<Duration> for SqsOptions {
    fn from(timeout: Duration) -> Self {
        Self::new(timeout)
    }
}

impl SqsQueue {
    /// Sends to `queue_url` with the region, credentials and endpoint of `sqs`;
    /// `options` may be just the timeout. Starts the batcher task, so call it
    /// inside a Tokio runtime.
    pub fn new(
        sqs: aws_sdk_sqs::Config,
        queue_url: impl Into<String>,
        options: impl Into<SqsOptions>,
    ) -> Self {
        let options: SqsOptions = options.into();
        let timeout = options.timeout;
        let sqs = sqs
            .to_builder()
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(timeout.min(Duration::from_secs(3)))
                    // Leave room for a retry when one attempt hangs.
                    .operation_attempt_timeout(timeout / 2)
                    .operation_timeout(timeout)
                    .build(),
            )
            .build();
        let sqs = Sqs {
            client: Client::from_conf(sqs),
            queue_url: queue_url.into(),
            metrics: options.metrics,
        };
        let batcher = Batcher::spawn(
            sqs.clone(),
            BatcherSettings {
                max_in_flight: MAX_BATCHES_IN_FLIGHT,
                capacity: options.max_waiting,
                deadline: timeout + MAX_QUEUE_WAIT,
            },
        );
        Self {
            sqs,
            batcher,
            check_timeout: timeout.min(MAX_CHECK_TIMEOUT),
        }
    }
}

impl OrderQueue for SqsQueue {
    async fn send(&self, message: OrderMessage) -> Result<String, EnqueueError> {
        self.batcher.send(message).await
    }

    async fn check(&self) -> Result<(), EnqueueError> {
        self.sqs.check(self.check_timeout).await
    }

    fn is_stopped(&self) -> bool {
        self.batcher.is_stopped()
    }

    async fn close(self) {
        self.batcher.close().await;
    }
}
