//! The outage budget, derived from the real constants: the template's
//! `maxReceiveCount` and the consumer's default backoff, not a copy of them. It
//! checks the claim the `MaxReceiveCount` parameter's description makes, so it
//! sits with the template's checks; it needs the consumer's retry policy, not
//! `local-esm`'s schedule printer.

use std::time::Duration;

use consumer_lambda::retry::{MAX_DELAY, Retry};
use consumer_lambda::{Backoff, RetryPolicy};

use crate::helpers::template;

fn policy() -> RetryPolicy {
    let max_receive_count = template()
        .number(&[
            "Resources",
            "OrdersQueue",
            "Properties",
            "RedrivePolicy",
            "maxReceiveCount",
        ])
        .expect("the orders queue's maxReceiveCount");
    RetryPolicy {
        backoff: Backoff::default(),
        max_receive_count: Some(max_receive_count),
    }
}

#[test]
fn with_the_template_defaults_the_backoff_alone_holds_an_order_at_least_six_hours() {
    let budget = policy().budget().expect("a max receive count");
    println!("outage budget before the first requeue: {budget:?}");
    assert!(budget >= Duration::from_secs(6 * 3600), "{budget:?}");
}

#[test]
fn with_the_template_defaults_no_receive_of_a_valid_order_ever_leads_to_the_dlq() {
    let policy = policy();
    let max = policy.max_receive_count.expect("set");
    // Through many generations of requeued copies: every failed receive either
    // postpones within SQS's ceiling or requeues, and it requeues before the
    // last receive, so one receive is always left to spare.
    for generation in 0..10 {
        for receive in 1..=max {
            match policy.after_failure(receive, generation) {
                Retry::Postpone(delay) => {
                    assert!(receive < max - 1, "receive {receive} of {max} postpones");
                    assert!(delay <= MAX_DELAY);
                }
                Retry::Requeue {
                    generation: next, ..
                } => {
                    assert!(receive >= max - 1);
                    assert_eq!(next, generation + 1);
                }
            }
        }
    }
}
