//! Queues, messages and probes shared by the emulator tests.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{Message, MessageAttributeValue};
use order_contract::{Failure, FailureClass};
use replay_dlq::{Error, Lines, Options, Report, replay};
use testkit::{QueueSettings, TestQueues, eventually};
use tokio::sync::watch;

/// One receive moves a message on: the next receive sends it to the DLQ, as
/// the consumer's last failure would after `maxReceiveCount`.
const DEAD_LETTER_FAST: QueueSettings = QueueSettings {
    visibility_timeout_secs: 30,
    max_receive_count: 1,
    ..QueueSettings::SQS_DEFAULTS
};

pub(crate) async fn queues() -> TestQueues {
    testkit::init_tracing();
    TestQueues::create(DEAD_LETTER_FAST).await
}

/// A valid `OrderPlaced` body, as the producer writes it.
pub(crate) fn valid_body(n: usize) -> String {
    order_contract::fixtures::order_placed_body(n, 1, "2026-11-24T18:00:00Z".parse().expect("time"))
}

/// Bodies the consumer rejects, each for a different reason.
pub(crate) fn poison_bodies() -> Vec<String> {
    vec![
        "this is not JSON".to_owned(),
        r#"{"greeting": "hello, not an order"}"#.to_owned(),
        with(valid_body(900), |body| body["currency"] = "euro".into()),
        with(valid_body(901), |body| {
            body["items"][0]["quantity"] = 0.into()
        }),
    ]
}

/// `body` with one field changed.
fn with(body: String, change: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    change(&mut body);
    body.to_string()
}

pub(crate) fn order_id(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    value["order_id"].as_str().map(str::to_owned)
}

/// Attributes of every kind SQS has, binary bytes that are not UTF-8 included.
pub(crate) fn attributes(n: usize) -> HashMap<String, MessageAttributeValue> {
    let value = |data_type: &str, text: Option<String>, bytes: Option<Vec<u8>>| {
        MessageAttributeValue::builder()
            .data_type(data_type)
            .set_string_value(text)
            .set_binary_value(bytes.map(Blob::new))
            .build()
            .expect("an attribute")
    };
    HashMap::from([
        (
            "source".to_owned(),
            value("String", Some(format!("shop-{n} ✓ \"quoted\"")), None),
        ),
        (
            "attempt".to_owned(),
            value("Number", Some(format!("{n}.50")), None),
        ),
        (
            "trace".to_owned(),
            value("Binary", None, Some(vec![0, 159, 146, 150, 255, n as u8])),
        ),
        (
            "kind".to_owned(),
            value("String.custom", Some("order".to_owned()), None),
        ),
    ])
}

/// Sends straight to the DLQ (for tests that name the destination themselves
/// or need attributes on the messages).
pub(crate) async fn send_to_dlq(queues: &TestQueues, bodies: &[String], with_attributes: bool) {
    for (n, body) in bodies.iter().enumerate() {
        queues
            .sqs
            .send_message()
            .queue_url(&queues.dlq_url)
            .message_body(body)
            .set_message_attributes(with_attributes.then(|| attributes(n)))
            .send()
            .await
            .expect("send to the test DLQ");
    }
}

/// Puts the bodies into the DLQ the way production does: through the source
/// queue and its redrive policy.
pub(crate) async fn dead_letter(queues: &TestQueues, bodies: &[String]) {
    queues.send_bodies(bodies).await;
    let expected = bodies.len() as u64;
    eventually(
        "every message redriven to the DLQ",
        Duration::from_secs(30),
        || async {
            // A receive that makes the message visible again at once; the next
            // one exceeds maxReceiveCount and moves it to the DLQ.
            queues
                .sqs
                .receive_message()
                .queue_url(&queues.queue_url)
                .max_number_of_messages(10)
                .visibility_timeout(0)
                .send()
                .await
                .expect("receive from the source queue");
            match depth(&queues.sqs, &queues.dlq_url).await {
                (visible, 0) if visible == expected => Ok(()),
                state => Err(state),
            }
        },
    )
    .await;
}

/// (visible, in flight) messages of a queue.
pub(crate) use testkit::queue_depth as depth;

/// Receives every message of a queue, with all attributes (hiding them for a minute).
pub(crate) async fn drain(sqs: &Client, url: &str) -> Vec<Message> {
    let mut all = Vec::new();
    loop {
        let received = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(60)
            .message_attribute_names("All")
            .send()
            .await
            .expect("receive");
        let batch = received.messages.unwrap_or_default();
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}

pub(crate) fn bodies(messages: &[Message]) -> Vec<String> {
    let mut bodies: Vec<String> = messages
        .iter()
        .map(|m| m.body().unwrap_or_default().to_owned())
        .collect();
    bodies.sort();
    bodies
}

pub(crate) fn sorted(bodies: &[String]) -> Vec<String> {
    let mut bodies = bodies.to_vec();
    bodies.sort();
    bodies
}

/// A stop signal that never fires.
pub(crate) fn never_stop() -> watch::Receiver<bool> {
    watch::channel(false).1
}

/// Runs a replay to completion with captured progress; returns its report and
/// the notes it printed (one line per message skipped, failed or listed).
pub(crate) async fn run_replay(
    sqs: &Client,
    dlq_url: &str,
    destination_url: &str,
    options: &Options,
) -> Result<(Report, String), Error> {
    let mut progress = captured();
    let report = replay(
        sqs,
        dlq_url,
        destination_url,
        options,
        &mut progress,
        never_stop(),
    )
    .await?;
    Ok((report, notes(progress)))
}

/// Progress that captures notes and progress lines for assertions.
pub(crate) fn captured() -> Lines<Vec<u8>, Vec<u8>> {
    Lines::new("replay", Vec::new(), Vec::new())
}

pub(crate) fn notes(progress: Lines<Vec<u8>, Vec<u8>>) -> String {
    String::from_utf8(progress.into_inner().0).expect("UTF-8 notes")
}

/// A failure as the consumer records it on a DLQ message.
pub(crate) fn failure(class: FailureClass, detail: &str) -> Failure {
    Failure {
        class,
        detail: Some(detail.to_owned()),
        message_id: Some("the-original-message-id".to_owned()),
        receive_count: Some(1),
        failed_at: Some("2026-12-02T16:30:00Z".parse().expect("time")),
        consumer_version: Some("0.1.0".to_owned()),
    }
}

/// The message attributes the consumer adds to a DLQ copy, from the contract.
pub(crate) fn failure_attributes(failure: &Failure) -> HashMap<String, MessageAttributeValue> {
    failure
        .attributes()
        .into_iter()
        .map(|a| {
            let value = MessageAttributeValue::builder()
                .data_type(a.data_type)
                .string_value(a.value)
                .build()
                .expect("an attribute");
            (a.name.to_owned(), value)
        })
        .collect()
}

/// Sends `body` to the DLQ the way the consumer dead-letters poison: its own
/// attributes plus the failure's.
pub(crate) async fn send_failed(
    queues: &TestQueues,
    body: &str,
    own: HashMap<String, MessageAttributeValue>,
    failure: &Failure,
) {
    let mut attributes = own;
    attributes.extend(failure_attributes(failure));
    queues
        .sqs
        .send_message()
        .queue_url(&queues.dlq_url)
        .message_body(body)
        .set_message_attributes(Some(attributes))
        .send()
        .await
        .expect("send to the test DLQ");
}

/// A directory of this test's own for export files, removed when dropped.
pub(crate) struct Scratch(pub(crate) std::path::PathBuf);

impl Scratch {
    pub(crate) fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("replay-dlq-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        Self(dir)
    }

    pub(crate) fn file(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The records of an export file; a last line cut short by a kill is left out.
pub(crate) fn records(path: &std::path::Path) -> Vec<replay_dlq::Record> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut records = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        match replay_dlq::Record::from_line(line) {
            Ok((record, _)) => records.push(record),
            Err(err) if n + 1 == lines.len() && !text.ends_with('\n') => {
                eprintln!("last line cut short: {err}");
            }
            Err(err) => panic!("line {} of {}: {err}", n + 1, path.display()),
        }
    }
    records
}

/// A DLQ as it fills once the consumer dead-letters poison itself: messages
/// with the failure attributes, and some without (moved by the redrive policy).
pub(crate) async fn mixed_dlq(queues: &TestQueues) -> Vec<String> {
    let refused: Vec<String> = (0..2).map(|n| valid_body(100 + n)).collect();
    for body in &refused {
        send_failed(
            queues,
            body,
            HashMap::new(),
            &failure(
                FailureClass::RowRefused,
                "23514: new row violates check constraint",
            ),
        )
        .await;
    }
    send_failed(
        queues,
        "this is not JSON",
        HashMap::new(),
        &failure(
            FailureClass::InvalidJson,
            "not valid JSON at line 1 column 1",
        ),
    )
    .await;
    // No attributes: one the contract refuses, two valid ones (redriven).
    let unrecorded = vec![poison_bodies()[3].clone(), valid_body(1), valid_body(2)];
    send_to_dlq(queues, &unrecorded, false).await;
    [refused, vec!["this is not JSON".to_owned()], unrecorded].concat()
}
