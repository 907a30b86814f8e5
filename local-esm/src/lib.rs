//! The local stand-ins for AWS that `scripts/dev` and the tests run: Lambda's SQS
//! event source mapping, which feeds batches to the consumer's handler, and the
//! queue pair set up with the settings of `infra/template.yaml`.
//!
//! The template is read with `infra_checks`' reader, which also serves the
//! template's own checks, so there is one reader.
//!
//! # Layout
//! - [`driver`]: [`Driver`], Lambda's SQS event source mapping, reproduced, with
//!   its `Enabled` [`Switch`] and the function's faults ([`FunctionState`]:
//!   throttled, failing its init).
//! - [`handler`]: what the mapping invokes: [`InProcess`], [`Recording`].
//! - [`batches`]: [`batches::BatchLog`], the consumer's EMF line per batch kept in a
//!   bounded file, which [`Recording`] writes and `status` reads.
//! - [`status`]: `local-esm status`, the dashboard's figures for the local stack, as a table.
//! - [`breaker`]: the circuit breaker (the `breaker` crate) run locally on its intervals
//!   ([`breaker::run`]), its probe meeting the function's faults ([`breaker::LocalProbe`]).
//! - [`template`]: the queue and event-source settings the local stack takes from the template.
//! - the queue pair is created with those settings by `support::queues`, which
//!   the tests' `testkit` uses too.
//! - [`schedule`]: the retry schedule of a valid order through an outage, as text.
//! - [`cli`]: the `local-esm` command (`create-queues`, `migrate`, `run`, `status`, `retry-schedule`).

pub mod batches;
pub mod breaker;
pub mod cli;
pub mod driver;
pub mod handler;
pub mod schedule;
pub mod status;
pub mod template;

pub use driver::{BatchOutcome, Driver, Function, FunctionState, Switch};
pub use handler::{BatchHandler, InProcess, InvocationError, Recording};
pub use support::queues::QueueSettings;
pub use template::{EventSourceSettings, Template};
