//! Faults outside the handler, as Lambda has them: a throttled function and a
//! runtime that fails its init. Neither runs the handler, so neither can
//! postpone or requeue; each receive is spent, and without the breaker valid
//! orders reach the DLQ after `maxReceiveCount` visibility timeouts. With it,
//! the mapping is paused within one schedule interval and the orders wait,
//! for as long as the fault lasts.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
mod stack;
use e2e::order_request;
use futures::StreamExt;
use local_esm::breaker::Intervals;
use local_esm::{BatchHandler, Function, InProcess, InvocationError};
use stack::Stack;
use testkit::{QueueSettings, eventually};
use tokio::time::Instant;

/// Receives are spent fast: a message comes back every second and moves to
/// the DLQ on its fifth receive.
const FAST_RECEIVES: QueueSettings = QueueSettings {
    visibility_timeout_secs: 1,
    max_receive_count: 4,
    ..QueueSettings::SQS_DEFAULTS
};

/// The breaker compressed as the queue is: a step every second, and every
/// second while the mapping is paused.
const FAST_BREAKER: Intervals = Intervals {
    schedule: Duration::from_secs(1),
    open_probe: Duration::from_secs(1),
};

/// Far longer than the `maxReceiveCount` × visibility timeout (4 s) that
/// sends the orders to the DLQ without the breaker.
const FAULT_LASTS: Duration = Duration::from_secs(30);

const ORDERS: usize = 20;

/// The real handler, noting the highest receive count of a record it ran.
struct NoteReceives<H> {
    inner: H,
    highest: Arc<AtomicU32>,
}

impl<H: BatchHandler> BatchHandler for NoteReceives<H> {
    async fn handle(
        &self,
        event: SqsEvent,
        deadline: Instant,
    ) -> Result<SqsBatchResponse, InvocationError> {
        let highest = event
            .records
            .iter()
            .filter_map(|r| r.attributes.get("ApproximateReceiveCount")?.parse().ok())
            .max()
            .unwrap_or(0);
        self.highest.fetch_max(highest, Ordering::SeqCst);
        self.inner.handle(event, deadline).await
    }
}

/// Posts `ORDERS` valid orders; their ids.
async fn post_orders(stack: &Stack) -> HashSet<String> {
    let orders: Vec<_> = (0..ORDERS).map(|n| order_request(n, 2)).collect();
    let answers: Vec<(u16, serde_json::Value)> = futures::stream::iter(&orders)
        .map(|body| stack.post_order(body))
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(
        answers.iter().all(|(status, _)| *status == 202),
        "{answers:?}"
    );
    orders
        .iter()
        .map(|o| o["order_id"].as_str().expect("an id").to_owned())
        .collect()
}

/// Without the breaker: every valid order in the DLQ, none stored, after
/// `maxReceiveCount` receives a visibility timeout apart.
async fn without_the_breaker(fault: Function) {
    let mut stack = Stack::start(FAST_RECEIVES, None).await;
    stack.function.set(fault);
    stack.start_consumer().await;
    let posted = Instant::now();
    post_orders(&stack).await;
    stack
        .await_dead_lettered(ORDERS as u64, Duration::from_secs(60))
        .await;
    let took = posted.elapsed();
    assert_eq!(stack.stored_count().await, 0, "the handler never ran");
    stack.shutdown().await;
    println!("{fault:?} without the breaker: {ORDERS} valid orders in the DLQ after {took:?}");
    // Receives one visibility timeout apart: the last of them is after this.
    let spent = Duration::from_secs(u64::from(
        FAST_RECEIVES.visibility_timeout_secs * (FAST_RECEIVES.max_receive_count - 1),
    ));
    assert!(took >= spent, "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_breaker_a_throttled_function_sends_valid_orders_to_the_dlq() {
    without_the_breaker(Function::Throttled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_breaker_a_runtime_failing_its_init_sends_valid_orders_to_the_dlq() {
    without_the_breaker(Function::FailingInit).await;
}

/// With the breaker, through `FAULT_LASTS` of `fault`: no order in the DLQ,
/// each stored once after it ends.
async fn with_the_breaker(fault: Function) {
    let mut stack = Stack::start(FAST_RECEIVES, None).await;
    let highest = Arc::new(AtomicU32::new(0));
    let handler = NoteReceives {
        inner: InProcess(stack.consumer().await, None),
        highest: Arc::clone(&highest),
    };
    stack.start_consumer_with(handler).await;
    stack.start_breaker(FAST_BREAKER).await;

    stack.function.set(fault);
    let started = Instant::now();
    let ids = post_orders(&stack).await;
    eventually(
        "the breaker to pause the mapping",
        Duration::from_secs(10),
        || async {
            match stack.mapping_enabled() {
                Some(false) => Ok(()),
                state => Err(state),
            }
        },
    )
    .await;
    let detected = started.elapsed();
    // The fault's length is what this checks: a duration, no condition stands for it.
    tokio::time::sleep(FAULT_LASTS.saturating_sub(started.elapsed())).await;
    assert_eq!(
        stack.queues.dlq_depth().await,
        0,
        "a valid order in the DLQ"
    );
    assert_eq!(stack.stored_count().await, 0, "the handler never ran");
    assert_eq!(stack.mapping_enabled(), Some(false), "still paused");

    stack.function.set(Function::Running);
    let ended = Instant::now();
    stack
        .await_stored(ORDERS as i64, Duration::from_secs(30))
        .await;
    let caught_up = ended.elapsed();
    assert_eq!(
        stack.stored_order_ids().await,
        ids,
        "each order stored once"
    );
    eventually("the queue to drain", Duration::from_secs(30), || async {
        match stack.queues.depth().await {
            0 => Ok(()),
            n => Err(n),
        }
    })
    .await;
    assert_eq!(stack.queues.dlq_depth().await, 0);
    let highest = highest.load(Ordering::SeqCst);
    println!(
        "{fault:?} for {FAULT_LASTS:?} with the breaker: paused {detected:?} after the fault began, \
         {ORDERS} orders stored {caught_up:?} after it ended, at receive {highest} at most of {}",
        FAST_RECEIVES.max_receive_count
    );
    assert!(highest <= FAST_RECEIVES.max_receive_count, "{highest}");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_breaker_a_throttled_function_keeps_every_valid_order_out_of_the_dlq() {
    with_the_breaker(Function::Throttled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_breaker_a_runtime_failing_its_init_keeps_every_valid_order_out_of_the_dlq() {
    with_the_breaker(Function::FailingInit).await;
}
