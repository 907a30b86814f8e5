//! The life of a valid order through a long database outage, computed from the
//! consumer's own [`RetryPolicy`], for docs/consumer.md and for operators
//! (`local-esm retry-schedule`).

use std::fmt::Write;
use std::time::Duration;

use consumer_lambda::RetryPolicy;
use consumer_lambda::retry::Retry;

/// SQS requests one failed receive costs an order that is alone in its batch:
/// the receive, and the visibility change or the copy's send plus the
/// original's delete. Batched calls carry up to ten records, so a full batch
/// costs a tenth of this per order.
const REQUESTS_PER_POSTPONE: u32 = 2;
const REQUESTS_PER_REQUEUE: u32 = 3;

/// A table of every failed receive of the first `generations` copies, then the
/// budget and the cost.
pub fn describe(policy: &RetryPolicy, generations: u32) -> String {
    let max = policy.max_receive_count.get();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "maxReceiveCount={max} backoff={}s×{}ⁿ⁻¹ capped at {}s",
        policy.backoff.base().as_secs(),
        policy.backoff.multiplier(),
        policy.backoff.cap().as_secs()
    );
    let _ = writeln!(out, "copy  receive  at            then");
    let mut at = Duration::ZERO;
    let mut cycle = (Duration::ZERO, 0);
    for generation in 0..generations {
        let started = at;
        let mut requests = 0;
        for receive in 1..=max {
            let (wait, action, cost, requeued) = match policy.after_failure(receive, generation) {
                Retry::Postpone(delay) => (delay, "postponed", REQUESTS_PER_POSTPONE, false),
                Retry::Requeue { delay, .. } => {
                    let action = "requeued, the copy visible after";
                    (delay, action, REQUESTS_PER_REQUEUE, true)
                }
            };
            requests += cost;
            let (at_text, wait_text) = (human(at), human(wait));
            let _ = writeln!(
                out,
                "{generation:>4}  {receive:>7}  {at_text:>12}  {action} {wait_text}"
            );
            at += wait;
            if requeued {
                break;
            }
        }
        cycle = (at - started, requests);
    }
    let with_seconds = |wait: Duration| format!("{} ({} s)", human(wait), wait.as_secs());
    let budget = with_seconds(policy.budget());
    let _ = writeln!(out, "backoff before the first requeue: {budget}");
    let longest = with_seconds(policy.longest_wait());
    let _ = writeln!(
        out,
        "longest an order waits after a failure: {longest}, the bound on catch-up"
    );
    let (length, requests) = cycle;
    if !length.is_zero() {
        let per_hour = f64::from(requests) * 3_600.0 / length.as_secs_f64();
        let _ = writeln!(
            out,
            "while the event source mapping polls: {requests} SQS requests every {} = {per_hour:.1} per order per hour alone in a batch, {:.2} in full batches of ten (none while the breaker has it paused)",
            human(length),
            per_hour / 10.0
        );
    }
    out
}

/// `4h 10m`, `12m 30s`, `45s`.
fn human(duration: Duration) -> String {
    let s = duration.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use consumer_lambda::{Backoff, MaxReceiveCount};

    #[test]
    fn the_schedule_lists_each_receive_and_ends_with_the_cost() {
        let policy = RetryPolicy {
            backoff: Backoff::default(),
            max_receive_count: MaxReceiveCount::new(6).expect("2 to 1,000"),
        };
        let text = describe(&policy, 2);
        assert!(text.contains("   0        1"), "{text}");
        assert!(text.contains("requeued"), "{text}");
        assert!(
            text.contains("backoff before the first requeue: 2m 10s (130 s)"),
            "{text}"
        );
        assert!(
            text.contains("longest an order waits after a failure: 1m 0s (60 s)"),
            "{text}"
        );
        // Receives at 0, 10, 30, 70 and 130 s, the copy visible at 190 s:
        // 4 postponements and a requeue, 11 requests per 190 s.
        assert!(
            text.contains("11 SQS requests every 3m 10s = 208.4 per order per hour"),
            "{text}"
        );
    }
}
