//! How long a failed record waits, and when it is requeued instead.

use std::time::Duration;

/// The longest delay asked for. SQS counts its 12-hour ceiling from when the
/// message was received, and the event source mapping received it before the
/// invocation began (batching window plus the invocation so far, 15 minutes at
/// the very most), so a full 12 h would be refused.
/// <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_ChangeMessageVisibility.html>
pub const MAX_DELAY: Duration = Duration::from_secs(12 * 60 * 60 - 20 * 60);

/// The longest `DelaySeconds` SQS accepts on a sent message.
pub const MAX_SEND_DELAY: Duration = Duration::from_secs(15 * 60);

/// Exponential backoff: after attempt n, wait `base × multiplierⁿ`, at most [`MAX_DELAY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub multiplier: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(30),
            multiplier: 5,
        }
    }
}

impl Backoff {
    /// How long a record stays hidden after its `attempt`-th failure (from 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = self.multiplier.max(1).saturating_pow(attempt.max(1));
        self.base.saturating_mul(factor).min(MAX_DELAY)
    }
}

/// The backoff together with the queue's `maxReceiveCount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub backoff: Backoff,
    /// The queue's `maxReceiveCount`; `None` never requeues (no queue to send to).
    pub max_receive_count: Option<u32>,
}

/// What to do with a valid record that could not be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Hide it for this long; it comes back with one more receive.
    Postpone(Duration),
    /// The receive before its last: send a fresh copy of generation
    /// `generation`, delayed by `delay` (at most [`MAX_SEND_DELAY`]), then let
    /// the original go.
    Requeue { generation: u32, delay: Duration },
}

impl RetryPolicy {
    /// The decision for a record on its `receive_count`-th receive of copy `generation`.
    pub fn after_failure(&self, receive_count: u32, generation: u32) -> Retry {
        let receive_count = receive_count.max(1);
        match self.max_receive_count {
            Some(max) if receive_count.saturating_add(1) >= max => Retry::Requeue {
                generation: generation.saturating_add(1),
                delay: self
                    .backoff
                    .delay(attempt(generation, receive_count, max))
                    .min(MAX_SEND_DELAY),
            },
            max => Retry::Postpone(self.backoff.delay(attempt(
                generation,
                receive_count,
                max.unwrap_or(0),
            ))),
        }
    }

    /// How long an outage the backoff alone covers before the first requeue:
    /// the delays after receives 1 … R−2 (receive R−1 requeues).
    pub fn budget(&self) -> Option<Duration> {
        let max = self.max_receive_count?;
        Some(
            (1..max.saturating_sub(1))
                .map(|n| self.backoff.delay(n))
                .sum(),
        )
    }
}

/// Attempts run on across generations, so a requeued copy keeps the long delays.
fn attempt(generation: u32, receive_count: u32, max_receive_count: u32) -> u32 {
    generation
        .saturating_mul(max_receive_count)
        .saturating_add(receive_count)
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: u32 = 6;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            backoff: Backoff::default(),
            max_receive_count: Some(R),
        }
    }

    #[test]
    fn the_delay_grows_by_the_multiplier_with_each_attempt() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay(1), Duration::from_secs(150));
        assert_eq!(backoff.delay(2), Duration::from_secs(750));
        assert_eq!(backoff.delay(4), Duration::from_secs(18_750));
    }

    #[test]
    fn the_delay_never_exceeds_what_sqs_accepts_after_a_receive() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay(50), MAX_DELAY);
        assert_eq!(backoff.delay(u32::MAX), MAX_DELAY);
        assert!(MAX_DELAY < Duration::from_secs(12 * 60 * 60));
    }

    #[test]
    fn a_zero_receive_count_is_treated_as_the_first_receive() {
        assert_eq!(policy().after_failure(0, 0), policy().after_failure(1, 0));
    }

    #[test]
    fn every_receive_before_the_last_two_postpones() {
        for receive in 1..R - 1 {
            assert_eq!(
                policy().after_failure(receive, 0),
                Retry::Postpone(Backoff::default().delay(receive))
            );
        }
    }

    #[test]
    fn the_receive_before_the_last_requeues_so_that_a_crash_leaves_one_to_spare() {
        match policy().after_failure(R - 1, 0) {
            Retry::Requeue { generation, delay } => {
                assert_eq!(generation, 1);
                assert_eq!(delay, MAX_SEND_DELAY);
            }
            other => panic!("expected a requeue, got {other:?}"),
        }
        // The last receive, or an approximate count past it, requeues too.
        assert!(matches!(
            policy().after_failure(R, 0),
            Retry::Requeue { generation: 1, .. }
        ));
        assert!(matches!(
            policy().after_failure(R + 2, 3),
            Retry::Requeue { generation: 4, .. }
        ));
    }

    #[test]
    fn a_requeued_copy_keeps_the_long_delays_of_its_generation() {
        let first_of_copy = policy().after_failure(1, 1);
        let last_of_original = policy().backoff.delay(R - 2);
        match first_of_copy {
            Retry::Postpone(delay) => assert!(delay > last_of_original, "{delay:?}"),
            other => panic!("expected a postponement, got {other:?}"),
        }
    }

    #[test]
    fn without_a_max_receive_count_nothing_is_requeued() {
        let policy = RetryPolicy {
            max_receive_count: None,
            ..policy()
        };
        assert!(matches!(policy.after_failure(99, 0), Retry::Postpone(_)));
        assert_eq!(policy.budget(), None);
    }

    #[test]
    fn the_budget_counts_the_delays_before_the_requeue() {
        // Receives at 0, 150, 900, 4,650 and 23,400 s: the fifth requeues.
        assert_eq!(policy().budget(), Some(Duration::from_secs(23_400)));
    }
}
