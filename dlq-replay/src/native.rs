//! `replay --native` and `cancel`: SQS's own DLQ redrive, a "message move task"
//! that SQS runs by itself (StartMessageMoveTask), which this tool starts,
//! follows (ListMessageMoveTasks) and can cancel (CancelMessageMoveTask).
//!
//! It moves everything, valid or not, and keeps running if this process stops.

use std::future::Future;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::ListMessageMoveTasksResultEntry;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::progress::Progress;
use crate::queues::SqsError;

/// SQS's bounds for MaxNumberOfMessagesPerSecond.
pub const MAX_RATE: u32 = 500;

/// How long [`follow`] waits for SQS to list the task it started (or to list
/// it again) before it gives up following; the task itself is not touched.
pub const NOT_LISTED_LIMIT: Duration = Duration::from_secs(120);

/// The most tasks ListMessageMoveTasks returns at once (MaxResults).
const LISTED_AT_MOST: i32 = 10;

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
        "SQS has not listed the move task {handle} of {dlq_arn} for {waited_s} s, so its progress is unknown; it may still run: check with `aws sqs list-message-move-tasks --source-arn {dlq_arn}`, stop it with `replay-dlq cancel`"
    )]
    TaskNotListed {
        dlq_arn: String,
        handle: String,
        waited_s: u64,
    },
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
    /// RUNNING, COMPLETED, CANCELLING, CANCELLED or FAILED; STARTING when
    /// [`follow`] was stopped before SQS listed the task it started.
    pub status: String,
    /// Only while RUNNING: what `cancel` needs.
    pub task_handle: Option<String>,
    /// When SQS started it (StartedTimestamp, ms since the epoch), if it said.
    pub started_at: Option<i64>,
    pub moved: i64,
    pub to_move: Option<i64>,
    pub failure_reason: Option<String>,
}

impl MoveTask {
    fn new(entry: &ListMessageMoveTasksResultEntry) -> Self {
        Self {
            status: entry.status().unwrap_or("UNKNOWN").to_owned(),
            task_handle: entry.task_handle().map(str::to_owned),
            // The SDK reads a missing timestamp as 0.
            started_at: Some(entry.started_timestamp()).filter(|&at| at > 0),
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

/// A move task [`start`] started, as [`follow`] tells it from the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedTask {
    /// What StartMessageMoveTask returned. ListMessageMoveTasks shows it only
    /// while the task is RUNNING.
    pub handle: String,
    /// When the DLQ's newest task before this one started, if it had one: SQS
    /// runs one move task per queue at a time, so a task listed as started
    /// later is this one.
    pub after: Option<i64>,
}

/// Starts a move task out of the DLQ: to `destination_arn`, or, without one,
/// back to the queue each message came from. The DLQ's newest task is looked
/// up first, so that [`follow`] can tell the new one from it.
pub async fn start(
    sqs: &Client,
    dlq_arn: &str,
    destination_arn: Option<&str>,
    rate: Option<u32>,
) -> Result<StartedTask, NativeError> {
    let after = latest_task(sqs, dlq_arn)
        .await?
        .and_then(|task| task.started_at);
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
    Ok(StartedTask { handle, after })
}

/// The DLQ's most recent move task, if it ever had one.
pub async fn latest_task(sqs: &Client, dlq_arn: &str) -> Result<Option<MoveTask>, NativeError> {
    Ok(list_tasks(sqs, dlq_arn, 1).await?.into_iter().next())
}

/// Where [`follow`] reads the DLQ's move tasks: SQS, or a test's stand-in.
pub trait TaskListing: Sync {
    /// The DLQ's most recent move tasks, most recent first.
    fn recent_tasks(
        &self,
        dlq_arn: &str,
    ) -> impl Future<Output = Result<Vec<MoveTask>, NativeError>> + Send;
}

impl TaskListing for Client {
    async fn recent_tasks(&self, dlq_arn: &str) -> Result<Vec<MoveTask>, NativeError> {
        list_tasks(self, dlq_arn, LISTED_AT_MOST).await
    }
}

async fn list_tasks(
    sqs: &Client,
    dlq_arn: &str,
    max_results: i32,
) -> Result<Vec<MoveTask>, NativeError> {
    let response = sqs
        .list_message_move_tasks()
        .source_arn(dlq_arn)
        .max_results(max_results)
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
    Ok(response.results().iter().map(MoveTask::new).collect())
}

/// `started` in a listing: by its handle while it runs; once it is over (SQS
/// then drops the handle), by the start time it was seen with; and, when it ran
/// and ended between two polls, as the task without a handle that started
/// after the one before it. Whatever else is listed first (a listing that lags
/// behind the start shows the previous task) is not it.
fn find_started<'t>(
    tasks: &'t [MoveTask],
    started: &StartedTask,
    seen_started_at: Option<i64>,
) -> Option<&'t MoveTask> {
    tasks
        .iter()
        .find(|task| task.task_handle.as_deref() == Some(started.handle.as_str()))
        .or_else(|| {
            tasks
                .iter()
                .filter(|task| task.task_handle.is_none())
                .find(|task| match (seen_started_at, started.after) {
                    (Some(seen), _) => task.started_at == Some(seen),
                    (None, Some(after)) => task.started_at.is_some_and(|at| at > after),
                    (None, None) => true,
                })
        })
}

/// How following a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Followed {
    pub task: MoveTask,
    /// The follower was stopped (Ctrl-C); the task itself goes on.
    pub interrupted: bool,
}

/// Polls the DLQ's move tasks every `every` and reports the progress of
/// `started` (see [`find_started`]) until it is over or `stop` turns true.
/// While the listing does not show it (not yet, or for a moment not any more),
/// it keeps polling, for at most [`NOT_LISTED_LIMIT`] at a stretch.
pub async fn follow(
    listing: &impl TaskListing,
    dlq_arn: &str,
    started: &StartedTask,
    every: Duration,
    progress: &mut dyn Progress,
    mut stop: watch::Receiver<bool>,
) -> Result<Followed, NativeError> {
    let mut begun = false;
    let mut seen_started_at = None;
    let mut last_seen = Instant::now();
    // What to report if stopped before SQS lists the task.
    let mut task = MoveTask {
        status: "STARTING".into(),
        task_handle: Some(started.handle.clone()),
        started_at: None,
        moved: 0,
        to_move: None,
        failure_reason: None,
    };
    loop {
        let tasks = listing.recent_tasks(dlq_arn).await?;
        match find_started(&tasks, started, seen_started_at) {
            Some(found) => {
                task = found.clone();
                last_seen = Instant::now();
                if task.task_handle.is_some() {
                    seen_started_at = task.started_at;
                }
                if !begun {
                    progress.start(task.to_move.and_then(|n| u64::try_from(n).ok()));
                    begun = true;
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
            }
            None if last_seen.elapsed() >= NOT_LISTED_LIMIT => {
                progress.finish();
                return Err(NativeError::TaskNotListed {
                    dlq_arn: dlq_arn.to_owned(),
                    handle: started.handle.clone(),
                    waited_s: last_seen.elapsed().as_secs(),
                });
            }
            None => {
                debug!(dlq = dlq_arn, task_handle = %started.handle, listed = tasks.len(), "the move task is not listed (yet); waiting");
            }
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
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use crate::progress::Lines;
    use aws_sdk_sqs::operation::start_message_move_task::StartMessageMoveTaskError;

    /// Answers ListMessageMoveTasks with one scripted listing per call, the last
    /// one again once the script is over.
    struct Script(Mutex<VecDeque<Vec<MoveTask>>>);

    impl Script {
        fn new(listings: Vec<Vec<MoveTask>>) -> Self {
            Self(Mutex::new(listings.into()))
        }
    }

    impl TaskListing for Script {
        async fn recent_tasks(&self, _dlq_arn: &str) -> Result<Vec<MoveTask>, NativeError> {
            let mut listings = self.0.lock().expect("lock");
            Ok(match listings.len() {
                0 => Vec::new(),
                1 => listings[0].clone(),
                _ => listings.pop_front().unwrap_or_default(),
            })
        }
    }

    /// A listed task: a handle only while RUNNING, as SQS lists them.
    fn listed(status: &str, handle: &str, started_at: i64, moved: i64) -> MoveTask {
        MoveTask {
            status: status.into(),
            task_handle: (status == "RUNNING").then(|| handle.to_owned()),
            started_at: Some(started_at),
            moved,
            to_move: Some(5),
            failure_reason: None,
        }
    }

    /// The previous task, over, started at 1000 and moved 3; ours started at 2000.
    fn previous() -> MoveTask {
        listed("COMPLETED", "old-handle", 1_000, 3)
    }

    fn ours() -> StartedTask {
        StartedTask {
            handle: "our-handle".into(),
            after: Some(1_000),
        }
    }

    async fn follow_script(listings: Vec<Vec<MoveTask>>) -> Result<Followed, NativeError> {
        let (_keep, stop) = watch::channel(false);
        let mut progress = Lines::new("test", Vec::new(), Vec::new());
        follow(
            &Script::new(listings),
            "arn:dlq",
            &ours(),
            Duration::from_secs(1),
            &mut progress,
            stop,
        )
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn following_waits_out_a_listing_that_still_shows_the_previous_task_first() {
        let followed = follow_script(vec![
            vec![previous()],
            vec![previous()],
            vec![listed("RUNNING", "our-handle", 2_000, 2), previous()],
            vec![listed("COMPLETED", "", 2_000, 5), previous()],
        ])
        .await
        .expect("followed");
        assert_eq!(followed.task, listed("COMPLETED", "", 2_000, 5));
        assert!(!followed.interrupted);
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_ran_and_ended_between_two_polls_is_the_one_started_after_the_previous() {
        let followed = follow_script(vec![
            vec![previous()],
            vec![listed("COMPLETED", "", 2_000, 5), previous()],
        ])
        .await
        .expect("followed");
        assert_eq!(
            (followed.task.started_at, followed.task.moved),
            (Some(2_000), 5)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_sqs_never_lists_is_waited_for_a_bounded_time_then_named_in_the_error() {
        let started = Instant::now();
        let err = follow_script(vec![vec![previous()]])
            .await
            .expect_err("never listed");
        assert!(
            matches!(&err, NativeError::TaskNotListed { handle, .. } if handle == "our-handle"),
            "{err:?}"
        );
        assert!(started.elapsed() >= NOT_LISTED_LIMIT);
        assert!(started.elapsed() < NOT_LISTED_LIMIT + Duration::from_secs(2));
        assert!(err.to_string().contains("replay-dlq cancel"), "{err}");
    }

    #[test]
    fn a_task_is_known_by_its_handle_then_by_the_start_it_was_seen_with() {
        let running = [listed("RUNNING", "our-handle", 2_000, 1)];
        assert_eq!(find_started(&running, &ours(), None), Some(&running[0]));
        // Another task that started later, over, is not ours once ours was seen.
        let later = [
            listed("COMPLETED", "", 3_000, 9),
            listed("COMPLETED", "", 2_000, 5),
        ];
        assert_eq!(find_started(&later, &ours(), Some(2_000)), Some(&later[1]));
        // Someone else's running task is never ours.
        let other = [listed("RUNNING", "their-handle", 2_000, 1), previous()];
        assert_eq!(find_started(&other, &ours(), None), None);
    }

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
