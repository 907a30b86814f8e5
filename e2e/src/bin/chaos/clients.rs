//! The customers: what they placed and what they were told, and how long the
//! orders accepted before an outage's end took to be stored.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;
use testkit::{TestDatabase, TestQueues};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::OUTAGE_PATIENCE;

/// What the clients saw.
#[derive(Default)]
pub(crate) struct Ledger {
    /// order id → when its first 202 came (a conflicting twin's is its original's).
    pub(crate) accepted_at: HashMap<String, Instant>,
    pub(crate) conflicts_injected: usize,
    pub(crate) attempts: usize,
}

/// The same order id with other content: another customer.
pub(crate) fn conflicting_twin(body: &Value) -> Value {
    let mut twin = body.clone();
    twin["customer_id"] = Value::from("conflicting-twin");
    twin
}

/// Posts until a 202, retrying any other answer with the same body, as a real
/// client with an idempotency key would.
pub(crate) async fn place(http: &reqwest::Client, url: &str, body: &Value, ledger: &Mutex<Ledger>) {
    let mut pause = Duration::from_millis(100);
    loop {
        ledger.lock().await.attempts += 1;
        match http.post(url).json(body).send().await {
            Ok(response) if response.status().as_u16() == 202 => {
                let id = body["order_id"].as_str().unwrap_or_default().to_owned();
                let mut ledger = ledger.lock().await;
                ledger.accepted_at.entry(id).or_insert_with(Instant::now);
                return;
            }
            Ok(response)
                if response.status().is_client_error() && response.status().as_u16() != 429 =>
            {
                panic!("a valid order was refused: {}", response.status());
            }
            _ => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Waits until every order accepted before `back_at` (when the database or
/// the good build was back: `back` says which) is stored; returns how long
/// after `back_at` the last of them was, or None once the queue is empty
/// with some still unstored (they went to the DLQ, or were lost: the counts
/// that follow say which).
pub(crate) async fn await_catchup(
    db: &TestDatabase,
    queues: &TestQueues,
    ledger: &Mutex<Ledger>,
    down_at: Instant,
    back_at: Instant,
    back: &str,
) -> anyhow::Result<Option<Duration>> {
    let (waiting, while_down) = {
        let ledger = ledger.lock().await;
        let before = ledger.accepted_at.iter().filter(|(_, at)| **at <= back_at);
        let while_down = before.clone().filter(|(_, at)| **at >= down_at).count();
        let ids: Result<Vec<Uuid>, _> = before.map(|(id, _)| id.parse()).collect();
        (ids, while_down)
    };
    let waiting = waiting.context("an accepted order id is not a UUID")?;
    println!(
        "  {} orders accepted before {back}, {while_down} of them during the fault",
        waiting.len()
    );
    let client = db.connect().await;
    let expected = waiting.len() as i64;
    let what = "every order accepted before the fault ended to be stored";
    let count = "SELECT count(*) FROM orders WHERE order_id = ANY($1)";
    let counted = testkit::eventually(what, OUTAGE_PATIENCE, || async {
        let stored = client.query_one(count, &[&waiting]).await;
        match stored.map(|row| row.get::<_, i64>(0)) {
            // A failed query ends the wait: the harness, not the system, is broken.
            Err(err) => Ok(Err(err)),
            Ok(n) if n == expected => Ok(Ok(true)),
            // Checked after the count: an order stored since was in flight.
            Ok(_) if queues.depth().await == 0 => Ok(Ok(false)),
            Ok(n) => Err(format!("{n} of {expected} stored")),
        }
    })
    .await;
    if !counted.context("count the stored orders")? {
        println!("  the queue is empty and some of them are not stored: they never will be");
        return Ok(None);
    }
    let catchup = back_at.elapsed();
    let catchup_s = catchup.as_secs_f64();
    println!("  the last of them stored {catchup_s:.1} s after {back}");
    Ok(Some(catchup))
}
