//! The move protocol: send a batch to the source queue, then delete from the
//! DLQ exactly the messages whose send SQS acknowledged. Everything in between
//! (a refused entry, an entry SQS does not report, a call that fails as a
//! whole, a delete that fails) leaves each message in the DLQ, or at worst in
//! both queues; never in neither. A dry run lists instead of moving.

use std::collections::HashMap;

use aws_sdk_sqs::types::{
    Message, MessageAttributeValue, MessageSystemAttributeName, MessageSystemAttributeNameForSends,
    MessageSystemAttributeValue, SendMessageBatchRequestEntry,
};
use order_contract::dead_letter::{
    MAX_MESSAGE_ATTRIBUTES, REPLAYED_FROM_ATTRIBUTE, is_failure_attribute,
};
use support::sqs::{Outcome, batches, entry_size, send_batch};
use tracing::{debug, warn};

use super::Run;
use super::selection::Candidate;
use crate::queues::{SqsError, delete_batch};

/// A candidate with the entry that sends it back.
type Outgoing = (Candidate, SendMessageBatchRequestEntry, Lineage);

impl Run<'_> {
    /// The dry run's stand-in for [`move_batch`](Self::move_batch): says what
    /// would move, and keeps it hidden until the run ends.
    pub(super) fn list(&mut self, selected: Vec<Candidate>) {
        for candidate in selected {
            self.counts.would_move += 1;
            self.hold(&candidate);
            candidate.span.in_scope(|| debug!("would move"));
            self.progress.note(&format!(
                "would move {} (order {}) to {}",
                candidate.id, candidate.order_id, self.destination_url
            ));
        }
    }

    /// Sends the batch to the destination, then deletes from the DLQ exactly
    /// the messages whose send succeeded.
    pub(super) async fn move_batch(&mut self, selected: Vec<Candidate>) -> Result<(), SqsError> {
        let outgoing = selected.into_iter().map(|candidate| {
            let (entry, lineage) = send_entry(&candidate.message, &candidate.id);
            (candidate, entry, lineage)
        });
        let mut groups = batches(outgoing, |(_, entry, _)| entry_size(entry)).into_iter();
        while let Some(group) = groups.next() {
            if let Err((err, unsent)) = self.move_group(group).await {
                // The run stops: what was not sent stays in the DLQ, counted as failed.
                let untried = unsent
                    .into_iter()
                    .chain(groups.flatten().map(|(candidate, ..)| candidate));
                for candidate in untried.collect::<Vec<_>>() {
                    self.hold(&candidate);
                    self.fail(
                        &candidate,
                        &format!("not sent ({err}); it stays in the DLQ"),
                    );
                }
                return Err(err);
            }
        }
        Ok(())
    }

    fn fail(&mut self, candidate: &Candidate, what: &str) {
        self.counts.failed += 1;
        candidate
            .span
            .in_scope(|| warn!(problem = what, "not moved"));
        self.progress.note(&format!(
            "failed {} (order {}): {what}",
            candidate.id, candidate.order_id
        ));
    }

    /// One SendMessageBatch and its DeleteMessageBatch. On a call that fails as a
    /// whole, gives back the error and the messages that were not sent.
    async fn move_group(&mut self, group: Vec<Outgoing>) -> Result<(), (SqsError, Vec<Candidate>)> {
        let (mut candidates, mut entries, mut lineages) = (Vec::new(), Vec::new(), Vec::new());
        for (candidate, entry, lineage) in group {
            candidates.push(candidate);
            entries.push(entry);
            lineages.push(lineage);
        }
        let outcomes = match send_batch(self.sqs, self.destination_url, entries).await {
            Ok(outcomes) => outcomes,
            Err(err) => return Err((err, candidates)),
        };
        let mut sent = Vec::new();
        for ((candidate, lineage), outcome) in candidates.into_iter().zip(lineages).zip(outcomes) {
            match outcome {
                Outcome::Sent { .. } => {
                    if lineage == Lineage::NoRoom {
                        self.progress.note(&format!(
                            "sent {} (order {}) without {REPLAYED_FROM_ATTRIBUTE}: it already has SQS's {MAX_MESSAGE_ATTRIBUTES} message attributes",
                            candidate.id, candidate.order_id
                        ));
                    }
                    candidate
                        .span
                        .in_scope(|| debug!("sent to the source queue"));
                    sent.push(candidate);
                }
                // Treated as not sent, so it stays in the DLQ; if it was in
                // fact sent, the worst case is a duplicate.
                Outcome::Unreported => {
                    self.hold(&candidate);
                    self.fail(
                        &candidate,
                        "SQS did not report this message's send; it stays in the DLQ (replaying it again is safe)",
                    );
                }
                refused => {
                    self.hold(&candidate);
                    let problem = refused.problem().unwrap_or_default();
                    self.fail(
                        &candidate,
                        &format!("the source queue refused it ({problem}); it stays in the DLQ"),
                    );
                }
            }
        }
        self.delete(sent).await.map_err(|err| (err, Vec::new()))
    }

    async fn delete(&mut self, sent: Vec<Candidate>) -> Result<(), SqsError> {
        if sent.is_empty() {
            return Ok(());
        }
        const NOT_DELETED: &str = "sent to the source queue but not deleted from the DLQ";
        const WAY_OUT: &str = "it reappears in the DLQ; replaying it again only makes a duplicate, which the consumer absorbs";
        let handles: Vec<&str> = sent
            .iter()
            .map(|c| c.message.receipt_handle().unwrap_or_default())
            .collect();
        let failed = match delete_batch(self.sqs, self.dlq_url, &handles).await {
            Ok(failed) => failed,
            Err(err) => {
                for candidate in &sent {
                    self.hold(candidate);
                    self.fail(candidate, &format!("{NOT_DELETED} ({err}); {WAY_OUT}"));
                }
                return Err(err);
            }
        };
        for (index, candidate) in sent.into_iter().enumerate() {
            match failed.iter().find(|(i, _)| *i == index) {
                None => {
                    self.counts.moved += 1;
                    candidate.span.in_scope(|| debug!("moved"));
                }
                Some((_, problem)) => {
                    self.hold(&candidate);
                    self.fail(&candidate, &format!("{NOT_DELETED} ({problem}); {WAY_OUT}"));
                }
            }
        }
        Ok(())
    }
}

/// Whether a replayed message says which DLQ message it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lineage {
    Recorded,
    /// Its own attributes already fill SQS's limit: it goes without.
    NoRoom,
}

/// The message attributes a replay sends: the message's own, byte for byte,
/// without the failure attributes (the next failure records its own), and
/// [`REPLAYED_FROM_ATTRIBUTE`] set to `dlq_message_id` (replacing an earlier
/// replay's), so that a later failure shows its lineage. SQS refuses a
/// message with more than [`MAX_MESSAGE_ATTRIBUTES`]; one whose own
/// attributes already reach it goes without the lineage rather than not at all.
fn replayed_attributes(
    message: &Message,
    dlq_message_id: &str,
) -> (HashMap<String, MessageAttributeValue>, Lineage) {
    let mut attributes: HashMap<String, MessageAttributeValue> = message
        .message_attributes()
        .into_iter()
        .flatten()
        .filter(|(name, _)| !is_failure_attribute(name) && *name != REPLAYED_FROM_ATTRIBUTE)
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    if attributes.len() >= MAX_MESSAGE_ATTRIBUTES {
        return (attributes, Lineage::NoRoom);
    }
    let lineage = MessageAttributeValue::builder()
        .data_type("String")
        .string_value(dlq_message_id)
        .build();
    match lineage {
        Ok(value) if !dlq_message_id.is_empty() => {
            attributes.insert(REPLAYED_FROM_ATTRIBUTE.to_owned(), value);
            (attributes, Lineage::Recorded)
        }
        // SQS gives every message an id; without one there is nothing to record.
        _ => (attributes, Lineage::NoRoom),
    }
}

/// The request entry for one message: the same body, the message attributes
/// of [`replayed_attributes`], and its X-Ray trace header, the one system
/// attribute SQS lets a sender set.
fn send_entry(message: &Message, dlq_message_id: &str) -> (SendMessageBatchRequestEntry, Lineage) {
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
    let mut entry = SendMessageBatchRequestEntry::builder()
        // `send_batch` numbers the entries.
        .id("0")
        .message_body(message.body().unwrap_or_default())
        .set_message_attributes((!attributes.is_empty()).then_some(attributes));
    if let Some(trace) = trace {
        entry = entry
            .message_system_attributes(MessageSystemAttributeNameForSends::AwsTraceHeader, trace);
    }
    // Only a missing id or body fails to build, and both are set above.
    let entry = entry
        .build()
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
        assert_eq!(lineage, Lineage::Recorded);
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
        assert_eq!(lineage, Lineage::NoRoom);
        assert_eq!(attributes.len(), MAX_MESSAGE_ATTRIBUTES);
        assert!(!attributes.contains_key(REPLAYED_FROM_ATTRIBUTE));
        let nine = &full[..MAX_MESSAGE_ATTRIBUTES - 1];
        let (attributes, lineage) = replayed_attributes(&message(nine), "dlq-1");
        assert_eq!(lineage, Lineage::Recorded);
        assert_eq!(attributes.len(), MAX_MESSAGE_ATTRIBUTES);
    }
}
