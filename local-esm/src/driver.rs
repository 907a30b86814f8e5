//! Lambda's SQS event source mapping, reproduced: long polls, batches up to
//! `batch_size` within the window, at most `max_concurrency` invocations,
//! deletes what the handler did not report failed. An error, a panic, a
//! timeout or an unknown identifier fails the whole batch, as in
//! <https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html>.

use std::collections::HashSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ::breaker::{Mapping, MappingError, MappingState, MappingStatus};
use aws_lambda_events::encodings::Base64Data;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage, SqsMessageAttribute};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};
use futures::FutureExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{Instrument, error, info, info_span, warn};

use crate::handler::BatchHandler;
use crate::template::EventSourceSettings;
use support::queues::{QueueError, queue_arn};

/// Lambda's limit on an invocation payload; gathering stops before it.
const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
/// SQS's own limits.
const MAX_RECEIVE: usize = 10;
const MAX_WAIT_SECS: u64 = 20;

/// What happened to one batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub received: usize,
    /// Acknowledged: deleted from the queue.
    pub deleted: usize,
    /// Left on the queue to be received again.
    pub retried: usize,
}

pub struct Driver<H> {
    sqs: Client,
    queue_url: String,
    queue_arn: String,
    settings: EventSourceSettings,
    handler: H,
    switch: Switch,
    function: FunctionState,
}

/// What Lambda does with an invocation, apart from the handler; each fault
/// returns the batch after the visibility timeout with its receive spent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Function {
    #[default]
    Running,
    /// `TooManyRequestsException`: Lambda retries within the visibility
    /// timeout, then drops the batch; here it is given up at once.
    Throttled,
    /// The runtime fails its init (a bad deploy): a function error without the handler.
    FailingInit,
    /// A release whose batch path fails every record.
    FailingBatches,
}

/// The function's state, shared with the tests and the local breaker's probe.
#[derive(Debug, Clone, Default)]
pub struct FunctionState(Arc<watch::Sender<Function>>);

impl FunctionState {
    pub fn get(&self) -> Function {
        *self.0.borrow()
    }

    pub fn set(&self, function: Function) {
        let before = self.0.send_replace(function);
        if before != function {
            info!(?before, now = ?function, "the function's state changed");
        }
    }
}

/// The mapping's `Enabled` switch: disabled, it starts no new poll and the
/// messages wait, visible, their receive counts untouched.
#[derive(Debug, Clone)]
pub struct Switch(Arc<watch::Sender<(bool, SystemTime)>>);

impl Default for Switch {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new((true, SystemTime::now()))))
    }
}

impl Switch {
    pub fn enabled(&self) -> bool {
        self.0.borrow().0
    }

    /// Sets it, stamping the time of a change as Lambda's `LastModified` does.
    pub fn set(&self, enabled: bool) {
        self.0.send_if_modified(|(now, since)| {
            let changed = *now != enabled;
            if changed {
                (*now, *since) = (enabled, SystemTime::now());
            }
            changed
        });
    }

    /// Returns at once when enabled.
    async fn until_enabled(&self) {
        let mut enabled = self.0.subscribe();
        // The sender lives as long as the switch, so this cannot fail.
        let _ = enabled.wait_for(|(enabled, _)| *enabled).await;
    }
}

impl Mapping for Switch {
    async fn status(&self) -> Result<MappingStatus, MappingError> {
        let (enabled, since) = *self.0.borrow();
        let state = if enabled {
            MappingState::Enabled
        } else {
            MappingState::Disabled
        };
        let since = Some(since);
        Ok(MappingStatus { state, since })
    }

    async fn set_enabled(&self, enabled: bool) -> Result<(), MappingError> {
        self.set(enabled);
        Ok(())
    }
}

impl<H: BatchHandler> Driver<H> {
    pub async fn new(
        sqs: Client,
        queue_url: impl Into<String>,
        settings: EventSourceSettings,
        handler: H,
    ) -> Result<Self, QueueError> {
        let queue_url = queue_url.into();
        let queue_arn = queue_arn(&sqs, &queue_url).await?;
        Ok(Self {
            sqs,
            queue_url,
            queue_arn,
            settings,
            handler,
            switch: Switch::default(),
            function: FunctionState::default(),
        })
    }

    /// Uses `function` for the function's state: one that outlives this
    /// mapping, as a function outlives its event source mapping.
    pub fn with_function(mut self, function: FunctionState) -> Self {
        self.function = function;
        self
    }

    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The switch a circuit breaker flips to pause and resume this mapping.
    pub fn switch(&self) -> Switch {
        self.switch.clone()
    }

    /// The function's state, to throttle it or fail its init.
    pub fn function(&self) -> FunctionState {
        self.function.clone()
    }

    /// Polls until `shutdown` completes, then lets in-flight batches finish.
    /// A long poll under way when it stops is abandoned: its messages, if any,
    /// reappear after the visibility timeout, as with a disabled event source.
    pub async fn run(&self, shutdown: impl Future) {
        info!(
            queue = %self.queue_url,
            batch_size = self.settings.batch_size,
            batching_window_ms = self.settings.batching_window.as_millis() as u64,
            max_concurrency = self.settings.max_concurrency,
            "event source mapping started"
        );
        let (stop, stopped) = watch::channel(false);
        let workers = futures::future::join_all(
            (0..self.settings.max_concurrency.max(1)).map(|_| self.worker(stopped.clone())),
        );
        tokio::pin!(workers);
        tokio::select! {
            _ = &mut workers => return,
            _ = shutdown => {}
        }
        let _ = stop.send(true);
        workers.await;
        info!("event source mapping stopped");
    }

    async fn worker(&self, mut stopped: watch::Receiver<bool>) {
        while !*stopped.borrow() {
            let poll = async {
                self.switch.until_enabled().await;
                self.gather().await
            };
            tokio::select! {
                biased;
                _ = stopped.changed() => return,
                polled = poll => match polled {
                    Ok(messages) => {
                        self.invoke(messages).await;
                    }
                    Err(err) => {
                        // The whole chain: the SDK's cause says why the endpoint failed.
                        warn!(error = %support::error_chain(&err), "polling the queue failed; trying again in a second");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
            }
        }
    }

    /// One step: gather a batch (waiting at most one long poll for the first
    /// record), invoke the handler and delete what it stored. Tests step with it.
    pub async fn poll_once(&self) -> Result<BatchOutcome, QueueError> {
        Ok(self.invoke(self.gather().await?).await)
    }

    /// Gathers records until the batch is full, the window after the first record
    /// has passed, or the payload limit is near; empty after one idle long poll.
    async fn gather(&self) -> Result<Vec<Message>, QueueError> {
        let (mut batch, mut bytes) = (Vec::new(), 0);
        let mut deadline: Option<Instant> = None;
        loop {
            let wait = deadline.map_or(MAX_WAIT_SECS, |deadline| {
                let left = deadline.saturating_duration_since(Instant::now());
                left.as_secs().min(MAX_WAIT_SECS)
            });
            let room = (self.settings.batch_size - batch.len()).min(MAX_RECEIVE);
            let received = self.receive(room, wait).await?;
            let got_none = received.is_empty();
            if got_none && deadline.is_none() {
                return Ok(batch);
            }
            let deadline =
                *deadline.get_or_insert_with(|| Instant::now() + self.settings.batching_window);
            let size = |m: &Message| m.body().map_or(0, str::len);
            bytes += received.iter().map(size).sum::<usize>();
            batch.extend(received);
            let remaining = deadline.saturating_duration_since(Instant::now());
            let full =
                batch.len() >= self.settings.batch_size || bytes + 256 * 1024 > MAX_PAYLOAD_BYTES;
            if full || remaining.is_zero() {
                return Ok(batch);
            }
            if got_none && remaining < Duration::from_secs(1) {
                // Less than a second left: SQS long polls whole seconds, so wait it out.
                tokio::time::sleep(remaining.min(Duration::from_millis(100))).await;
            }
        }
    }

    async fn receive(&self, max: usize, wait_secs: u64) -> Result<Vec<Message>, QueueError> {
        let received = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max as i32)
            .wait_time_seconds(wait_secs as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|err| QueueError::new(format!("receive from {}", self.queue_url), err))?;
        Ok(received.messages.unwrap_or_default())
    }

    /// Invokes the handler with the batch and deletes what it acknowledged;
    /// an empty batch (an idle poll) invokes nothing.
    async fn invoke(&self, messages: Vec<Message>) -> BatchOutcome {
        let received = messages.len();
        if received == 0 {
            return BatchOutcome::default();
        }
        let span = info_span!("invoke", records = received);
        let deleted = match self.failed(&messages).instrument(span.clone()).await {
            Ok(failed) => {
                let done: Vec<&Message> = messages
                    .iter()
                    .filter(|m| !failed.contains(m.message_id().unwrap_or_default()))
                    .collect();
                self.delete(&done).instrument(span).await
            }
            Err(why) => {
                span.in_scope(|| error!("{why}: the whole batch comes back after the visibility timeout, its receive spent"));
                0
            }
        };
        BatchOutcome {
            received,
            deleted,
            retried: received - deleted,
        }
    }

    /// The records the handler reported failed, or why the whole batch failed.
    async fn failed(&self, messages: &[Message]) -> Result<HashSet<String>, String> {
        let function = self.function.get();
        let fault = match function {
            Function::Running => None,
            Function::Throttled => Some(
                "Lambda throttles the function (TooManyRequestsException): the batch is not run",
            ),
            Function::FailingInit => Some(
                "the runtime failed its init (Runtime.ExitError): the batch fails without the handler",
            ),
            Function::FailingBatches => Some("the release's batch path fails every record"),
        };
        if let Some(fault) = fault {
            if function != Function::Throttled {
                self.handler.unfinished(messages.len());
            }
            return Err(fault.to_owned());
        }
        let timeout = self.settings.function_timeout;
        let deadline = Instant::now() + timeout;
        let handled = AssertUnwindSafe(self.handler.handle(self.event(messages), deadline));
        // Lambda stops an invocation at its timeout: no response, no partial success.
        let failed: HashSet<String> =
            match tokio::time::timeout_at(deadline, handled.catch_unwind()).await {
                Err(_elapsed) => return Err(format!("the invocation timed out after {timeout:?}")),
                Ok(Err(_panic)) => return Err("the handler panicked".to_owned()),
                Ok(Ok(Err(err))) => return Err(support::error_chain(&err)),
                Ok(Ok(Ok(response))) => response
                    .batch_item_failures
                    .into_iter()
                    .map(|failure| failure.item_identifier)
                    .collect(),
            };
        // Lambda's rule: an empty or unknown itemIdentifier fails the whole batch.
        let known: HashSet<&str> = messages.iter().filter_map(|m| m.message_id()).collect();
        match failed.iter().find(|id| !known.contains(id.as_str())) {
            Some(unknown) => Err(format!("the response names {unknown:?}, not in the batch")),
            None => Ok(failed),
        }
    }

    /// Deletes in chunks of ten; returns how many were deleted. A failed delete
    /// only means a redelivery, which the consumer's idempotency absorbs.
    async fn delete(&self, messages: &[&Message]) -> usize {
        let mut deleted = 0;
        for chunk in messages.chunks(MAX_RECEIVE) {
            let entries = chunk.iter().enumerate().filter_map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .build()
                    .ok()
            });
            let request = self.sqs.delete_message_batch().queue_url(&self.queue_url);
            let result = request.set_entries(Some(entries.collect())).send().await;
            match result {
                Ok(output) => {
                    deleted += output.successful().len();
                    for failure in output.failed() {
                        warn!(
                            code = failure.code(),
                            "a processed record could not be deleted and will be redelivered"
                        );
                    }
                }
                Err(err) => warn!(
                    error = %support::error_chain(&err),
                    "deleting processed records failed; they will be redelivered"
                ),
            }
        }
        deleted
    }

    /// The batch as Lambda would deliver it.
    fn event(&self, messages: &[Message]) -> SqsEvent {
        let mut event = SqsEvent::default();
        event.records = messages.iter().map(|m| self.record(m)).collect();
        event
    }

    fn record(&self, message: &Message) -> SqsMessage {
        let mut record = SqsMessage::default();
        record.message_id = message.message_id.clone();
        record.receipt_handle = message.receipt_handle.clone();
        record.body = message.body.clone();
        record.md5_of_body = message.md5_of_body.clone();
        record.md5_of_message_attributes = message.md5_of_message_attributes.clone();
        let attributes = message.attributes.iter().flatten();
        record.attributes = attributes
            .map(|(name, value)| (name.as_str().to_owned(), value.clone()))
            .collect();
        let message_attributes = message.message_attributes.iter().flatten();
        record.message_attributes = message_attributes
            .map(|(name, value)| {
                let mut attribute = SqsMessageAttribute::default();
                attribute.data_type = Some(value.data_type().to_owned());
                attribute.string_value = value.string_value().map(str::to_owned);
                attribute.binary_value = value.binary_value().map(|blob| {
                    let mut data = Base64Data::default();
                    data.extend_from_slice(blob.as_ref());
                    data
                });
                (name.clone(), attribute)
            })
            .collect();
        record.event_source = Some("aws:sqs".to_owned());
        record.event_source_arn = Some(self.queue_arn.clone());
        // The ARN's fourth field is the region, as Lambda reports it in `awsRegion`.
        record.aws_region = self.queue_arn.split(':').nth(3).map(str::to_owned);
        record
    }
}
