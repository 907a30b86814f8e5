//! `replay-dlq` against the SQS emulator that `scripts/test` starts: each test
//! creates its own queues, so they run in parallel and never share state.
//! One test binary (rather than one per file) keeps linking cheap.

mod archive;
mod binary;
mod peek;
mod replay;
mod support;
