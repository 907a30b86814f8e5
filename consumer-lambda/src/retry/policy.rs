//! How long a failed record waits, and when it is requeued instead.

use std::time::Duration;

/// The longest `DelaySeconds` SQS accepts on a sent message.
pub const MAX_SEND_DELAY: Duration = Duration::from_secs(15 * 60);

/// Exponential backoff with a cap: after attempt n, wait `base × multiplierⁿ⁻¹`,
/// at most `cap`, which bounds catch-up once the database answers again. A
/// base and a cap of at least a second and a multiplier of at least one, so
/// that no delay is zero and none shrinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    multiplier: u32,
    cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(10),
            multiplier: 2,
            cap: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// `None` for a base or a cap under a second, or a multiplier of zero.
    pub const fn new(base: Duration, multiplier: u32, cap: Duration) -> Option<Self> {
        if base.as_secs() >= 1 && multiplier >= 1 && cap.as_secs() >= 1 {
            Some(Self {
                base,
                multiplier,
                cap,
            })
        } else {
            None
        }
    }

    pub const fn base(&self) -> Duration {
        self.base
    }

    pub const fn multiplier(&self) -> u32 {
        self.multiplier
    }

    pub const fn cap(&self) -> Duration {
        self.cap
    }

    /// How long a record stays hidden after its `attempt`-th failure (from 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = self
            .multiplier
            .saturating_pow(attempt.max(1).saturating_sub(1));
        self.base.saturating_mul(factor).min(self.cap)
    }
}

/// The queue's `maxReceiveCount`, 2 to 1,000: SQS allows 1 to 1,000, and the
/// receive before the last requeues, so a single receive would leave no
/// retry at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxReceiveCount(u32);

impl MaxReceiveCount {
    pub const MIN: u32 = 2;
    pub const MAX: u32 = 1_000;

    /// `None` outside [`Self::MIN`] to [`Self::MAX`].
    pub const fn new(count: u32) -> Option<Self> {
        if count >= Self::MIN && count <= Self::MAX {
            Some(Self(count))
        } else {
            None
        }
    }

    pub const fn get(self) -> u32 {
        self.0
    }
}

/// The backoff together with the queue's `maxReceiveCount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub backoff: Backoff,
    pub max_receive_count: MaxReceiveCount,
}

/// What to do with a valid record that could not be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Hide it for this long; it comes back with one more receive.
    Postpone(Duration),
    /// The receive before its last: send a fresh copy, `requeued` that many
    /// times, delayed by `delay` (at most [`MAX_SEND_DELAY`]), then let the
    /// original go.
    Requeue { requeued: u32, delay: Duration },
}

impl RetryPolicy {
    /// The decision for a record on its `receive_count`-th receive, requeued
    /// `requeued` times before. The delay depends on the receive count alone,
    /// so a requeued copy starts again from the short delays.
    pub fn after_failure(&self, receive_count: u32, requeued: u32) -> Retry {
        let receive_count = receive_count.max(1);
        let delay = self.backoff.delay(receive_count);
        if receive_count.saturating_add(1) >= self.max_receive_count.get() {
            Retry::Requeue {
                requeued: requeued.saturating_add(1),
                delay: delay.min(MAX_SEND_DELAY),
            }
        } else {
            Retry::Postpone(delay)
        }
    }

    /// How long the backoff alone holds an order before its first requeue:
    /// the delays after receives 1 … R−2 (receive R−1 requeues).
    pub fn budget(&self) -> Duration {
        (1..self.max_receive_count.get().saturating_sub(1))
            .map(|n| self.backoff.delay(n))
            .sum()
    }

    /// The longest any valid record stays hidden after a failure, whatever
    /// its history: the bound on catch-up once the database answers again.
    pub fn longest_wait(&self) -> Duration {
        self.backoff.delay(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: u32 = 6;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            backoff: Backoff::default(),
            max_receive_count: MaxReceiveCount::new(R).expect("2 to 1,000"),
        }
    }

    #[test]
    fn a_backoff_with_a_zero_base_cap_or_multiplier_cannot_be_made() {
        let second = Duration::from_secs(1);
        assert!(Backoff::new(second, 1, second).is_some());
        assert!(Backoff::new(Duration::from_millis(999), 2, second).is_none());
        assert!(Backoff::new(second, 0, second).is_none());
        assert!(Backoff::new(second, 2, Duration::ZERO).is_none());
    }

    #[test]
    fn the_delay_doubles_with_each_attempt_up_to_the_cap() {
        let backoff = Backoff::default();
        let delays: Vec<u64> = (1..=6).map(|n| backoff.delay(n).as_secs()).collect();
        assert_eq!(delays, [10, 20, 40, 60, 60, 60]);
        assert_eq!(backoff.delay(u32::MAX), backoff.cap());
    }

    #[test]
    fn no_record_is_ever_hidden_longer_than_the_cap_whatever_its_history() {
        let policy = policy();
        for requeued in [0, 1, 7, u32::MAX - 1] {
            for receive in [0, 1, 2, R - 1, R, R + 5, u32::MAX] {
                let wait = match policy.after_failure(receive, requeued) {
                    Retry::Postpone(delay) | Retry::Requeue { delay, .. } => delay,
                };
                assert!(
                    wait <= policy.backoff.cap(),
                    "receive {receive} of copy {requeued} waits {wait:?}"
                );
            }
        }
        assert_eq!(policy.longest_wait(), Duration::from_secs(60));
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
            Retry::Requeue { requeued, delay } => {
                assert_eq!(requeued, 1);
                assert_eq!(delay, Backoff::default().delay(R - 1));
            }
            other => panic!("expected a requeue, got {other:?}"),
        }
        // The last receive, or an approximate count past it, requeues too.
        assert!(matches!(
            policy().after_failure(R, 0),
            Retry::Requeue { requeued: 1, .. }
        ));
        assert!(matches!(
            policy().after_failure(R + 2, 3),
            Retry::Requeue { requeued: 4, .. }
        ));
    }

    #[test]
    fn a_requeued_copy_starts_again_from_the_short_delays() {
        assert_eq!(
            policy().after_failure(1, 3),
            Retry::Postpone(Backoff::default().base())
        );
    }

    #[test]
    fn a_requeue_never_asks_for_more_delay_than_sqs_accepts_on_a_send() {
        let policy = RetryPolicy {
            backoff: Backoff::new(Duration::from_secs(600), 2, Duration::from_secs(3600))
                .expect("valid"),
            ..policy()
        };
        assert!(matches!(
            policy.after_failure(R, 9),
            Retry::Requeue { delay, .. } if delay == MAX_SEND_DELAY
        ));
    }

    #[test]
    fn a_max_receive_count_leaves_a_retry_and_stays_within_what_sqs_allows() {
        assert_eq!(MaxReceiveCount::new(1), None);
        assert_eq!(MaxReceiveCount::new(1_001), None);
        assert_eq!(MaxReceiveCount::new(2).map(MaxReceiveCount::get), Some(2));
        assert_eq!(
            MaxReceiveCount::new(1_000).map(MaxReceiveCount::get),
            Some(1_000)
        );
    }

    #[test]
    fn the_budget_counts_the_delays_before_the_requeue() {
        // Receives at 0, 10, 30, 70 and 130 s: the fifth requeues.
        assert_eq!(policy().budget(), Duration::from_secs(130));
    }
}
