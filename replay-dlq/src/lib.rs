//! `replay-dlq`: see what sits in the orders dead-letter queue and move it back
//! to its source queue once the cause is fixed, or archive it to a file and
//! back, without losing or corrupting anything.
//!
//! # Layout
//! - [`cli`]: the `replay-dlq` command (`peek`, `replay`, `export`, `import`).
//! - [`walk`]: the one walk of the DLQ that `peek`, `replay` and `export` share:
//!   receive, select, hold, pace, stop; [`Report`] says how it ended.
//! - [`peek`](mod@peek): reads the DLQ without consuming it; a table or JSON.
//! - [`replay`](mod@replay): moves messages back, send before delete.
//! - [`archive`]: `export` to a file of JSON lines, `import` from one (resumable).
//! - [`message`]: what one message is, and why it is in the DLQ.
//! - [`queue`]: the SQS calls the walk makes.
//! - [`progress`]: a bar on a terminal, plain lines in a log.
//!
//! Every function takes the SQS [`Client`](aws_sdk_sqs::Client) and its output
//! as arguments, so tests run them against the emulator and read what they print.

pub mod archive;
pub mod cli;
pub mod message;
pub mod peek;
pub mod progress;
pub mod queue;
pub mod replay;
pub mod walk;

use std::path::PathBuf;
use std::sync::Arc;

pub use archive::{export, import};
pub use message::{MessageView, Record};
pub use peek::{Peeked, peek};
pub use progress::{Bar, Lines, Progress};
pub use queue::source_queue;
pub use replay::replay;
pub use walk::{Counts, End, Options, Report, Selection};

use support::sqs::SqsError;

/// Why a command could not start, or what stopped it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // Not a #[source]: its Display already says what SQS answered, and a
    // chain would repeat the SDK's own.
    #[error("{0}")]
    Sqs(Arc<SqsError>),
    #[error(
        "the DLQ {dlq} is not the dead-letter queue of any queue (ListDeadLetterSourceQueues is empty): pass --to URL to say where its messages go"
    )]
    NoSource { dlq: String },
    #[error(
        "the DLQ {dlq} is the dead-letter queue of {} queues ({}): pass --to URL to choose one",
        sources.len(),
        sources.join(", ")
    )]
    SeveralSources { dlq: String, sources: Vec<String> },
    #[error(
        "{url} is a FIFO queue; replay-dlq handles standard queues only (a FIFO queue needs each message's group and deduplication id): for a FIFO DLQ use SQS's own redrive, `aws sqs start-message-move-task` (docs/operating.md)"
    )]
    Fifo { url: String },
    #[error(
        "the destination is the DLQ itself ({url}): pass --to the URL of the queue its messages came from"
    )]
    SameQueue { url: String },
    #[error("could not {action} {}: {source}; check the path, its permissions and the free space", path.display())]
    File {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
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
}

impl From<SqsError> for Error {
    fn from(err: SqsError) -> Self {
        Self::Sqs(Arc::new(err))
    }
}

impl Error {
    /// Turns an I/O error on `path` into a [`Error::File`].
    pub(crate) fn file<'a>(
        action: &'static str,
        path: &'a std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Self + 'a {
        move |source| Self::File {
            action,
            path: path.to_owned(),
            source,
        }
    }
}
