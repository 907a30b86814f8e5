//! Fresh SQS queues per test on the emulator.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};

use support::error_chain;
pub use support::queues::QueueSettings;
use support::queues::{Depth, QueueError, create_queues, depth, queue_arn};

use crate::{required_env, unique_name};

/// The emulator's endpoint, from `TEST_SQS_ENDPOINT`.
pub fn sqs_endpoint() -> String {
    required_env("TEST_SQS_ENDPOINT")
}

/// A client for the emulator with static test credentials.
pub async fn sqs_client() -> Client {
    sqs_client_at(&sqs_endpoint()).await
}

/// A client for an emulator at `endpoint` (one a test runs for itself).
pub async fn sqs_client_at(endpoint: &str) -> Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "testkit",
        ))
        .load()
        .await;
    Client::new(&config)
}

/// A queue with its own dead-letter queue, named for this test alone.
#[derive(Debug, Clone)]
pub struct TestQueues {
    pub sqs: Client,
    pub queue_url: String,
    pub queue_arn: String,
    pub dlq_url: String,
    pub dlq_arn: String,
}

impl TestQueues {
    pub async fn create(settings: QueueSettings) -> Self {
        Self::create_with(sqs_client().await, settings).await
    }

    /// On the emulator at `endpoint` instead of the shared one: for a test that
    /// stops its emulator, which must not take the other tests' queues with it.
    pub async fn create_at(endpoint: &str, settings: QueueSettings) -> Self {
        Self::create_with(sqs_client_at(endpoint).await, settings).await
    }

    async fn create_with(sqs: Client, settings: QueueSettings) -> Self {
        let name = unique_name("orders");
        let urls = create_queues(&sqs, &name, &format!("{name}-dlq"), settings).await;
        let urls = urls.unwrap_or_else(fail);
        Self {
            queue_arn: queue_arn(&sqs, &urls.queue_url).await.unwrap_or_else(fail),
            dlq_arn: queue_arn(&sqs, &urls.dlq_url).await.unwrap_or_else(fail),
            sqs,
            queue_url: urls.queue_url,
            dlq_url: urls.dlq_url,
        }
    }

    /// Sends raw bodies to the source queue, as any producer could.
    pub async fn send_bodies(&self, bodies: &[String]) -> Vec<String> {
        let mut ids = Vec::new();
        for body in bodies {
            let sent = self
                .sqs
                .send_message()
                .queue_url(&self.queue_url)
                .message_body(body)
                .send()
                .await
                .expect("send a message to the test queue");
            ids.push(sent.message_id().unwrap_or_default().to_owned());
        }
        ids
    }

    /// Visible, in-flight and delayed messages of the source queue (a requeued
    /// copy waits out its `DelaySeconds` as a delayed message).
    pub async fn depth(&self) -> u64 {
        depth_of(&self.sqs, &self.queue_url).await.total()
    }

    /// Visible, in-flight and delayed messages of the dead-letter queue.
    pub async fn dlq_depth(&self) -> u64 {
        depth_of(&self.sqs, &self.dlq_url).await.total()
    }

    /// Receives every message of the dead-letter queue (hiding them for 60 s).
    pub async fn receive_dlq(&self) -> Vec<Message> {
        let mut all = Vec::new();
        loop {
            let received = self
                .sqs
                .receive_message()
                .queue_url(&self.dlq_url)
                .max_number_of_messages(10)
                .visibility_timeout(60)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .expect("receive from the test DLQ");
            let batch = received.messages.unwrap_or_default();
            if batch.is_empty() {
                return all;
            }
            all.extend(batch);
        }
    }
}

/// (visible, in flight) messages of a queue.
pub async fn queue_depth(sqs: &Client, url: &str) -> (u64, u64) {
    let depth = depth_of(sqs, url).await;
    (depth.visible, depth.in_flight)
}

fn fail<T>(err: QueueError) -> T {
    panic!("create the test queues: {}", error_chain(&err))
}

async fn depth_of(sqs: &Client, url: &str) -> Depth {
    depth(sqs, url)
        .await
        .unwrap_or_else(|err| panic!("{}", error_chain(&err)))
}
