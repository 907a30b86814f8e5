//! What the event source mapping invokes with each batch ([`BatchHandler`]),
//! and the consumer's handler run in this process ([`InProcess`]).

use std::future::Future;
use std::time::SystemTime;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use consumer_lambda::BatchMetrics;
use tokio::time::Instant;
use tracing::warn;

use crate::batches::BatchLog;

/// Why an invocation failed as a whole (Lambda's "function error"): the
/// handler's own error, or a message (`"…".into()`) where there is none.
#[derive(Debug, thiserror::Error)]
#[error("the invocation failed")]
pub struct InvocationError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// What the driver invokes with each batch. `deadline` is when the invocation
/// times out, as Lambda's context tells the function.
pub trait BatchHandler: Send + Sync {
    fn handle(
        &self,
        event: SqsEvent,
        deadline: Instant,
    ) -> impl Future<Output = Result<SqsBatchResponse, InvocationError>> + Send;

    /// A batch of `records` that a bad release failed without this handler.
    fn unfinished(&self, _records: usize) {}
}

/// Shared handlers: a test keeps one end to look at what the handler saw.
impl<H: BatchHandler> BatchHandler for std::sync::Arc<H> {
    fn handle(
        &self,
        event: SqsEvent,
        deadline: Instant,
    ) -> impl Future<Output = Result<SqsBatchResponse, InvocationError>> + Send {
        (**self).handle(event, deadline)
    }

    fn unfinished(&self, records: usize) {
        (**self).unfinished(records)
    }
}

/// Runs the consumer's handler in this process. With a [`BatchLog`] it appends
/// each batch's figures there, as the function prints them for CloudWatch in
/// AWS: what `local-esm status` and the local breaker read.
pub struct InProcess<S, Q, D>(pub consumer_lambda::Consumer<S, Q, D>, pub Option<BatchLog>);

impl<S, Q, D> BatchHandler for InProcess<S, Q, D>
where
    S: consumer_lambda::OrderStore,
    Q: consumer_lambda::RetryQueue,
    D: consumer_lambda::DeadLetterQueue,
{
    async fn handle(
        &self,
        event: SqsEvent,
        deadline: Instant,
    ) -> Result<SqsBatchResponse, InvocationError> {
        let records = event.records.len();
        match self.0.handle(event, deadline).await {
            Ok(handled) => {
                self.keep(&handled.metrics);
                Ok(handled.response)
            }
            Err(err) => {
                self.unfinished(records);
                Err(InvocationError(Box::new(err)))
            }
        }
    }

    /// A failed invocation prints no figures in AWS, where Lambda's `Errors`
    /// counts it; here its line has records and nothing finished, which the
    /// breaker reads the same way.
    fn unfinished(&self, records: usize) {
        self.keep(&BatchMetrics {
            records,
            ..BatchMetrics::default()
        });
    }
}

impl<S, Q, D> InProcess<S, Q, D> {
    /// Failing to keep the figures never fails the batch.
    fn keep(&self, metrics: &BatchMetrics) {
        if let Some(log) = &self.1
            && let Err(err) = log.append(metrics, SystemTime::now())
        {
            warn!(error = %support::error_chain(&err), "the batch's figures were not kept");
        }
    }
}
