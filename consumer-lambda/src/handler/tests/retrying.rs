//! A store that fails, panics or stalls: valid records postponed or requeued, never acknowledged unstored.

use super::*;

#[tokio::test]
async fn a_record_whose_storing_panics_is_reported_failed_never_acknowledged() {
    let store = FakeStore::with(Behaviour::Panic);
    let response = handle(mixed_batch(), &store)
        .await
        .expect("a panic is contained");
    let mut failed = failed_ids(&response);
    failed.sort_unstable();
    assert_eq!(failed, ["m-no-body", "m-valid-1", "m-valid-2"]);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_database_is_abandoned_in_time_to_postpone_and_answer() {
    let store = FakeStore::with(Behaviour::Stall);
    let queue = FakeQueue::default();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    let batch = event(vec![
        received("a", &valid_body(1), 1),
        received("b", &valid_body(2), 2),
    ]);
    let handled = Consumer::new(&store, &queue, &queue, POLICY)
        .handle(batch, deadline)
        .await
        .expect("handled");
    assert_eq!(
        Instant::now() - started,
        Duration::from_secs(30) - DEADLINE_MARGIN,
        "stops waiting exactly at the margin"
    );
    assert_eq!(failed_ids(&handled.response), ["a", "b"]);
    let delays: Vec<u64> = queue
        .postponed
        .lock()
        .expect("lock")
        .iter()
        .map(|p| p.delay.as_secs())
        .collect();
    assert_eq!(delays, [10, 20]);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_already_inside_the_margin_postpones_without_waiting() {
    let store = FakeStore::with(Behaviour::Stall);
    let queue = FakeQueue::default();
    let started = Instant::now();
    let handled = Consumer::new(&store, &queue, &queue, POLICY)
        .handle(
            event(vec![received("a", &valid_body(1), 1)]),
            started + Duration::from_secs(2),
        )
        .await
        .expect("handled");
    assert_eq!(Instant::now(), started);
    assert_eq!(failed_ids(&handled.response), ["a"]);
}

#[tokio::test]
async fn a_store_failure_postpones_valid_records_by_their_receive_count_and_dead_letters_poison() {
    let store = FakeStore::with(Behaviour::Fail);
    let queue = FakeQueue::default();
    let batch = event(vec![
        received("first", &valid_body(1), 1),
        received("poison", "{}", 3),
        received("third", &valid_body(3), 3),
    ]);
    let handled = Consumer::new(&store, &queue, &queue, POLICY)
        .handle(batch, in_a_minute())
        .await
        .expect("handled");
    assert_eq!(failed_ids(&handled.response), ["first", "third"]);
    assert_eq!((handled.metrics.invalid, handled.metrics.postponed), (1, 2));
    assert_eq!(dead_lettered(&queue)[0].0, "poison");
    let postponed: Vec<(String, String, u64)> = queue
        .postponed
        .lock()
        .expect("lock")
        .iter()
        .map(|p| {
            (
                p.message_id.to_string(),
                p.receipt_handle.clone(),
                p.delay.as_secs(),
            )
        })
        .collect();
    assert_eq!(
        postponed,
        [
            ("first".into(), "handle-first".into(), 10),
            ("third".into(), "handle-third".into(), 40)
        ]
    );
}

#[tokio::test]
async fn a_record_near_its_last_receive_is_requeued_and_acknowledged_once_the_copy_is_sent() {
    let store = FakeStore::with(Behaviour::Fail);
    let queue = FakeQueue::default();
    let body = valid_body(1);
    let mut near_the_end = received("old", &body, 4);
    near_the_end
        .message_attributes
        .insert(REQUEST_ID_ATTRIBUTE.into(), attribute("String", "req-7"));
    let batch = event(vec![near_the_end, received("young", &valid_body(2), 1)]);
    let handled = Consumer::new(&store, &queue, &queue, POLICY)
        .handle(batch, in_a_minute())
        .await
        .expect("handled");
    // The original is acknowledged (the copy carries it on); the young one waits.
    assert_eq!(failed_ids(&handled.response), ["young"]);
    assert_eq!(
        (handled.metrics.requeued, handled.metrics.postponed),
        (1, 1)
    );
    let requeued = queue.requeued.lock().expect("lock");
    assert_eq!(requeued.len(), 1);
    assert_eq!(requeued[0].body, body);
    assert_eq!(requeued[0].requeued, 1);
    assert!(requeued[0].attributes.contains_key(REQUEST_ID_ATTRIBUTE));
}

#[tokio::test]
async fn a_record_whose_copy_was_not_sent_stays_on_the_queue() {
    let store = FakeStore::with(Behaviour::Fail);
    let queue = FakeQueue {
        refuse_requeues: true,
        ..FakeQueue::default()
    };
    let handled = Consumer::new(&store, &queue, &queue, POLICY)
        .handle(
            event(vec![received("old", &valid_body(1), 4)]),
            in_a_minute(),
        )
        .await
        .expect("handled");
    assert_eq!(failed_ids(&handled.response), ["old"]);
    assert_eq!(
        (handled.metrics.requeued, handled.metrics.requeue_failed),
        (0, 1)
    );
}
