//! `export`: the DLQ's messages to a file of JSON lines.
//!
//! # Why nothing is lost
//! Each batch is written and flushed to disk (fsync) before anything is
//! deleted, and with `delete` only the messages of a batch on disk are
//! deleted. Killed at any point, a message is in the file, still in the DLQ
//! (visible again after the visibility timeout), or both; never in neither.
//! Without `delete` every message stays in the DLQ; those written are kept
//! hidden until the run ends, so that a run writes each once.

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::Message;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{ArchiveError, End, Record, Report, append_durably, open_for_append};
use crate::inspect::{Reason, Verdict};
use crate::progress::Progress;
use crate::queues::{Held, SqsError, delete_batch, describe};
use crate::replay::walk::{Walk, Walker};
use crate::replay::{Selection, Skip};

#[derive(Debug, Clone, PartialEq)]
pub struct ExportOptions {
    /// Write at most this many messages (with `dry_run`: list at most this many).
    pub max: Option<u64>,
    /// Messages received per second, at most.
    pub rate: Option<f64>,
    /// Say what would be written; write and delete nothing.
    pub dry_run: bool,
    /// Delete from the DLQ what was written and flushed.
    pub delete: bool,
    pub selection: Selection,
    /// How long received messages stay hidden should the run die: long enough
    /// for one batch's write, fsync and delete.
    pub visibility_timeout_secs: u32,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            max: None,
            rate: None,
            dry_run: false,
            delete: false,
            selection: Selection::default(),
            visibility_timeout_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportCounts {
    /// Written to the file and flushed.
    pub written: u64,
    /// Of those, deleted from the DLQ (with `delete`).
    pub deleted: u64,
    /// Dry run: would have been written.
    pub would_export: u64,
    /// Left out on purpose (`--reason`, `--only-valid`, `--order-id`).
    pub skipped: u64,
    /// Not written (still in the DLQ), or written but not deleted (in both).
    pub failed: u64,
}

impl ExportCounts {
    fn status(&self, dry_run: bool, delete: bool) -> String {
        if dry_run {
            format!(
                "would_export={} skipped={} failed={}",
                self.would_export, self.skipped, self.failed
            )
        } else if delete {
            format!(
                "written={} deleted={} skipped={} failed={}",
                self.written, self.deleted, self.skipped, self.failed
            )
        } else {
            format!(
                "written={} skipped={} failed={}",
                self.written, self.skipped, self.failed
            )
        }
    }

    fn attempted(&self) -> u64 {
        self.written + self.would_export + self.failed
    }
}

/// Writes (or with `dry_run`, lists) the selected DLQ messages to `path`,
/// appending to it, until the DLQ has nothing new, `max` is reached or `stop`
/// turns true. Errors only before anything was touched; failures during the
/// run are in the [`Report`].
pub async fn export(
    sqs: &Client,
    dlq_url: &str,
    path: &Path,
    options: &ExportOptions,
    progress: &mut dyn Progress,
    stop: watch::Receiver<bool>,
) -> Result<Report<ExportCounts>, ArchiveError> {
    let dlq = describe(sqs, dlq_url).await?;
    let file = if options.dry_run {
        None
    } else {
        Some(open_for_append(path)?)
    };
    let estimate = options.max.map_or(dlq.visible, |max| max.min(dlq.visible));
    info!(
        dlq = dlq_url,
        file = %path.display(),
        dry_run = options.dry_run,
        delete = options.delete,
        reasons = ?options.selection.reasons,
        dlq_messages = dlq.visible,
        "export started"
    );
    progress.start(Some(estimate));
    let mut run = Run {
        sqs,
        dlq_url,
        path,
        file,
        options,
        progress,
        estimate,
        held: Held::default(),
        seen: HashSet::new(),
        counts: ExportCounts::default(),
    };
    let end = run.run(stop).await;
    run.held.release(sqs, dlq_url).await;
    run.progress.finish();
    let counts = run.counts;
    info!(
        dlq = dlq_url,
        file = %path.display(),
        written = counts.written,
        deleted = counts.deleted,
        would_export = counts.would_export,
        skipped = counts.skipped,
        failed = counts.failed,
        end = ?end,
        "export finished"
    );
    let status = counts.status(options.dry_run, options.delete);
    let summary = if options.dry_run {
        format!(
            "export (dry run): {status}{}; nothing was written or deleted",
            end.suffix()
        )
    } else if options.delete {
        format!("export: {status}{}", end.suffix())
    } else {
        format!("export: {status}{}; left in the DLQ", end.suffix())
    };
    Ok(Report {
        failed: counts.failed > 0,
        counts,
        end,
        dry_run: options.dry_run,
        summary,
    })
}

struct Run<'a> {
    sqs: &'a Client,
    dlq_url: &'a str,
    path: &'a Path,
    /// Open for appending; none on a dry run.
    file: Option<File>,
    options: &'a ExportOptions,
    progress: &'a mut dyn Progress,
    estimate: u64,
    held: Held,
    seen: HashSet<String>,
    counts: ExportCounts,
}

impl Run<'_> {
    async fn run(&mut self, stop: watch::Receiver<bool>) -> End {
        let walk = Walk {
            sqs: self.sqs,
            dlq_url: self.dlq_url,
            max: self.options.max,
            rate: self.options.rate,
            visibility_timeout_secs: self.options.visibility_timeout_secs,
        };
        walk.run(self, stop).await.into()
    }

    fn list(&mut self, selected: Vec<Message>) {
        for message in selected {
            let id = message.message_id().unwrap_or_default();
            self.held
                .hold(id, message.receipt_handle().unwrap_or_default());
            self.counts.would_export += 1;
            self.progress
                .note(&format!("would export {id} to {}", self.path.display()));
        }
    }

    /// Writes the batch, flushes it to disk, then (with `delete`) deletes
    /// exactly those messages from the DLQ.
    async fn write_batch(
        &mut self,
        file: &mut File,
        selected: Vec<Message>,
    ) -> Result<(), ArchiveError> {
        let lines: String = selected.iter().map(|m| Record::of(m).to_line()).collect();
        if let Err(err) = append_durably(file, self.path, lines.as_bytes()) {
            // A part may be on disk; the messages all stay in the DLQ.
            for message in &selected {
                self.hold(message);
                self.counts.failed += 1;
            }
            return Err(err);
        }
        self.counts.written += selected.len() as u64;
        debug!(written = selected.len(), "batch on disk");
        if !self.options.delete {
            for message in &selected {
                self.hold(message);
            }
            return Ok(());
        }
        self.delete(selected).await.map_err(ArchiveError::from)
    }

    async fn delete(&mut self, written: Vec<Message>) -> Result<(), SqsError> {
        const KEPT: &str = "written to the file but not deleted from the DLQ";
        let handles: Vec<&str> = written
            .iter()
            .map(|m| m.receipt_handle().unwrap_or_default())
            .collect();
        let failed = match delete_batch(self.sqs, self.dlq_url, &handles).await {
            Ok(failed) => failed,
            Err(err) => {
                for message in &written {
                    self.hold(message);
                    self.fail(message, &format!("{KEPT} ({err}); it is in both"));
                }
                return Err(err);
            }
        };
        for (index, message) in written.iter().enumerate() {
            match failed.iter().find(|(i, _)| *i == index) {
                None => self.counts.deleted += 1,
                Some((_, problem)) => {
                    self.hold(message);
                    self.fail(message, &format!("{KEPT} ({problem}); it is in both"));
                }
            }
        }
        Ok(())
    }

    fn hold(&mut self, message: &Message) {
        self.held.hold(
            message.message_id().unwrap_or_default(),
            message.receipt_handle().unwrap_or_default(),
        );
    }

    fn fail(&mut self, message: &Message, what: &str) {
        self.counts.failed += 1;
        let id = message.message_id().unwrap_or_default();
        warn!(message_id = id, problem = what, "not exported cleanly");
        self.progress.note(&format!("failed {id}: {what}"));
    }
}

impl Walker for Run<'_> {
    type Item = Message;
    type Error = ArchiveError;

    fn attempted(&self) -> u64 {
        self.counts.attempted()
    }

    /// The messages not seen before that the selection takes; the others are held.
    fn take(&mut self, received: Vec<Message>) -> (usize, Vec<Message>) {
        let mut fresh = 0;
        let mut selected = Vec::new();
        for message in received {
            let id = message.message_id().unwrap_or_default().to_owned();
            let handle = message.receipt_handle().unwrap_or_default().to_owned();
            if !self.seen.insert(id.clone()) {
                self.held.hold(&id, &handle);
                continue;
            }
            fresh += 1;
            let body = message.body().unwrap_or_default();
            let verdict = Verdict::of(body);
            let reason = Reason::of(
                message.message_attributes().unwrap_or(&Default::default()),
                body,
            );
            match self.options.selection.decide(&verdict, reason.class) {
                Ok(()) => selected.push(message),
                Err(skip) => {
                    self.counts.skipped += 1;
                    self.held.hold(&id, &handle);
                    if let Skip::Invalid(why) = skip {
                        self.progress.note(&format!("skipped {id}: invalid: {why}"));
                    }
                }
            }
        }
        (fresh, selected)
    }

    fn seen(&self) -> usize {
        self.seen.len()
    }

    async fn handle(&mut self, selected: Vec<Message>) -> Result<(), ArchiveError> {
        // Out of the run while it writes, since writing needs the run too.
        let Some(mut file) = self.file.take() else {
            self.list(selected);
            return Ok(());
        };
        let outcome = self.write_batch(&mut file, selected).await;
        self.file = Some(file);
        outcome
    }

    fn report_progress(&mut self) {
        self.progress.advance(
            self.counts.written
                + self.counts.would_export
                + self.counts.skipped
                + self.counts.failed,
            Some(self.estimate),
            &self
                .counts
                .status(self.options.dry_run, self.options.delete),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_says_what_the_mode_does() {
        let counts = ExportCounts {
            written: 4,
            deleted: 3,
            would_export: 0,
            skipped: 2,
            failed: 1,
        };
        assert_eq!(
            counts.status(false, true),
            "written=4 deleted=3 skipped=2 failed=1"
        );
        assert_eq!(counts.status(false, false), "written=4 skipped=2 failed=1");
        assert_eq!(
            counts.status(true, false),
            "would_export=0 skipped=2 failed=1"
        );
    }
}
