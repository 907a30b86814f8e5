//! The SQS calls of the walk; sends and error classes are `support::sqs`'s.

use std::collections::HashMap;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use support::sqs::{MAX_BATCH_ENTRIES, SqsError, change_visibility};
use tracing::warn;

use crate::Error;

/// What the tool needs to know about a queue; read, never derived from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    pub url: String,
    pub arn: String,
    pub fifo: bool,
    pub visible: u64,
    /// Received and not yet deleted or released.
    pub in_flight: u64,
}

pub async fn describe(sqs: &Client, url: &str) -> Result<QueueInfo, SqsError> {
    use QueueAttributeName::{
        All, ApproximateNumberOfMessages, ApproximateNumberOfMessagesNotVisible, FifoQueue,
        QueueArn,
    };
    let response = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(All)
        .send()
        .await
        .map_err(|err| SqsError::new(format!("read the attributes of {url}"), err))?;
    let attributes = response.attributes.unwrap_or_default();
    let get = |name| attributes.get(&name).map(String::as_str);
    let number = |name| get(name).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(QueueInfo {
        url: url.to_owned(),
        arn: get(QueueArn).unwrap_or_default().to_owned(),
        // Standard queues may omit the attribute altogether.
        fifo: get(FifoQueue) == Some("true"),
        visible: number(ApproximateNumberOfMessages),
        in_flight: number(ApproximateNumberOfMessagesNotVisible),
    })
}

/// The queue whose redrive policy names this DLQ: where its messages came from.
pub async fn source_queue(sqs: &Client, dlq_url: &str) -> Result<String, Error> {
    let request = sqs.list_dead_letter_source_queues().queue_url(dlq_url);
    let sources = request.into_paginator().items().send().try_collect().await;
    let mut sources = sources
        .map_err(|err| SqsError::new(format!("list the source queues of {dlq_url}"), err))?;
    let dlq = dlq_url.to_owned();
    match sources.len() {
        0 => Err(Error::NoSource { dlq }),
        1 => Ok(sources.remove(0)),
        _ => Err(Error::SeveralSources { dlq, sources }),
    }
}

/// Receives up to `max` messages with every attribute. A long poll (one second)
/// asks every SQS server; a short one may answer "empty" while messages remain.
pub(crate) async fn receive(
    sqs: &Client,
    url: &str,
    max: usize,
    visibility_secs: u32,
) -> Result<Vec<Message>, SqsError> {
    let response = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(max.clamp(1, MAX_BATCH_ENTRIES) as i32)
        .visibility_timeout(visibility_secs as i32)
        .wait_time_seconds(1)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .map_err(|err| SqsError::new(format!("receive from {url}"), err))?;
    Ok(response.messages.unwrap_or_default())
}

/// The receipt handle of each message this run keeps hidden, by message id.
#[derive(Debug, Default)]
pub(crate) struct Held(HashMap<String, String>);

impl Held {
    pub(crate) fn hold(&mut self, message: &Message) {
        self.0.insert(
            message.message_id().unwrap_or_default().to_owned(),
            message.receipt_handle().unwrap_or_default().to_owned(),
        );
    }

    /// Makes every held message visible again. One SQS could not release
    /// reappears when its visibility timeout ends, so failures are only logged.
    pub(crate) async fn release(&mut self, sqs: &Client, url: &str) {
        let held: Vec<(String, String)> = self.0.drain().collect();
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
        let err = Error::NoSource {
            dlq: "http://q/dlq".into(),
        };
        assert!(err.to_string().contains("pass --to URL"), "{err}");
        let err = Error::SeveralSources {
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
