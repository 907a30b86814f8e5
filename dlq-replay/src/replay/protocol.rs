//! The move protocol: send a batch to the source queue, then delete from the
//! DLQ exactly the messages whose send SQS acknowledged. Everything in between
//! (a refused entry, an entry SQS does not report, a call that fails as a
//! whole, a delete that fails) leaves each message in the DLQ, or at worst in
//! both queues; never in neither. A dry run lists instead of moving.

use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName,
    MessageSystemAttributeNameForSends, MessageSystemAttributeValue, SendMessageBatchRequestEntry,
};
use tracing::{debug, warn};

use super::Run;
use super::selection::Candidate;
use crate::inspect::size_bytes;
use crate::queues::{MAX_BATCH, SqsError};

/// What one SendMessageBatch may carry in total. SQS's historical limit; newer
/// queues accept more, but smaller batches cost nothing here.
const MAX_BATCH_BYTES: usize = 256 * 1024;

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
        let mut groups = by_size(selected).into_iter();
        while let Some(group) = groups.next() {
            if let Err((err, unsent)) = self.move_group(group).await {
                // The run stops: what was not sent stays in the DLQ, counted as failed.
                let untried: Vec<Candidate> = unsent.into_iter().chain(groups.flatten()).collect();
                for candidate in &untried {
                    self.hold(candidate);
                    self.fail(candidate, &format!("not sent ({err}); it stays in the DLQ"));
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
    async fn move_group(
        &mut self,
        group: Vec<Candidate>,
    ) -> Result<(), (SqsError, Vec<Candidate>)> {
        let entries = group
            .iter()
            .enumerate()
            .map(|(index, candidate)| send_entry(index, &candidate.message))
            .collect::<Vec<_>>();
        let response = match self
            .sqs
            .send_message_batch()
            .queue_url(self.destination_url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(response) => response,
            Err(err) => {
                let err = SqsError::new(
                    format!("send to the source queue {}", self.destination_url),
                    err,
                );
                return Err((err, group));
            }
        };
        let mut sent = Vec::new();
        let mut outcome: Vec<Option<Result<(), String>>> = vec![None; group.len()];
        for ok in response.successful() {
            if let Some(slot) = entry_index(ok.id()).and_then(|i| outcome.get_mut(i)) {
                *slot = Some(Ok(()));
            }
        }
        for failed in response.failed() {
            if let Some(slot) = entry_index(failed.id()).and_then(|i| outcome.get_mut(i)) {
                *slot = Some(Err(format!(
                    "{}: {}",
                    failed.code(),
                    failed.message().unwrap_or("no message")
                )));
            }
        }
        for (candidate, outcome) in group.into_iter().zip(outcome) {
            match outcome {
                Some(Ok(())) => {
                    candidate
                        .span
                        .in_scope(|| debug!("sent to the source queue"));
                    sent.push(candidate);
                }
                Some(Err(problem)) => {
                    self.hold(&candidate);
                    self.fail(
                        &candidate,
                        &format!("the source queue refused it ({problem}); it stays in the DLQ"),
                    );
                }
                None => {
                    // SQS named it neither sent nor failed. Treated as not sent, so it
                    // stays in the DLQ; if it was in fact sent, the worst case is a duplicate.
                    self.hold(&candidate);
                    self.fail(
                        &candidate,
                        "SQS did not report this message's send; it stays in the DLQ (replaying it again is safe)",
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
        let entries = sent
            .iter()
            .enumerate()
            .filter_map(|(index, candidate)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(candidate.message.receipt_handle().unwrap_or_default())
                    .build()
                    .ok()
            })
            .collect::<Vec<_>>();
        const NOT_DELETED: &str = "sent to the source queue but not deleted from the DLQ";
        const WAY_OUT: &str = "it reappears in the DLQ; replaying it again only makes a duplicate, which the consumer absorbs";
        let response = match self
            .sqs
            .delete_message_batch()
            .queue_url(self.dlq_url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(response) => response,
            Err(err) => {
                let err = SqsError::new(format!("delete from the DLQ {}", self.dlq_url), err);
                for candidate in &sent {
                    self.hold(candidate);
                    self.fail(candidate, &format!("{NOT_DELETED} ({err}); {WAY_OUT}"));
                }
                return Err(err);
            }
        };
        let failed: Vec<(usize, String)> = response
            .failed()
            .iter()
            .filter_map(|f| {
                let problem = format!("{}: {}", f.code(), f.message().unwrap_or("no message"));
                entry_index(f.id()).map(|i| (i, problem))
            })
            .collect();
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

/// The request entry for one message: the same body and message attributes,
/// byte for byte, and its X-Ray trace header, the one system attribute SQS lets
/// a sender set.
fn send_entry(index: usize, message: &Message) -> SendMessageBatchRequestEntry {
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
        .id(index.to_string())
        .message_body(message.body().unwrap_or_default())
        .set_message_attributes(message.message_attributes().cloned());
    if let Some(trace) = trace {
        entry = entry
            .message_system_attributes(MessageSystemAttributeNameForSends::AwsTraceHeader, trace);
    }
    // Only a missing id or body fails to build, and both are set above.
    entry
        .build()
        .unwrap_or_else(|err| unreachable!("a batch entry with an id and a body: {err}"))
}

fn entry_index(id: &str) -> Option<usize> {
    id.parse().ok()
}

/// Splits a batch so that no SendMessageBatch exceeds SQS's size limit.
fn by_size(candidates: Vec<Candidate>) -> Vec<Vec<Candidate>> {
    let mut groups: Vec<Vec<Candidate>> = Vec::new();
    let mut bytes = 0;
    for candidate in candidates {
        let size = size_bytes(
            candidate.message.body().unwrap_or_default(),
            &candidate
                .message
                .message_attributes()
                .cloned()
                .unwrap_or_default(),
        );
        match groups.last_mut() {
            Some(group) if bytes + size <= MAX_BATCH_BYTES && group.len() < MAX_BATCH => {
                bytes += size;
                group.push(candidate);
            }
            _ => {
                bytes = size;
                groups.push(vec![candidate]);
            }
        }
    }
    groups
}
