//! The one walk of the DLQ that `peek`, `replay` and `export` share: receive,
//! drop what this run has seen, select, pace, stop; the command handles each batch.
//!
//! Every message a run does not delete is held (kept hidden) until the run
//! ends: released at once, a standard queue would tend to hand the same ones
//! back, and the run could not tell "only skipped ones left" from chance.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message};
use order_contract::FailureClass;
use support::sqs::{MAX_BATCH_ENTRIES, SqsError};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{Span, debug, info, info_span, warn};
use uuid::Uuid;

use crate::Error;
use crate::message::MessageView;
use crate::progress::Progress;
use crate::queue::{Held, receive};

/// How far, how fast and which messages a run takes: `replay`'s and
/// `export`'s options, the field docs their help.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct Options {
    /// Take at most N messages (with --dry-run: list at most N).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max: Option<u64>,
    /// At most this many messages per second (fractions allowed).
    #[arg(long, value_name = "PER_SEC", value_parser = crate::cli::parse_rate)]
    pub rate: Option<f64>,
    /// List what would be done; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub selection: Selection,
    /// Seconds a received message stays hidden should this process die before
    /// it is handled; must cover one batch.
    #[arg(long = "visibility-timeout", value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=43_200))]
    pub visibility_timeout_secs: u32,
}

impl Default for Options {
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

/// Which messages to take; an empty list takes all.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct Selection {
    /// Only messages the order contract accepts; the others stay in the DLQ.
    #[arg(long)]
    pub only_valid: bool,
    /// Only these orders (repeat the option or list several ids).
    #[arg(long = "order-id", value_name = "ID", num_args = 1.., action = clap::ArgAction::Append)]
    pub order_ids: Vec<Uuid>,
    /// Only messages of this failure class (repeatable), as `peek` shows them.
    #[arg(long = "reason", value_name = "CLASS", action = clap::ArgAction::Append)]
    pub reasons: Vec<FailureClass>,
}

/// Why a message stays in the DLQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    Invalid(String),
    NotSelected,
}

impl Selection {
    pub fn decide(&self, view: &MessageView) -> Result<(), Skip> {
        let order = view.order_id.as_deref().and_then(|id| id.parse().ok());
        if !self.reasons.is_empty() && !self.reasons.contains(&view.failure_class)
            || !self.order_ids.is_empty() && !order.is_some_and(|id| self.order_ids.contains(&id))
        {
            return Err(Skip::NotSelected);
        }
        match &view.invalid_reason {
            Some(reason) if self.only_valid => Err(Skip::Invalid(reason.clone())),
            _ => Ok(()),
        }
    }
}

/// What happened to the messages (or lines) a run looked at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Moved, written or sent (with a dry run: listed).
    pub done: u64,
    /// `export --delete`: of those written, deleted from the DLQ.
    pub deleted: u64,
    /// Left out on purpose (`import`: lines its journal lists as sent).
    pub skipped: u64,
    /// Not done, or done but not deleted (then in both places).
    pub failed: u64,
    /// `import`: lines that are not exported messages.
    pub unreadable: u64,
}

impl Counts {
    /// `{done}=N skipped=N failed=N`, with `deleted=N` after the first when `deleted`.
    pub(crate) fn status(&self, done: &str, deleted: bool) -> String {
        let (n, d, skipped, failed) = (self.done, self.deleted, self.skipped, self.failed);
        let deleted = if deleted {
            format!(" deleted={d}")
        } else {
            String::new()
        };
        format!("{done}={n}{deleted} skipped={skipped} failed={failed}")
    }
}

/// Why a run ended: nothing new left, `max` reached, Ctrl-C (after the batch
/// in flight), or a call or a write failed.
#[derive(Debug)]
pub enum End {
    Drained,
    Limit,
    Interrupted,
    Aborted(Error),
}

/// What a run did, how it ended, and the line it prints.
#[derive(Debug)]
pub struct Report {
    pub counts: Counts,
    pub end: End,
    /// The last line the command prints, e.g. `replay: moved=40 skipped=2 failed=0`.
    pub summary: String,
}

impl Report {
    /// `{command}: {status}`, then why the run ended and `tail`.
    pub(crate) fn new(
        command: &str,
        dry_run: bool,
        status: impl Fn(&Counts) -> String,
        tail: &str,
        counts: Counts,
        end: End,
    ) -> Self {
        let ending = match end {
            End::Drained => "",
            End::Limit => " (--max reached)",
            End::Interrupted => " (interrupted)",
            End::Aborted(_) => " (stopped by an error)",
        };
        let dry = if dry_run { " (dry run)" } else { "" };
        let summary = format!("{command}{dry}: {}{ending}{tail}", status(&counts));
        info!(?end, "{command} finished: {summary}");
        Self {
            counts,
            end,
            summary,
        }
    }

    /// 0 when everything looked at was handled or skipped on purpose, 1 when
    /// anything failed, 130 when interrupted (as a shell reports SIGINT).
    pub fn exit_code(&self) -> u8 {
        if self.counts.failed + self.counts.unreadable > 0 || matches!(self.end, End::Aborted(_)) {
            1
        } else if matches!(self.end, End::Interrupted) {
            130
        } else {
            0
        }
    }
}

/// A received message on its way.
pub struct Candidate {
    pub message: Message,
    pub view: MessageView,
    pub span: Span,
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let order = self.view.order_id.as_deref().unwrap_or("-");
        write!(f, "{} (order {order})", self.view.record.message_id)
    }
}

/// Receives in a row of only messages seen before (plus one per batch seen,
/// which may all come back after a long run) that mean nothing new is left.
const MAX_IDLE_RECEIVES: usize = 3;

/// One run over the DLQ; see the module's doc.
pub struct Walk<'a> {
    pub(crate) sqs: &'a Client,
    pub(crate) dlq_url: &'a str,
    options: &'a Options,
    pub(crate) progress: &'a mut dyn Progress,
    stop: watch::Receiver<bool>,
    pacer: Pacer,
    held: Held,
    /// Message ids looked at, so that one back after its hold is not counted twice.
    seen: HashSet<String>,
    idle: usize,
    pub(crate) counts: Counts,
}

impl<'a> Walk<'a> {
    /// `visible` is the DLQ's depth, the progress's estimate.
    pub(crate) fn new(
        sqs: &'a Client,
        dlq_url: &'a str,
        visible: u64,
        options: &'a Options,
        progress: &'a mut dyn Progress,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let total = options.max.map_or(visible, |max| max.min(visible));
        progress.start(total, "messages in the DLQ");
        Self {
            sqs,
            dlq_url,
            options,
            progress,
            stop,
            pacer: Pacer::new(options.rate),
            held: Held::default(),
            seen: HashSet::new(),
            idle: 0,
            counts: Counts::default(),
        }
    }

    /// The next selected messages this run has not seen (possibly none), or
    /// why the walk is over.
    pub(crate) async fn next(&mut self) -> Result<Vec<Candidate>, End> {
        loop {
            if *self.stop.borrow() {
                return Err(End::Interrupted);
            }
            let chunk = chunk_size(self.options.rate);
            let attempted = self.counts.done + self.counts.failed;
            let want = match self.options.max {
                Some(max) if attempted >= max => return Err(End::Limit),
                Some(max) => chunk.min(usize::try_from(max - attempted).unwrap_or(chunk)),
                None => chunk,
            };
            tokio::select! {
                biased;
                () = stopped(&mut self.stop) => return Err(End::Interrupted),
                () = self.pacer.ready() => {}
            }
            let visibility = self.options.visibility_timeout_secs;
            let received = receive(self.sqs, self.dlq_url, want, visibility).await;
            let received = received.map_err(|err| End::Aborted(err.into()))?;
            if received.is_empty() {
                return Err(End::Drained);
            }
            let mut fresh = 0;
            let mut batch = Vec::new();
            for message in received {
                let id = message.message_id().unwrap_or_default().to_owned();
                if !self.seen.insert(id) {
                    // Back after its hold ran out; the receive hid it again.
                    self.held.hold(&message);
                    continue;
                }
                fresh += 1;
                let view = MessageView::new(&message);
                let span = info_span!("message", message_id = %view.record.message_id, order_id = view.order_id);
                let candidate = Candidate {
                    message,
                    view,
                    span,
                };
                match self.options.selection.decide(&candidate.view) {
                    Ok(()) => {
                        batch.push(candidate);
                        continue;
                    }
                    Err(Skip::Invalid(reason)) => {
                        let note = format!("skipped {candidate}: invalid: {reason}");
                        self.progress.note(&note);
                    }
                    // Not worth a line each: with --order-id or --reason, most
                    // of the DLQ may be "not selected".
                    Err(Skip::NotSelected) => {
                        candidate.span.in_scope(|| debug!("skipped: not selected"))
                    }
                }
                self.counts.skipped += 1;
                self.hold(&candidate);
            }
            if fresh == 0 {
                self.idle += 1;
                if self.idle >= MAX_IDLE_RECEIVES + self.seen.len() / want {
                    return Err(End::Drained);
                }
                continue;
            }
            self.idle = 0;
            self.pacer.used(batch.len());
            return Ok(batch);
        }
    }

    pub(crate) fn hold(&mut self, candidate: &Candidate) {
        self.held.hold(&candidate.message);
    }

    /// A dry run's batch: counts and holds each, with a line saying
    /// "would {verb} … to {to}".
    pub(crate) fn list(&mut self, batch: Vec<Candidate>, verb: &str, to: &dyn fmt::Display) {
        for candidate in batch {
            self.counts.done += 1;
            self.hold(&candidate);
            self.progress
                .note(&format!("would {verb} {candidate} to {to}"));
        }
    }

    pub(crate) fn fail(&mut self, candidate: &Candidate, what: &str) {
        self.counts.failed += 1;
        self.hold(candidate);
        candidate.span.in_scope(|| warn!(problem = what, "failed"));
        self.progress.note(&format!("failed {candidate}: {what}"));
    }

    /// Deletes `done` (at most 10) from the DLQ; returns how many SQS deleted,
    /// failing each other one with "{kept} ({why}); {then}".
    pub(crate) async fn delete(
        &mut self,
        done: Vec<Candidate>,
        kept: &str,
        then: &str,
    ) -> Result<u64, Error> {
        if done.is_empty() {
            return Ok(0);
        }
        let entries = done.iter().enumerate().filter_map(|(index, candidate)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(index.to_string())
                .receipt_handle(candidate.message.receipt_handle().unwrap_or_default())
                .build()
                .ok()
        });
        let request = self.sqs.delete_message_batch().queue_url(self.dlq_url);
        let answer = (request.set_entries(Some(entries.collect())).send().await)
            .map_err(|err| SqsError::new(format!("delete from the DLQ {}", self.dlq_url), err));
        // Why SQS did not delete the one at `index`; `None`: deleted.
        let problem = |index: usize| match &answer {
            Ok(answer) => {
                let failed = answer.failed.iter().find(|f| f.id == index.to_string())?;
                let message = failed.message().unwrap_or_default();
                Some(format!("{}: {message}", failed.code))
            }
            Err(err) => Some(err.to_string()),
        };
        let mut deleted = 0;
        for (index, candidate) in done.iter().enumerate() {
            match problem(index) {
                None => deleted += 1,
                Some(why) => self.fail(candidate, &format!("{kept} ({why}); {then}")),
            }
        }
        answer.map(|_| deleted).map_err(Error::from)
    }

    pub(crate) fn advance(&mut self, status: &str) {
        let c = self.counts;
        self.progress.advance(c.done + c.skipped + c.failed, status);
    }

    /// Makes what it held visible again.
    pub(crate) async fn release(&mut self) {
        self.held.release(self.sqs, self.dlq_url).await;
        self.progress.finish();
    }

    /// Releases what it held; the [`Report`] as for [`Report::new`].
    pub(crate) async fn finish(
        mut self,
        command: &str,
        status: impl Fn(&Counts) -> String,
        tail: &str,
        end: End,
    ) -> Report {
        self.release().await;
        let dry_run = self.options.dry_run;
        Report::new(command, dry_run, status, tail, self.counts, end)
    }
}

/// Messages per receive: a batch of 10 when unlimited, otherwise about one
/// second's worth, so a slow run holds few messages at a time.
pub(crate) fn chunk_size(rate: Option<f64>) -> usize {
    rate.map_or(MAX_BATCH_ENTRIES, |rate| {
        (rate.floor() as usize).clamp(1, MAX_BATCH_ENTRIES)
    })
}

/// Spaces batches so that `rate` messages per second are not exceeded.
pub(crate) struct Pacer {
    per_message: Option<Duration>,
    next: Instant,
    slot: Instant,
}

impl Pacer {
    pub(crate) fn new(rate: Option<f64>) -> Self {
        let now = Instant::now();
        Self {
            per_message: rate
                .filter(|r| r.is_finite() && *r > 0.0)
                .map(|r| Duration::from_secs_f64(1.0 / r)),
            next: now,
            slot: now,
        }
    }

    pub(crate) async fn ready(&mut self) {
        if self.per_message.is_some() {
            tokio::time::sleep_until(self.next).await;
        }
        self.slot = Instant::now();
    }

    pub(crate) fn used(&mut self, sent: usize) {
        if let Some(per_message) = self.per_message {
            self.next = self.slot + per_message * u32::try_from(sent).unwrap_or(u32::MAX);
        }
    }
}

/// Completes once `stop` turns true; never, if its sender is gone.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(order_id: Option<&str>, invalid: Option<&str>, class: FailureClass) -> MessageView {
        let mut view = MessageView::new(&Message::builder().build());
        view.order_id = order_id.map(str::to_owned);
        view.invalid_reason = invalid.map(str::to_owned);
        view.failure_class = class;
        view
    }

    const ID: &str = "3f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10";
    const OTHER: &str = "1f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10";
    const ANY: FailureClass = FailureClass::Redriven;

    #[test]
    fn by_default_every_message_is_taken_valid_or_not() {
        let all = Selection::default();
        assert_eq!(all.decide(&view(None, Some("`currency` bad"), ANY)), Ok(()));
        assert_eq!(all.decide(&view(Some(ID), None, ANY)), Ok(()));
    }

    #[test]
    fn only_valid_leaves_invalid_messages_with_their_reason() {
        let only_valid = Selection {
            only_valid: true,
            ..Selection::default()
        };
        assert_eq!(
            only_valid.decide(&view(Some(ID), Some("`currency` bad"), ANY)),
            Err(Skip::Invalid("`currency` bad".into()))
        );
        assert_eq!(only_valid.decide(&view(Some(ID), None, ANY)), Ok(()));
    }

    #[test]
    fn order_ids_select_by_uuid_and_leave_messages_without_an_id() {
        let selection = Selection {
            order_ids: [ID.parse().expect("uuid")].into_iter().collect(),
            ..Selection::default()
        };
        let upper = ID.to_uppercase();
        assert_eq!(selection.decide(&view(Some(&upper), None, ANY)), Ok(()));
        let other = view(Some(OTHER), None, ANY);
        assert_eq!(selection.decide(&other), Err(Skip::NotSelected));
        let none = view(None, Some("not JSON"), ANY);
        assert_eq!(selection.decide(&none), Err(Skip::NotSelected));
    }

    #[test]
    fn reasons_select_by_failure_class_along_with_the_other_filters() {
        let row_refused = Selection {
            reasons: [FailureClass::RowRefused].into_iter().collect(),
            ..Selection::default()
        };
        let refused = view(Some(ID), None, FailureClass::RowRefused);
        assert_eq!(row_refused.decide(&refused), Ok(()));
        let redriven = view(Some(ID), None, FailureClass::Redriven);
        assert_eq!(row_refused.decide(&redriven), Err(Skip::NotSelected));
        let with_order = Selection {
            order_ids: [ID.parse().expect("uuid")].into_iter().collect(),
            ..row_refused
        };
        let other = view(Some(OTHER), None, FailureClass::RowRefused);
        assert_eq!(
            with_order.decide(&other),
            Err(Skip::NotSelected),
            "both filters apply"
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
        let counts = Counts {
            done: 3,
            skipped: 2,
            failed: 1,
            ..Counts::default()
        };
        let report = Report::new(
            "replay",
            false,
            |_| "moved=3 …".into(),
            "",
            counts,
            End::Interrupted,
        );
        assert_eq!(report.summary, "replay: moved=3 … (interrupted)");
        assert_eq!(report.exit_code(), 1, "a failure outranks the interruption");
        let clean = Counts {
            failed: 0,
            ..counts
        };
        let report = Report::new(
            "export",
            true,
            |_| "x".into(),
            "; nothing",
            clean,
            End::Limit,
        );
        assert_eq!(
            report.summary,
            "export (dry run): x (--max reached); nothing"
        );
        assert_eq!(report.exit_code(), 0);
        let interrupted = Report::new("import", false, |_| "y".into(), "", clean, End::Interrupted);
        assert_eq!(interrupted.exit_code(), 130);
    }
}
