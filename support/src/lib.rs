//! What several crates of the workspace need and none of them owns: an
//! error's cause chain written as one line, and the wait for the signal that
//! asks a process to stop. Small on purpose: nothing here knows about orders
//! or databases (the order contract lives in `order-contract`).
//!
//! # Layout
//! - [`chain`]: [`error_chain`] (`outer: cause: cause`) and [`error_chain_once`],
//!   which says each cause once and can end at an error that already summarises
//!   its sources.
//! - `claims` (feature `claims`): the load balancer's signed claims
//!   (`x-amzn-oidc-data`), read and checked, for the producer and the status
//!   function alike.
//! - [`env`]: [`Env`], settings read from the environment one way: trimmed,
//!   blank as unset, bounds enforced, and [`EnvError`] saying what to set.
//! - [`signal`]: [`StopSignals`], Ctrl-C and SIGTERM listened to from the moment
//!   it is built, and [`shutdown_signal`], the future a server's graceful
//!   shutdown awaits.
//! - `logs` (feature `logs`): [`init_tool_logs`], the command-line tools' log
//!   set-up. A feature, so that the Lambda, which uses this crate for
//!   [`error_chain`], builds without a log formatter it does not use.
//! - `problem` (feature `problem`): the `application/problem+json` body.
//! - `queues` (feature `queues`): the queue pair created as the template
//!   declares it, for the local stack and for the tests alike.
//! - `sqs` (feature `sqs`): `SendMessageBatch` split by entry count and total
//!   size with an outcome per entry, and one classification of SDK errors.

pub mod chain;
#[cfg(feature = "claims")]
pub mod claims;
pub mod env;
#[cfg(feature = "logs")]
pub mod logs;
#[cfg(feature = "problem")]
pub mod problem;
#[cfg(feature = "queues")]
pub mod queues;
pub mod signal;
#[cfg(feature = "sqs")]
pub mod sqs;

pub use chain::{error_chain, error_chain_once};
pub use env::{Env, EnvError, process_env};
#[cfg(feature = "logs")]
pub use logs::init_tool_logs;
pub use signal::{Signal, StopSignals, shutdown_signal};
