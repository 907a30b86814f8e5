//! The retry bounds, derived from the real constants: the template's
//! `maxReceiveCount` and the consumer's default backoff, not a copy of them. It
//! checks the claims the `MaxReceiveCount` parameter's description makes, so it
//! sits with the template's checks; it needs the consumer's retry policy, not
//! `local-esm`'s schedule printer.

use std::time::Duration;

use consumer_lambda::retry::{MAX_SEND_DELAY, Retry};
use consumer_lambda::{Backoff, MaxReceiveCount, RetryPolicy};

use crate::helpers::{max_receive_count, template};

fn policy() -> RetryPolicy {
    let max_receive_count = max_receive_count(&template());
    RetryPolicy {
        backoff: Backoff::default(),
        max_receive_count: MaxReceiveCount::new(max_receive_count).expect("2 to 1,000"),
    }
}

#[test]
fn with_the_template_defaults_no_order_waits_longer_than_a_minute_after_a_failure() {
    // The bound on catch-up: once the database answers, every waiting order is
    // received again within this (docs/consumer.md, "The consumer").
    let longest = policy().longest_wait();
    println!("longest wait after a failure: {longest:?}");
    assert!(longest <= Duration::from_secs(60), "{longest:?}");
}

#[test]
fn with_the_template_defaults_no_receive_of_a_valid_order_ever_leads_to_the_dlq() {
    let policy = policy();
    let max = policy.max_receive_count.get();
    // Through many requeued copies: every failed receive either
    // postpones within the cap or requeues, and it requeues before the last
    // receive, so one receive is always left to spare.
    for requeued in 0..10 {
        for receive in 1..=max {
            match policy.after_failure(receive, requeued) {
                Retry::Postpone(delay) => {
                    assert!(receive < max - 1, "receive {receive} of {max} postpones");
                    assert!(delay <= policy.longest_wait());
                }
                Retry::Requeue {
                    requeued: next,
                    delay,
                } => {
                    assert!(receive >= max - 1);
                    assert_eq!(next, requeued + 1);
                    assert!(delay <= MAX_SEND_DELAY);
                }
            }
        }
    }
}
