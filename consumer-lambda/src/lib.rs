//! The consumer Lambda: stores the orders of an SQS batch in PostgreSQL.
//!
//! # Layout
//! - [`handler`]: [`Consumer::handle`], the whole per-batch logic, runtime-agnostic:
//!   `main.rs` hands it Lambda events, the local driver hands it polled batches.
//! - [`store`]: [`OrderStore`], the seam to the database, and [`PgStore`]: one
//!   write per batch, pipelined with a lookup of the stored orders
//!   (`INSERT … VALUES` for small batches, binary `COPY` for larger ones),
//!   duplicates and conflicts told apart by a content hash, rows PostgreSQL
//!   refuses isolated by bisection.
//! - [`database`]: connections made lazily, with TLS (full verification) and RDS IAM tokens.
//! - [`retry`]: what a transient failure does to a valid record: postponed with
//!   exponential backoff capped at a minute (`ChangeMessageVisibilityBatch`),
//!   then requeued as a fresh copy before its receives run out (`SendMessageBatch`).
//! - [`dead_letter`]: poison sent to the DLQ at once, with why it failed
//!   ([`SqsDeadLetterQueue`]); only then is it acknowledged.
//! - [`probe`]: the circuit breaker's probe (the `breaker` crate) answered
//!   through [`Consumer::handle`], rolled back, with sinks of its own.
//! - [`invocation`]: what the function is invoked with: a batch, or the breaker's probe.
//! - [`message_id`]: [`MessageId`], an SQS message id that cannot be empty.
//! - [`metrics`]: per-batch metrics in CloudWatch Embedded Metric Format.
//! - [`migrations`]: the schema as versioned SQL and the writer role, applied once per
//!   deploy by the same binary run as the migrate function (`TASK=migrate`).
//! - [`provision`]: the custom resource `sam deploy` creates the schema with
//!   (`TASK=provision`): the writer's secret, the migrate function, the answer to CloudFormation.
//! - [`config`]: settings from the environment.
//! - [`task`]: each task's wiring (`consume`, `migrate`, `provision`), which
//!   `main.rs` picks by `TASK`.

pub mod config;
pub mod database;
pub mod dead_letter;
pub mod handler;
pub mod invocation;
pub mod message_id;
pub mod metrics;
pub mod migrations;
pub mod probe;
pub mod provision;
pub mod retry;
pub mod store;
pub mod task;

pub use config::{Config, DatabaseConfig};
pub use dead_letter::{DeadLetter, DeadLetterQueue, NoDeadLetterQueue, SqsDeadLetterQueue};
pub use handler::{BatchError, Consumer, DEADLINE_MARGIN, Handled};
pub use message_id::MessageId;
pub use metrics::BatchMetrics;
pub use retry::{Backoff, MaxReceiveCount, NoRetryQueue, RetryPolicy, RetryQueue, SqsRetryQueue};
pub use store::{Delivery, OrderStore, Outcome, PgStore, Refused, StoreError, StoreOutcome};
