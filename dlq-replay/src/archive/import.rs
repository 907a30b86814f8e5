//! `import`: an export file's messages sent to a queue, rate-limited and
//! resumable.
//!
//! # The journal, and what it guarantees
//! Beside `FILE` sits `FILE.imported` ([`journal_path`]): a first line naming
//! the destination queue, then one line per batch SQS acknowledged, listing
//! the file's line numbers it carried, appended and flushed to disk (fsync)
//! as soon as SQS answers. A re-run with the same file and `--to` skips every
//! line the journal lists, so it never sends again a message whose
//! acknowledgement reached the journal. What remains: a crash after SQS
//! acknowledged a batch and before the journal's fsync returned (one batch,
//! at most 10 messages), or a batch SQS took but whose answer never arrived
//! (counted failed), is sent again by the re-run. Duplicates of an order are
//! absorbed by the consumer, which stores each `order_id` once.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use serde::{Deserialize, Serialize};
use support::sqs::{MAX_BATCH_BYTES, Outcome, message_size, send_batch};
use tokio::sync::watch;
use tracing::{info, warn};

use super::{ArchiveError, End, Record, Report, append_durably, open_for_append};
use crate::progress::Progress;
use crate::queues::describe;
use crate::replay::pacing::{Pacer, chunk_size};
use crate::replay::stopped;

/// Messages per second when `--rate` is not given: enough to move a large
/// archive in minutes, gentle on a consumer that stores them as they come.
pub const DEFAULT_IMPORT_RATE: f64 = 100.0;

#[derive(Debug, Clone, PartialEq)]
pub struct ImportOptions {
    /// Messages sent per second, at most.
    pub rate: f64,
    /// Say what would be sent; send nothing and write no journal.
    pub dry_run: bool,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            rate: DEFAULT_IMPORT_RATE,
            dry_run: false,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportCounts {
    /// Sent and acknowledged by SQS in this run.
    pub sent: u64,
    /// Dry run: would have been sent.
    pub would_send: u64,
    /// Listed in the journal: sent by an earlier run.
    pub already_sent: u64,
    /// Refused by SQS or not reported; a re-run tries them again.
    pub failed: u64,
    /// Lines that are not exported messages (a line cut short by a crashed export is one).
    pub unreadable: u64,
}

impl ImportCounts {
    fn status(&self, dry_run: bool) -> String {
        if dry_run {
            format!(
                "would_send={} already_sent={} unreadable={}",
                self.would_send, self.already_sent, self.unreadable
            )
        } else {
            format!(
                "sent={} already_sent={} failed={} unreadable={}",
                self.sent, self.already_sent, self.failed, self.unreadable
            )
        }
    }

    fn looked_at(&self) -> u64 {
        self.sent + self.would_send + self.already_sent + self.failed + self.unreadable
    }
}

/// The journal of an import of `file`: `FILE.imported`.
pub fn journal_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".imported");
    PathBuf::from(name)
}

#[derive(Debug, Serialize, Deserialize)]
struct JournalHeader {
    to: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct JournalEntry {
    lines: Vec<u64>,
}

/// The journal's destination and the line numbers it lists. A last line cut
/// short by a crash is ignored: its batch counts as not acknowledged.
fn read_journal(path: &Path) -> Result<Option<(String, BTreeSet<u64>)>, ArchiveError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(ArchiveError::file("read", path)(err)),
    };
    let mut lines = text.lines();
    let Some(header) = lines
        .next()
        .and_then(|l| serde_json::from_str::<JournalHeader>(l).ok())
    else {
        // Cut before its header was on disk: nothing was journaled.
        return Ok(None);
    };
    let mut done = BTreeSet::new();
    for line in lines {
        if let Ok(entry) = serde_json::from_str::<JournalEntry>(line) {
            done.extend(entry.lines);
        }
    }
    Ok(Some((header.to, done)))
}

/// Sends the records of `path` to `destination_url`, skipping those its
/// journal lists, until the file ends or `stop` turns true. Errors only
/// before anything was sent; failures during the run are in the [`Report`].
pub async fn import(
    sqs: &Client,
    path: &Path,
    destination_url: &str,
    options: &ImportOptions,
    progress: &mut dyn Progress,
    stop: watch::Receiver<bool>,
) -> Result<Report<ImportCounts>, ArchiveError> {
    let destination = describe(sqs, destination_url).await?;
    if destination.fifo {
        return Err(ArchiveError::Fifo {
            url: destination_url.to_owned(),
        });
    }
    let file = File::open(path).map_err(ArchiveError::file("open", path))?;
    let journal_file = journal_path(path);
    let (journal, done) = match read_journal(&journal_file)? {
        Some((to, _)) if to != destination_url => {
            return Err(ArchiveError::OtherDestination {
                journal: journal_file,
                file: path.to_owned(),
                recorded: to,
                requested: destination_url.to_owned(),
            });
        }
        Some((_, done)) => {
            let journal = (!options.dry_run)
                .then(|| open_for_append(&journal_file))
                .transpose()?;
            (journal, done)
        }
        None if options.dry_run => (None, BTreeSet::new()),
        None => {
            // Starts afresh (an earlier one may have been cut before its header).
            std::fs::write(&journal_file, b"")
                .map_err(ArchiveError::file("create", &journal_file))?;
            let mut journal = open_for_append(&journal_file)?;
            let header = serde_json::to_string(&JournalHeader {
                to: destination_url.to_owned(),
            })
            .unwrap_or_else(|err| unreachable!("a header serialises: {err}"));
            append_durably(
                &mut journal,
                &journal_file,
                format!("{header}\n").as_bytes(),
            )?;
            (Some(journal), BTreeSet::new())
        }
    };
    let total = BufReader::new(File::open(path).map_err(ArchiveError::file("open", path))?)
        .lines()
        .count() as u64;
    info!(
        file = %path.display(),
        destination = destination_url,
        dry_run = options.dry_run,
        rate = options.rate,
        lines = total,
        already_sent = done.len(),
        "import started"
    );
    progress.start(Some(total));
    let mut run = Run {
        sqs,
        path,
        destination_url,
        journal,
        journal_file: &journal_file,
        progress,
        total,
        counts: ImportCounts::default(),
    };
    let end = run.run(BufReader::new(file), &done, options, stop).await;
    run.progress.finish();
    let counts = run.counts;
    info!(
        file = %path.display(),
        destination = destination_url,
        sent = counts.sent,
        would_send = counts.would_send,
        already_sent = counts.already_sent,
        failed = counts.failed,
        unreadable = counts.unreadable,
        end = ?end,
        "import finished"
    );
    let status = counts.status(options.dry_run);
    let summary = if options.dry_run {
        format!(
            "import (dry run): {status}{}; nothing was sent",
            end.suffix()
        )
    } else {
        format!("import: {status}{}", end.suffix())
    };
    Ok(Report {
        failed: counts.failed > 0 || counts.unreadable > 0,
        counts,
        end,
        dry_run: options.dry_run,
        summary,
    })
}

struct Run<'a> {
    sqs: &'a Client,
    path: &'a Path,
    destination_url: &'a str,
    journal: Option<File>,
    journal_file: &'a Path,
    progress: &'a mut dyn Progress,
    total: u64,
    counts: ImportCounts,
}

/// A record to send, with its line number in the file.
struct Pending {
    line: u64,
    record: Record,
}

impl Run<'_> {
    async fn run(
        &mut self,
        file: BufReader<File>,
        done: &BTreeSet<u64>,
        options: &ImportOptions,
        mut stop: watch::Receiver<bool>,
    ) -> End {
        let chunk = chunk_size(Some(options.rate));
        let mut pacer = Pacer::new(Some(options.rate));
        let mut batch: Vec<Pending> = Vec::new();
        let mut bytes = 0;
        let mut lines = file.lines();
        let mut number = 0u64;
        loop {
            let next = lines.next();
            let flush = match &next {
                None => !batch.is_empty(),
                Some(_) => batch.len() >= chunk,
            };
            if flush {
                if let Some(end) = self
                    .send(std::mem::take(&mut batch), options, &mut pacer, &mut stop)
                    .await
                {
                    return end;
                }
                bytes = 0;
            }
            let Some(line) = next else {
                return End::Drained;
            };
            number += 1;
            let line = match line {
                Ok(line) => line,
                Err(err) => return End::Aborted(ArchiveError::file("read", self.path)(err)),
            };
            if done.contains(&number) {
                self.counts.already_sent += 1;
                continue;
            }
            if line.trim().is_empty() {
                continue;
            }
            match Record::from_line(&line).and_then(|record| record.attributes().map(|_| record)) {
                Ok(record) => {
                    let size = message_size(&record.body, record.attributes().ok().as_ref());
                    if !batch.is_empty() && bytes + size > MAX_BATCH_BYTES {
                        if let Some(end) = self
                            .send(std::mem::take(&mut batch), options, &mut pacer, &mut stop)
                            .await
                        {
                            return end;
                        }
                        bytes = 0;
                    }
                    bytes += size;
                    batch.push(Pending {
                        line: number,
                        record,
                    });
                }
                Err(err) => {
                    self.counts.unreadable += 1;
                    self.progress.note(&format!(
                        "line {number} of {} skipped: {err} (a line cut short by a crashed export is one: that message stayed in the DLQ)",
                        self.path.display()
                    ));
                }
            }
        }
    }

    /// Waits for the batch's slot, sends it and journals what SQS
    /// acknowledged; returns why the run ends, if it does.
    async fn send(
        &mut self,
        batch: Vec<Pending>,
        options: &ImportOptions,
        pacer: &mut Pacer,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<End> {
        if *stop.borrow() {
            return Some(End::Interrupted);
        }
        // A dry run sends nothing, so it has no rate to keep.
        if !options.dry_run {
            tokio::select! {
                biased;
                () = stopped(stop) => return Some(End::Interrupted),
                () = pacer.ready() => {}
            }
            pacer.used(batch.len());
        }
        let result = if options.dry_run {
            for pending in &batch {
                self.counts.would_send += 1;
                self.progress.note(&format!(
                    "would send line {} ({}) to {}",
                    pending.line, pending.record.message_id, self.destination_url
                ));
            }
            None
        } else {
            self.send_batch(batch).await.err().map(End::Aborted)
        };
        self.progress.advance(
            self.counts.looked_at(),
            Some(self.total),
            &self.counts.status(options.dry_run),
        );
        result
    }

    async fn send_batch(&mut self, batch: Vec<Pending>) -> Result<(), ArchiveError> {
        let entries = batch
            .iter()
            .map(|pending| {
                SendMessageBatchRequestEntry::builder()
                    // `send_batch` numbers the entries.
                    .id("0")
                    .message_body(&pending.record.body)
                    // Checked when the line was read.
                    .set_message_attributes(
                        pending
                            .record
                            .attributes()
                            .ok()
                            .filter(|a: &HashMap<_, _>| !a.is_empty()),
                    )
                    .build()
                    .unwrap_or_else(|err| unreachable!("an entry with an id and a body: {err}"))
            })
            .collect::<Vec<_>>();
        let outcomes = match send_batch(self.sqs, self.destination_url, entries).await {
            Ok(outcomes) => outcomes,
            Err(err) => {
                for pending in &batch {
                    self.fail(pending, &format!("not sent ({err})"));
                }
                return Err(err.into());
            }
        };
        let lines: Vec<u64> = batch
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| outcome.problem().is_none())
            .map(|(pending, _)| pending.line)
            .collect();
        // The journal first: from here on a crash must not send these again.
        if let (Some(journal), false) = (self.journal.as_mut(), lines.is_empty()) {
            let entry = serde_json::to_string(&JournalEntry {
                lines: lines.clone(),
            })
            .unwrap_or_else(|err| unreachable!("an entry serialises: {err}"));
            append_durably(journal, self.journal_file, format!("{entry}\n").as_bytes())?;
        }
        self.counts.sent += lines.len() as u64;
        for (pending, outcome) in batch.iter().zip(&outcomes) {
            match outcome {
                Outcome::Sent { .. } => {}
                Outcome::Unreported => self.fail(
                    pending,
                    "SQS did not report this send; a re-run sends it again",
                ),
                refused => self.fail(
                    pending,
                    &format!("refused ({})", refused.problem().unwrap_or_default()),
                ),
            }
        }
        Ok(())
    }

    fn fail(&mut self, pending: &Pending, what: &str) {
        self.counts.failed += 1;
        warn!(line = pending.line, message_id = %pending.record.message_id, problem = what, "not imported");
        self.progress.note(&format!(
            "failed line {} ({}): {what}; a re-run tries it again",
            pending.line, pending.record.message_id
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_sits_beside_the_file() {
        assert_eq!(
            journal_path(Path::new("/tmp/dlq.jsonl")),
            PathBuf::from("/tmp/dlq.jsonl.imported")
        );
    }

    #[test]
    fn a_journal_line_cut_short_counts_as_not_acknowledged() {
        let dir = std::env::temp_dir().join(format!("dlq-replay-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("f.imported");
        std::fs::write(
            &path,
            "{\"to\":\"http://q/orders\"}\n{\"lines\":[1,2]}\n{\"lines\":[3,4]}\n{\"lines\":[5,",
        )
        .expect("write");
        let (to, done) = read_journal(&path).expect("read").expect("a journal");
        assert_eq!(to, "http://q/orders");
        assert_eq!(done, BTreeSet::from([1, 2, 3, 4]));
        std::fs::write(&path, "{\"to\":\"http:").expect("write");
        assert!(
            read_journal(&path).expect("read").is_none(),
            "no header on disk, no journal"
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
