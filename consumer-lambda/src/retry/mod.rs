//! What happens to a valid order the database could not take: a database
//! outage must never push it into the DLQ.
//!
//! SQS moves a message to the DLQ when a receive would exceed
//! `maxReceiveCount` (R), so the delay after the R-th failure protects nothing
//! (<https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-dead-letter-queues.html>).
//! After each of the receives 1 … R−2 the record is **postponed** with
//! `ChangeMessageVisibility`, by a [`Backoff`] capped at a minute; on receive
//! R−1 it is **requeued**: sent again as a new message (a fresh receive
//! count, a `requeued` attribute counting the copies), and only once SQS has
//! the copy is the original reported done. A crash between the two leaves a
//! duplicate, which the idempotent store absorbs.
//!
//! The delay depends on the receive count alone, so no order is hidden for
//! longer than the cap ([`RetryPolicy::longest_wait`]); the circuit breaker
//! (the [`breaker`] crate) pauses the event source mapping through a long
//! outage, so waiting orders cost nothing meanwhile.

mod policy;
mod queue;

pub use policy::{Backoff, MAX_SEND_DELAY, MaxReceiveCount, Retry, RetryPolicy};
pub use queue::{
    NoRetryQueue, PostponeError, Postponed, REQUEUED_ATTRIBUTE, Requeued, RetryQueue, SqsRetryQueue,
};
