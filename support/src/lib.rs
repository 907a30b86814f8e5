//! What several crates need and none owns; nothing here knows about orders or
//! databases. Each module past the first three is a feature, so that a crate
//! links only what it uses.
//!
//! # Layout
//! - [`chain`]: an error and its causes on one line.
//! - [`env`]: [`Env`], settings read one way, [`EnvError`] saying what to set.
//! - [`signal`]: [`StopSignals`] and [`shutdown_signal`] (Ctrl-C, SIGTERM).
//! - `claims`: the load balancer's signed claims (`x-amzn-oidc-data`).
//! - `lambda`: invoking a function, and the invocation's clock.
//! - `logs`: the command-line tools' log set-up.
//! - `problem`: the `application/problem+json` body.
//! - `queues`: the queue pair created as the template declares it.
//! - `sqs`: `SendMessageBatch` with an outcome per entry, and SDK errors classified.

pub mod chain;
#[cfg(feature = "claims")]
pub mod claims;
pub mod env;
#[cfg(feature = "lambda")]
pub mod lambda;
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
pub use env::{Env, EnvError, FromEnv, process_env};
#[cfg(feature = "logs")]
pub use logs::init_tool_logs;
pub use signal::{Signal, StopSignals, shutdown_signal};
