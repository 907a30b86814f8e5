//! Pacing: how many messages to ask for at a time, and how long to wait
//! between batches so that `--rate` is never exceeded.

use std::time::Duration;

use tokio::time::Instant;

use crate::queues::MAX_BATCH;

/// Messages per receive: a batch of 10 when unlimited, otherwise about one
/// second's worth, so a slow replay holds few messages at a time.
pub fn chunk_size(rate: Option<f64>) -> usize {
    rate.map_or(MAX_BATCH, |rate| {
        (rate.floor() as usize).clamp(1, MAX_BATCH)
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

    /// `sent` messages went out in the slot that just began.
    pub(crate) fn used(&mut self, sent: usize) {
        if let Some(per_message) = self.per_message {
            self.next = self.slot + per_message * u32::try_from(sent).unwrap_or(u32::MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
