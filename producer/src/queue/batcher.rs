//! Coalesces concurrent sends into batches of up to ten entries.
//!
//! Callers put their message on a channel and wait on a oneshot. One task takes
//! the first waiting message, then whatever else is already waiting (without
//! waiting for more, so a lone request is not delayed), and hands the batch to a
//! [`BatchSender`] in a task of its own; at most `max_in_flight` batches are out
//! at once. A batch can succeed for some entries and fail for others.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use order_contract::REQUEST_ID_ATTRIBUTE;
use support::sqs::MAX_BATCH_ENTRIES;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinError, JoinHandle, JoinSet};

use super::{EnqueueError, OrderMessage};

/// At most 256 KiB of messages per batch, as SQS took before it rose to 1 MiB.
pub(crate) const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Sends one batch. `Err` means the call as a whole failed (no entry stored);
/// `Ok` has one result per entry, in order (missing ones: not answered).
pub(crate) trait BatchSender: Send + Sync + 'static {
    fn send_batch(
        &self,
        entries: Vec<OrderMessage>,
    ) -> impl Future<Output = Result<Vec<Result<String, EnqueueError>>, EnqueueError>> + Send;
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct BatcherSettings {
    /// Batches sent at once; more waiting sends queue up and coalesce.
    pub(crate) max_in_flight: usize,
    /// Sends that may wait for a batch; beyond this they are refused.
    pub(crate) capacity: usize,
    /// The longest a caller waits for its answer, queueing included.
    pub(crate) deadline: Duration,
}

/// A message waiting for a batch, and where its answer goes.
struct Pending {
    message: OrderMessage,
    reply: oneshot::Sender<Result<String, EnqueueError>>,
}

impl Pending {
    /// What the message counts towards the batch size: body and attribute.
    fn size(&self) -> usize {
        let OrderMessage { body, request_id } = &self.message;
        body.len()
            + request_id.as_ref().map_or(0, |id| {
                REQUEST_ID_ATTRIBUTE.len() + "String".len() + id.len()
            })
    }
}

/// The handle callers send through; the batching task runs until it is closed.
#[derive(Debug)]
pub(crate) struct Batcher {
    submit: mpsc::Sender<Pending>,
    deadline: Duration,
    task: JoinHandle<()>,
}

impl Batcher {
    /// Starts the batching task on the current Tokio runtime.
    pub(crate) fn spawn<S: BatchSender>(sender: S, settings: BatcherSettings) -> Self {
        let (submit, waiting) = mpsc::channel(settings.capacity.max(1));
        let task = tokio::spawn(run(sender, waiting, settings.max_in_flight.max(1)));
        Self {
            submit,
            deadline: settings.deadline,
            task,
        }
    }

    /// Sends one message in the next batch and waits for its own result.
    pub(crate) async fn send(&self, message: OrderMessage) -> Result<String, EnqueueError> {
        let (reply, answer) = oneshot::channel();
        // Never wait for room: past the cap the caller is shed at once, so the
        // orders held in memory stay bounded.
        self.submit
            .try_send(Pending { message, reply })
            .map_err(|err| match err {
                mpsc::error::TrySendError::Full(_) => EnqueueError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => EnqueueError::Stopped,
            })?;
        // A dropped reply means its batch task died before SQS answered.
        let round_trip = async { answer.await.map_err(|_| EnqueueError::Stopped)? };
        tokio::time::timeout(self.deadline, round_trip)
            .await
            .unwrap_or(Err(EnqueueError::TimedOut(self.deadline)))
    }

    /// Whether the batching task has ended: before [`Self::close`], only by a panic.
    pub(crate) fn is_stopped(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops taking sends and waits until every batch in flight was answered.
    pub(crate) async fn close(self) {
        drop(self.submit);
        if let Err(err) = self.task.await {
            tracing::error!(error = %err, "the SQS batcher stopped abnormally");
        }
    }

    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.submit.max_capacity() - self.submit.capacity()
    }
}

async fn run<S: BatchSender>(
    sender: S,
    mut waiting: mpsc::Receiver<Pending>,
    max_in_flight: usize,
) {
    let sender = Arc::new(sender);
    let mut in_flight = JoinSet::new();
    let mut carried = None;
    loop {
        // Wait for a slot first: while all are busy, sends pile up and coalesce.
        while in_flight.len() >= max_in_flight {
            if let Some(done) = in_flight.join_next().await {
                report(done);
            }
        }
        let Some(batch) = next_batch(&mut waiting, &mut carried).await else {
            break;
        };
        let sender = Arc::clone(&sender);
        in_flight.spawn(async move { deliver(&*sender, batch).await });
        while let Some(done) = in_flight.try_join_next() {
            report(done);
        }
    }
    // Closed: every send has been taken; let the batches in flight be answered.
    while let Some(done) = in_flight.join_next().await {
        report(done);
    }
}

fn report(done: Result<(), JoinError>) {
    if let Err(err) = done {
        // Its callers' replies were dropped with it, so they answer 503, never 202.
        tracing::error!(error = %err, "a SendMessageBatch task failed");
    }
}

/// Waits for one waiting send, then takes what else is already waiting, up to
/// the batch limits. `None` once the channel is closed and drained.
async fn next_batch(
    waiting: &mut mpsc::Receiver<Pending>,
    carried: &mut Option<Pending>,
) -> Option<Vec<Pending>> {
    loop {
        let first = match carried.take() {
            Some(pending) => pending,
            None => waiting.recv().await?,
        };
        let mut bytes = first.size();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_ENTRIES {
            let Ok(next) = waiting.try_recv() else {
                break;
            };
            if bytes + next.size() > MAX_BATCH_BYTES {
                *carried = Some(next);
                break;
            }
            bytes += next.size();
            batch.push(next);
        }
        // A caller that gave up (deadline passed, client gone) was never told
        // its order was accepted: do not send it behind its back.
        batch.retain(|pending| !pending.reply.is_closed());
        if !batch.is_empty() {
            return Some(batch);
        }
    }
}

/// Sends one batch and answers each caller with its own entry's result.
async fn deliver<S: BatchSender>(sender: &S, batch: Vec<Pending>) {
    let (messages, replies): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|pending| (pending.message, pending.reply))
        .unzip();
    tracing::debug!(entries = messages.len(), "sending a batch");
    let results = sender.send_batch(messages).await;
    for (index, reply) in replies.into_iter().enumerate() {
        let result = match &results {
            Ok(results) => results
                .get(index)
                .cloned()
                .unwrap_or(Err(EnqueueError::Unanswered)),
            Err(err) => Err(err.clone()),
        };
        // The caller may have given up meanwhile; nothing to do then.
        drop(reply.send(result));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::sync::Semaphore;

    type Answer = fn(&[OrderMessage]) -> Result<Vec<Result<String, EnqueueError>>, EnqueueError>;

    /// Records every batch, optionally holds each one at a gate, then answers with `answer`.
    #[derive(Clone)]
    struct FakeSender {
        batches: Arc<Mutex<Vec<Vec<String>>>>,
        gate: Option<Arc<Semaphore>>,
        answer: Answer,
    }

    impl FakeSender {
        fn new(answer: Answer) -> Self {
            Self {
                batches: Arc::default(),
                gate: None,
                answer,
            }
        }

        fn gated(answer: Answer) -> (Self, Arc<Semaphore>) {
            let gate = Arc::new(Semaphore::new(0));
            let sender = Self {
                gate: Some(Arc::clone(&gate)),
                ..Self::new(answer)
            };
            (sender, gate)
        }

        fn batches(&self) -> Vec<Vec<String>> {
            self.batches.lock().expect("batches lock").clone()
        }
    }

    impl BatchSender for FakeSender {
        async fn send_batch(
            &self,
            entries: Vec<OrderMessage>,
        ) -> Result<Vec<Result<String, EnqueueError>>, EnqueueError> {
            self.batches
                .lock()
                .expect("batches lock")
                .push(entries.iter().map(|entry| entry.body.clone()).collect());
            if let Some(gate) = &self.gate {
                gate.acquire().await.expect("gate open").forget();
            }
            (self.answer)(&entries)
        }
    }

    /// Every entry stored, with a message id derived from its body.
    fn all_stored(
        entries: &[OrderMessage],
    ) -> Result<Vec<Result<String, EnqueueError>>, EnqueueError> {
        Ok(entries
            .iter()
            .map(|entry| Ok(format!("msg-{}", entry.body)))
            .collect())
    }

    fn settings(max_in_flight: usize) -> BatcherSettings {
        BatcherSettings {
            max_in_flight,
            capacity: 64,
            deadline: Duration::from_secs(10),
        }
    }

    /// Yields to the other tasks until `condition` holds (bounded, no sleeping).
    async fn until(what: &str, mut condition: impl FnMut() -> bool) {
        let wait = async {
            while !condition() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
    }

    fn pending(body: &str) -> (Pending, oneshot::Receiver<Result<String, EnqueueError>>) {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            message: body.into(),
            reply,
        };
        (pending, answer)
    }

    #[tokio::test]
    async fn a_lone_send_goes_out_at_once_with_its_own_message_id() {
        let sender = FakeSender::new(all_stored);
        let batcher = Batcher::spawn(sender.clone(), settings(4));
        assert_eq!(batcher.send("a".into()).await.expect("stored"), "msg-a");
        assert_eq!(sender.batches(), vec![vec!["a".to_owned()]]);
        batcher.close().await;
    }

    #[tokio::test]
    async fn sends_waiting_together_go_out_in_batches_of_ten() {
        let (sender, gate) = FakeSender::gated(all_stored);
        let batcher = Arc::new(Batcher::spawn(sender.clone(), settings(1)));
        let send = |body: String| {
            let batcher = Arc::clone(&batcher);
            tokio::spawn(async move { (body.clone(), batcher.send(body.as_str().into()).await) })
        };
        // The first send takes the only slot and is held at the gate…
        let first = send("first".into());
        until("the first batch is out", || sender.batches().len() == 1).await;
        // …while twelve more queue up behind it.
        let rest: Vec<_> = (0..12).map(|i| send(format!("m{i}"))).collect();
        until("twelve sends wait", || batcher.waiting() == 12).await;
        gate.add_permits(3);

        for handle in std::iter::once(first).chain(rest) {
            let (body, result) = handle.await.expect("send task");
            assert_eq!(result.expect("stored"), format!("msg-{body}"));
        }
        let sizes: Vec<usize> = sender.batches().iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1, 10, 2]);
    }

    #[tokio::test]
    async fn a_batch_takes_no_more_than_fits_and_keeps_the_rest_for_the_next() {
        let (submit, mut waiting) = mpsc::channel(64);
        let mut answers = Vec::new();
        for _ in 0..12 {
            let (pending, answer) = pending("small");
            answers.push(answer);
            assert!(submit.try_send(pending).is_ok());
        }
        let mut carried = None;
        let batch = next_batch(&mut waiting, &mut carried).await.expect("batch");
        assert_eq!(batch.len(), MAX_BATCH_ENTRIES);
        let batch = next_batch(&mut waiting, &mut carried).await.expect("batch");
        assert_eq!(batch.len(), 2);

        let big = "x".repeat(100 * 1024);
        for _ in 0..3 {
            let (pending, answer) = pending(&big);
            answers.push(answer);
            assert!(submit.try_send(pending).is_ok());
        }
        let batch = next_batch(&mut waiting, &mut carried).await.expect("batch");
        assert_eq!(batch.len(), 2, "three 100 KiB bodies exceed 256 KiB");
        assert!(carried.is_some(), "the third is kept, not lost");
        let batch = next_batch(&mut waiting, &mut carried).await.expect("batch");
        assert_eq!(batch.len(), 1);

        drop(submit);
        assert!(next_batch(&mut waiting, &mut carried).await.is_none());
    }

    #[tokio::test]
    async fn a_send_whose_caller_gave_up_is_not_sent() {
        let (submit, mut waiting) = mpsc::channel(8);
        let (kept, _kept_answer) = pending("kept");
        let (abandoned, abandoned_answer) = pending("abandoned");
        assert!(submit.try_send(kept).is_ok());
        assert!(submit.try_send(abandoned).is_ok());
        drop(abandoned_answer);
        let batch = next_batch(&mut waiting, &mut None).await.expect("batch");
        let bodies: Vec<&str> = batch.iter().map(|p| p.message.body.as_str()).collect();
        assert_eq!(bodies, ["kept"]);
    }

    #[tokio::test]
    async fn a_partial_failure_reaches_only_the_entries_that_failed() {
        // Entry 0 refused, entry 1 stored, entry 2 not answered.
        let sender = FakeSender::new(|_| {
            Ok(vec![
                Err(EnqueueError::Refused {
                    code: "InternalError".into(),
                    message: "try again".into(),
                    sender_fault: false,
                }),
                Ok("msg-b".into()),
            ])
        });
        let (a, a_answer) = pending("a");
        let (b, b_answer) = pending("b");
        let (c, c_answer) = pending("c");
        deliver(&sender, vec![a, b, c]).await;

        let a = a_answer.await.expect("answered");
        assert!(
            matches!(&a, Err(EnqueueError::Refused { code, .. }) if code == "InternalError"),
            "{a:?}"
        );
        assert_eq!(b_answer.await.expect("answered").expect("stored"), "msg-b");
        let c = c_answer.await.expect("answered");
        assert!(matches!(c, Err(EnqueueError::Unanswered)), "{c:?}");
    }

    #[tokio::test]
    async fn a_failed_batch_call_fails_every_entry() {
        let sender = FakeSender::new(|_| Err(EnqueueError::TimedOut(Duration::from_secs(5))));
        let (a, a_answer) = pending("a");
        let (b, b_answer) = pending("b");
        deliver(&sender, vec![a, b]).await;
        for answer in [a_answer, b_answer] {
            let result = answer.await.expect("answered");
            assert!(
                matches!(result, Err(EnqueueError::TimedOut(_))),
                "{result:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_send_without_an_answer_times_out() {
        let (sender, _gate) = FakeSender::gated(all_stored);
        let batcher = Batcher::spawn(
            sender,
            BatcherSettings {
                deadline: Duration::from_millis(50),
                ..settings(1)
            },
        );
        let result = batcher.send("a".into()).await;
        assert!(
            matches!(result, Err(EnqueueError::TimedOut(_))),
            "{result:?}"
        );
    }

    /// Panics on the first batch it sees, stores every later one.
    fn crash_once(
        entries: &[OrderMessage],
    ) -> Result<Vec<Result<String, EnqueueError>>, EnqueueError> {
        static CRASHED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !CRASHED.swap(true, std::sync::atomic::Ordering::SeqCst) {
            panic!("bug");
        }
        all_stored(entries)
    }

    #[tokio::test]
    async fn a_crashed_batch_answers_stopped_never_a_message_id_and_the_batcher_keeps_going() {
        let batcher = Batcher::spawn(FakeSender::new(crash_once), settings(1));
        let result = batcher.send("a".into()).await;
        assert!(matches!(result, Err(EnqueueError::Stopped)), "{result:?}");
        // The batcher itself survived the crash: the next order is stored.
        let next = batcher.send("b".into()).await;
        assert_eq!(next.expect("stored after the crash"), "msg-b");
    }

    #[tokio::test]
    async fn a_send_past_the_waiting_cap_is_refused_at_once() {
        let (sender, gate) = FakeSender::gated(all_stored);
        let batcher = Arc::new(Batcher::spawn(
            sender.clone(),
            BatcherSettings {
                capacity: 2,
                ..settings(1)
            },
        ));
        let send = |body: &str| {
            let (batcher, message) = (Arc::clone(&batcher), body.into());
            tokio::spawn(async move { batcher.send(message).await })
        };
        let first = send("first");
        until("the first batch is out", || sender.batches().len() == 1).await;
        let waiting = [send("w1"), send("w2")];
        until("two sends wait", || batcher.waiting() == 2).await;

        let refused = batcher.send("one too many".into()).await;
        assert!(
            matches!(refused, Err(EnqueueError::Overloaded)),
            "{refused:?}"
        );

        gate.add_permits(2);
        for handle in std::iter::once(first).chain(waiting) {
            assert!(handle.await.expect("send task").is_ok());
        }
        let sent: Vec<String> = sender.batches().concat();
        assert!(!sent.contains(&"one too many".to_owned()), "{sent:?}");
    }

    #[tokio::test]
    async fn a_batcher_whose_task_died_says_it_has_stopped() {
        let batcher = Batcher::spawn(FakeSender::new(all_stored), settings(1));
        assert!(!batcher.is_stopped());
        // Stands in for a panic in the batching task: the task is gone either way.
        batcher.task.abort();
        until("the task has ended", || batcher.is_stopped()).await;
        let result = batcher.send("a".into()).await;
        assert!(matches!(result, Err(EnqueueError::Stopped)), "{result:?}");
    }

    #[tokio::test]
    async fn once_closed_the_batcher_still_answers_the_batches_in_flight() {
        let (sender, gate) = FakeSender::gated(all_stored);
        let (submit, waiting) = mpsc::channel(8);
        let batcher = tokio::spawn(run(sender.clone(), waiting, 2));
        let (a, a_answer) = pending("a");
        assert!(submit.try_send(a).is_ok());
        until("the batch is out", || sender.batches().len() == 1).await;
        drop(submit);
        tokio::task::yield_now().await;
        assert!(!batcher.is_finished(), "stopped with a batch in flight");
        gate.add_permits(1);
        batcher.await.expect("batcher");
        assert_eq!(a_answer.await.expect("answered").expect("stored"), "msg-a");
    }
}
