//! Test harness: every test gets its own PostgreSQL database and its own SQS
//! queues on the servers `scripts/test` starts, so tests never share state.
//!
//! # Layout
//! - `postgres`: [`TestDatabase`], a fresh database on the shared server
//!   (`TEST_DATABASE_URL`), and [`PostgresServer`], a private PostgreSQL cluster
//!   a test may stop and restart.
//! - `sqs`: [`TestQueues`], a fresh queue and dead-letter queue on the emulator
//!   (`TEST_SQS_ENDPOINT`), with the [`QueueSettings`] a test chooses.
//! - `logs`: [`CapturedLogs`], what a test's own log lines said, as text.
//! - this file: [`eventually`] (await a condition instead of sleeping for a
//!   guess), [`init_tracing`] (`TEST_LOG`) and [`unique_name`].
//!
//! Helpers panic with a message saying what to do: they only ever run in tests.

mod logs;
mod postgres;
mod sqs;

pub use logs::CapturedLogs;

pub use postgres::{PostgresServer, TestDatabase, connect, free_port};
pub use sqs::{QueueSettings, TestQueues, queue_depth, sqs_client, sqs_client_at, sqs_endpoint};

use std::future::Future;
use std::time::{Duration, Instant};

/// Logs to the test output when `TEST_LOG` is set (e.g. `TEST_LOG=debug`), silent otherwise.
pub fn init_tracing() {
    let Ok(filter) = std::env::var("TEST_LOG") else {
        return;
    };
    let filter = if filter.is_empty() || filter == "1" {
        "debug".to_owned()
    } else {
        filter
    };
    // Several tests in one binary call this; only the first wins.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}

/// Polls `check` every 50 ms until it yields `Some`, and panics after `timeout`
/// naming `what` was awaited and the last state seen.
pub async fn eventually<T, S, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    S: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, S>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(state) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {state:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A name no other test (or earlier run) uses, safe for databases and queues.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

pub(crate) fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the tests through scripts/test, which starts PostgreSQL \
             and the SQS emulator and sets it"
        )
    })
}
