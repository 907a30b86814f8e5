//! Skew is ours, not the order's: a newer `schema_version`, or a row refused
//! for a release fault, is retried as a store failure is, counted as skewed,
//! and never dead-lettered; an older version stays poison.

use super::*;

/// This build's version in a body, to be replaced.
fn this_version() -> String {
    format!("\"schema_version\":{}", order_contract::SCHEMA_VERSION)
}

fn newer_body(n: u32) -> String {
    valid_body(n).replace(
        &this_version(),
        &format!("\"schema_version\":{}", order_contract::SCHEMA_VERSION + 1),
    )
}

#[tokio::test]
async fn a_body_of_a_newer_schema_version_is_postponed_as_skew_not_dead_lettered() {
    let store = FakeStore::default();
    let queue = FakeQueue::default();
    let batch = event(vec![
        received("newer", &newer_body(1), 1),
        received("valid", &valid_body(2), 1),
    ]);
    let handled = Consumer::new(&store, &queue, &queue, POLICY)
        .handle(batch, in_a_minute())
        .await
        .expect("handled");
    assert_eq!(failed_ids(&handled.response), ["newer"]);
    assert_eq!(store.stored_message_ids(), ["valid"]);
    assert!(dead_lettered(&queue).is_empty());
    let m = handled.metrics;
    assert_eq!((m.skewed, m.postponed, m.requeued, m.invalid), (1, 0, 0, 0));
    let postponed = queue.postponed.lock().expect("lock");
    assert_eq!(postponed.len(), 1);
    assert_eq!(postponed[0].delay, POLICY.backoff.base());
}

#[tokio::test]
async fn a_skewed_record_lives_past_its_last_receives_through_fresh_copies() {
    // maxReceiveCount 5: receives 4 and 5 requeue, so the redrive policy never
    // takes it, and a copy starts again with every receive to spare.
    let body = newer_body(1);
    for receive_count in [4, 5, 9] {
        let store = FakeStore::default();
        let queue = FakeQueue::default();
        let handled = Consumer::new(&store, &queue, &queue, POLICY)
            .handle(
                event(vec![received("newer", &body, receive_count)]),
                in_a_minute(),
            )
            .await
            .expect("handled");
        assert!(
            failed_ids(&handled.response).is_empty(),
            "its copy carries it on"
        );
        let requeued = queue.requeued.lock().expect("lock");
        assert_eq!(requeued.len(), 1, "receive {receive_count}");
        assert_eq!(requeued[0].body, body);
        let m = handled.metrics;
        assert_eq!((m.skewed, m.requeued, m.postponed), (1, 0, 0));
        assert!(dead_lettered(&queue).is_empty());
    }
}

#[tokio::test]
async fn a_skewed_record_whose_copy_was_not_sent_stays_and_is_not_counted_as_the_databases() {
    let store = FakeStore::default();
    let queue = FakeQueue {
        refuse_requeues: true,
        ..FakeQueue::default()
    };
    let handled = Consumer::new(&store, &queue, &queue, POLICY)
        .handle(
            event(vec![received("newer", &newer_body(1), 4)]),
            in_a_minute(),
        )
        .await
        .expect("handled");
    assert_eq!(failed_ids(&handled.response), ["newer"]);
    let m = handled.metrics;
    assert_eq!((m.skewed, m.requeue_failed), (1, 0));
}

#[tokio::test]
async fn a_body_of_an_older_or_malformed_version_stays_poison() {
    let store = FakeStore::default();
    let queue = FakeQueue::default();
    let older = valid_body(1).replace(&this_version(), "\"schema_version\":0");
    let malformed = valid_body(2).replace(&this_version(), "\"schema_version\":\"2\"");
    let handled = Consumer::new(&store, &queue, &queue, POLICY)
        .handle(
            event(vec![
                received("older", &older, 1),
                received("malformed", &malformed, 1),
            ]),
            in_a_minute(),
        )
        .await
        .expect("handled");
    let classes: Vec<(String, FailureClass)> = dead_lettered(&queue)
        .into_iter()
        .map(|(id, class, _)| (id, class))
        .collect();
    assert_eq!(
        classes,
        [
            ("older".into(), FailureClass::UnsupportedSchemaVersion),
            ("malformed".into(), FailureClass::InvalidOrder),
        ]
    );
    assert_eq!(handled.metrics.skewed, 0);
}

#[tokio::test]
async fn a_consumer_that_reads_the_next_version_stores_it() {
    let store = FakeStore::default();
    let queue = FakeQueue::default();
    let handled = Consumer::new(&store, &queue, &queue, POLICY)
        .reading_up_to(order_contract::SCHEMA_VERSION + 1)
        .handle(
            event(vec![received("newer", &newer_body(1), 3)]),
            in_a_minute(),
        )
        .await
        .expect("handled");
    assert!(failed_ids(&handled.response).is_empty());
    assert_eq!(store.stored_message_ids(), ["newer"]);
    assert_eq!(handled.metrics.skewed, 0);
}

#[tokio::test]
async fn a_row_refused_for_a_release_fault_is_postponed_as_skew_and_its_batch_stored() {
    let store = FakeStore::with(Behaviour::RefuseForRelease(1));
    let queue = FakeQueue::default();
    let batch = event(vec![
        received("a", &valid_body(1), 1),
        received("refused", &valid_body(2), 2),
        received("c", &valid_body(3), 1),
    ]);
    let handled = Consumer::new(&store, &queue, &queue, POLICY)
        .handle(batch, in_a_minute())
        .await
        .expect("handled");
    assert_eq!(failed_ids(&handled.response), ["refused"]);
    assert_eq!(store.stored_message_ids(), ["a", "c"]);
    assert!(dead_lettered(&queue).is_empty());
    let m = handled.metrics;
    assert_eq!((m.skewed, m.refused, m.postponed, m.stored), (1, 0, 0, 2));
    let postponed = queue.postponed.lock().expect("lock");
    assert_eq!(postponed[0].delay, POLICY.backoff.delay(2));
}
