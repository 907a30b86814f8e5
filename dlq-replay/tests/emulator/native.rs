use std::time::Duration;

use dlq_replay::native::{self, Cancelled};
use dlq_replay::queues::describe;
use testkit::eventually;

use crate::support::{
    bodies, captured, dead_letter, depth, drain, never_stop, poison_bodies, queues, sorted,
    valid_body,
};

#[tokio::test]
async fn a_native_replay_moves_everything_back_to_its_source_and_reports_completion() {
    let queues = queues().await;
    let all: Vec<String> = [(0..10).map(valid_body).collect(), poison_bodies()].concat();
    dead_letter(&queues, &all).await;
    let dlq = describe(&queues.sqs, &queues.dlq_url).await.expect("DLQ");

    let started = native::start(&queues.sqs, &dlq.arn, None, Some(100))
        .await
        .expect("a move task starts");
    let mut progress = captured();
    let followed = native::follow(
        &queues.sqs,
        &dlq.arn,
        &started,
        Duration::from_millis(100),
        &mut progress,
        never_stop(),
    )
    .await
    .expect("followed");

    assert_eq!(followed.task.status, "COMPLETED", "{followed:?}");
    assert!(!followed.interrupted);
    assert_eq!(followed.task.moved, all.len() as i64);
    assert_eq!(depth(&queues.sqs, &queues.dlq_url).await, (0, 0));
    assert_eq!(
        bodies(&drain(&queues.sqs, &queues.queue_url).await),
        sorted(&all)
    );
}

#[tokio::test]
async fn a_native_replay_with_a_destination_moves_there() {
    let queues = queues().await;
    let elsewhere = crate::support::queues().await;
    let all: Vec<String> = (0..4).map(valid_body).collect();
    dead_letter(&queues, &all).await;
    let dlq = describe(&queues.sqs, &queues.dlq_url).await.expect("DLQ");

    let started = native::start(&queues.sqs, &dlq.arn, Some(&elsewhere.queue_arn), None)
        .await
        .expect("a move task starts");
    let followed = native::follow(
        &queues.sqs,
        &dlq.arn,
        &started,
        Duration::from_millis(100),
        &mut captured(),
        never_stop(),
    )
    .await
    .expect("followed");

    assert_eq!(followed.task.status, "COMPLETED", "{followed:?}");
    assert_eq!(
        bodies(&drain(&queues.sqs, &elsewhere.queue_url).await),
        sorted(&all)
    );
    assert_eq!(depth(&queues.sqs, &queues.queue_url).await, (0, 0));
}

#[tokio::test]
async fn cancel_stops_a_running_move_task_and_says_when_nothing_runs() {
    let queues = queues().await;
    let dlq = describe(&queues.sqs, &queues.dlq_url).await.expect("DLQ");
    let nothing = native::cancel(&queues.sqs, &dlq.arn).await.expect("cancel");
    assert_eq!(nothing, Cancelled::NothingRunning { latest: None });

    let all: Vec<String> = (0..30).map(valid_body).collect();
    dead_letter(&queues, &all).await;
    // One message per second: still running when the cancel arrives.
    native::start(&queues.sqs, &dlq.arn, None, Some(1))
        .await
        .expect("a move task starts");
    let cancelled = native::cancel(&queues.sqs, &dlq.arn).await.expect("cancel");
    assert!(matches!(cancelled, Cancelled::Task { .. }), "{cancelled:?}");

    let task = eventually(
        "the task to be cancelled",
        Duration::from_secs(30),
        || async {
            match native::latest_task(&queues.sqs, &dlq.arn).await {
                Ok(Some(task)) if task.status == "CANCELLED" => Ok(task),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert!(task.moved < all.len() as i64, "{task:?}");
    // Nothing lost: what was not moved is still in the DLQ.
    let (moved, _) = depth(&queues.sqs, &queues.queue_url).await;
    let (left, _) = depth(&queues.sqs, &queues.dlq_url).await;
    assert_eq!(moved + left, all.len() as u64);
    assert!(matches!(
        native::cancel(&queues.sqs, &dlq.arn).await.expect("cancel"),
        Cancelled::NothingRunning { latest: Some(_) }
    ));
}
