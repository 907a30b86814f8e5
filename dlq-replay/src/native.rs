//! `replay --native` and `cancel`: SQS's own DLQ redrive, a "message move task"
//! that SQS runs by itself (StartMessageMoveTask), which this tool starts,
//! follows (ListMessageMoveTasks) and can cancel (CancelMessageMoveTask).
//!
//! It moves everything, valid or not, and keeps running if this process stops.

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::ListMessageMoveTasksResultEntry;
use tokio::sync::watch;
use tracing::info;

use crate::progress::Progress;
use crate::queues::SqsError;

/// SQS's bounds for MaxNumberOfMessagesPerSecond.
pub const MAX_RATE: u32 = 500;

#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    #[error(
        "this SQS endpoint does not support {operation} (SQS's own DLQ redrive): use the plain `replay` without --native, which moves the messages itself"
    )]
    Unsupported {
        operation: &'static str,
        /// What the endpoint answered.
        #[source]
        source: SqsError,
    },
    #[error(transparent)]
    Sqs(SqsError),
    #[error(
        "SQS lists no move task for {dlq_arn} although one was just started; check with `aws sqs list-message-move-tasks --source-arn {dlq_arn}`"
    )]
    TaskVanished { dlq_arn: String },
}

impl NativeError {
    fn new<E>(operation: &'static str, action: String, err: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let err = SqsError::new(action, err);
        if err.is_unsupported_operation() {
            Self::Unsupported {
                operation,
                source: err,
            }
        } else {
            Self::Sqs(err)
        }
    }
}

/// A move task as ListMessageMoveTasks reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveTask {
    /// RUNNING, COMPLETED, CANCELLING, CANCELLED or FAILED.
    pub status: String,
    /// Only while RUNNING: what `cancel` needs.
    pub task_handle: Option<String>,
    pub moved: i64,
    pub to_move: Option<i64>,
    pub failure_reason: Option<String>,
}

impl MoveTask {
    fn new(entry: &ListMessageMoveTasksResultEntry) -> Self {
        Self {
            status: entry.status().unwrap_or("UNKNOWN").to_owned(),
            task_handle: entry.task_handle().map(str::to_owned),
            moved: entry.approximate_number_of_messages_moved(),
            to_move: entry.approximate_number_of_messages_to_move(),
            failure_reason: entry.failure_reason().map(str::to_owned),
        }
    }

    pub fn is_over(&self) -> bool {
        matches!(self.status.as_str(), "COMPLETED" | "CANCELLED" | "FAILED")
    }

    /// e.g. `COMPLETED moved=40 of 40`, plus the reason of a failure.
    pub fn summary(&self) -> String {
        let of = self.to_move.map(|n| format!(" of {n}")).unwrap_or_default();
        let reason = self
            .failure_reason
            .as_deref()
            .map(|r| format!("; reason: {r}"))
            .unwrap_or_default();
        format!("{} moved={}{of}{reason}", self.status, self.moved)
    }
}

/// Starts a move task out of the DLQ: to `destination_arn`, or, without one,
/// back to the queue each message came from. Returns the task handle.
pub async fn start(
    sqs: &Client,
    dlq_arn: &str,
    destination_arn: Option<&str>,
    rate: Option<u32>,
) -> Result<String, NativeError> {
    let response = sqs
        .start_message_move_task()
        .source_arn(dlq_arn)
        .set_destination_arn(destination_arn.map(str::to_owned))
        .set_max_number_of_messages_per_second(rate.map(|r| r.min(MAX_RATE) as i32))
        .send()
        .await
        .map_err(|err| {
            NativeError::new(
                "StartMessageMoveTask",
                format!("start a message move task out of {dlq_arn}"),
                err,
            )
        })?;
    let handle = response.task_handle().unwrap_or_default().to_owned();
    info!(dlq = dlq_arn, destination = ?destination_arn, rate, task_handle = %handle, "native move task started");
    Ok(handle)
}

/// The DLQ's most recent move task, if it ever had one.
pub async fn latest_task(sqs: &Client, dlq_arn: &str) -> Result<Option<MoveTask>, NativeError> {
    let response = sqs
        .list_message_move_tasks()
        .source_arn(dlq_arn)
        .max_results(1)
        .send()
        .await
        .map_err(|err| {
            NativeError::new(
                "ListMessageMoveTasks",
                format!("list the message move tasks of {dlq_arn}"),
                err,
            )
        })?;
    // SQS lists the most recent task first.
    Ok(response.results().first().map(MoveTask::new))
}

/// How following a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Followed {
    pub task: MoveTask,
    /// The follower was stopped (Ctrl-C); the task itself goes on.
    pub interrupted: bool,
}

/// Polls the DLQ's latest task every `every` and reports its progress until it
/// is over or `stop` turns true.
pub async fn follow(
    sqs: &Client,
    dlq_arn: &str,
    every: Duration,
    progress: &mut dyn Progress,
    mut stop: watch::Receiver<bool>,
) -> Result<Followed, NativeError> {
    let mut started = false;
    loop {
        let task = latest_task(sqs, dlq_arn)
            .await?
            .ok_or_else(|| NativeError::TaskVanished {
                dlq_arn: dlq_arn.to_owned(),
            })?;
        if !started {
            progress.start(task.to_move.and_then(|n| u64::try_from(n).ok()));
            started = true;
        }
        progress.advance(
            u64::try_from(task.moved).unwrap_or(0),
            task.to_move.and_then(|n| u64::try_from(n).ok()),
            &task.status,
        );
        if task.is_over() {
            progress.finish();
            info!(dlq = dlq_arn, status = %task.status, moved = task.moved, to_move = task.to_move, failure_reason = task.failure_reason, "native move task over");
            return Ok(Followed {
                task,
                interrupted: false,
            });
        }
        tokio::select! {
            biased;
            result = stop.wait_for(|stop| *stop) => if result.is_ok() {
                progress.finish();
                return Ok(Followed { task, interrupted: true });
            } else {
                // No one can stop us any more: just keep polling.
                tokio::time::sleep(every).await;
            },
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// What `cancel` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancelled {
    /// The running task was asked to stop; it had moved about this many messages.
    Task { moved: i64 },
    /// Nothing was running; the latest task, if any, for the record.
    NothingRunning { latest: Option<MoveTask> },
}

/// Cancels the DLQ's running move task, if there is one.
pub async fn cancel(sqs: &Client, dlq_arn: &str) -> Result<Cancelled, NativeError> {
    let latest = latest_task(sqs, dlq_arn).await?;
    let Some(handle) = latest
        .as_ref()
        .filter(|task| task.status == "RUNNING")
        .and_then(|task| task.task_handle.clone())
    else {
        return Ok(Cancelled::NothingRunning { latest });
    };
    let response = sqs
        .cancel_message_move_task()
        .task_handle(&handle)
        .send()
        .await
        .map_err(|err| {
            NativeError::new(
                "CancelMessageMoveTask",
                format!("cancel the move task of {dlq_arn}"),
                err,
            )
        })?;
    let moved = response.approximate_number_of_messages_moved();
    info!(dlq = dlq_arn, task_handle = %handle, moved, "native move task cancelled");
    Ok(Cancelled::Task { moved })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::operation::start_message_move_task::StartMessageMoveTaskError;

    fn task(status: &str) -> MoveTask {
        MoveTask::new(
            &ListMessageMoveTasksResultEntry::builder()
                .status(status)
                .approximate_number_of_messages_moved(7)
                .approximate_number_of_messages_to_move(10)
                .build(),
        )
    }

    #[test]
    fn a_task_is_over_once_completed_cancelled_or_failed() {
        assert!(!task("RUNNING").is_over());
        assert!(!task("CANCELLING").is_over());
        for status in ["COMPLETED", "CANCELLED", "FAILED"] {
            assert!(task(status).is_over(), "{status}");
        }
    }

    #[test]
    fn a_task_summary_shows_progress_and_the_failure_reason() {
        assert_eq!(task("RUNNING").summary(), "RUNNING moved=7 of 10");
        let mut failed = task("FAILED");
        failed.failure_reason = Some("AccessDenied".into());
        assert_eq!(
            failed.summary(),
            "FAILED moved=7 of 10; reason: AccessDenied"
        );
    }

    #[test]
    fn the_unsupported_error_points_to_the_plain_replay() {
        let answer = SdkError::<StartMessageMoveTaskError, HttpResponse>::construction_failure(
            "UnsupportedOperation",
        );
        let err = NativeError::Unsupported {
            operation: "StartMessageMoveTask",
            source: SqsError::new("start a move task", answer),
        };
        let text = err.to_string();
        assert!(
            text.contains("does not support StartMessageMoveTask"),
            "{text}"
        );
        assert!(text.contains("plain `replay` without --native"), "{text}");
        assert_eq!(text.lines().count(), 1, "one line");
    }
}
