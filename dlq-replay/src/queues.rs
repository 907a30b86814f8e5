//! The SQS calls every command shares: a queue's attributes, the DLQ's source
//! queue, receiving with every attribute, and handing messages back.

use std::collections::HashMap;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName, QueueAttributeName,
};
pub(crate) use support::sqs::MAX_BATCH_ENTRIES as MAX_BATCH;
pub use support::sqs::SqsError;
use support::sqs::change_visibility;
use tracing::warn;

/// Why the DLQ's messages have no usable way back: the destination is unknown,
/// ambiguous or the DLQ itself, a queue is FIFO, or the queues could not be read.
/// Raised before any message is touched.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Sqs(#[from] SqsError),
    #[error(
        "the DLQ {dlq} is not the dead-letter queue of any queue (ListDeadLetterSourceQueues is empty): pass --to URL to say where its messages go"
    )]
    NoSource { dlq: String },
    #[error(
        "the DLQ {dlq} is the dead-letter queue of {} queues ({}): pass --to URL to choose one",
        sources.len(),
        sources.join(", ")
    )]
    SeveralSources { dlq: String, sources: Vec<String> },
    #[error(
        "{url} is a FIFO queue; this tool replays standard queues only (a FIFO replay needs each message's group and deduplication id): SQS's own redrive moves it (`aws sqs start-message-move-task`, docs/operating.md)"
    )]
    Fifo { url: String },
    #[error(
        "the destination is the DLQ itself ({url}): pass --to the URL of the queue its messages came from"
    )]
    SameQueue { url: String },
}

/// What the tool needs to know about a queue; read, never derived from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    pub url: String,
    pub arn: String,
    pub fifo: bool,
    /// ApproximateNumberOfMessages: visible ones.
    pub visible: u64,
    /// ApproximateNumberOfMessagesNotVisible: received and not yet deleted or released.
    pub in_flight: u64,
}

/// Reads the queue's ARN, type and depth.
pub async fn describe(sqs: &Client, url: &str) -> Result<QueueInfo, SqsError> {
    let response = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .attribute_names(QueueAttributeName::FifoQueue)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(|err| SqsError::new(format!("read the attributes of {url}"), err))?;
    let attributes = response.attributes().cloned().unwrap_or_default();
    let get = |name: &QueueAttributeName| attributes.get(name).map(String::as_str);
    let number = |name: &QueueAttributeName| get(name).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(QueueInfo {
        url: url.to_owned(),
        arn: get(&QueueAttributeName::QueueArn)
            .unwrap_or_default()
            .to_owned(),
        // Standard queues may omit the attribute altogether.
        fifo: get(&QueueAttributeName::FifoQueue) == Some("true"),
        visible: number(&QueueAttributeName::ApproximateNumberOfMessages),
        in_flight: number(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    })
}

/// The queue whose redrive policy names this DLQ: where its messages came from.
pub async fn source_queue(sqs: &Client, dlq_url: &str) -> Result<String, RouteError> {
    let mut sources = Vec::new();
    let mut pages = sqs
        .list_dead_letter_source_queues()
        .queue_url(dlq_url)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|err| SqsError::new(format!("list the source queues of {dlq_url}"), err))?;
        sources.extend(page.queue_urls);
    }
    match sources.len() {
        0 => Err(RouteError::NoSource {
            dlq: dlq_url.to_owned(),
        }),
        1 => Ok(sources.remove(0)),
        _ => Err(RouteError::SeveralSources {
            dlq: dlq_url.to_owned(),
            sources,
        }),
    }
}

/// Receives up to `max` messages (at most 10) with every system and message
/// attribute, hiding them for `visibility_secs`. Waits up to a second: a long
/// poll asks every SQS server, where a short one samples a few and may answer
/// "empty" while messages remain.
pub(crate) async fn receive(
    sqs: &Client,
    url: &str,
    max: usize,
    visibility_secs: u32,
) -> Result<Vec<Message>, SqsError> {
    let response = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
        .visibility_timeout(visibility_secs as i32)
        .wait_time_seconds(1)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .map_err(|err| SqsError::new(format!("receive from {url}"), err))?;
    Ok(response.messages.unwrap_or_default())
}

/// Deletes the messages of `receipt_handles` (at most 10) from `url` in one
/// call; returns those SQS did not delete, by position, with its reason. An
/// error means the call itself failed: nothing is known to be deleted.
pub(crate) async fn delete_batch(
    sqs: &Client,
    url: &str,
    receipt_handles: &[&str],
) -> Result<Vec<(usize, String)>, SqsError> {
    let entries = receipt_handles
        .iter()
        .enumerate()
        .filter_map(|(index, handle)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(index.to_string())
                .receipt_handle(*handle)
                .build()
                .ok()
        })
        .collect::<Vec<_>>();
    let response = sqs
        .delete_message_batch()
        .queue_url(url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|err| SqsError::new(format!("delete from the DLQ {url}"), err))?;
    Ok(response
        .failed()
        .iter()
        .filter_map(|f| {
            let problem = format!("{}: {}", f.code(), f.message().unwrap_or("no message"));
            f.id().parse().ok().map(|i| (i, problem))
        })
        .collect())
}

/// Messages this run has received and keeps hidden, by message id → latest
/// receipt handle, until [`release`](Held::release) makes them visible again.
#[derive(Debug, Default)]
pub(crate) struct Held {
    handles: HashMap<String, String>,
}

impl Held {
    pub(crate) fn hold(&mut self, message_id: &str, receipt_handle: &str) {
        self.handles
            .insert(message_id.to_owned(), receipt_handle.to_owned());
    }

    /// Makes every held message visible again at once (visibility timeout 0).
    /// Best effort: one SQS could not release simply reappears when its
    /// visibility timeout ends, so failures are logged, not returned.
    pub(crate) async fn release(&mut self, sqs: &Client, url: &str) {
        let held: Vec<(String, String)> = self.handles.drain().collect();
        let messages: Vec<(&str, i32)> = held.iter().map(|(_, h)| (h.as_str(), 0)).collect();
        let problems = change_visibility(sqs, url, &messages).await;
        for ((message_id, _), problem) in held.iter().zip(problems) {
            if let Some(problem) = problem {
                warn!(
                    message_id,
                    %problem,
                    "could not make the message visible again; it reappears when its visibility timeout ends"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_source_queue_asks_for_to() {
        let err = RouteError::NoSource {
            dlq: "http://q/dlq".into(),
        };
        assert!(err.to_string().contains("pass --to URL"), "{err}");
        let err = RouteError::SeveralSources {
            dlq: "http://q/dlq".into(),
            sources: vec!["http://q/a".into(), "http://q/b".into()],
        };
        assert!(
            err.to_string()
                .contains("2 queues (http://q/a, http://q/b)"),
            "{err}"
        );
    }
}
