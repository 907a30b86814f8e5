//! The breaker's probe, answered through the batch path: a synthetic SQS
//! event with one valid order goes through [`Consumer::handle`], so whatever
//! fails every batch (the event's shape, parsing, the write, a panic) fails
//! the probe too.
//!
//! The probe has sinks of its own: its write ends in `ROLLBACK`
//! ([`RolledBack`]), so it never leaves a row, and its retry queue and DLQ
//! only remember what they were given, so it never reaches the real queues.
//! Healthy only if the order would have been stored; a postponed or refused
//! probe is unhealthy, with the store's or the handler's own words.

use std::panic::AssertUnwindSafe;
use std::sync::Mutex;

use futures::FutureExt;
use order_contract::{Order, OrderPlaced};
use serde_json::json;

use crate::dead_letter::{DeadLetter, DeadLetterQueue};
use crate::invocation::Invocation;
use crate::retry::{NoRetryQueue, RetryPolicy};
use crate::store::{self, Delivery, OrderStore, PgStore, StoreError, StoreOutcome};
use crate::{Consumer, DEADLINE_MARGIN, MessageId};
use breaker::{Health, PROBE_TIMEOUT, Probe};

/// The store of the probe: the batches' own write, rolled back.
pub struct RolledBack<'a>(pub &'a PgStore);

impl OrderStore for RolledBack<'_> {
    async fn insert(&self, deliveries: &[&Delivery]) -> Result<StoreOutcome, StoreError> {
        store::rolled_back(self.0.insert(deliveries)).await
    }
}

/// The probe: a synthetic batch through the handler, with `store`.
pub struct BatchProbe<S> {
    store: S,
    policy: RetryPolicy,
}

impl<'a> BatchProbe<RolledBack<'a>> {
    /// The probe of the function's own store, rolled back.
    pub fn of(store: &'a PgStore, policy: RetryPolicy) -> Self {
        Self::new(RolledBack(store), policy)
    }
}

impl<S: OrderStore> BatchProbe<S> {
    pub fn new(store: S, policy: RetryPolicy) -> Self {
        Self { store, policy }
    }
}

impl<S: OrderStore> Probe for BatchProbe<S> {
    async fn probe(&self) -> Health {
        probe(&self.store, self.policy).await
    }
}

/// Runs a synthetic batch through the consumer's handler with `store`.
async fn probe(store: &impl OrderStore, policy: RetryPolicy) -> Health {
    let witness = Witness {
        store,
        error: Mutex::default(),
    };
    let dead_letters = Kept::default();
    let consumer = Consumer::new(&witness, NoRetryQueue, &dead_letters, policy);
    let event = match serde_json::from_value::<Invocation>(synthetic_event()) {
        Ok(Invocation::Batch(event)) => event,
        Ok(other) => return Health::Unhealthy(format!("a synthetic batch is read as {other:?}")),
        Err(err) => return Health::Unhealthy(format!("a synthetic batch is not read: {err}")),
    };
    let deadline = tokio::time::Instant::now() + PROBE_TIMEOUT + DEADLINE_MARGIN;
    // Boxed, as the batch's handling is in main: the handler's future is deep.
    let handled = AssertUnwindSafe(Box::pin(consumer.handle(event, deadline)))
        .catch_unwind()
        .await;
    let handled = match handled {
        Ok(Ok(handled)) => handled,
        Ok(Err(err)) => return Health::Unhealthy(format!("the batch failed as a whole: {err}")),
        Err(_panic) => return Health::Unhealthy("the batch path panicked".into()),
    };
    if handled.metrics.stored == 1 {
        return Health::Healthy;
    }
    let why = lock(&dead_letters.0)
        .first()
        .map(|letter| {
            let detail = letter.failure.detail.as_deref().unwrap_or_default();
            format!("refused as {}: {detail}", letter.failure.class)
        })
        .or_else(|| lock(&witness.error).take())
        .unwrap_or_else(|| "the database did not answer in time".into());
    let m = &handled.metrics;
    Health::Unhealthy(format!(
        "the probe's order was not stored (postponed {}, requeued {}, skewed {}, invalid {}, refused {}): {why}",
        m.postponed, m.requeued, m.skewed, m.invalid, m.refused
    ))
}

/// An SQS event as Lambda sends it, holding one valid order of its own
/// (a fresh `order_id`, a customer id no customer has).
fn synthetic_event() -> serde_json::Value {
    let order = json!({
        "order_id": uuid::Uuid::new_v4(),
        "customer_id": "breaker-probe",
        "currency": "EUR",
        "items": [{"sku": "PROBE", "quantity": 1, "unit_price_cents": 1}],
    });
    let body = Order::from_request_json(&order.to_string())
        .map(|order| OrderPlaced::new(order, chrono::Utc::now()).to_json())
        .unwrap_or_else(|err| format!("the probe's own order is invalid: {err}"));
    json!({"Records": [{
        "messageId": uuid::Uuid::new_v4(),
        "receiptHandle": "breaker-probe",
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "eventSource": "aws:sqs",
    }]})
}

/// The store, remembering why it failed: the reason the probe gives.
struct Witness<'a, S> {
    store: &'a S,
    error: Mutex<Option<String>>,
}

impl<S: OrderStore> OrderStore for Witness<'_, S> {
    async fn insert(&self, deliveries: &[&Delivery]) -> Result<StoreOutcome, StoreError> {
        let result = self.store.insert(deliveries).await;
        // A refusal the handler postpones as skew (a schema newer than this
        // build) reaches neither the DLQ nor the error: say it here.
        if let Some(refused) = result.as_ref().ok().and_then(|o| o.refused.first()) {
            *lock(&self.error) = Some(format!("refused ({:?}): {}", refused.fault, refused.reason));
        }
        if let Err(err) = &result {
            let chain = support::error_chain(err);
            *lock(&self.error) = Some(match store::sqlstate(err) {
                // Class 42: a missing table or privilege, as before the migrations ran.
                Some(code) if code.starts_with("42") => {
                    format!("SQLSTATE {code}: {chain}: run the migrations (scripts/deploy)")
                }
                Some(code) => format!("SQLSTATE {code}: {chain}"),
                None => chain,
            });
        }
        result
    }
}

/// The probe's DLQ: keeps what the handler would have dead-lettered, sends nothing.
#[derive(Default)]
struct Kept(Mutex<Vec<DeadLetter>>);

impl DeadLetterQueue for &Kept {
    async fn send(&self, records: &[DeadLetter]) -> Vec<MessageId> {
        lock(&self.0).extend_from_slice(records);
        Vec::new()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use breaker::OPEN_PROBE_INTERVAL;

    use super::*;
    use crate::retry::{Backoff, MaxReceiveCount};
    use crate::store::Outcome;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            backoff: Backoff::default(),
            max_receive_count: MaxReceiveCount::new(6).expect("a count"),
        }
    }

    struct Stores;

    impl OrderStore for Stores {
        async fn insert(&self, deliveries: &[&Delivery]) -> Result<StoreOutcome, StoreError> {
            Ok(StoreOutcome {
                by_delivery: vec![Outcome::Stored; deliveries.len()],
                stored: deliveries.len() as u64,
                ..StoreOutcome::default()
            })
        }
    }

    struct Panics;

    impl OrderStore for Panics {
        async fn insert(&self, _: &[&Delivery]) -> Result<StoreOutcome, StoreError> {
            panic!("a bug in the write")
        }
    }

    #[test]
    fn the_breaker_adds_less_to_catch_up_than_the_backoffs_cap() {
        // Catch-up after an outage is bounded by the larger of the two: the
        // paused mapping's probe interval and the longest postponement.
        assert!(OPEN_PROBE_INTERVAL <= Backoff::default().cap());
        assert!(
            OPEN_PROBE_INTERVAL + Backoff::default().cap() <= std::time::Duration::from_secs(120)
        );
    }

    #[tokio::test]
    async fn a_synthetic_order_the_store_takes_is_healthy() {
        assert_eq!(
            BatchProbe::new(Stores, policy()).probe().await,
            Health::Healthy
        );
    }

    #[tokio::test]
    async fn a_write_that_panics_postpones_the_probe_and_is_unhealthy() {
        match BatchProbe::new(Panics, policy()).probe().await {
            Health::Unhealthy(reason) => assert!(reason.contains("postponed 1"), "{reason}"),
            other => panic!("expected unhealthy, got {other:?}"),
        }
    }
}
