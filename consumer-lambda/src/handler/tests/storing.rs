//! A batch stored: one call, what the log says of each order, and what the handler reads from a record.

use super::*;

#[tokio::test]
async fn a_batch_of_valid_orders_is_stored_in_one_call_and_nothing_fails() {
    let store = FakeStore::default();
    let records = (0..5)
        .map(|n| record(Some(&format!("m-{n}")), Some(valid_body(n))))
        .collect();
    let response = handle(event(records), &store).await.expect("handled");
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(store.batches.lock().expect("lock").len(), 1);
    assert_eq!(store.stored_message_ids().len(), 5);
}

#[tokio::test]
async fn the_batch_reports_when_its_oldest_valid_order_was_received_whatever_its_copy() {
    let store = FakeStore::with(Behaviour::Fail);
    let queue = FakeQueue::default();
    let at = |time: &str| valid_body(1).replace("2026-11-24T18:27:15Z", time);
    // A requeued copy is a new message; its order keeps its received_at.
    let requeued = received("m-copy", &at("2026-11-24T17:00:00Z"), 1);
    let batch = event(vec![
        received("m-new", &at("2026-11-24T18:00:00Z"), 1),
        requeued,
        record(Some("m-poison"), Some("{}".into())),
    ]);
    let handled = Consumer::new(&store, &queue, &queue, POLICY)
        .handle(batch, in_a_minute())
        .await
        .expect("handled");
    assert_eq!(
        handled.metrics.oldest_received_at,
        "2026-11-24T17:00:00Z".parse().ok(),
        "the order's own received_at, even on a failing batch"
    );
}

/// The batch `m-new`, `m-old`, handled with `behaviour` for `m-old`: the
/// message of each record's log line about its order.
async fn said_about_each_order(behaviour: Behaviour) -> Vec<(String, String)> {
    let (captured, _guard) = testkit::CapturedLogs::start();
    let store = FakeStore::with(behaviour);
    let batch = event(vec![
        record(Some("m-new"), Some(valid_body(1))),
        record(Some("m-old"), Some(valid_body(2))),
    ]);
    let response = handle(batch, &store).await.expect("handled");
    assert!(response.batch_item_failures.is_empty());

    let text = captured.text();
    text.lines()
        .filter_map(|line| {
            let (span, message) = line.split_once("consumer_lambda::handler: ")?;
            let id = span.split("message_id=").nth(1)?.split([' ', '}']).next()?;
            message
                .starts_with("order ")
                .then(|| (id.to_owned(), message.to_owned()))
        })
        .collect()
}

#[tokio::test]
async fn the_log_says_whether_an_order_was_stored_or_a_duplicate() {
    assert_eq!(
        said_about_each_order(Behaviour::Duplicate(1)).await,
        [
            ("m-new".to_owned(), "order stored".to_owned()),
            (
                "m-old".to_owned(),
                "order already stored (duplicate)".to_owned()
            )
        ]
    );
}

#[tokio::test]
async fn the_log_says_when_an_order_conflicts_with_a_stored_one_and_was_kept_aside() {
    let said = said_about_each_order(Behaviour::Conflict(1)).await;
    assert_eq!(said[0], ("m-new".to_owned(), "order stored".to_owned()));
    assert_eq!(said[1].0, "m-old");
    assert!(
        said[1].1.starts_with("order conflicts with a stored one")
            && !said[1].1.contains("order stored"),
        "{said:?}"
    );
    assert_eq!(said.len(), 2, "{said:?}");
}

#[tokio::test]
async fn a_record_without_a_message_id_fails_the_batch_before_anything_is_stored() {
    // Its outcome could not be named in the response (an empty
    // `itemIdentifier` fails the batch anyway), whatever the store would do.
    for behaviour in [Behaviour::Store, Behaviour::Fail, Behaviour::Panic] {
        for (id, body) in [(None, valid_body(9)), (Some(""), "not json".to_owned())] {
            let store = FakeStore::with(behaviour);
            let mut batch = mixed_batch();
            batch.records.push(record(id, Some(body)));
            let err = handle(batch, &store).await.expect_err("cannot be reported");
            assert!(matches!(err, BatchError::MissingMessageId));
            assert!(store.stored_message_ids().is_empty());
        }
    }
}

#[tokio::test]
async fn an_empty_batch_touches_nothing() {
    let store = FakeStore::with(Behaviour::Panic);
    let response = handle(event(vec![]), &store).await.expect("handled");
    assert!(response.batch_item_failures.is_empty());
}

#[test]
fn only_a_well_formed_request_id_is_taken_from_the_message() {
    let with = |value: &str| {
        let mut record = SqsMessage::default();
        record
            .message_attributes
            .insert(REQUEST_ID_ATTRIBUTE.into(), attribute("String", value));
        request_id(&record).map(|id| id.to_string())
    };
    assert_eq!(with("req-01HZX"), Some("req-01HZX".into()));
    assert_eq!(with(""), None);
    assert_eq!(with("has space"), None);
    assert_eq!(with("nul\0byte"), None);
    assert_eq!(with(&"x".repeat(129)), None);
    assert_eq!(request_id(&SqsMessage::default()), None);
}

#[tokio::test]
async fn a_lambda_event_in_json_is_handled_as_aws_sends_it() {
    let json = serde_json::json!({"Records": [
        {"messageId": "059f36b4-87a3-44ab-83d2-661975830a7d", "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
         "body": valid_body(1), "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1545082649183"},
         "messageAttributes": {}, "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
         "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-2:123456789012:my-queue", "awsRegion": "us-east-2"},
        {"messageId": "2e1424d4-f796-459a-8184-9c92662be6da", "receiptHandle": "AQEBzWwaftRI0KuVm4tP+/7q1rGgNqicHq",
         "body": "{}", "attributes": {"ApproximateReceiveCount": "3"}, "messageAttributes": {},
         "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-2:123456789012:my-queue", "awsRegion": "us-east-2"}
    ]});
    let event: SqsEvent = serde_json::from_value(json).expect("an SQS event");
    let store = FakeStore::default();
    // The poison stays unacknowledged when the DLQ refuses its copy.
    let queue = FakeQueue {
        refuse_dead_letters: true,
        ..FakeQueue::default()
    };
    let response = Consumer::new(&store, &queue, &queue, POLICY)
        .handle(event, in_a_minute())
        .await
        .expect("handled")
        .response;
    assert_eq!(
        failed_ids(&response),
        ["2e1424d4-f796-459a-8184-9c92662be6da"]
    );
    let body = serde_json::to_value(&response).expect("serialises");
    assert_eq!(
        body,
        serde_json::json!({"batchItemFailures": [{"itemIdentifier": "2e1424d4-f796-459a-8184-9c92662be6da"}]})
    );
}
