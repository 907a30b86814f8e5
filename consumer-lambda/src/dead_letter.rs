//! Poison goes to the DLQ at once, saying why.
//!
//! A record that can never be stored as it is goes to the dead-letter queue
//! with its body and attributes unchanged, plus the failure attributes of
//! [`order_contract::dead_letter`]. Only once SQS has the copy is the
//! original acknowledged (a crash between the two leaves a duplicate, which a
//! replay absorbs); otherwise the queue's redrive policy moves it later.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsMessageAttribute;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use order_contract::Failure;
use order_contract::dead_letter::{MAX_MESSAGE_ATTRIBUTES, is_failure_attribute};
use support::sqs::{MAX_MESSAGE_BYTES, attribute_size, send_all};

use crate::message_id::MessageId;

/// The consumer's version, written on every dead letter.
pub const CONSUMER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A record to send to the DLQ.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub message_id: MessageId,
    pub body: String,
    /// The original's message attributes, sent unchanged.
    pub attributes: HashMap<String, SqsMessageAttribute>,
    pub failure: Failure,
}

/// Where poison goes: the dead-letter queue.
pub trait DeadLetterQueue: Send + Sync {
    /// Sends every record; returns those whose copy SQS acknowledged.
    fn send(&self, records: &[DeadLetter]) -> impl Future<Output = Vec<MessageId>> + Send;
}

/// `SendMessageBatch` on the DLQ.
#[derive(Debug, Clone)]
pub struct SqsDeadLetterQueue {
    client: Client,
    queue_url: String,
}

impl SqsDeadLetterQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}

impl DeadLetterQueue for SqsDeadLetterQueue {
    async fn send(&self, records: &[DeadLetter]) -> Vec<MessageId> {
        let copies = records
            .iter()
            .map(|record| {
                let attributes = dead_letter_attributes(record);
                (&record.message_id, &record.body, attributes, Duration::ZERO)
            })
            .collect();
        send_copies(&self.client, &self.queue_url, copies, "dead-lettered copy").await
    }
}

/// For runs without a DLQ (unit tests, tools): nothing can be sent, so poison
/// stays unacknowledged, as it would without the consumer's help.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDeadLetterQueue;

impl DeadLetterQueue for NoDeadLetterQueue {
    async fn send(&self, _records: &[DeadLetter]) -> Vec<MessageId> {
        Vec::new()
    }
}

/// The original's attributes, then as many failure attributes as SQS's limit
/// leaves room for, most telling first (`replay-dlq` reads the reason of a
/// copy without them by parsing the body again). Failure attributes from an
/// earlier failure are replaced.
pub fn dead_letter_attributes(record: &DeadLetter) -> Vec<(String, MessageAttributeValue)> {
    let mut attributes: Vec<(String, MessageAttributeValue)> = record
        .attributes
        .iter()
        .filter(|(name, _)| !is_failure_attribute(name))
        .filter_map(|(name, value)| Some((name.clone(), sent_attribute(value)?)))
        .collect();
    let failure = record.failure.attributes();
    let room = MAX_MESSAGE_ATTRIBUTES.saturating_sub(attributes.len());
    if room < failure.len() {
        tracing::warn!(
            message_id = %record.message_id,
            attributes = attributes.len(),
            kept = room,
            left_out = failure.len() - room,
            "the message has too many attributes of its own for all of its failure attributes"
        );
    }
    let failure: Vec<(String, MessageAttributeValue)> = failure
        .into_iter()
        .take(room)
        .filter_map(|attribute| {
            let value = MessageAttributeValue::builder()
                .data_type(attribute.data_type)
                .string_value(attribute.value)
                .build()
                .ok()?;
            Some((attribute.name.to_owned(), value))
        })
        .collect();
    // A body as large as the queue admits may leave no room for the reason:
    // the copy then goes without it rather than not at all.
    let size: usize = (attributes.iter().chain(&failure))
        .map(|(name, value)| attribute_size(name, value))
        .sum();
    if record.body.len() + size > MAX_MESSAGE_BYTES {
        tracing::warn!(
            message_id = %record.message_id,
            "the body leaves no room under SQS's message size limit for its failure attributes; the dead letter goes without them"
        );
        return attributes;
    }
    attributes.extend(failure);
    attributes
}

/// A copy to send on behalf of a record: its body, attributes and delay.
pub(crate) type CopyOf<'a> = (
    &'a MessageId,
    &'a String,
    Vec<(String, MessageAttributeValue)>,
    Duration,
);

/// Sends each copy to `queue_url`; returns the records whose copy SQS
/// acknowledged. `what` names the copies in the logs.
pub(crate) async fn send_copies(
    client: &Client,
    queue_url: &str,
    copies: Vec<CopyOf<'_>>,
    what: &str,
) -> Vec<MessageId> {
    let (ids, entries): (Vec<&MessageId>, Vec<SendMessageBatchRequestEntry>) = copies
        .into_iter()
        .filter_map(|(id, body, attributes, delay)| {
            let entry = SendMessageBatchRequestEntry::builder()
                .id("0")
                .message_body(body)
                .delay_seconds(i32::try_from(delay.as_secs()).unwrap_or(i32::MAX))
                .set_message_attributes(Some(attributes.into_iter().collect()))
                .build()
                .ok()?;
            Some((id, entry))
        })
        .unzip();
    let outcomes = send_all(client, queue_url, entries).await;
    ids.into_iter()
        .zip(outcomes)
        .filter_map(|(id, outcome)| match outcome.problem() {
            None => Some(id.clone()),
            Some(problem) => {
                tracing::error!(message_id = %id, %problem, "sending a {what} failed; the original stays");
                None
            }
        })
        .collect()
}

/// A received message attribute as SQS takes it back; `None` without a data type.
pub(crate) fn sent_attribute(value: &SqsMessageAttribute) -> Option<MessageAttributeValue> {
    let data_type = value.data_type.as_deref()?;
    let mut copy = MessageAttributeValue::builder().data_type(data_type);
    if let Some(text) = &value.string_value {
        copy = copy.string_value(text);
    }
    if let Some(bytes) = &value.binary_value {
        copy = copy.binary_value(Blob::new(bytes.to_vec()));
    }
    copy.build().ok()
}

#[cfg(test)]
mod tests {
    use order_contract::FailureClass;
    use order_contract::dead_letter::{
        CLASS_ATTRIBUTE, DETAIL_ATTRIBUTE, MESSAGE_ID_ATTRIBUTE, RECEIVE_COUNT_ATTRIBUTE,
    };

    use super::*;

    fn text(value: &str) -> SqsMessageAttribute {
        let mut attribute = SqsMessageAttribute::default();
        attribute.data_type = Some("String".into());
        attribute.string_value = Some(value.into());
        attribute
    }

    fn dead_letter(own_attributes: usize) -> DeadLetter {
        DeadLetter {
            message_id: MessageId::new("m-1".to_owned()).expect("not empty"),
            body: "not json".into(),
            attributes: (0..own_attributes)
                .map(|n| (format!("own-{n}"), text("x")))
                .collect(),
            failure: Failure {
                class: FailureClass::InvalidJson,
                detail: Some("expected value at line 1 column 1".into()),
                message_id: Some("m-1".into()),
                receive_count: Some(1),
                failed_at: "2026-12-02T16:30:00.125Z".parse().ok(),
                consumer_version: Some(CONSUMER_VERSION.into()),
            },
        }
    }

    fn names(attributes: &[(String, MessageAttributeValue)]) -> Vec<&str> {
        let mut names: Vec<&str> = attributes.iter().map(|(name, _)| name.as_str()).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn a_dead_letter_keeps_its_own_attributes_and_adds_all_six_failure_attributes() {
        let attributes = dead_letter_attributes(&dead_letter(2));
        assert_eq!(attributes.len(), 8);
        assert!(names(&attributes).contains(&"own-0") && names(&attributes).contains(&"own-1"));
        let failure = Failure::read(|name| {
            attributes
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, v)| v.string_value())
        });
        assert_eq!(failure, Some(dead_letter(2).failure));
    }

    #[test]
    fn with_little_room_the_class_and_the_detail_are_kept_first() {
        let attributes = dead_letter_attributes(&dead_letter(7));
        assert_eq!(attributes.len(), MAX_MESSAGE_ATTRIBUTES);
        let names = names(&attributes);
        for kept in [CLASS_ATTRIBUTE, DETAIL_ATTRIBUTE, MESSAGE_ID_ATTRIBUTE] {
            assert!(names.contains(&kept), "{names:?}");
        }
        assert!(!names.contains(&RECEIVE_COUNT_ATTRIBUTE), "{names:?}");
    }

    #[test]
    fn a_body_with_no_room_for_its_failure_attributes_goes_without_them() {
        let mut record = dead_letter(1);
        record.body = "x".repeat(MAX_MESSAGE_BYTES - 20);
        assert_eq!(names(&dead_letter_attributes(&record)), ["own-0"]);
    }

    #[test]
    fn a_message_with_ten_attributes_of_its_own_goes_unchanged() {
        let attributes = dead_letter_attributes(&dead_letter(MAX_MESSAGE_ATTRIBUTES));
        assert_eq!(attributes.len(), MAX_MESSAGE_ATTRIBUTES);
        assert!(attributes.iter().all(|(name, _)| name.starts_with("own-")));
    }

    #[test]
    fn failure_attributes_from_an_earlier_failure_are_replaced() {
        let mut record = dead_letter(1);
        record
            .attributes
            .insert(CLASS_ATTRIBUTE.into(), text("row_refused"));
        record
            .attributes
            .insert(DETAIL_ATTRIBUTE.into(), text("an old reason"));
        let attributes = dead_letter_attributes(&record);
        assert_eq!(attributes.len(), 7);
        let class = attributes
            .iter()
            .find(|(name, _)| name == CLASS_ATTRIBUTE)
            .and_then(|(_, v)| v.string_value());
        assert_eq!(class, Some("invalid_json"));
    }
}
