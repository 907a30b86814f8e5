//! Sending copies of records with `SendMessageBatch`: a requeued copy to the
//! orders queue, a dead-lettered one to the DLQ. Both need the same thing:
//! ten entries a call, calls in parallel, and the ids SQS acknowledged.

use std::time::Duration;

use aws_lambda_events::event::sqs::SqsMessageAttribute;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use futures::stream::{self, StreamExt};

use crate::message_id::MessageId;

/// SQS's limit on entries per batch call.
pub(crate) const SQS_BATCH: usize = 10;
/// Batch calls in flight at once: 1,000 records take 100 calls, which must fit
/// in the deadline margin.
pub(crate) const CALLS_IN_FLIGHT: usize = 16;

/// One message to send, on behalf of the record `message_id`.
pub(crate) struct Outgoing<'a> {
    pub message_id: &'a MessageId,
    pub body: &'a str,
    pub attributes: Vec<(String, MessageAttributeValue)>,
    pub delay: Duration,
}

/// Sends every message to `queue_url`; returns the records whose copy SQS
/// acknowledged. `what` names the copies in the logs ("requeued copy").
pub(crate) async fn send_all(
    client: &Client,
    queue_url: &str,
    messages: Vec<Outgoing<'_>>,
    what: &str,
) -> Vec<MessageId> {
    // Built in a loop, not by a closure: a closure's future would not be
    // `Send` for every lifetime of the messages.
    let mut calls = Vec::new();
    let mut messages = messages.into_iter().peekable();
    while messages.peek().is_some() {
        let chunk = messages.by_ref().take(SQS_BATCH).collect::<Vec<_>>();
        calls.push(send_chunk(client, queue_url, chunk, what));
    }
    stream::iter(calls)
        .buffer_unordered(CALLS_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .concat()
}

async fn send_chunk(
    client: &Client,
    queue_url: &str,
    chunk: Vec<Outgoing<'_>>,
    what: &str,
) -> Vec<MessageId> {
    let entries = chunk
        .iter()
        .enumerate()
        .filter_map(|(index, message)| {
            let mut entry = SendMessageBatchRequestEntry::builder()
                .id(index.to_string())
                .message_body(message.body)
                .delay_seconds(seconds(message.delay));
            for (name, value) in &message.attributes {
                entry = entry.message_attributes(name, value.clone());
            }
            entry.build().ok()
        })
        .collect();
    let call = client
        .send_message_batch()
        .queue_url(queue_url)
        .set_entries(Some(entries))
        .send()
        .await;
    match call {
        Ok(output) => {
            for failure in output.failed() {
                tracing::error!(
                    code = failure.code(),
                    message = failure.message().unwrap_or_default(),
                    "SQS refused a {what}; the original stays"
                );
            }
            output
                .successful()
                .iter()
                .filter_map(|ok| ok.id().parse::<usize>().ok())
                .filter_map(|index| chunk.get(index))
                .map(|message| message.message_id.clone())
                .collect()
        }
        Err(err) => {
            tracing::error!(
                error = %DisplayErrorContext(err),
                records = chunk.len(),
                "sending a {what} failed; the originals stay"
            );
            Vec::new()
        }
    }
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

pub(crate) fn seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)
}
