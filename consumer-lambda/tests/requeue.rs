//! The retry queue against the SQS emulator: requeued copies reach the queue
//! with the original's body and attributes.

use std::collections::HashMap;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsMessageAttribute;
use aws_sdk_sqs::types::Message;
use consumer_lambda::MessageId;
use consumer_lambda::retry::{REQUEUED_ATTRIBUTE, RequeueOutcome, Requeued};
use consumer_lambda::{RetryQueue, SqsRetryQueue};
use testkit::{QueueSettings, TestQueues, eventually};

/// SQS's limit on message attributes per message.
const SQS_MAX_ATTRIBUTES: usize = 10;

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
        generation: 1,
        delay: Duration::ZERO,
    }
}

/// The one message on the queue, with its message attributes, once it is there.
async fn the_copy(queues: &TestQueues) -> Message {
    eventually("the copy on the queue", Duration::from_secs(10), || async {
        let received = queues
            .sqs
            .receive_message()
            .queue_url(&queues.queue_url)
            .message_attribute_names("All")
            .max_number_of_messages(10)
            .send()
            .await
            .map_err(|err| format!("{}", aws_sdk_sqs::error::DisplayErrorContext(err)))?;
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

    let outcome = queue.requeue(std::slice::from_ref(&full)).await;
    assert_eq!(
        outcome,
        RequeueOutcome {
            sent: vec![MessageId::new("full").expect("an id")],
            failed: Vec::new()
        }
    );
    let copy = the_copy(&queues).await;
    assert_eq!(copy.body(), Some(full.body.as_str()));
    let mut expected: Vec<&str> = full.attributes.keys().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(names(&copy), expected, "the original's ten, unchanged");
    assert_eq!(queues.depth().await, 1);
}

#[tokio::test]
async fn a_message_with_room_for_one_more_attribute_is_requeued_with_its_generation() {
    let queues = TestQueues::create(QueueSettings::default()).await;
    let queue = SqsRetryQueue::new(queues.sqs.clone(), &queues.queue_url);
    let record = requeued("roomy", attributes(SQS_MAX_ATTRIBUTES - 1));

    let outcome = queue.requeue(std::slice::from_ref(&record)).await;
    assert_eq!(outcome.sent, ["roomy"]);
    let copy = the_copy(&queues).await;
    assert_eq!(names(&copy).len(), SQS_MAX_ATTRIBUTES);
    let generation = copy
        .message_attributes()
        .and_then(|attributes| attributes.get(REQUEUED_ATTRIBUTE))
        .and_then(|value| value.string_value());
    assert_eq!(generation, Some("1"));
}
