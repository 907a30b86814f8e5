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
//!   visibility is stretched with `ChangeMessageVisibility`, doubling with
//!   every receive up to a cap of a minute ([`Backoff`]);
//! - on receive R−1 it is **requeued**: sent to the queue again as a new message
//!   (same body and attributes, so a fresh receive count, with a `requeued`
//!   attribute counting the copies), and only once SQS has acknowledged
//!   the copy is the original reported done, so the event source mapping
//!   deletes it. A crash between the two leaves a duplicate, which the
//!   idempotent store absorbs, and the original still has its R-th receive to
//!   spare, so that crash cannot push it into the DLQ either.
//!
//! The delay depends on the receive count alone, so no order is ever hidden for
//! longer than the cap ([`RetryPolicy::longest_wait`]): once the database
//! answers again, the backlog is received within a minute. Cycling every
//! minute through a long outage would cost requests per order per hour; the
//! circuit breaker (the [`breaker`] crate) pauses the event source mapping while
//! the database is down, so a waiting order costs nothing until it returns.
//! Only poison (invalid orders, rows PostgreSQL refuses) reaches the DLQ.
//!
//! # Layout
//! - `policy`: the arithmetic: [`Backoff`], and [`RetryPolicy`] deciding per
//!   receive whether a record is postponed or requeued ([`Retry`]).
//! - `queue`: the SQS side: [`RetryQueue`], [`SqsRetryQueue`] batching the
//!   `ChangeMessageVisibility` and `SendMessage` calls.

mod policy;
mod queue;

pub use policy::{Backoff, MAX_SEND_DELAY, MaxReceiveCount, Retry, RetryPolicy};
pub use queue::{
    NoRetryQueue, PostponeError, Postponed, REQUEUED_ATTRIBUTE, RequeueOutcome, Requeued,
    RetryQueue, SqsRetryQueue,
};
