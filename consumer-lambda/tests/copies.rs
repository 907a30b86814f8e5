//! The copies the consumer sends, against the SQS emulator: requeued copies
//! reach the orders queue, and dead letters the DLQ, with the original's body
//! and attributes.

use std::collections::HashMap;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsMessageAttribute;
use aws_sdk_sqs::types::Message;
use consumer_lambda::retry::{REQUEUED_ATTRIBUTE, Requeued};
use consumer_lambda::{
    DeadLetter, DeadLetterQueue, MessageId, RetryQueue, SqsDeadLetterQueue, SqsRetryQueue,
};
use order_contract::dead_letter::{CLASS_ATTRIBUTE, MAX_MESSAGE_ATTRIBUTES as SQS_MAX_ATTRIBUTES};
use order_contract::{Failure, FailureClass};
use testkit::{QueueSettings, TestQueues, eventually};

fn string_attribute(value: &str) -> SqsMessageAttribute {
    let mut attribute = SqsMessageAttribute::default();
    attribute.data_type = Some("String".into());
    attribute.string_value = Some(value.into());
    attribute
}

/// `request_id` and then `extra-1`, `extra-2`, … up to `count` attributes.
fn attributes(count: usize) -> HashMap<String, SqsMessageAttribute> {
    let mut attributes = HashMap::from([(
        order_contract::REQUEST_ID_ATTRIBUTE.to_owned(),
        string_attribute("req-1"),
    )]);
    for n in 1..count {
        attributes.insert(
            format!("extra-{n}"),
            string_attribute(&format!("value-{n}")),
        );
    }
    attributes
}

fn requeued(message_id: &str, attributes: HashMap<String, SqsMessageAttribute>) -> Requeued {
    Requeued {
        message_id: MessageId::new(message_id).expect("an id"),
        body: format!(r#"{{"order":"{message_id}"}}"#),
        attributes,
        requeued: 1,
        delay: Duration::ZERO,
    }
}

/// The one message on the orders queue, with its message attributes, once it is there.
async fn the_copy(queues: &TestQueues) -> Message {
    the_only_message(queues, &queues.queue_url).await
}

async fn the_only_message(queues: &TestQueues, queue_url: &str) -> Message {
    eventually("the copy on the queue", Duration::from_secs(10), || async {
        let received = queues
            .sqs
            .receive_message()
            .queue_url(queue_url)
            .message_attribute_names("All")
            .max_number_of_messages(10)
            .send()
            .await
            .map_err(|err| support::error_chain(&err))?;
        match received.messages() {
            [copy] => Ok(copy.clone()),
            other => Err(format!("{} messages", other.len())),
        }
    })
    .await
}

fn names(message: &Message) -> Vec<&str> {
    let mut names: Vec<&str> = message
        .message_attributes()
        .map(|attributes| attributes.keys().map(String::as_str).collect())
        .unwrap_or_default();
    names.sort_unstable();
    names
}

/// SQS refuses a message with more than ten attributes, and the order would
/// then stay until the DLQ. The emulator accepts eleven, so the test checks
/// that the copy is one SQS accepts: on the queue, with the original's ten.
#[tokio::test]
async fn a_message_that_already_has_ten_attributes_is_requeued_with_them_all() {
    testkit::init_tracing();
    let queues = TestQueues::create(QueueSettings::default()).await;
    let queue = SqsRetryQueue::new(queues.sqs.clone(), &queues.queue_url);
    let full = requeued("full", attributes(SQS_MAX_ATTRIBUTES));

    let sent = queue.requeue(std::slice::from_ref(&full)).await;
    assert_eq!(sent, [MessageId::new("full").expect("an id")]);
    let copy = the_copy(&queues).await;
    assert_eq!(copy.body(), Some(full.body.as_str()));
    let mut expected: Vec<&str> = full.attributes.keys().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(names(&copy), expected, "the original's ten, unchanged");
    assert_eq!(queues.depth().await, 1);
}

#[tokio::test]
async fn a_message_with_room_for_one_more_attribute_is_requeued_with_its_count() {
    let queues = TestQueues::create(QueueSettings::default()).await;
    let queue = SqsRetryQueue::new(queues.sqs.clone(), &queues.queue_url);
    let record = requeued("roomy", attributes(SQS_MAX_ATTRIBUTES - 1));

    let sent = queue.requeue(std::slice::from_ref(&record)).await;
    assert_eq!(sent, ["roomy"]);
    let copy = the_copy(&queues).await;
    assert_eq!(names(&copy).len(), SQS_MAX_ATTRIBUTES);
    let requeued = copy
        .message_attributes()
        .and_then(|attributes| attributes.get(REQUEUED_ATTRIBUTE))
        .and_then(|value| value.string_value());
    assert_eq!(requeued, Some("1"));
}

fn dead_letter(message_id: &str, attributes: HashMap<String, SqsMessageAttribute>) -> DeadLetter {
    DeadLetter {
        message_id: MessageId::new(message_id).expect("an id"),
        body: "this is not JSON".to_owned(),
        attributes,
        failure: Failure {
            class: FailureClass::InvalidJson,
            detail: Some("the body is not valid JSON".into()),
            message_id: Some(message_id.to_owned()),
            receive_count: Some(1),
            failed_at: "2026-12-02T16:30:00.125Z".parse().ok(),
            consumer_version: Some("0.1.0".into()),
        },
    }
}

fn attribute_text<'m>(message: &'m Message, name: &str) -> Option<&'m str> {
    message
        .message_attributes()
        .and_then(|attributes| attributes.get(name))
        .and_then(|value| value.string_value())
}

#[tokio::test]
async fn a_dead_letter_reaches_the_dlq_with_its_body_its_attributes_and_why_it_failed() {
    let queues = TestQueues::create(QueueSettings::default()).await;
    let dlq = SqsDeadLetterQueue::new(queues.sqs.clone(), &queues.dlq_url);
    let record = dead_letter("poison", attributes(2));

    let sent = dlq.send(std::slice::from_ref(&record)).await;
    assert_eq!(sent, ["poison"]);
    let copy = the_only_message(&queues, &queues.dlq_url).await;
    assert_eq!(copy.body(), Some(record.body.as_str()));
    assert_eq!(
        attribute_text(&copy, order_contract::REQUEST_ID_ATTRIBUTE),
        Some("req-1")
    );
    assert_eq!(attribute_text(&copy, "extra-1"), Some("value-1"));
    let failure = Failure::read(|name| attribute_text(&copy, name));
    assert_eq!(failure, Some(record.failure));
    assert_eq!(queues.depth().await, 0, "nothing on the orders queue");
}

/// The emulator accepts more than ten attributes, so the test checks that
/// the copy is one SQS would accept: ten, the class among them.
#[tokio::test]
async fn a_dead_letter_with_little_room_keeps_its_own_attributes_and_its_class() {
    let queues = TestQueues::create(QueueSettings::default()).await;
    let dlq = SqsDeadLetterQueue::new(queues.sqs.clone(), &queues.dlq_url);
    let record = dead_letter("crowded", attributes(SQS_MAX_ATTRIBUTES - 1));

    assert_eq!(dlq.send(std::slice::from_ref(&record)).await, ["crowded"]);
    let copy = the_only_message(&queues, &queues.dlq_url).await;
    assert_eq!(names(&copy).len(), SQS_MAX_ATTRIBUTES);
    assert_eq!(attribute_text(&copy, CLASS_ATTRIBUTE), Some("invalid_json"));
}

#[tokio::test]
async fn a_dead_letter_the_dlq_does_not_take_is_not_reported_sent() {
    let queues = TestQueues::create(QueueSettings::default()).await;
    let missing = format!("{}-gone", queues.dlq_url);
    let dlq = SqsDeadLetterQueue::new(queues.sqs.clone(), missing);
    let sent = dlq
        .send(&[
            dead_letter("a", attributes(1)),
            dead_letter("b", attributes(1)),
        ])
        .await;
    assert!(sent.is_empty(), "{sent:?}");
}

/// Every message on `queue_url`, by body length, once `count` are there.
async fn all_messages(queues: &TestQueues, queue_url: &str, count: usize) -> Vec<Message> {
    let seen = std::cell::RefCell::new(Vec::new());
    eventually(
        "every copy on the queue",
        Duration::from_secs(20),
        || async {
            let received = queues
                .sqs
                .receive_message()
                .queue_url(queue_url)
                .message_attribute_names("All")
                .max_number_of_messages(10)
                .visibility_timeout(600)
                .send()
                .await
                .map_err(|err| support::error_chain(&err))?;
            let mut seen = seen.borrow_mut();
            seen.extend(received.messages.unwrap_or_default());
            match seen.len() {
                n if n >= count => Ok(seen.clone()),
                n => Err(format!("{n} of {count} messages")),
            }
        },
    )
    .await
}

/// 200 KiB each: ten of them are twice what one SendMessageBatch may carry
/// (1 MiB), which the emulator enforces as SQS does.
const LARGE_BODY: usize = 200 * 1024;

#[tokio::test]
async fn ten_large_poison_bodies_all_reach_the_dlq() {
    let queues = TestQueues::create(QueueSettings::default()).await;
    let dlq = SqsDeadLetterQueue::new(queues.sqs.clone(), &queues.dlq_url);
    let records: Vec<DeadLetter> = (0..10)
        .map(|n| DeadLetter {
            body: n.to_string().repeat(LARGE_BODY),
            ..dead_letter(&format!("large-{n}"), attributes(1))
        })
        .collect();

    let mut sent: Vec<String> = dlq
        .send(&records)
        .await
        .iter()
        .map(ToString::to_string)
        .collect();
    sent.sort_unstable();
    let expected: Vec<String> = (0..10).map(|n| format!("large-{n}")).collect();
    assert_eq!(sent, expected);
    let copies = all_messages(&queues, &queues.dlq_url, 10).await;
    assert!(
        copies
            .iter()
            .all(|c| c.body().map(str::len) == Some(LARGE_BODY))
    );
    assert!(
        copies
            .iter()
            .all(|c| attribute_text(c, CLASS_ATTRIBUTE) == Some("invalid_json"))
    );
}

#[tokio::test]
async fn a_poison_body_with_no_room_for_its_reason_reaches_the_dlq_without_it() {
    let queues = TestQueues::create(QueueSettings::default()).await;
    let dlq = SqsDeadLetterQueue::new(queues.sqs.clone(), &queues.dlq_url);
    let record = DeadLetter {
        // With its own attribute (21 bytes), 11 bytes short of SQS's 1 MiB:
        // no failure attribute fits.
        body: "x".repeat(1024 * 1024 - 32),
        ..dead_letter("huge", attributes(1))
    };

    assert_eq!(dlq.send(std::slice::from_ref(&record)).await, ["huge"]);
    let copy = the_only_message(&queues, &queues.dlq_url).await;
    assert_eq!(copy.body(), Some(record.body.as_str()));
    assert_eq!(
        attribute_text(&copy, order_contract::REQUEST_ID_ATTRIBUTE),
        Some("req-1")
    );
    assert_eq!(attribute_text(&copy, CLASS_ATTRIBUTE), None);
}

#[tokio::test]
async fn ten_large_requeued_copies_all_reach_the_queue() {
    let queues = TestQueues::create(QueueSettings::default()).await;
    let queue = SqsRetryQueue::new(queues.sqs.clone(), &queues.queue_url);
    let records: Vec<Requeued> = (0..10)
        .map(|n| Requeued {
            body: n.to_string().repeat(LARGE_BODY),
            ..requeued(&format!("large-{n}"), attributes(1))
        })
        .collect();

    let sent = queue.requeue(&records).await;
    assert_eq!(
        sent.len(),
        records.len(),
        "every copy acknowledged: {sent:?}"
    );
    assert_eq!(all_messages(&queues, &queues.queue_url, 10).await.len(), 10);
}
