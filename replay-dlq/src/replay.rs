//! `replay`: moves DLQ messages back to their source queue, a batch at a time.
//!
//! A message leaves the DLQ only after SQS acknowledged its send, so whatever
//! stops the run, it is in the DLQ, the source queue, or both (a duplicate the
//! consumer absorbs: it stores each `order_id` once); never in neither.

use std::collections::HashMap;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    Message, MessageAttributeValue, MessageSystemAttributeName, MessageSystemAttributeNameForSends,
    MessageSystemAttributeValue, SendMessageBatchRequestEntry,
};
use order_contract::dead_letter::{
    MAX_MESSAGE_ATTRIBUTES, REPLAYED_FROM_ATTRIBUTE, is_failure_attribute,
};
use support::sqs::{Outcome, send_all};
use tokio::sync::watch;
use tracing::debug;

use crate::Error;
use crate::progress::Progress;
use crate::queue::describe;
use crate::walk::{Candidate, Counts, End, Options, Report, Walk};

/// Moves (or with `dry_run`, lists) DLQ messages to `destination_url`. Errors
/// only before anything was touched; failures during the run are in the [`Report`].
pub async fn replay(
    sqs: &Client,
    dlq_url: &str,
    destination_url: &str,
    options: &Options,
    progress: &mut dyn Progress,
    stop: watch::Receiver<bool>,
) -> Result<Report, Error> {
    let dlq = describe(sqs, dlq_url).await?;
    let destination = describe(sqs, destination_url).await?;
    if let Some(fifo) = [&dlq, &destination].into_iter().find(|q| q.fifo) {
        return Err(Error::Fifo {
            url: fifo.url.clone(),
        });
    }
    if dlq.arn == destination.arn {
        return Err(Error::SameQueue {
            url: dlq_url.to_owned(),
        });
    }
    let (done, tail) = if options.dry_run {
        ("would_move", "; nothing was sent or deleted")
    } else {
        ("moved", "")
    };
    let status = |c: &Counts| c.status(done, false);
    let mut walk = Walk::new(sqs, dlq_url, dlq.visible, options, progress, stop);
    let end = loop {
        let batch = match walk.next().await {
            Ok(batch) => batch,
            Err(end) => break end,
        };
        if options.dry_run {
            walk.list(batch, "move", &destination_url);
        } else if let Err(err) = move_batch(&mut walk, destination_url, batch).await {
            break End::Aborted(err);
        }
        walk.advance(&status(&walk.counts));
    };
    Ok(walk.finish("replay", status, tail, end).await)
}

/// Sends the batch to the destination, then deletes from the DLQ exactly the
/// messages whose send SQS acknowledged.
async fn move_batch(walk: &mut Walk<'_>, to: &str, batch: Vec<Candidate>) -> Result<(), Error> {
    let entries = batch
        .iter()
        .map(|c| send_entry(&c.message, &c.view.record.message_id));
    let (entries, lineages): (Vec<_>, Vec<bool>) = entries.unzip();
    let outcomes = send_all(walk.sqs, to, entries).await;
    let mut sent = Vec::new();
    let mut aborted = None;
    for ((candidate, lineage), outcome) in batch.into_iter().zip(lineages).zip(outcomes) {
        let problem = outcome.problem().unwrap_or_default();
        match outcome {
            Outcome::Sent { .. } => {
                if !lineage {
                    walk.progress.note(&format!(
                        "sent {candidate} without {REPLAYED_FROM_ATTRIBUTE}: it already has SQS's {MAX_MESSAGE_ATTRIBUTES} message attributes"
                    ));
                }
                candidate.span.in_scope(|| debug!("sent to the source queue"));
                sent.push(candidate);
            }
            Outcome::Unreported => walk.fail(
                &candidate,
                "SQS did not report this message's send; it stays in the DLQ (replaying it again is safe)",
            ),
            Outcome::NotSent(err) => {
                // The run stops after this batch: what was not sent stays in the DLQ.
                walk.fail(&candidate, &format!("not sent ({problem}); it stays in the DLQ"));
                aborted = Some(err);
            }
            Outcome::Refused { .. } => walk.fail(
                &candidate,
                &format!("the source queue refused it ({problem}); it stays in the DLQ"),
            ),
        }
    }
    walk.counts.done += walk
        .delete(
            sent,
            "sent to the source queue but not deleted from the DLQ",
            "it reappears in the DLQ; replaying it again only makes a duplicate, which the consumer absorbs",
        )
        .await?;
    aborted.map_or(Ok(()), |err| Err(Error::Sqs(err)))
}

/// The message's own attributes without the failure ones (the next failure
/// records its own), and [`REPLAYED_FROM_ATTRIBUTE`] naming `dlq_message_id`
/// unless that would pass SQS's [`MAX_MESSAGE_ATTRIBUTES`] (then `false`).
fn replayed_attributes(
    message: &Message,
    dlq_message_id: &str,
) -> (HashMap<String, MessageAttributeValue>, bool) {
    let mut attributes: HashMap<String, MessageAttributeValue> = message
        .message_attributes()
        .into_iter()
        .flatten()
        .filter(|(name, _)| !is_failure_attribute(name) && *name != REPLAYED_FROM_ATTRIBUTE)
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    // SQS gives every message an id; without one there is nothing to record.
    if attributes.len() >= MAX_MESSAGE_ATTRIBUTES || dlq_message_id.is_empty() {
        return (attributes, false);
    }
    let lineage = MessageAttributeValue::builder()
        .data_type("String")
        .string_value(dlq_message_id)
        .build()
        .unwrap_or_else(|err| unreachable!("an attribute with a type: {err}"));
    attributes.insert(REPLAYED_FROM_ATTRIBUTE.to_owned(), lineage);
    (attributes, true)
}

/// The same body, [`replayed_attributes`], and the X-Ray trace header, the one
/// system attribute SQS lets a sender set.
fn send_entry(message: &Message, dlq_message_id: &str) -> (SendMessageBatchRequestEntry, bool) {
    let (attributes, lineage) = replayed_attributes(message, dlq_message_id);
    let trace = message
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::AwsTraceHeader))
        .and_then(|header| {
            MessageSystemAttributeValue::builder()
                .data_type("String")
                .string_value(header)
                .build()
                .ok()
        });
    let entry = SendMessageBatchRequestEntry::builder()
        // `send_batch` numbers the entries.
        .id("0")
        .message_body(message.body().unwrap_or_default())
        .set_message_attributes((!attributes.is_empty()).then_some(attributes))
        .set_message_system_attributes(
            trace.map(|t| HashMap::from([(MessageSystemAttributeNameForSends::AwsTraceHeader, t)])),
        )
        .build()
        // Only a missing id or body fails to build, and both are set above.
        .unwrap_or_else(|err| unreachable!("a batch entry with an id and a body: {err}"));
    (entry, lineage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use order_contract::dead_letter::{CLASS_ATTRIBUTE, DETAIL_ATTRIBUTE};

    fn text(value: &str) -> MessageAttributeValue {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
            .expect("attribute")
    }

    fn message(names: &[&str]) -> Message {
        let mut message = Message::builder().message_id("dlq-1").body("{}");
        for name in names {
            message = message.message_attributes(*name, text(name));
        }
        message.build()
    }

    #[test]
    fn a_replay_drops_the_failure_attributes_and_records_the_dlq_message_id() {
        let (attributes, lineage) = replayed_attributes(
            &message(&["request_id", CLASS_ATTRIBUTE, DETAIL_ATTRIBUTE]),
            "dlq-1",
        );
        assert!(lineage);
        let mut names: Vec<&str> = attributes.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["replayed_from", "request_id"]);
        assert_eq!(attributes["request_id"], text("request_id"));
        assert_eq!(attributes[REPLAYED_FROM_ATTRIBUTE], text("dlq-1"));
    }

    #[test]
    fn a_second_replay_names_the_latest_dlq_message() {
        let mut earlier = message(&["request_id"]);
        earlier.message_attributes.get_or_insert_default().insert(
            REPLAYED_FROM_ATTRIBUTE.to_owned(),
            text("an-older-dlq-message"),
        );
        let (attributes, _) = replayed_attributes(&earlier, "dlq-2");
        assert_eq!(attributes.len(), 2);
        assert_eq!(attributes[REPLAYED_FROM_ATTRIBUTE], text("dlq-2"));
    }

    #[test]
    fn a_message_whose_own_attributes_fill_the_limit_goes_without_its_lineage() {
        let names: Vec<String> = (0..MAX_MESSAGE_ATTRIBUTES)
            .map(|n| format!("a{n}"))
            .collect();
        let mut full: Vec<&str> = names.iter().map(String::as_str).collect();
        // Failure attributes never count: they are dropped first.
        full.push(CLASS_ATTRIBUTE);
        let (attributes, lineage) = replayed_attributes(&message(&full), "dlq-1");
        assert!(!lineage);
        assert_eq!(attributes.len(), MAX_MESSAGE_ATTRIBUTES);
        assert!(!attributes.contains_key(REPLAYED_FROM_ATTRIBUTE));
        let nine = &full[..MAX_MESSAGE_ATTRIBUTES - 1];
        let (attributes, lineage) = replayed_attributes(&message(nine), "dlq-1");
        assert!(lineage);
        assert_eq!(attributes.len(), MAX_MESSAGE_ATTRIBUTES);
    }
}
