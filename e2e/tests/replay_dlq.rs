//! The DLQ's reason to exist, end to end: orders the database refused for
//! their data wait in the DLQ, and once the cause is fixed, `replay-dlq` moves
//! them back and the consumer stores each exactly once. (A database *outage*
//! never sends a valid order to the DLQ: see system.rs; nor does a constraint
//! this build did not make, or most of a batch refused alike: skew, postponed,
//! see consumer-lambda/tests/skew.rs.)

use std::collections::HashSet;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use replay_dlq::{Lines, Options, replay, source_queue};
mod stack;
use e2e::order_request;
use futures::StreamExt;
use local_esm::{BatchHandler, InProcess, InvocationError};
use order_contract::FailureClass;
use serde_json::Value;
use stack::Stack;
use testkit::{QueueSettings, eventually};
use tokio::time::Instant;

/// The handler run on one record at a time, as a mapping with batch size 1
/// runs it: a one-record batch shows no pattern, so a refusal under a
/// constraint this build knows is the order's fault (store/fault.rs).
struct OneRecordBatches<H>(H);

impl<H: BatchHandler> BatchHandler for OneRecordBatches<H> {
    async fn handle(
        &self,
        event: SqsEvent,
        deadline: Instant,
    ) -> Result<SqsBatchResponse, InvocationError> {
        let mut response = SqsBatchResponse::default();
        for record in event.records {
            let mut one = SqsEvent::default();
            one.records.push(record);
            let answer = self.0.handle(one, deadline).await?;
            response
                .batch_item_failures
                .extend(answer.batch_item_failures);
        }
        Ok(response)
    }
}

/// SQS's own defaults: the redrive policy would take minutes to move a
/// refused order, so the DLQ filling within seconds shows the consumer sent it.
const QUEUES: QueueSettings = QueueSettings::SQS_DEFAULTS;

async fn post_all(stack: &Stack, orders: &[Value]) {
    let answers: Vec<(u16, Value)> = futures::stream::iter(orders)
        .map(|body| stack.post_order(body))
        .buffer_unordered(8)
        .collect()
        .await;
    for (status, body) in answers {
        assert_eq!(status, 202, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_refused_by_a_bad_schema_change_are_all_stored_once_after_the_fix_and_a_replay() {
    let mut stack = Stack::start(QUEUES, None).await;
    let consumer = stack.consumer().await;
    stack
        .start_consumer_with(OneRecordBatches(InProcess(consumer, None)))
        .await;
    let before: Vec<Value> = (0..10).map(|n| order_request(n, 1)).collect();
    let during: Vec<Value> = (10..40).map(|n| order_request(n, 2)).collect();
    post_all(&stack, &before).await;
    stack.await_stored(10, Duration::from_secs(30)).await;

    // One of this build's own constraints made one no order can meet:
    // PostgreSQL refuses every new row for its data (SQLSTATE 23514) under a
    // name the consumer knows, so each one-record batch's row is poison.
    let admin = stack.db.connect().await;
    admin
        .batch_execute(
            "ALTER TABLE orders DROP CONSTRAINT orders_total_cents_check, \
             ADD CONSTRAINT orders_total_cents_check CHECK (total_cents < 0) NOT VALID",
        )
        .await
        .expect("the bad change");
    post_all(&stack, &during).await;
    stack.await_dead_lettered(30, Duration::from_secs(90)).await;
    admin
        .batch_execute(
            "ALTER TABLE orders DROP CONSTRAINT orders_total_cents_check, \
             ADD CONSTRAINT orders_total_cents_check CHECK (total_cents >= 0)",
        )
        .await
        .expect("the fix");

    // Each says why: the row was refused, with PostgreSQL's SQLSTATE.
    let dead = stack.queues.receive_dlq().await;
    for message in &dead {
        let failure = e2e::failure_of(message).expect("a dead letter says why");
        assert_eq!(failure.class, FailureClass::RowRefused);
        let detail = failure.detail.unwrap_or_default();
        assert!(detail.starts_with("23514: "), "{detail}");
    }

    // As if an earlier replay had been killed between send and delete: three
    // orders are in the DLQ twice. The replay moves both copies.
    for message in &dead {
        stack
            .queues
            .sqs
            .change_message_visibility()
            .queue_url(&stack.queues.dlq_url)
            .receipt_handle(message.receipt_handle().unwrap_or_default())
            .visibility_timeout(0)
            .send()
            .await
            .expect("make the message visible again");
    }
    for message in dead.iter().take(3) {
        stack
            .queues
            .sqs
            .send_message()
            .queue_url(&stack.queues.dlq_url)
            .message_body(message.body().unwrap_or_default())
            .send()
            .await
            .expect("a duplicate in the DLQ");
    }

    let sqs = &stack.queues.sqs;
    let destination = source_queue(sqs, &stack.queues.dlq_url)
        .await
        .expect("the DLQ's source queue");
    assert_eq!(destination, stack.queues.queue_url);
    let mut progress = Lines::new("replay", std::io::sink(), std::io::sink());
    let report = replay(
        sqs,
        &stack.queues.dlq_url,
        &destination,
        &Options::default(),
        &mut progress,
        tokio::sync::watch::channel(false).1,
    )
    .await
    .expect("the replay runs");
    assert_eq!(report.summary, "replay: moved=33 skipped=0 failed=0");

    stack.await_stored(40, Duration::from_secs(60)).await;
    eventually("the queue to drain", Duration::from_secs(30), || async {
        match stack.queues.depth().await {
            0 => Ok(()),
            n => Err(n),
        }
    })
    .await;
    assert_eq!(stack.stored_count().await, 40, "each order stored once");
    assert_eq!(stack.queues.dlq_depth().await, 0, "the DLQ is empty");
    let stored = stack.stored_order_ids().await;
    let posted: HashSet<String> = before
        .iter()
        .chain(&during)
        .map(|o| o["order_id"].as_str().expect("an id").to_owned())
        .collect();
    assert_eq!(stored, posted);
    stack.shutdown().await;
}
