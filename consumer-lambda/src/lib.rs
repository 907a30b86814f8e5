//! The consumer Lambda: stores the orders of an SQS batch in PostgreSQL.
//!
//! # Layout
//! - [`handler`]: [`Consumer::handle`], the whole per-batch logic, runtime-agnostic:
//!   `main.rs` hands it Lambda events, the local driver hands it polled batches.
//! - [`store`]: [`OrderStore`], the seam to the database, and [`PgStore`], one
//!   idempotent bulk `INSERT … SELECT unnest(…) ON CONFLICT DO NOTHING` per batch.
//! - [`database`]: connections made lazily, with TLS (full verification) and RDS IAM tokens.
//! - [`retry`]: exponential backoff on transient failures (`ChangeMessageVisibilityBatch`).
//! - [`metrics`]: per-batch metrics in CloudWatch Embedded Metric Format.
//! - [`migrations`]: the schema as versioned SQL, applied on first connection.
//! - [`config`]: settings from the environment.

pub mod config;
pub mod database;
pub mod handler;
pub mod metrics;
pub mod migrations;
pub mod retry;
pub mod store;

pub use config::{Config, DatabaseConfig};
pub use handler::{BatchError, Consumer, DEADLINE_MARGIN, Handled, handle_batch};
pub use metrics::BatchMetrics;
pub use retry::{Backoff, NoPostpone, Postpone, SqsPostpone};
pub use store::{Accepted, InsertOutcome, OrderStore, PgStore, StoreError};
