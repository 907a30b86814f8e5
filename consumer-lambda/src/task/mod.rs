//! The binary's tasks, one module each, chosen by `TASK`: [`consume`] (the
//! default), [`migrate`] and [`provision`]; and the invocation's deadline they share.

pub mod consume;
pub mod migrate;
pub mod provision;

/// The invocation's deadline on the monotonic clock the handler's timers use.
pub(crate) fn deadline(deadline_ms: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + support::lambda::time_left(deadline_ms)
}
