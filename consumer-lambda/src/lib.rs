//! The consumer Lambda: stores the orders of an SQS batch in PostgreSQL.
//!
//! # Layout
//! - [`handler`]: [`Consumer::handle`], the whole per-batch logic, whoever
//!   hands it the batch (`main.rs`, or the local driver).
//! - [`store`]: [`OrderStore`], and [`PgStore`]: one pipelined write per
//!   batch, duplicates and conflicts told apart by a content hash, refused
//!   rows isolated by bisection.
//! - [`database`]: connections made lazily, with TLS and RDS IAM tokens.
//! - [`retry`]: a transient failure postpones a valid record with backoff,
//!   then requeues a fresh copy before its receives run out.
//! - [`dead_letter`]: poison sent to the DLQ at once, saying why.
//! - [`probe`]: the circuit breaker's probe, answered through [`Consumer::handle`], rolled back.
//! - [`invocation`]: what the function is invoked with.
//! - [`message_id`]: [`MessageId`], an SQS message id that cannot be empty.
//! - [`metrics`]: per-batch metrics in CloudWatch Embedded Metric Format.
//! - [`migrations`]: the schema as versioned SQL, and the roles (`TASK=migrate`).
//! - [`provision`]: the custom resource `sam deploy` creates the schema with (`TASK=provision`).
//! - [`config`]: settings from the environment.
//! - [`task`]: each task's wiring, which `main.rs` picks by `TASK`.

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
