//! `export` and `import`: DLQ messages to a file of JSON lines ([`Record`]s)
//! and back, to keep a DLQ past SQS's retention or move it between accounts.
//!
//! `export` fsyncs each batch before it deletes any of it: killed at any
//! point, a message is in the file, in the DLQ, or both; never in neither.
//!
//! `FILE.imported` ([`journal_path`]) names the destination queue, then lists
//! the line numbers of each batch SQS acknowledged, fsynced as soon as SQS
//! answers; a re-run skips them. At most one batch (a crash before that fsync,
//! or an answer lost) is sent twice, and the consumer stores each order once.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use serde::Deserialize;
use serde_json::json;
use support::sqs::{Outcome, send_all};
use tokio::sync::watch;
use tracing::debug;

use crate::Error;
use crate::message::Record;
use crate::progress::Progress;
use crate::queue::describe;
use crate::walk::{Counts, End, Options, Pacer, Report, Walk, chunk_size, stopped};

/// `import`'s default `--rate`: a large archive in minutes, gentle on the consumer.
pub const DEFAULT_IMPORT_RATE: f64 = 100.0;

/// Appends (or with `dry_run`, lists) the selected DLQ messages to `path`;
/// with `delete`, deletes each batch once it is on disk. Errors only before
/// anything was touched; failures during the run are in the [`Report`].
pub async fn export(
    sqs: &Client,
    dlq_url: &str,
    path: &Path,
    delete: bool,
    options: &Options,
    progress: &mut dyn Progress,
    stop: watch::Receiver<bool>,
) -> Result<Report, Error> {
    let dlq = describe(sqs, dlq_url).await?;
    let mut file = (!options.dry_run)
        .then(|| open_for_append(path))
        .transpose()?;
    let (done, tail) = match (options.dry_run, delete) {
        (true, _) => ("would_export", "; nothing was written or deleted"),
        (false, true) => ("written", ""),
        (false, false) => ("written", "; left in the DLQ"),
    };
    let status = |c: &Counts| c.status(done, delete && !options.dry_run);
    let mut walk = Walk::new(sqs, dlq_url, dlq.visible, options, progress, stop);
    let end = loop {
        let batch = match walk.next().await {
            Ok(batch) => batch,
            Err(end) => break end,
        };
        let Some(file) = file.as_mut() else {
            walk.list(batch, "export", &path.display());
            walk.advance(&status(&walk.counts));
            continue;
        };
        let lines: String = batch.iter().map(|c| c.view.record.to_line()).collect();
        if let Err(err) = append_durably(file, path, lines.as_bytes()) {
            // A part may be on disk; the messages all stay in the DLQ.
            for candidate in &batch {
                walk.hold(candidate);
                walk.counts.failed += 1;
            }
            break End::Aborted(err);
        }
        walk.counts.done += batch.len() as u64;
        debug!(written = batch.len(), "batch on disk");
        if !delete {
            batch.iter().for_each(|candidate| walk.hold(candidate));
        } else {
            let kept = "written to the file but not deleted from the DLQ";
            match walk.delete(batch, kept, "it is in both").await {
                Ok(deleted) => walk.counts.deleted += deleted,
                Err(err) => break End::Aborted(err),
            }
        }
        walk.advance(&status(&walk.counts));
    };
    Ok(walk.finish("export", status, tail, end).await)
}

/// The journal of an import of `file`: `FILE.imported`.
pub fn journal_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".imported");
    PathBuf::from(name)
}

#[derive(Debug, Deserialize)]
struct JournalHeader {
    to: String,
}

#[derive(Debug, Deserialize)]
struct JournalEntry {
    lines: Vec<u64>,
}

/// The journal's destination and line numbers; a line cut short by a crash
/// counts as not acknowledged.
fn read_journal(path: &Path) -> Result<Option<(String, BTreeSet<u64>)>, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(Error::file("read", path)(err)),
    };
    let mut lines = text.lines();
    // Cut before its header was on disk: nothing was journaled.
    let Some(header) = lines
        .next()
        .and_then(|l| serde_json::from_str::<JournalHeader>(l).ok())
    else {
        return Ok(None);
    };
    let entries = lines.filter_map(|line| serde_json::from_str::<JournalEntry>(line).ok());
    Ok(Some((header.to, entries.flat_map(|e| e.lines).collect())))
}

/// The journal to append to (none on a dry run) and the line numbers it lists.
fn open_journal(
    journal: &Path,
    file: &Path,
    destination_url: &str,
    dry_run: bool,
) -> Result<(Option<File>, BTreeSet<u64>), Error> {
    match read_journal(journal)? {
        Some((to, _)) if to != destination_url => Err(Error::OtherDestination {
            journal: journal.to_owned(),
            file: file.to_owned(),
            recorded: to,
            requested: destination_url.to_owned(),
        }),
        Some((_, done)) if dry_run => Ok((None, done)),
        Some((_, done)) => Ok((Some(open_for_append(journal)?), done)),
        None if dry_run => Ok((None, BTreeSet::new())),
        None => {
            // Starts afresh (an earlier one may have been cut before its header).
            std::fs::write(journal, b"").map_err(Error::file("create", journal))?;
            let mut opened = open_for_append(journal)?;
            let header = format!("{}\n", json!({ "to": destination_url }));
            append_durably(&mut opened, journal, header.as_bytes())?;
            Ok((Some(opened), BTreeSet::new()))
        }
    }
}

/// Sends the records of `path` to `destination_url`, at most `rate` a second,
/// skipping those its journal lists. Errors only before anything was sent.
pub async fn import(
    sqs: &Client,
    path: &Path,
    destination_url: &str,
    rate: f64,
    dry_run: bool,
    progress: &mut dyn Progress,
    mut stop: watch::Receiver<bool>,
) -> Result<Report, Error> {
    if describe(sqs, destination_url).await?.fifo {
        return Err(Error::Fifo {
            url: destination_url.to_owned(),
        });
    }
    let open = || File::open(path).map_err(Error::file("open", path));
    let journal_file = journal_path(path);
    let (mut journal, done) = open_journal(&journal_file, path, destination_url, dry_run)?;
    let total = BufReader::new(open()?).lines().count() as u64;
    progress.start(total, "lines in the file");
    let status = |c: &Counts| {
        let (done, skipped, failed, unreadable) = (c.done, c.skipped, c.failed, c.unreadable);
        if dry_run {
            format!("would_send={done} already_sent={skipped} unreadable={unreadable}")
        } else {
            format!("sent={done} already_sent={skipped} failed={failed} unreadable={unreadable}")
        }
    };
    let mut counts = Counts::default();
    let mut pacer = Pacer::new(Some(rate));
    let mut lines = BufReader::new(open()?).lines().zip(1u64..);
    let end = 'run: loop {
        // The next chunk of lines to send, numbered from 1.
        let mut batch = Vec::new();
        while batch.len() < chunk_size(Some(rate)) {
            let Some((line, number)) = lines.next() else {
                break;
            };
            let line = match line {
                Ok(line) => line,
                Err(err) => break 'run End::Aborted(Error::file("read", path)(err)),
            };
            if done.contains(&number) {
                counts.skipped += 1;
            } else if !line.trim().is_empty() {
                match Record::from_line(&line) {
                    Ok((record, attributes)) => batch.push((number, record, attributes)),
                    Err(err) => {
                        counts.unreadable += 1;
                        progress.note(&format!(
                            "line {number} of {} skipped: {err} (a line cut short by a crashed export is one: that message stayed in the DLQ)",
                            path.display()
                        ));
                    }
                }
            }
        }
        if batch.is_empty() {
            break End::Drained;
        }
        if *stop.borrow() {
            break End::Interrupted;
        }
        // A dry run sends nothing, so it has no rate to keep.
        if dry_run {
            for (number, record, _) in &batch {
                counts.done += 1;
                let id = &record.message_id;
                progress.note(&format!(
                    "would send line {number} ({id}) to {destination_url}"
                ));
            }
        } else {
            tokio::select! {
                biased;
                () = stopped(&mut stop) => break End::Interrupted,
                () = pacer.ready() => {}
            }
            pacer.used(batch.len());
            let entries = batch.iter().map(|(_, record, attributes)| {
                SendMessageBatchRequestEntry::builder()
                    // `send_batch` numbers the entries.
                    .id("0")
                    .message_body(&record.body)
                    .set_message_attributes((!attributes.is_empty()).then(|| attributes.clone()))
                    .build()
                    .unwrap_or_else(|err| unreachable!("an entry with an id and a body: {err}"))
            });
            let outcomes = send_all(sqs, destination_url, entries.collect()).await;
            let sent: Vec<u64> = batch
                .iter()
                .zip(&outcomes)
                .filter(|(_, outcome)| matches!(outcome, Outcome::Sent { .. }))
                .map(|((number, ..), _)| *number)
                .collect();
            // The journal first: from here on a crash must not send these again.
            if let (Some(journal), false) = (journal.as_mut(), sent.is_empty()) {
                let entry = format!("{}\n", json!({ "lines": sent }));
                if let Err(err) = append_durably(journal, &journal_file, entry.as_bytes()) {
                    break End::Aborted(err);
                }
            }
            counts.done += sent.len() as u64;
            let mut aborted = None;
            for ((number, record, _), outcome) in batch.iter().zip(outcomes) {
                let what = match outcome {
                    Outcome::Sent { .. } => continue,
                    Outcome::Unreported => "SQS did not report this send".to_owned(),
                    Outcome::NotSent(err) => format!("not sent ({})", aborted.insert(err)),
                    refused => format!("refused ({})", refused.problem().unwrap_or_default()),
                };
                counts.failed += 1;
                let id = &record.message_id;
                progress.note(&format!(
                    "failed line {number} ({id}): {what}; a re-run tries it again"
                ));
            }
            if let Some(err) = aborted {
                break End::Aborted(Error::Sqs(err));
            }
        }
        let looked_at = counts.done + counts.skipped + counts.failed + counts.unreadable;
        progress.advance(looked_at, &status(&counts));
    };
    progress.finish();
    let tail = if dry_run { "; nothing was sent" } else { "" };
    Ok(Report::new("import", dry_run, status, tail, counts, end))
}

/// Opens `path` to append lines to it, creating it durably if need be. A last
/// line cut short by a crash gets a newline first, so that it stays one bad line.
fn open_for_append(path: &Path) -> Result<File, Error> {
    let existed = path.exists();
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(Error::file("open", path))?;
    if !existed {
        // A new file's name is durable only once its directory is synced.
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        return File::open(parent.unwrap_or(Path::new(".")))
            .and_then(|dir| dir.sync_all())
            .map(|()| file)
            .map_err(Error::file("create", path));
    }
    let len = file.metadata().map_err(Error::file("read", path))?.len();
    let mut last = [b'\n'];
    if len > 0 {
        file.seek(SeekFrom::Start(len - 1))
            .and_then(|_| file.read_exact(&mut last))
            .map_err(Error::file("read", path))?;
    }
    if last != *b"\n" {
        append_durably(&mut file, path, b"\n")?;
    }
    Ok(file)
}

/// Appends `bytes` and returns once they are on disk (fsync).
fn append_durably(file: &mut File, path: &Path, bytes: &[u8]) -> Result<(), Error> {
    file.write_all(bytes)
        .and_then(|()| file.sync_data())
        .map_err(Error::file("write to", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("replay-dlq-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir.join("file.jsonl")
    }

    #[test]
    fn appending_after_a_line_cut_short_starts_a_new_line() {
        let path = scratch("cut");
        std::fs::write(&path, "{\"whole\":1}\n{\"cut").expect("write");
        let mut file = open_for_append(&path).expect("open");
        append_durably(&mut file, &path, b"{\"next\":2}\n").expect("append");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, "{\"whole\":1}\n{\"cut\n{\"next\":2}\n");
        let mut file = open_for_append(&path).expect("open again");
        append_durably(&mut file, &path, b"{\"last\":3}\n").expect("append");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.ends_with("{\"next\":2}\n{\"last\":3}\n"),
            "no blank line: {text:?}"
        );
        std::fs::remove_dir_all(path.parent().expect("dir")).expect("clean up");
    }

    #[test]
    fn a_file_that_cannot_be_opened_says_where_and_what_to_check() {
        let path = Path::new("/nonexistent-dir-for-replay-dlq/archive.jsonl");
        let err = open_for_append(path).expect_err("no such directory");
        let text = err.to_string();
        assert!(
            text.contains("/nonexistent-dir-for-replay-dlq/archive.jsonl"),
            "{text}"
        );
        assert!(text.contains("check the path"), "{text}");
    }

    #[test]
    fn the_journal_sits_beside_the_file() {
        assert_eq!(
            journal_path(Path::new("/tmp/dlq.jsonl")),
            PathBuf::from("/tmp/dlq.jsonl.imported")
        );
    }

    #[test]
    fn a_journal_line_cut_short_counts_as_not_acknowledged() {
        let dir = std::env::temp_dir().join(format!("replay-dlq-journal-{}", std::process::id()));
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
