//! Test harness: every test gets its own PostgreSQL database ([`TestDatabase`],
//! or a private server to stop, [`PostgresServer`]) and its own SQS queues
//! ([`TestQueues`]) on the servers `scripts/test` starts. Helpers panic with a
//! message saying what to do: they only ever run in tests.

mod logs;
mod postgres;
mod sqs;

pub use logs::CapturedLogs;

pub use postgres::{PostgresServer, TestDatabase, connect, free_port};
pub use sqs::{QueueSettings, TestQueues, queue_depth, sqs_client, sqs_client_at, sqs_endpoint};

use std::future::Future;
use std::time::{Duration, Instant};

/// Logs to the test output when `TEST_LOG` is set (e.g. `TEST_LOG=debug`).
pub fn init_tracing() {
    let filter = match std::env::var("TEST_LOG") {
        Err(_) => return,
        Ok(filter) if filter.is_empty() || filter == "1" => "debug".to_owned(),
        Ok(filter) => filter,
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
