//! `replay`: moves DLQ messages back to their source queue, one batch at a time.
//!
//! # Why nothing is lost
//! A message is sent to the source queue first and deleted from the DLQ only
//! after SQS acknowledged that send. Whatever stops the run, at any point, a
//! message is therefore in the DLQ, in the source queue, or (killed between the
//! two calls) in both: at worst a duplicate, which the consumer absorbs because
//! it stores each `order_id` once.
//!
//! # Why messages are kept hidden until the end
//! Skipped messages (and, in a dry run, all of them) stay hidden for the run and
//! are made visible again together when it ends. Released at once, a standard
//! queue would tend to hand the same ones back first, and the run could not tell
//! "only skipped ones left" from "the next receive happened to sample them".

use std::collections::HashSet;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName,
    MessageSystemAttributeNameForSends, MessageSystemAttributeValue, SendMessageBatchRequestEntry,
};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{Span, debug, info, info_span, warn};
use uuid::Uuid;

use crate::inspect::{Verdict, size_bytes};
use crate::progress::Progress;
use crate::queues::{Held, MAX_BATCH, QueueError, SqsError, describe, receive};

/// What one SendMessageBatch may carry in total. SQS's historical limit; newer
/// queues accept more, but smaller batches cost nothing here.
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Receives that bring back only messages this run has already seen, in a row,
/// before the run concludes nothing new is left (plus one per batch of messages
/// seen, which may all come back after a long run).
const MAX_IDLE_RECEIVES: usize = 3;

/// Which messages to move.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Move only messages the contract accepts; leave the rest in the DLQ.
    pub only_valid: bool,
    /// When not empty, move only the orders with these ids.
    pub order_ids: HashSet<Uuid>,
}

/// Why a message stays in the DLQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    Invalid(String),
    NotSelected,
}

impl Selection {
    pub fn decide(&self, verdict: &Verdict) -> Result<(), Skip> {
        if !self.order_ids.is_empty()
            && !verdict
                .order_uuid()
                .is_some_and(|id| self.order_ids.contains(&id))
        {
            return Err(Skip::NotSelected);
        }
        match &verdict.invalid_reason {
            Some(reason) if self.only_valid => Err(Skip::Invalid(reason.clone())),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReplayOptions {
    /// Send at most this many messages (with `dry_run`: list at most this many).
    pub max: Option<u64>,
    /// Messages sent per second, at most.
    pub rate: Option<f64>,
    /// Report what would move; send and delete nothing.
    pub dry_run: bool,
    pub selection: Selection,
    /// How long received messages stay hidden should the run die before it
    /// moves or releases them: long enough for one batch's send and delete.
    pub visibility_timeout_secs: u32,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            max: None,
            rate: None,
            dry_run: false,
            selection: Selection::default(),
            visibility_timeout_secs: 60,
        }
    }
}

/// What happened to the messages this run looked at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Sent to the source queue and deleted from the DLQ.
    pub moved: u64,
    /// Dry run: would have been moved.
    pub would_move: u64,
    /// Left in the DLQ on purpose (`--only-valid`, `--order-id`).
    pub skipped: u64,
    /// Not moved (still in the DLQ), or sent but not deleted (in both queues).
    pub failed: u64,
}

impl Counts {
    fn looked_at(&self) -> u64 {
        self.moved + self.would_move + self.skipped + self.failed
    }

    /// What counts against `--max`.
    fn attempted(&self) -> u64 {
        self.moved + self.would_move + self.failed
    }

    fn status(&self, dry_run: bool) -> String {
        if dry_run {
            format!(
                "would_move={} skipped={} failed={}",
                self.would_move, self.skipped, self.failed
            )
        } else {
            format!(
                "moved={} skipped={} failed={}",
                self.moved, self.skipped, self.failed
            )
        }
    }
}

/// Why the run ended.
#[derive(Debug)]
pub enum End {
    /// No message left that this run has not looked at.
    Drained,
    /// `max` messages were sent (or listed).
    Limit,
    /// Stopped on request (Ctrl-C) after the batch in flight.
    Interrupted,
    /// An SQS call failed as a whole; the run stopped after it.
    Aborted(SqsError),
}

#[derive(Debug)]
pub struct Report {
    pub counts: Counts,
    pub end: End,
    pub dry_run: bool,
    pub destination: String,
}

impl Report {
    /// The last line the command prints, e.g. `replay: moved=40 skipped=2 failed=0`.
    pub fn summary(&self) -> String {
        let ending = match self.end {
            End::Drained => "",
            End::Limit => " (--max reached)",
            End::Interrupted => " (interrupted)",
            End::Aborted(_) => " (stopped by an error)",
        };
        if self.dry_run {
            format!(
                "replay (dry run): {}{ending}; nothing was sent or deleted",
                self.counts.status(true)
            )
        } else {
            format!("replay: {}{ending}", self.counts.status(false))
        }
    }

    /// 0 when everything looked at was moved or skipped on purpose, 1 when
    /// anything failed, 130 when interrupted (as a shell reports SIGINT).
    pub fn exit_code(&self) -> u8 {
        if self.counts.failed > 0 || matches!(self.end, End::Aborted(_)) {
            1
        } else if matches!(self.end, End::Interrupted) {
            130
        } else {
            0
        }
    }
}

/// Moves (or with `dry_run`, lists) DLQ messages to `destination_url` until the
/// DLQ has nothing new, `max` is reached, or `stop` turns true. Errors only
/// before anything was touched (unreadable or unsuitable queues); failures
/// during the run are in the [`Report`].
pub async fn replay(
    sqs: &Client,
    dlq_url: &str,
    destination_url: &str,
    options: &ReplayOptions,
    progress: &mut dyn Progress,
    stop: watch::Receiver<bool>,
) -> Result<Report, QueueError> {
    let dlq = describe(sqs, dlq_url).await?;
    let destination = describe(sqs, destination_url).await?;
    for queue in [&dlq, &destination] {
        if queue.fifo {
            return Err(QueueError::Fifo {
                url: queue.url.clone(),
            });
        }
    }
    if dlq.arn == destination.arn {
        return Err(QueueError::SameQueue {
            url: dlq_url.to_owned(),
        });
    }
    let estimate = options.max.map_or(dlq.visible, |max| max.min(dlq.visible));
    info!(
        dlq = dlq_url,
        destination = destination_url,
        dry_run = options.dry_run,
        only_valid = options.selection.only_valid,
        order_ids = options.selection.order_ids.len(),
        max = options.max,
        rate = options.rate,
        dlq_messages = dlq.visible,
        "replay started"
    );
    let started = std::time::Instant::now();
    progress.start(Some(estimate));
    let mut run = Run {
        sqs,
        dlq_url,
        destination_url,
        options,
        progress,
        estimate,
        held: Held::default(),
        seen: HashSet::new(),
        counts: Counts::default(),
    };
    let end = run.run(stop).await;
    // Skipped, listed and unsent messages go back to the DLQ's visible set now,
    // rather than when their visibility timeout ends.
    run.held.release(sqs, dlq_url).await;
    run.progress.finish();
    let counts = run.counts;
    info!(
        dlq = dlq_url,
        destination = destination_url,
        dry_run = options.dry_run,
        moved = counts.moved,
        would_move = counts.would_move,
        skipped = counts.skipped,
        failed = counts.failed,
        end = ?end,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "replay finished"
    );
    Ok(Report {
        counts,
        end,
        dry_run: options.dry_run,
        destination: destination_url.to_owned(),
    })
}

struct Run<'a> {
    sqs: &'a Client,
    dlq_url: &'a str,
    destination_url: &'a str,
    options: &'a ReplayOptions,
    progress: &'a mut dyn Progress,
    estimate: u64,
    held: Held,
    seen: HashSet<String>,
    counts: Counts,
}

/// A received message on its way, with its ids and its tracing span.
struct Candidate {
    message: Message,
    id: String,
    order_id: String,
    span: Span,
}

impl Run<'_> {
    async fn run(&mut self, mut stop: watch::Receiver<bool>) -> End {
        let chunk = chunk_size(self.options.rate);
        let mut pacer = Pacer::new(self.options.rate);
        let mut idle = 0;
        loop {
            if *stop.borrow() {
                return End::Interrupted;
            }
            let attempted = self.counts.attempted();
            let want = match self.options.max {
                Some(max) if attempted >= max => return End::Limit,
                Some(max) => chunk.min(usize::try_from(max - attempted).unwrap_or(chunk)),
                None => chunk,
            };
            tokio::select! {
                biased;
                () = stopped(&mut stop) => return End::Interrupted,
                () = pacer.ready() => {}
            }
            let received = match receive(
                self.sqs,
                self.dlq_url,
                want,
                self.options.visibility_timeout_secs,
            )
            .await
            {
                Ok(received) => received,
                Err(err) => return End::Aborted(err),
            };
            if received.is_empty() {
                return End::Drained;
            }
            let (fresh, selected) = self.take_fresh(received);
            if fresh == 0 {
                // Only messages seen before, back after their hold ran out on a
                // long run; the receive has hidden them again. Enough such
                // receives in a row to have cycled through all of them means
                // nothing new is left.
                idle += 1;
                if idle >= MAX_IDLE_RECEIVES + self.seen.len() / want.max(1) {
                    return End::Drained;
                }
                continue;
            }
            idle = 0;
            let sent = selected.len();
            let outcome = if self.options.dry_run {
                self.list(selected);
                Ok(())
            } else {
                self.move_batch(selected).await
            };
            pacer.used(sent);
            self.progress.advance(
                self.counts.looked_at(),
                Some(self.estimate),
                &self.counts.status(self.options.dry_run),
            );
            if let Err(err) = outcome {
                return End::Aborted(err);
            }
        }
    }

    /// Looks at a receive: returns how many messages this run had not seen
    /// before, and those of them to move. One seen again had outlived its hold;
    /// the receive has just hidden it again, under a new receipt handle.
    fn take_fresh(&mut self, received: Vec<Message>) -> (usize, Vec<Candidate>) {
        let mut fresh = 0;
        let mut selected = Vec::new();
        for message in received {
            let id = message.message_id().unwrap_or_default().to_owned();
            if !self.seen.insert(id.clone()) {
                debug!(message_id = %id, "received again after its hold ran out");
                self.held
                    .hold(&id, message.receipt_handle().unwrap_or_default());
                continue;
            }
            fresh += 1;
            let verdict = Verdict::of(message.body().unwrap_or_default());
            let order_id = verdict.order_id.clone().unwrap_or_else(|| "-".to_owned());
            let span = info_span!("message", message_id = %id, order_id = %order_id);
            let candidate = Candidate {
                message,
                id,
                order_id,
                span,
            };
            if let Some(candidate) = self.keep_or_skip(candidate, &verdict) {
                selected.push(candidate);
            }
        }
        (fresh, selected)
    }

    fn keep_or_skip(&mut self, candidate: Candidate, verdict: &Verdict) -> Option<Candidate> {
        match self.options.selection.decide(verdict) {
            Ok(()) => Some(candidate),
            Err(skip) => {
                self.counts.skipped += 1;
                self.hold(&candidate);
                let _entered = candidate.span.enter();
                match skip {
                    Skip::Invalid(reason) => {
                        debug!(%reason, "skipped: invalid");
                        self.progress.note(&format!(
                            "skipped {} (order {}): invalid: {reason}",
                            candidate.id, candidate.order_id
                        ));
                    }
                    // Not worth a line each: with --order-id, most of the DLQ is "not selected".
                    Skip::NotSelected => debug!("skipped: order not selected"),
                }
                None
            }
        }
    }

    fn hold(&mut self, candidate: &Candidate) {
        self.held.hold(
            &candidate.id,
            candidate.message.receipt_handle().unwrap_or_default(),
        );
    }

    fn list(&mut self, selected: Vec<Candidate>) {
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

    /// Sends the batch to the destination, then deletes from the DLQ exactly
    /// the messages whose send succeeded.
    async fn move_batch(&mut self, selected: Vec<Candidate>) -> Result<(), SqsError> {
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

/// Messages per receive: a batch of 10 when unlimited, otherwise about one
/// second's worth, so a slow replay holds few messages at a time.
pub fn chunk_size(rate: Option<f64>) -> usize {
    rate.map_or(MAX_BATCH, |rate| {
        (rate.floor() as usize).clamp(1, MAX_BATCH)
    })
}

/// Spaces batches so that `rate` messages per second are not exceeded.
struct Pacer {
    per_message: Option<Duration>,
    next: Instant,
    slot: Instant,
}

impl Pacer {
    fn new(rate: Option<f64>) -> Self {
        let now = Instant::now();
        Self {
            per_message: rate
                .filter(|r| r.is_finite() && *r > 0.0)
                .map(|r| Duration::from_secs_f64(1.0 / r)),
            next: now,
            slot: now,
        }
    }

    async fn ready(&mut self) {
        if self.per_message.is_some() {
            tokio::time::sleep_until(self.next).await;
        }
        self.slot = Instant::now();
    }

    /// `sent` messages went out in the slot that just began.
    fn used(&mut self, sent: usize) {
        if let Some(per_message) = self.per_message {
            self.next = self.slot + per_message * u32::try_from(sent).unwrap_or(u32::MAX);
        }
    }
}

/// Completes once `stop` turns true; never, if its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(order_id: Option<&str>, invalid: Option<&str>) -> Verdict {
        Verdict {
            order_id: order_id.map(str::to_owned),
            invalid_reason: invalid.map(str::to_owned),
        }
    }

    const ID: &str = "3f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10";

    #[test]
    fn by_default_every_message_is_moved_valid_or_not() {
        let all = Selection::default();
        assert_eq!(all.decide(&verdict(None, Some("`currency` bad"))), Ok(()));
        assert_eq!(all.decide(&verdict(Some(ID), None)), Ok(()));
    }

    #[test]
    fn only_valid_leaves_invalid_messages_with_their_reason() {
        let only_valid = Selection {
            only_valid: true,
            ..Selection::default()
        };
        assert_eq!(
            only_valid.decide(&verdict(Some(ID), Some("`currency` bad"))),
            Err(Skip::Invalid("`currency` bad".into()))
        );
        assert_eq!(only_valid.decide(&verdict(Some(ID), None)), Ok(()));
    }

    #[test]
    fn order_ids_select_by_uuid_and_leave_messages_without_an_id() {
        let selection = Selection {
            only_valid: false,
            order_ids: [ID.parse().expect("uuid")].into_iter().collect(),
        };
        assert_eq!(
            selection.decide(&verdict(Some(&ID.to_uppercase()), None)),
            Ok(())
        );
        assert_eq!(
            selection.decide(&verdict(Some("1f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10"), None)),
            Err(Skip::NotSelected)
        );
        assert_eq!(
            selection.decide(&verdict(None, Some("not JSON"))),
            Err(Skip::NotSelected)
        );
    }

    #[test]
    fn a_low_rate_receives_about_one_seconds_worth_at_a_time() {
        assert_eq!(chunk_size(None), 10);
        assert_eq!(chunk_size(Some(4.0)), 4);
        assert_eq!(chunk_size(Some(0.5)), 1);
        assert_eq!(chunk_size(Some(500.0)), 10);
    }

    #[test]
    fn the_pacer_spaces_batches_by_the_rate_and_skipped_messages_cost_nothing() {
        let mut pacer = Pacer::new(Some(4.0));
        let slot = pacer.slot;
        pacer.used(4);
        assert_eq!(pacer.next, slot + Duration::from_secs(1));
        pacer.used(0);
        assert_eq!(pacer.next, slot, "no message sent, no wait");
        let mut unlimited = Pacer::new(None);
        let next = unlimited.next;
        unlimited.used(10);
        assert_eq!(unlimited.next, next);
    }

    #[test]
    fn the_summary_names_the_counts_and_why_the_run_ended() {
        let report = Report {
            counts: Counts {
                moved: 3,
                skipped: 2,
                failed: 1,
                would_move: 0,
            },
            end: End::Interrupted,
            dry_run: false,
            destination: "q".into(),
        };
        assert_eq!(
            report.summary(),
            "replay: moved=3 skipped=2 failed=1 (interrupted)"
        );
        assert_eq!(report.exit_code(), 1, "a failure outranks the interruption");
        let dry = Report {
            counts: Counts {
                would_move: 5,
                ..Counts::default()
            },
            end: End::Drained,
            dry_run: true,
            destination: "q".into(),
        };
        assert_eq!(
            dry.summary(),
            "replay (dry run): would_move=5 skipped=0 failed=0; nothing was sent or deleted"
        );
        assert_eq!(dry.exit_code(), 0);
    }
}
