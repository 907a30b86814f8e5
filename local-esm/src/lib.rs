//! The local stand-ins for AWS that `scripts/dev` and the tests run: Lambda's SQS
//! event source mapping ([`driver`]) feeding the consumer's handler ([`handler`]),
//! under the circuit breaker ([`breaker`]), with the queue pair and settings of
//! `infra/template.yaml` ([`template`], read with `infra`' reader), and
//! `local-esm status` ([`status`], from the [`batches`] log). [`cli`] is the command.

pub mod batches;
pub mod breaker;
pub mod cli;
pub mod driver;
pub mod handler;
pub mod schedule;
pub mod status;
pub mod template;

pub use driver::{BatchOutcome, Driver, Function, FunctionState, Switch};
pub use handler::{BatchHandler, InProcess, InvocationError};
pub use template::{EventSourceSettings, Template};
