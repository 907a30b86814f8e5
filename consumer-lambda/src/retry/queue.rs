//! The queue operations of a retry, batched: stretching visibility and sending copies.

use std::future::Future;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsMessageAttribute;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::MessageAttributeValue;
use order_contract::dead_letter::MAX_MESSAGE_ATTRIBUTES;
use support::sqs::change_visibility;

use super::MAX_SEND_DELAY;
use crate::dead_letter::{send_copies, sent_attribute};
use crate::message_id::MessageId;

/// The message attribute that counts how often a record was requeued.
pub const REQUEUED_ATTRIBUTE: &str = "requeued";

/// A record to hide for longer before it is received again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Postponed {
    pub message_id: MessageId,
    pub receipt_handle: String,
    pub delay: Duration,
}

/// A record to send again as a new message.
#[derive(Debug, Clone, PartialEq)]
pub struct Requeued {
    pub message_id: MessageId,
    pub body: String,
    /// The original's message attributes; [`REQUEUED_ATTRIBUTE`] is set on top
    /// when SQS's limit leaves room for it.
    pub attributes: std::collections::HashMap<String, SqsMessageAttribute>,
    /// How many times the order has been requeued, this copy included.
    pub requeued: u32,
    pub delay: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "could not postpone {failed} of the failed records; they return after the queue's visibility timeout: {detail}"
)]
pub struct PostponeError {
    pub failed: usize,
    pub detail: String,
}

pub trait RetryQueue: Send + Sync {
    fn postpone(
        &self,
        records: &[Postponed],
    ) -> impl Future<Output = Result<(), PostponeError>> + Send;

    /// Sends a fresh copy of every record; returns those whose copy SQS
    /// acknowledged (their originals may go, the others must stay).
    fn requeue(&self, records: &[Requeued]) -> impl Future<Output = Vec<MessageId>> + Send;
}

/// `ChangeMessageVisibilityBatch` and `SendMessageBatch` on the orders queue.
#[derive(Debug, Clone)]
pub struct SqsRetryQueue {
    client: Client,
    queue_url: String,
}

impl SqsRetryQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}

/// The original's attributes as SQS wants them back, with `requeued` set
/// when there is room for it.
fn copied_attributes(record: &Requeued) -> Vec<(String, MessageAttributeValue)> {
    let mut attributes: Vec<(String, MessageAttributeValue)> = record
        .attributes
        .iter()
        .filter(|(name, _)| name.as_str() != REQUEUED_ATTRIBUTE)
        .filter_map(|(name, value)| Some((name.clone(), sent_attribute(value)?)))
        .collect();
    // A message with ten attributes of its own has no room for `requeued`:
    // the copy goes without it (SQS would refuse it), losing only the count.
    if attributes.len() >= MAX_MESSAGE_ATTRIBUTES {
        tracing::warn!(
            message_id = %record.message_id,
            attributes = attributes.len(),
            "the message has as many attributes as SQS allows; its copy goes without `requeued`"
        );
        return attributes;
    }
    if let Ok(requeued) = MessageAttributeValue::builder()
        .data_type("Number")
        .string_value(record.requeued.to_string())
        .build()
    {
        attributes.push((REQUEUED_ATTRIBUTE.to_owned(), requeued));
    }
    attributes
}

impl RetryQueue for SqsRetryQueue {
    async fn postpone(&self, records: &[Postponed]) -> Result<(), PostponeError> {
        let seconds = |delay: Duration| i32::try_from(delay.as_secs()).unwrap_or(i32::MAX);
        let messages: Vec<(&str, i32)> = records
            .iter()
            .map(|r| (r.receipt_handle.as_str(), seconds(r.delay)))
            .collect();
        let problems = change_visibility(&self.client, &self.queue_url, &messages).await;
        let problems: Vec<String> = problems.into_iter().flatten().collect();
        match problems.first() {
            None => Ok(()),
            Some(detail) => Err(PostponeError {
                failed: problems.len(),
                detail: detail.clone(),
            }),
        }
    }

    async fn requeue(&self, records: &[Requeued]) -> Vec<MessageId> {
        let copies = records
            .iter()
            .map(|record| {
                let attributes = copied_attributes(record);
                let delay = record.delay.min(MAX_SEND_DELAY);
                (&record.message_id, &record.body, attributes, delay)
            })
            .collect();
        send_copies(&self.client, &self.queue_url, copies, "requeued copy").await
    }
}

/// For runs without a queue to talk to (unit tests, tools): nothing is
/// postponed, and nothing can be requeued.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRetryQueue;

impl RetryQueue for NoRetryQueue {
    async fn postpone(&self, _records: &[Postponed]) -> Result<(), PostponeError> {
        Ok(())
    }

    async fn requeue(&self, _records: &[Requeued]) -> Vec<MessageId> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string_attribute(value: &str) -> SqsMessageAttribute {
        let mut attribute = SqsMessageAttribute::default();
        attribute.data_type = Some("String".into());
        attribute.string_value = Some(value.into());
        attribute
    }

    fn requeued_with(names: &[&str]) -> Requeued {
        Requeued {
            message_id: MessageId::new("m").expect("an id"),
            body: "{}".into(),
            attributes: names
                .iter()
                .map(|name| ((*name).to_owned(), string_attribute("1")))
                .collect(),
            requeued: 2,
            delay: Duration::ZERO,
        }
    }

    fn names(copied: &[(String, MessageAttributeValue)]) -> Vec<&str> {
        let mut names: Vec<&str> = copied.iter().map(|(name, _)| name.as_str()).collect();
        names.sort_unstable();
        names
    }

    const TEN: [&str; 10] = ["a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9"];

    #[test]
    fn a_copy_of_a_message_with_ten_attributes_keeps_them_and_goes_without_requeued() {
        let record = requeued_with(&TEN);
        assert_eq!(names(&copied_attributes(&record)), TEN);
    }

    #[test]
    fn a_requeued_attribute_among_ten_is_replaced_by_the_new_count() {
        let mut ten = TEN.to_vec();
        ten[9] = REQUEUED_ATTRIBUTE;
        let copied = copied_attributes(&requeued_with(&ten));
        assert_eq!(copied.len(), MAX_MESSAGE_ATTRIBUTES);
        let requeued = copied
            .iter()
            .find(|(name, _)| name == REQUEUED_ATTRIBUTE)
            .and_then(|(_, value)| value.string_value());
        assert_eq!(requeued, Some("2"));
    }

    #[test]
    fn a_copy_carries_the_original_attributes_and_its_requeued_count() {
        let mut attributes = std::collections::HashMap::new();
        let mut request_id = SqsMessageAttribute::default();
        request_id.data_type = Some("String".into());
        request_id.string_value = Some("req-1".into());
        attributes.insert(order_contract::REQUEST_ID_ATTRIBUTE.to_owned(), request_id);
        let mut old = SqsMessageAttribute::default();
        old.data_type = Some("Number".into());
        old.string_value = Some("1".into());
        attributes.insert(REQUEUED_ATTRIBUTE.to_owned(), old);
        let record = Requeued {
            message_id: MessageId::new("m").expect("an id"),
            body: "{}".into(),
            attributes,
            requeued: 2,
            delay: Duration::ZERO,
        };
        let mut copied = copied_attributes(&record);
        copied.sort_by(|a, b| a.0.cmp(&b.0));
        let shown: Vec<(&str, Option<&str>)> = copied
            .iter()
            .map(|(name, value)| (name.as_str(), value.string_value()))
            .collect();
        assert_eq!(
            shown,
            [
                (order_contract::REQUEST_ID_ATTRIBUTE, Some("req-1")),
                (REQUEUED_ATTRIBUTE, Some("2"))
            ]
        );
    }
}
