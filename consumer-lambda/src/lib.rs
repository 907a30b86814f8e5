//! The consumer Lambda: stores the orders of an SQS batch in PostgreSQL.
//!
//! # Layout
//! - [`handler`]: [`handle_batch`], the whole per-batch logic, runtime-agnostic:
//!   `main.rs` hands it Lambda events, the local driver hands it polled batches.
//! - [`store`]: [`OrderStore`], the seam to the database, and [`PgStore`], one
//!   idempotent bulk `INSERT … SELECT unnest(…) ON CONFLICT DO NOTHING` per batch.
//! - [`migrations`]: the schema as versioned SQL, applied on first connection.
//! - [`config`]: settings from the environment.

pub mod config;
pub mod handler;
pub mod migrations;
pub mod store;

pub use config::Config;
pub use handler::{BatchError, handle_batch};
pub use store::{Accepted, InsertOutcome, OrderStore, PgStore, StoreError};
