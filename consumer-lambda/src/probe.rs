//! The breaker's probe, answered through the batch path: a synthetic SQS
//! event with one valid order goes through [`Consumer::handle`], so whatever
//! fails every batch fails the probe too.
//!
//! Its write ends in `ROLLBACK` ([`RolledBack`]) and its queues only remember
//! what they were given, so it leaves no trace. Healthy only if the order
//! would have been stored; otherwise unhealthy, in the store's or the
//! handler's words. The release hook's probe adds a poison record, which must
//! come back dead-lettered.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;

use breaker::hook::{ProbeRecord, RecordOutcome, Sent};
use breaker::{Health, PROBE_TIMEOUT, Probe, ProbeAnswer};
use futures::FutureExt;
use order_contract::{Order, OrderPlaced};
use serde_json::json;

use crate::dead_letter::{DeadLetter, DeadLetterQueue};
use crate::invocation::Invocation;
use crate::retry::{NoRetryQueue, RetryPolicy};
use crate::store::{self, Delivery, OrderStore, Outcome, PgStore, StoreError, StoreOutcome};
use crate::{Consumer, DEADLINE_MARGIN, MessageId};

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

    /// Healthy or not, and what became of each record; with `poison`, a
    /// poison record rides beside the canary.
    pub async fn answer(&self, poison: bool) -> ProbeAnswer {
        let (health, records) = probe(&self.store, self.policy, poison).await;
        ProbeAnswer {
            records,
            ..ProbeAnswer::from(health)
        }
    }
}

impl<S: OrderStore> Probe for BatchProbe<S> {
    async fn probe(&self) -> Health {
        probe(&self.store, self.policy, false).await.0
    }
}

/// Runs a synthetic batch through the consumer's handler with `store`.
async fn probe(
    store: &impl OrderStore,
    policy: RetryPolicy,
    poison: bool,
) -> (Health, Vec<ProbeRecord>) {
    let witness = Witness {
        store,
        error: Mutex::default(),
        outcomes: Mutex::default(),
    };
    let dead_letters = Kept::default();
    let consumer = Consumer::new(&witness, NoRetryQueue, &dead_letters, policy);
    let (event, sent) = synthetic_event(poison);
    let unhealthy = |why| (Health::Unhealthy(why), Vec::new());
    let event = match serde_json::from_value::<Invocation>(event) {
        Ok(Invocation::Batch(event)) => event,
        other => return unhealthy(format!("a synthetic batch is not read as one: {other:?}")),
    };
    let deadline = tokio::time::Instant::now() + PROBE_TIMEOUT + DEADLINE_MARGIN;
    // Boxed, as the batch's handling is in main: the handler's future is deep.
    let handled = AssertUnwindSafe(Box::pin(consumer.handle(event, deadline)))
        .catch_unwind()
        .await;
    let handled = match handled {
        Ok(Ok(handled)) => handled,
        Ok(Err(err)) => return unhealthy(format!("the batch failed as a whole: {err}")),
        Err(_panic) => return unhealthy("the batch path panicked".to_owned()),
    };
    let failed: HashSet<&str> = handled
        .response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    let letters = lock(&dead_letters.0);
    let stored = lock(&witness.outcomes);
    let store_error = lock(&witness.error).clone();
    let records = sent
        .into_iter()
        .map(|(message_id, sent)| {
            let letter = letters.iter().find(|l| l.message_id == message_id.as_str());
            let (outcome, detail) = if failed.contains(message_id.as_str()) {
                (RecordOutcome::Retried, store_error.clone())
            } else if let Some(letter) = letter {
                let detail = letter.failure.detail.as_deref().unwrap_or_default();
                let class = &letter.failure.class;
                (
                    RecordOutcome::DeadLettered,
                    Some(format!("{class}: {detail}")),
                )
            } else {
                let outcome = match stored.get(&message_id) {
                    Some(Outcome::Stored) => RecordOutcome::Stored,
                    Some(Outcome::Duplicate) => RecordOutcome::Duplicate,
                    Some(Outcome::Conflict { .. }) => RecordOutcome::Conflict,
                    Some(Outcome::Refused) | None => RecordOutcome::Dropped,
                };
                (outcome, None)
            };
            ProbeRecord {
                message_id,
                sent,
                outcome,
                detail,
            }
        })
        .collect();
    if handled.metrics.stored == 1 {
        return (Health::Healthy, records);
    }
    let why = letters
        .iter()
        .find(|letter| !letter.message_id.as_str().starts_with(POISON_PREFIX))
        .map(|letter| {
            let detail = letter.failure.detail.as_deref().unwrap_or_default();
            format!("refused as {}: {detail}", letter.failure.class)
        })
        .or(store_error)
        .unwrap_or_else(|| "the database did not answer in time".into());
    let m = &handled.metrics;
    let health = Health::Unhealthy(format!(
        "the probe's order was not stored (postponed {}, requeued {}, skewed {}, invalid {}, refused {}): {why}",
        m.postponed, m.requeued, m.skewed, m.invalid, m.refused
    ));
    (health, records)
}

/// The poison record's message id starts with this.
const POISON_PREFIX: &str = "probe-poison-";

/// An SQS event as Lambda sends it, holding one valid order of its own, and
/// with `poison` a body that is no order; and what each message id holds.
fn synthetic_event(poison: bool) -> (serde_json::Value, Vec<(String, Sent)>) {
    let order = json!({
        "order_id": uuid::Uuid::new_v4(),
        "customer_id": "breaker-probe",
        "currency": "EUR",
        "items": [{"sku": "PROBE", "quantity": 1, "unit_price_cents": 1}],
    });
    let body = Order::from_request_json(&order.to_string())
        .map(|order| OrderPlaced::new(order, chrono::Utc::now()).to_json())
        .unwrap_or_else(|err| format!("the probe's own order is invalid: {err}"));
    let record = |message_id: &str, body: &str| {
        json!({
            "messageId": message_id,
            "receiptHandle": "breaker-probe",
            "body": body,
            "attributes": {"ApproximateReceiveCount": "1"},
            "messageAttributes": {},
            "eventSource": "aws:sqs",
        })
    };
    let mut sent = vec![(uuid::Uuid::new_v4().to_string(), Sent::Order)];
    if poison {
        sent.push((
            format!("{POISON_PREFIX}{}", uuid::Uuid::new_v4()),
            Sent::Poison,
        ));
    }
    let records: Vec<_> = sent
        .iter()
        .map(|(id, kind)| match kind {
            Sent::Order => record(id, &body),
            Sent::Poison => record(id, "the release probe's poison: not an order"),
        })
        .collect();
    (json!({ "Records": records }), sent)
}

/// The store, remembering why it failed: the reason the probe gives.
struct Witness<'a, S> {
    store: &'a S,
    error: Mutex<Option<String>>,
    /// What the store did with each delivery, by message id.
    outcomes: Mutex<HashMap<String, Outcome>>,
}

impl<S: OrderStore> OrderStore for Witness<'_, S> {
    async fn insert(&self, deliveries: &[&Delivery]) -> Result<StoreOutcome, StoreError> {
        let result = self.store.insert(deliveries).await;
        if let Ok(outcome) = &result {
            let by_id = deliveries.iter().map(|d| d.message_id.to_string());
            lock(&self.outcomes).extend(by_id.zip(outcome.by_delivery.iter().copied()));
        }
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

/// The probe's DLQ: keeps what the handler would have dead-lettered and takes
/// it as SQS would (so the poison is acknowledged), sending nothing.
#[derive(Default)]
struct Kept(Mutex<Vec<DeadLetter>>);

impl DeadLetterQueue for &Kept {
    async fn send(&self, records: &[DeadLetter]) -> Vec<MessageId> {
        lock(&self.0).extend_from_slice(records);
        records.iter().map(|r| r.message_id.clone()).collect()
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

    use breaker::hook::{RecordOutcome, Sent};

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
    async fn the_release_probe_answers_its_canary_stored_and_its_poison_dead_lettered() {
        let answer = BatchProbe::new(Stores, policy()).answer(true).await;
        assert!(answer.healthy, "{answer:?}");
        let outcomes: Vec<(Sent, RecordOutcome)> =
            answer.records.iter().map(|r| (r.sent, r.outcome)).collect();
        assert_eq!(
            outcomes,
            [
                (Sent::Order, RecordOutcome::Stored),
                (Sent::Poison, RecordOutcome::DeadLettered)
            ]
        );
        assert!(answer.records[1].detail.is_some(), "the poison's class");
        let breakers = BatchProbe::new(Stores, policy()).answer(false).await;
        assert_eq!(
            breakers.records.len(),
            1,
            "the breaker's probe: the canary alone"
        );
    }

    #[tokio::test]
    async fn a_canary_the_store_cannot_take_is_answered_retried_with_the_reason() {
        let answer = BatchProbe::new(Panics, policy()).answer(true).await;
        assert!(!answer.healthy);
        assert_eq!(answer.records[0].sent, Sent::Order);
        assert_eq!(answer.records[0].outcome, RecordOutcome::Retried);
        assert_eq!(answer.records[1].outcome, RecordOutcome::DeadLettered);
    }

    #[tokio::test]
    async fn a_write_that_panics_postpones_the_probe_and_is_unhealthy() {
        match BatchProbe::new(Panics, policy()).probe().await {
            Health::Unhealthy(reason) => assert!(reason.contains("postponed 1"), "{reason}"),
            other => panic!("expected unhealthy, got {other:?}"),
        }
    }
}
