//! `export` and `import`: DLQ messages to a file of JSON lines and back, so that
//! a DLQ can be kept past SQS's retention, or moved between accounts or regions.
//!
//! - [`record`]: one line of the file, one message ([`Record`]).
//! - [`export`](mod@export): the DLQ to the file; with `delete`, deletes only
//!   what was written and flushed to disk (fsync) first.
//! - [`import`](mod@import): the file to a queue, rate-limited, resumable
//!   through a journal beside the file.
//!
//! Both end as a [`Report`]: counts, why the run ended, a summary line and an
//! exit status that follow `replay`'s.

pub mod export;
pub mod import;
pub mod record;

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub use export::{ExportCounts, ExportOptions, export};
pub use import::{DEFAULT_IMPORT_RATE, ImportCounts, ImportOptions, import, journal_path};
pub use record::{Record, RecordError};

use crate::queues::SqsError;
use crate::replay::walk::Ended;

/// What stopped an export or an import that had started.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    // Boxed: an SqsError is large, and most of these errors are about files.
    // Not a #[source]: its Display already says what SQS answered, and a
    // chain would repeat the SDK's own.
    #[error("{0}")]
    Sqs(Box<SqsError>),
    #[error("could not {action} {}: {source}; check the path, its permissions and the free space", path.display())]
    File {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{} records an import of {} to {recorded}, not to {requested}: pass --to {recorded} to resume that import, or move the journal away to import the file again elsewhere",
        journal.display(), file.display()
    )]
    OtherDestination {
        journal: PathBuf,
        file: PathBuf,
        recorded: String,
        requested: String,
    },
    #[error(
        "{url} is a FIFO queue; import sends to standard queues only (a FIFO queue needs each message's group and deduplication id)"
    )]
    Fifo { url: String },
}

impl From<SqsError> for ArchiveError {
    fn from(err: SqsError) -> Self {
        Self::Sqs(Box::new(err))
    }
}

impl ArchiveError {
    pub(crate) fn file<'a>(
        action: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(io::Error) -> Self + 'a {
        move |source| Self::File {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// Why a run ended.
#[derive(Debug)]
pub enum End {
    /// Nothing left: the DLQ has no message this run has not looked at, or the file has no more lines.
    Drained,
    /// `max` messages were written (or listed).
    Limit,
    /// Stopped on request (Ctrl-C) after the batch in flight.
    Interrupted,
    /// A call or a write failed; the run stopped after it.
    Aborted(ArchiveError),
}

impl From<Ended<ArchiveError>> for End {
    fn from(ended: Ended<ArchiveError>) -> Self {
        match ended {
            Ended::Drained => End::Drained,
            Ended::Limit => End::Limit,
            Ended::Interrupted => End::Interrupted,
            Ended::Aborted(err) => End::Aborted(err),
        }
    }
}

impl End {
    fn suffix(&self) -> &'static str {
        match self {
            End::Drained => "",
            End::Limit => " (--max reached)",
            End::Interrupted => " (interrupted)",
            End::Aborted(_) => " (stopped by an error)",
        }
    }
}

/// What an export or an import did, how it ended, and what it says.
#[derive(Debug)]
pub struct Report<C> {
    pub counts: C,
    pub end: End,
    pub dry_run: bool,
    summary: String,
    failed: bool,
}

impl<C> Report<C> {
    /// The last line the command prints, e.g. `export: written=40 deleted=40 skipped=2 failed=0`.
    pub fn summary(&self) -> &str {
        &self.summary
    }

    /// As `replay`'s: 0 when everything looked at was handled or skipped on
    /// purpose, 1 when anything failed, 130 when interrupted.
    pub fn exit_code(&self) -> u8 {
        if self.failed || matches!(self.end, End::Aborted(_)) {
            1
        } else if matches!(self.end, End::Interrupted) {
            130
        } else {
            0
        }
    }
}

/// Opens `path` to append lines to it, creating it (and making its directory
/// entry durable) if need be. A file whose last line was cut short (a crash
/// in mid-write) gets a newline first, so that the cut line stays one bad line
/// and the next record starts on a line of its own.
pub(crate) fn open_for_append(path: &Path) -> Result<File, ArchiveError> {
    let existed = path.exists();
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(ArchiveError::file("open", path))?;
    if existed {
        let len = file
            .metadata()
            .map_err(ArchiveError::file("read", path))?
            .len();
        if len > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1))
                .and_then(|_| file.read_exact(&mut last))
                .map_err(ArchiveError::file("read", path))?;
            if last != *b"\n" {
                file.write_all(b"\n")
                    .and_then(|()| file.sync_data())
                    .map_err(ArchiveError::file("write to", path))?;
            }
        }
    } else {
        sync_directory(path).map_err(ArchiveError::file("create", path))?;
    }
    Ok(file)
}

/// Appends `bytes` and returns once they are on disk (fsync): what the caller
/// does next (delete from the DLQ, send again) may rely on them.
pub(crate) fn append_durably(
    file: &mut File,
    path: &Path,
    bytes: &[u8],
) -> Result<(), ArchiveError> {
    file.write_all(bytes)
        .and_then(|()| file.sync_data())
        .map_err(ArchiveError::file("write to", path))
}

/// A new file's name is durable only once its directory is synced.
fn sync_directory(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dlq-replay-{}-{name}", std::process::id()));
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
        let path = Path::new("/nonexistent-dir-for-dlq-replay/archive.jsonl");
        let err = open_for_append(path).expect_err("no such directory");
        let text = err.to_string();
        assert!(
            text.contains("/nonexistent-dir-for-dlq-replay/archive.jsonl"),
            "{text}"
        );
        assert!(text.contains("check the path"), "{text}");
    }
}
