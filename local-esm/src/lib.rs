//! The local stand-ins for AWS that `scripts/dev` and the tests run: queue set-up
//! from the SAM template and the SQS event source mapping that feeds the consumer.
//!
//! # Layout
//! - [`template`]: reads the queue and event-source settings of `infra/template.yaml`;
//!   [`Document`] is the whole template as data, for the template's own tests.
//! - [`queues`]: creates the queue pair with those settings.
//! - [`driver`]: [`Driver`], Lambda's SQS event source mapping, reproduced.
//! - [`schedule`]: the retry schedule of a valid order through an outage, as text.
//! - [`cli`]: the `local-esm` command (`create-queues`, `migrate`, `run`, `retry-schedule`).

pub mod cli;
pub mod driver;
pub mod queues;
pub mod schedule;
pub mod template;

pub use driver::{BatchHandler, BatchOutcome, Driver, InProcess, InvocationError};
pub use template::{Document, EventSourceSettings, QueueSettings, Template};
