//! `replay`: moves DLQ messages back to their source queue, one batch at a time.
//!
//! # How the parts fit
//! [`replay`] checks the two queues, then `walk` (the loop `export` shares)
//! goes on until the DLQ has nothing new, `max` is reached or `stop` turns
//! true. Each turn:
//! 1. `pacing` says how many messages to ask for and waits for the next slot;
//! 2. a receive hides them; `selection` drops those this run has seen and
//!    decides, per message, to move it or to leave it in the DLQ;
//! 3. `protocol` moves the chosen ones (send, then delete) or, in a dry run,
//!    lists them;
//! 4. `report` keeps the counts, and in the end says why the run stopped.
//!
//! Every message the run does not move is held (kept hidden) and released in
//! one go when the run ends.
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

pub(crate) mod pacing;
mod protocol;
mod report;
mod selection;
pub(crate) mod walk;

use std::collections::HashSet;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::Message;
use tokio::sync::watch;
use tracing::info;

use crate::progress::Progress;
use crate::queues::{Held, RouteError, SqsError, describe};
pub use pacing::chunk_size;
pub use report::{Counts, End, Report};
use selection::Candidate;
pub use selection::{Selection, Skip};
use walk::{Walk, Walker};

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
) -> Result<Report, RouteError> {
    let dlq = describe(sqs, dlq_url).await?;
    let destination = describe(sqs, destination_url).await?;
    for queue in [&dlq, &destination] {
        if queue.fifo {
            return Err(RouteError::Fifo {
                url: queue.url.clone(),
            });
        }
    }
    if dlq.arn == destination.arn {
        return Err(RouteError::SameQueue {
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
        reasons = ?options.selection.reasons,
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
    })
}

/// One run's state; its methods live beside the part they belong to
/// ([`selection`], [`protocol`]).
struct Run<'a> {
    sqs: &'a Client,
    dlq_url: &'a str,
    destination_url: &'a str,
    options: &'a ReplayOptions,
    progress: &'a mut dyn Progress,
    /// The DLQ's depth at the start (capped by `max`): the bar's length.
    estimate: u64,
    /// Messages not moved, kept hidden until the run ends.
    held: Held,
    /// Message ids looked at, so that one back after its hold is not counted twice.
    seen: HashSet<String>,
    counts: Counts,
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

    /// Keeps a message hidden until the run ends (see the module's doc).
    fn hold(&mut self, candidate: &Candidate) {
        self.held.hold(
            &candidate.id,
            candidate.message.receipt_handle().unwrap_or_default(),
        );
    }
}

impl Walker for Run<'_> {
    type Item = Candidate;
    type Error = SqsError;

    fn attempted(&self) -> u64 {
        self.counts.attempted()
    }

    fn take(&mut self, received: Vec<Message>) -> (usize, Vec<Candidate>) {
        self.take_fresh(received)
    }

    fn seen(&self) -> usize {
        self.seen.len()
    }

    async fn handle(&mut self, selected: Vec<Candidate>) -> Result<(), SqsError> {
        if self.options.dry_run {
            self.list(selected);
            Ok(())
        } else {
            self.move_batch(selected).await
        }
    }

    fn report_progress(&mut self) {
        self.progress.advance(
            self.counts.looked_at(),
            Some(self.estimate),
            &self.counts.status(self.options.dry_run),
        );
    }
}

/// Completes once `stop` turns true; never, if its sender is gone.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}
