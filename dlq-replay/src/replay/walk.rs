//! The walk of the DLQ that `replay` and `export` share: receive a chunk at a
//! time, paced by `rate` and bounded by `max`, until nothing new comes back or
//! `stop` turns true. It is written once so that both runs stop for the same
//! reasons, in the same order; what a run does with each batch is its own
//! ([`Walker`]).

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::Message;
use tokio::sync::watch;

use super::pacing::{Pacer, chunk_size};
use super::stopped;
use crate::queues::{SqsError, receive};

/// Receives that bring back only messages this run has already seen, in a row,
/// before the run concludes nothing new is left (plus one per batch of messages
/// seen, which may all come back after a long run).
const MAX_IDLE_RECEIVES: usize = 3;

/// Which DLQ a run walks, and how far and fast.
pub(crate) struct Walk<'a> {
    pub(crate) sqs: &'a Client,
    pub(crate) dlq_url: &'a str,
    /// Stop once this many were attempted ([`Walker::attempted`]).
    pub(crate) max: Option<u64>,
    /// Messages per second, at most.
    pub(crate) rate: Option<f64>,
    /// How long each receive hides its messages.
    pub(crate) visibility_timeout_secs: u32,
}

/// Why a walk ended; each run turns it into its own `End`.
#[derive(Debug)]
pub(crate) enum Ended<E> {
    /// No message left that this run has not looked at.
    Drained,
    /// `max` messages were attempted.
    Limit,
    /// `stop` turned true.
    Interrupted,
    /// A receive or a batch failed.
    Aborted(E),
}

/// A run that walks the DLQ: what it counts, takes and does with each batch.
pub(crate) trait Walker {
    /// A message the run took, on its way to [`handle`](Self::handle).
    type Item;
    /// What ends the run early; a failed receive is one.
    type Error: From<SqsError>;

    /// Messages so far that count against `max`.
    fn attempted(&self) -> u64;
    /// Of one receive: how many this run had not seen before, and those of
    /// them it takes. The others it holds.
    fn take(&mut self, received: Vec<Message>) -> (usize, Vec<Self::Item>);
    /// How many distinct messages this run has seen.
    fn seen(&self) -> usize;
    /// Lists (dry run) or acts on the messages taken from one receive.
    async fn handle(&mut self, batch: Vec<Self::Item>) -> Result<(), Self::Error>;
    /// Tells the progress what the run has done so far.
    fn report_progress(&mut self);
}

impl Walk<'_> {
    /// Walks the DLQ with `walker` until nothing new comes back, `max` is
    /// reached, `stop` turns true, or a call fails.
    pub(crate) async fn run<W: Walker>(
        &self,
        walker: &mut W,
        mut stop: watch::Receiver<bool>,
    ) -> Ended<W::Error> {
        let chunk = chunk_size(self.rate);
        let mut pacer = Pacer::new(self.rate);
        let mut idle = 0;
        loop {
            if *stop.borrow() {
                return Ended::Interrupted;
            }
            let attempted = walker.attempted();
            let want = match self.max {
                Some(max) if attempted >= max => return Ended::Limit,
                Some(max) => chunk.min(usize::try_from(max - attempted).unwrap_or(chunk)),
                None => chunk,
            };
            tokio::select! {
                biased;
                () = stopped(&mut stop) => return Ended::Interrupted,
                () = pacer.ready() => {}
            }
            let received =
                match receive(self.sqs, self.dlq_url, want, self.visibility_timeout_secs).await {
                    Ok(received) => received,
                    Err(err) => return Ended::Aborted(err.into()),
                };
            if received.is_empty() {
                return Ended::Drained;
            }
            let (fresh, batch) = walker.take(received);
            if fresh == 0 {
                // Only messages seen before, back after their hold ran out on a
                // long run; the receive has hidden them again. Enough such
                // receives in a row to have cycled through all of them means
                // nothing new is left.
                idle += 1;
                if idle >= MAX_IDLE_RECEIVES + walker.seen() / want.max(1) {
                    return Ended::Drained;
                }
                continue;
            }
            idle = 0;
            let taken = batch.len();
            let outcome = walker.handle(batch).await;
            pacer.used(taken);
            walker.report_progress();
            if let Err(err) = outcome {
                return Ended::Aborted(err);
            }
        }
    }
}
