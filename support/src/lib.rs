//! Two things several crates of the workspace need and none of them owns: an
//! error's cause chain written as one line, and the wait for the signal that
//! asks a process to stop. Small on purpose: nothing here knows about orders,
//! queues or databases (the order contract lives in `order-contract`).
//!
//! # Layout
//! - [`chain`]: [`error_chain`] (`outer: cause: cause`) and [`error_chain_once`],
//!   which says each cause once and can end at an error that already summarises
//!   its sources.
//! - [`signal`]: [`StopSignals`], Ctrl-C and SIGTERM listened to from the moment
//!   it is built, and [`shutdown_signal`], the future a server's graceful
//!   shutdown awaits.

pub mod chain;
pub mod signal;

pub use chain::{error_chain, error_chain_once};
pub use signal::{Signal, StopSignals, shutdown_signal};
