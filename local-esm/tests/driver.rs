//! The local event source mapping against the SQS emulator, with fake handlers.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName};
use local_esm::{
    BatchHandler, BatchOutcome, Driver, EventSourceSettings, Function, InvocationError, Template,
};
use support::queues::create_queues;
use testkit::{QueueSettings, TestQueues, eventually, unique_name};
use tokio::time::Instant;

/// Fails the records whose body starts with "fail", records what it saw.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<SqsEvent>>,
    running: AtomicUsize,
    peak: AtomicUsize,
    delay: Duration,
    deadlines: Mutex<Vec<Instant>>,
    /// Records failed by a bad release, as the figures count them.
    unfinished: AtomicUsize,
}

impl BatchHandler for Recorder {
    async fn handle(
        &self,
        event: SqsEvent,
        deadline: Instant,
    ) -> Result<SqsBatchResponse, InvocationError> {
        self.deadlines.lock().expect("lock").push(deadline);
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        let mut response = SqsBatchResponse::default();
        response.set_failures(
            event
                .records
                .iter()
                .filter(|r| r.body.as_deref().unwrap_or_default().starts_with("fail"))
                .filter_map(|r| r.message_id.clone()),
        );
        self.events.lock().expect("lock").push(event);
        self.running.fetch_sub(1, Ordering::SeqCst);
        Ok(response)
    }

    fn unfinished(&self, records: usize) {
        self.unfinished.fetch_add(records, Ordering::SeqCst);
    }
}

struct Broken;

impl BatchHandler for Broken {
    async fn handle(
        &self,
        event: SqsEvent,
        _deadline: Instant,
    ) -> Result<SqsBatchResponse, InvocationError> {
        if event.records.len() > 1 {
            panic!("the handler blew up");
        }
        let mut response = SqsBatchResponse::default();
        response.add_failure("not-a-message-of-this-batch");
        Ok(response)
    }
}

fn settings(batch_size: usize, window_ms: u64, max_concurrency: usize) -> EventSourceSettings {
    EventSourceSettings {
        batch_size,
        batching_window: Duration::from_millis(window_ms),
        max_concurrency,
        function_timeout: Duration::from_secs(30),
    }
}

fn bodies(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test]
async fn stored_records_are_deleted_and_failed_ones_reach_the_dlq_after_max_receive_count() {
    testkit::init_tracing();
    let queues = TestQueues::create(QueueSettings {
        visibility_timeout_secs: 1,
        max_receive_count: 3,
        ..QueueSettings::default()
    })
    .await;
    let mut sent = bodies("ok", 6);
    sent.extend(bodies("fail", 2));
    queues.send_bodies(&sent).await;
    let driver = Driver::new(
        queues.sqs.clone(),
        &queues.queue_url,
        settings(10, 200, 2),
        Recorder::default(),
    )
    .await
    .expect("driver");

    let run = driver.run(async {
        eventually(
            "both failing records in the DLQ",
            Duration::from_secs(30),
            || async {
                let in_dlq = queues.dlq_depth().await;
                if in_dlq == 2 && queues.depth().await == 0 {
                    Ok(())
                } else {
                    Err(in_dlq)
                }
            },
        )
        .await;
    });
    tokio::time::timeout(Duration::from_secs(40), run)
        .await
        .expect("the driver stops");

    let dead: HashSet<String> = queues
        .receive_dlq()
        .await
        .iter()
        .filter_map(|m| m.body.clone())
        .collect();
    assert_eq!(
        dead,
        HashSet::from(["fail-0".to_owned(), "fail-1".to_owned()])
    );
    // Each good record was handed over exactly once; each bad one three times.
    let events = driver_events(&driver);
    let seen: Vec<String> = events
        .iter()
        .flat_map(|e| e.records.iter().filter_map(|r| r.body.clone()))
        .collect();
    assert_eq!(seen.iter().filter(|b| b.starts_with("ok")).count(), 6);
    assert_eq!(seen.iter().filter(|b| *b == "fail-0").count(), 3);
}

fn driver_events(driver: &Driver<Recorder>) -> Vec<SqsEvent> {
    driver.handler().events.lock().expect("lock").clone()
}

#[tokio::test]
async fn records_arrive_as_lambda_delivers_them_with_attributes_and_receive_counts() {
    let queues = TestQueues::create(QueueSettings::default()).await;
    queues
        .sqs
        .send_message()
        .queue_url(&queues.queue_url)
        .message_body("ok-with-attributes")
        .message_attributes(
            "trace",
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value("abc")
                .build()
                .expect("attribute"),
        )
        .send()
        .await
        .expect("sent");
    let driver = Driver::new(
        queues.sqs.clone(),
        &queues.queue_url,
        settings(10, 0, 1),
        Recorder::default(),
    )
    .await
    .expect("driver");
    let outcome = driver.poll_once().await.expect("polled");
    assert_eq!(
        outcome,
        BatchOutcome {
            received: 1,
            deleted: 1,
            retried: 0
        }
    );
    let record = driver_events(&driver)[0].records[0].clone();
    assert_eq!(record.body.as_deref(), Some("ok-with-attributes"));
    assert_eq!(record.event_source.as_deref(), Some("aws:sqs"));
    assert_eq!(
        record.event_source_arn.as_deref(),
        Some(queues.queue_arn.as_str())
    );
    assert_eq!(record.aws_region.as_deref(), Some("us-east-1"));
    assert_eq!(
        record
            .attributes
            .get("ApproximateReceiveCount")
            .map(String::as_str),
        Some("1")
    );
    assert!(record.attributes.contains_key("SentTimestamp"));
    assert_eq!(
        record.message_attributes["trace"].string_value.as_deref(),
        Some("abc")
    );
    assert!(record.receipt_handle.is_some() && record.md5_of_body.is_some());
    assert_eq!(queues.depth().await, 0);
}

#[tokio::test]
async fn the_batching_window_gathers_up_to_the_batch_size_in_one_invocation() {
    let queues = TestQueues::create(QueueSettings::default()).await;
    queues.send_bodies(&bodies("ok", 35)).await;
    let driver = Driver::new(
        queues.sqs.clone(),
        &queues.queue_url,
        settings(25, 2_000, 1),
        Recorder::default(),
    )
    .await
    .expect("driver");
    let first = driver.poll_once().await.expect("polled");
    assert_eq!(first.received, 25, "a full batch ends the window early");
    let second = driver.poll_once().await.expect("polled");
    assert_eq!(second.received, 10, "the window ends a partial batch");
    assert_eq!(queues.depth().await, 0);
}

#[tokio::test]
async fn no_more_than_max_concurrency_invocations_run_at_once() {
    let queues = TestQueues::create(QueueSettings::default()).await;
    queues.send_bodies(&bodies("ok", 40)).await;
    let handler = Recorder {
        delay: Duration::from_millis(300),
        ..Recorder::default()
    };
    let driver = Driver::new(
        queues.sqs.clone(),
        &queues.queue_url,
        settings(2, 0, 3),
        handler,
    )
    .await
    .expect("driver");
    driver
        .run(async {
            eventually("the queue to drain", Duration::from_secs(30), || async {
                match queues.depth().await {
                    0 => Ok(()),
                    n => Err(n),
                }
            })
            .await;
        })
        .await;
    let peak = driver.handler().peak.load(Ordering::SeqCst);
    assert!((2..=3).contains(&peak), "peak concurrency {peak}");
}

#[tokio::test]
async fn an_invocation_that_panics_or_names_a_stranger_acknowledges_nothing() {
    let queues = TestQueues::create(QueueSettings::default()).await;
    queues.send_bodies(&bodies("ok", 3)).await;
    let driver = Driver::new(
        queues.sqs.clone(),
        &queues.queue_url,
        settings(10, 500, 1),
        Broken,
    )
    .await
    .expect("driver");
    let panicked = driver.poll_once().await.expect("polled");
    assert_eq!(
        panicked,
        BatchOutcome {
            received: 3,
            deleted: 0,
            retried: 3
        },
        "the whole batch was handed over, and none of it acknowledged"
    );

    let single = TestQueues::create(QueueSettings::default()).await;
    single.send_bodies(&bodies("ok", 1)).await;
    let driver = Driver::new(
        single.sqs.clone(),
        &single.queue_url,
        settings(10, 0, 1),
        Broken,
    )
    .await
    .expect("driver");
    let stranger = driver.poll_once().await.expect("polled");
    assert_eq!(
        stranger,
        BatchOutcome {
            received: 1,
            deleted: 0,
            retried: 1
        }
    );
    assert_eq!(queues.depth().await, 3);
    assert_eq!(single.depth().await, 1);
}

#[tokio::test]
async fn an_invocation_past_the_function_timeout_is_abandoned_and_acknowledges_nothing() {
    testkit::init_tracing();
    let queues = TestQueues::create(QueueSettings::default()).await;
    queues.send_bodies(&bodies("ok", 2)).await;
    let handler = Recorder {
        delay: Duration::from_secs(60),
        ..Recorder::default()
    };
    let timeout = Duration::from_millis(800);
    let driver = Driver::new(
        queues.sqs.clone(),
        &queues.queue_url,
        EventSourceSettings {
            function_timeout: timeout,
            ..settings(10, 300, 1)
        },
        handler,
    )
    .await
    .expect("driver");
    let started = Instant::now();
    let outcome = driver.poll_once().await.expect("polled");
    assert_eq!(
        outcome,
        BatchOutcome {
            received: 2,
            deleted: 0,
            retried: 2
        }
    );
    // The handler was told the deadline Lambda would give it.
    let deadline = driver.handler().deadlines.lock().expect("lock")[0];
    assert!(
        deadline > started && deadline <= Instant::now(),
        "{deadline:?}"
    );
    assert!(
        driver.handler().events.lock().expect("lock").is_empty(),
        "the handler never finished"
    );
    assert_eq!(queues.depth().await, 2, "nothing was deleted");
}

#[tokio::test]
async fn the_local_queues_get_exactly_the_settings_of_the_sam_template() {
    let template = Template::from_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../infra/template.yaml"
    ))
    .expect("template");
    let sqs = testkit::sqs_client().await;
    let name = unique_name("orders");
    let urls = create_queues(&sqs, &name, &format!("{name}-dlq"), template.queues)
        .await
        .expect("created");
    // Idempotent: a second run (scripts/dev restarted) succeeds with the same URLs.
    let again = create_queues(&sqs, &name, &format!("{name}-dlq"), template.queues)
        .await
        .expect("again");
    assert_eq!(urls, again);

    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&urls.queue_url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .expect("attributes");
    let get = |name: QueueAttributeName| {
        attributes
            .attributes()
            .and_then(|a| a.get(&name))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        get(QueueAttributeName::VisibilityTimeout),
        template.queues.visibility_timeout_secs.to_string()
    );
    assert_eq!(
        get(QueueAttributeName::MessageRetentionPeriod),
        template.queues.retention_secs.to_string()
    );
    let redrive: serde_json::Value =
        serde_json::from_str(&get(QueueAttributeName::RedrivePolicy)).expect("json");
    assert_eq!(
        redrive["maxReceiveCount"].to_string().trim_matches('"'),
        template.queues.max_receive_count.to_string()
    );
    let dlq_arn = support::queues::queue_arn(&sqs, &urls.dlq_url)
        .await
        .expect("arn");
    assert_eq!(redrive["deadLetterTargetArn"], dlq_arn.as_str());

    let dlq_attributes = sqs
        .get_queue_attributes()
        .queue_url(&urls.dlq_url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .expect("DLQ attributes");
    let redrive_allow: serde_json::Value = serde_json::from_str(
        dlq_attributes
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::RedriveAllowPolicy))
            .expect("the DLQ has a redrive-allow policy, as in the template"),
    )
    .expect("json");
    let queue_arn = support::queues::queue_arn(&sqs, &urls.queue_url)
        .await
        .expect("arn");
    assert_eq!(
        redrive_allow,
        serde_json::json!({"redrivePermission": "byQueue", "sourceQueueArns": [queue_arn]})
    );
}

#[tokio::test]
async fn a_paused_mapping_receives_nothing_so_waiting_records_keep_their_receives() {
    testkit::init_tracing();
    // Records that always fail would reach the DLQ after 3 receives of 1 s each.
    let queues = TestQueues::create(QueueSettings {
        visibility_timeout_secs: 1,
        max_receive_count: 3,
        ..QueueSettings::default()
    })
    .await;
    queues.send_bodies(&bodies("fail", 3)).await;
    let driver = Driver::new(
        queues.sqs.clone(),
        &queues.queue_url,
        settings(10, 200, 2),
        Recorder::default(),
    )
    .await
    .expect("driver");
    let switch = driver.switch();
    switch.set(false);

    let run = driver.run(async {
        // Paused for longer than the records would take to reach the DLQ: a
        // duration is what this checks, no condition can stand for it.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            queues.dlq_depth().await,
            0,
            "nothing was received while paused"
        );
        assert_eq!(
            queues.depth().await,
            3,
            "the records wait in the queue, visible"
        );
        switch.set(true);
        eventually(
            "the resumed mapping to receive them",
            Duration::from_secs(30),
            || async {
                match driver.handler().events.lock().expect("lock").len() {
                    0 => Err(0),
                    _ => Ok(()),
                }
            },
        )
        .await;
    });
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the driver stops");
    let events = driver.handler().events.lock().expect("lock");
    let first = events.first().expect("a batch");
    assert!(
        first.records.iter().all(|r| r
            .attributes
            .get("ApproximateReceiveCount")
            .map(String::as_str)
            == Some("1")),
        "the first receive after the pause is each record's first"
    );
}

/// Steps the driver until `records` records were received in all; the sum.
async fn poll_until_received(driver: &Driver<Recorder>, records: usize) -> BatchOutcome {
    let total = Mutex::new(BatchOutcome::default());
    eventually(
        &format!("{records} records received"),
        Duration::from_secs(30),
        || async {
            let outcome = driver.poll_once().await.expect("poll");
            let mut total = total.lock().expect("lock");
            total.received += outcome.received;
            total.deleted += outcome.deleted;
            total.retried += outcome.retried;
            if total.received >= records {
                Ok(())
            } else {
                Err(total.received)
            }
        },
    )
    .await;
    total.into_inner().expect("lock")
}

#[tokio::test]
async fn a_throttled_function_or_a_bad_release_never_runs_the_handler_and_each_spends_a_receive() {
    testkit::init_tracing();
    let queues = TestQueues::create(QueueSettings {
        visibility_timeout_secs: 1,
        max_receive_count: 5,
        ..QueueSettings::default()
    })
    .await;
    queues.send_bodies(&bodies("ok", 3)).await;
    let driver = Driver::new(
        queues.sqs.clone(),
        &queues.queue_url,
        settings(10, 200, 1),
        Recorder::default(),
    )
    .await
    .expect("driver");
    let function = driver.function();

    // A throttle is no function error: only the bad releases' batches are
    // counted as unfinished, as Lambda's Errors and the consumer's figures do.
    for (fault, unfinished) in [
        (Function::Throttled, 0),
        (Function::FailingInit, 3),
        (Function::FailingBatches, 6),
    ] {
        function.set(fault);
        let outcome = poll_until_received(&driver, 3).await;
        assert_eq!((outcome.deleted, outcome.retried), (0, 3), "{fault:?}");
        assert!(
            driver_events(&driver).is_empty(),
            "{fault:?} ran the handler"
        );
        assert_eq!(
            driver.handler().unfinished.load(Ordering::SeqCst),
            unfinished,
            "{fault:?}"
        );
    }
    function.set(Function::Running);
    let outcome = poll_until_received(&driver, 3).await;
    assert_eq!(outcome.deleted, 3);
    let events = driver_events(&driver);
    let counts: Vec<&str> = events
        .iter()
        .flat_map(|e| &e.records)
        .filter_map(|r| r.attributes.get("ApproximateReceiveCount"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        counts,
        ["4", "4", "4"],
        "the throttled and the two failed invocations each spent a receive"
    );
    assert_eq!(queues.depth().await, 0);
    assert_eq!(queues.dlq_depth().await, 0);
}
