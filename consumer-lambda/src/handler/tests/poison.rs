//! Poison: sent to the DLQ at once with its reason, and acknowledged only once SQS has the copy.

use super::*;

#[tokio::test]
async fn the_poison_of_a_mixed_batch_goes_to_the_dlq_at_once_with_its_class() {
    let store = FakeStore::default();
    let queue = FakeQueue::default();
    let handled = Consumer::new(&store, &queue, &queue, POLICY)
        .handle(mixed_batch(), in_a_minute())
        .await
        .expect("handled");
    // SQS takes no message without a body: that one is left to the redrive policy.
    assert_eq!(failed_ids(&handled.response), ["m-no-body"]);
    assert_eq!(store.stored_message_ids(), ["m-valid-1", "m-valid-2"]);
    let sent = dead_lettered(&queue);
    let classes: Vec<(&str, FailureClass)> = sent
        .iter()
        .map(|(id, class, _)| (id.as_str(), *class))
        .collect();
    assert_eq!(
        classes,
        [
            ("m-not-json", FailureClass::InvalidJson),
            ("m-not-an-order", FailureClass::InvalidOrder),
            ("m-invalid", FailureClass::InvalidOrder),
        ]
    );
    assert!(sent[2].2.starts_with("`currency`"), "{sent:?}");
    let m = handled.metrics;
    assert_eq!(
        (m.invalid, m.dead_lettered, m.dead_letter_failed),
        (4, 3, 1)
    );
}

#[tokio::test]
async fn a_dead_letter_keeps_the_body_and_attributes_and_says_where_and_when_it_failed() {
    let store = FakeStore::default();
    let queue = FakeQueue::default();
    let invalid = with_currency(valid_body(1), "euro");
    let mut poison = received("m-invalid", &invalid, 3);
    poison
        .message_attributes
        .insert(REQUEST_ID_ATTRIBUTE.into(), attribute("String", "req-7"));
    let before = chrono::Utc::now();
    Consumer::new(&store, &queue, &queue, POLICY)
        .handle(event(vec![poison]), in_a_minute())
        .await
        .expect("handled");
    let sent = queue.dead_lettered.lock().expect("lock").clone();
    let [letter] = sent.as_slice() else {
        panic!("one dead letter: {sent:?}")
    };
    assert_eq!(letter.body, invalid);
    assert_eq!(
        letter.attributes[REQUEST_ID_ATTRIBUTE]
            .string_value
            .as_deref(),
        Some("req-7")
    );
    let failure = &letter.failure;
    assert_eq!(failure.class, FailureClass::InvalidOrder);
    assert_eq!(failure.message_id.as_deref(), Some("m-invalid"));
    assert_eq!(failure.receive_count, Some(3));
    assert_eq!(failure.consumer_version.as_deref(), Some(CONSUMER_VERSION));
    assert!(failure.failed_at.is_some_and(|at| at >= before));
}

#[tokio::test]
async fn poison_whose_dlq_copy_sqs_does_not_take_stays_unacknowledged() {
    let store = FakeStore::default();
    let queue = FakeQueue {
        refuse_dead_letters: true,
        ..FakeQueue::default()
    };
    let handled = Consumer::new(&store, &queue, &queue, POLICY)
        .handle(mixed_batch(), in_a_minute())
        .await
        .expect("handled");
    assert_eq!(
        failed_ids(&handled.response),
        ["m-no-body", "m-not-json", "m-not-an-order", "m-invalid"]
    );
    assert_eq!(store.stored_message_ids(), ["m-valid-1", "m-valid-2"]);
    let m = handled.metrics;
    assert_eq!((m.dead_lettered, m.dead_letter_failed), (0, 4));
}

#[tokio::test]
async fn a_row_the_database_refuses_fails_alone_and_its_batch_is_stored() {
    let store = FakeStore::with(Behaviour::Refuse(1));
    let queue = FakeQueue::default();
    let batch = event(vec![
        record(Some("m-0"), Some(valid_body(0))),
        record(Some("m-refused"), Some(valid_body(1))),
        record(Some("m-2"), Some(valid_body(2))),
    ]);
    let handled = Consumer::new(&store, &queue, &queue, POLICY)
        .handle(batch, in_a_minute())
        .await
        .expect("handled");
    assert!(failed_ids(&handled.response).is_empty());
    assert_eq!(store.stored_message_ids(), ["m-0", "m-2"]);
    assert_eq!(
        dead_lettered(&queue),
        [(
            "m-refused".to_owned(),
            FailureClass::RowRefused,
            "date/time field value out of range".to_owned()
        )]
    );
    let m = handled.metrics;
    assert_eq!((m.refused, m.dead_lettered, m.postponed), (1, 1, 0));
    assert!(queue.postponed.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn when_the_store_fails_every_valid_record_stays_and_the_poison_still_goes_to_the_dlq() {
    let store = FakeStore::with(Behaviour::Fail);
    let queue = FakeQueue::default();
    let handled = Consumer::new(&store, &queue, &queue, POLICY)
        .handle(mixed_batch(), in_a_minute())
        .await
        .expect("handled");
    let mut failed = failed_ids(&handled.response);
    failed.sort_unstable();
    assert_eq!(failed, ["m-no-body", "m-valid-1", "m-valid-2"]);
    assert_eq!(dead_lettered(&queue).len(), 3);
}
