//! The queue pair created the way the template declares it, by `local-esm`
//! and by every test alike.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;

/// The queue pair's settings: the template's, or a test's scaled down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    pub visibility_timeout_secs: u32,
    pub retention_secs: u32,
    pub dlq_retention_secs: u32,
    pub max_receive_count: u32,
}

impl QueueSettings {
    /// SQS's own defaults, the DLQ kept for SQS's longest, 5 receives before it.
    pub const SQS_DEFAULTS: Self = Self {
        visibility_timeout_secs: 30,
        retention_secs: 4 * 24 * 3600,
        dlq_retention_secs: 14 * 24 * 3600,
        max_receive_count: 5,
    };
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self::SQS_DEFAULTS
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "could not {action} on the SQS endpoint (is the emulator running and AWS_ENDPOINT_URL set?)"
)]
pub struct QueueError {
    action: String,
    #[source]
    source: aws_sdk_sqs::Error,
}

impl QueueError {
    pub fn new(action: impl Into<String>, err: impl Into<aws_sdk_sqs::Error>) -> Self {
        Self {
            action: action.into(),
            source: err.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueUrls {
    pub queue_url: String,
    pub dlq_url: String,
}

/// A queue's messages by state (`GetQueueAttributes`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

impl Depth {
    pub fn total(&self) -> u64 {
        self.visible + self.in_flight + self.delayed
    }
}

pub async fn depth(sqs: &Client, url: &str) -> Result<Depth, QueueError> {
    use QueueAttributeName::{
        ApproximateNumberOfMessages as Visible, ApproximateNumberOfMessagesDelayed as Delayed,
        ApproximateNumberOfMessagesNotVisible as InFlight,
    };
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(url)
        .set_attribute_names(Some(vec![Visible, InFlight, Delayed]))
        .send()
        .await
        .map_err(|err| QueueError::new(format!("read the depth of {url}"), err))?;
    let [visible, in_flight, delayed] = [Visible, InFlight, Delayed].map(|name| {
        let value = attributes.attributes().and_then(|a| a.get(&name));
        value.and_then(|v| v.parse().ok()).unwrap_or(0)
    });
    Ok(Depth {
        visible,
        in_flight,
        delayed,
    })
}

/// Creates (or updates) the DLQ, then the source queue with its redrive policy,
/// then allows only that queue to use the DLQ. Idempotent.
pub async fn create_queues(
    sqs: &Client,
    queue_name: &str,
    dlq_name: &str,
    settings: QueueSettings,
) -> Result<QueueUrls, QueueError> {
    use QueueAttributeName::{
        MessageRetentionPeriod as Retention, RedriveAllowPolicy, RedrivePolicy, VisibilityTimeout,
    };
    let dlq_url = ensure_queue(sqs, dlq_name).await?;
    let retention = settings.dlq_retention_secs.to_string();
    set_attributes(sqs, &dlq_url, [(Retention, retention)]).await?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": queue_arn(sqs, &dlq_url).await?,
        "maxReceiveCount": settings.max_receive_count,
    });
    let queue_url = ensure_queue(sqs, queue_name).await?;
    let visibility = settings.visibility_timeout_secs.to_string();
    let attributes = [
        (VisibilityTimeout, visibility),
        (Retention, settings.retention_secs.to_string()),
        (RedrivePolicy, redrive.to_string()),
    ];
    set_attributes(sqs, &queue_url, attributes).await?;
    // As in the template: the DLQ takes dead letters (and gives replays back)
    // only for the orders queue, whose ARN exists only now.
    let allow = serde_json::json!({
        "redrivePermission": "byQueue",
        "sourceQueueArns": [queue_arn(sqs, &queue_url).await?],
    });
    set_attributes(sqs, &dlq_url, [(RedriveAllowPolicy, allow.to_string())]).await?;
    Ok(QueueUrls { queue_url, dlq_url })
}

async fn ensure_queue(sqs: &Client, name: &str) -> Result<String, QueueError> {
    let created = sqs.create_queue().queue_name(name).send().await;
    let created = created.map_err(|err| QueueError::new(format!("create queue {name}"), err))?;
    Ok(created.queue_url.unwrap_or_default())
}

async fn set_attributes<const N: usize>(
    sqs: &Client,
    url: &str,
    attributes: [(QueueAttributeName, String); N],
) -> Result<(), QueueError> {
    let update = sqs.set_queue_attributes().queue_url(url);
    let updated = update.set_attributes(Some(attributes.into())).send().await;
    updated.map_err(|err| QueueError::new(format!("set the attributes of {url}"), err))?;
    Ok(())
}

/// Reads a queue's ARN; never derived from its URL, which differs between endpoints.
pub async fn queue_arn(sqs: &Client, url: &str) -> Result<String, QueueError> {
    let response = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|err| QueueError::new(format!("read the ARN of {url}"), err))?;
    Ok(response
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .unwrap_or_default())
}
