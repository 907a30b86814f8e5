//! `replay-dlq`: see what sits in the orders dead-letter queue and move it back
//! to its source queue once the cause is fixed, without losing or corrupting
//! anything.
//!
//! # Layout
//! - [`cli`]: the `replay-dlq` command (`peek`, `replay`, `export`, `import`).
//! - [`peek`](mod@peek): reads the DLQ without consuming it; a table or JSON.
//! - [`replay`](mod@replay): moves messages back, send before delete (selection, move protocol, pacing, report, and the walk of the DLQ that `export` shares).
//! - [`archive`]: `export` to a file of JSON lines, `import` from one (resumable).
//! - [`inspect`]: what one message is, and why the order contract rejects it.
//! - [`progress`]: a bar on a terminal, plain lines in a log.
//! - [`queues`]: the SQS calls everything shares, and errors that say what to do.
//!
//! Every function takes the SQS [`Client`](aws_sdk_sqs::Client) and its output
//! as arguments, so tests run them against the emulator and read what they print.

pub mod archive;
pub mod cli;
pub mod inspect;
pub mod peek;
pub mod progress;
pub mod queues;
pub mod replay;

pub use inspect::{MessageView, Verdict};
pub use peek::{PeekOptions, Peeked, peek};
pub use progress::{Bar, Lines, Progress};
pub use queues::{QueueInfo, RouteError, SqsError, source_queue};
pub use replay::{Counts, End, ReplayOptions, Report, Selection, replay};
