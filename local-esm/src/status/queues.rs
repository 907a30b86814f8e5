//! A queue's depth (`GetQueueAttributes`) and its oldest message's age. SQS
//! gives the age only to CloudWatch (`ApproximateAgeOfOldestMessage`), and a
//! receive would spend one of the message's receives, so it is read from
//! LocalStack's listing, which touches neither visibility nor receive count
//! (<https://docs.localstack.cloud/aws/capabilities/config/internal-endpoints/>);
//! elsewhere it is `n/a`.

use aws_sdk_sqs::Client;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::queues::{Depth, QueueError, depth};

/// LocalStack's listing of a queue's messages, answered like `ReceiveMessage`.
const LISTING_PATH: &str = "/_aws/sqs/messages?ShowInvisible=true&ShowDelayed=true";

#[derive(Debug, Clone, PartialEq)]
pub struct QueueFigures {
    pub depth: Depth,
    pub oldest: Oldest,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Oldest {
    /// No message in the queue.
    Empty,
    Age(Duration),
    /// The endpoint lists no messages (it is not LocalStack).
    Unknown,
}

/// The queue's name: the last part of its URL.
pub fn name_of(url: &str) -> &str {
    url.trim_end_matches('/').rsplit('/').next().unwrap_or(url)
}

/// The queue's figures; the age is [`Oldest::Unknown`] when the listing fails.
pub async fn read(
    sqs: &Client,
    http: &reqwest::Client,
    endpoint: Option<&str>,
    url: &str,
) -> Result<QueueFigures, QueueError> {
    let depth = depth(sqs, url).await?;
    let oldest = match endpoint {
        _ if depth.total() == 0 => Oldest::Empty,
        None => Oldest::Unknown,
        Some(endpoint) => match oldest_sent(http, endpoint, url).await {
            Some(sent) => Oldest::Age(SystemTime::now().duration_since(sent).unwrap_or_default()),
            None => Oldest::Unknown,
        },
    };
    Ok(QueueFigures { depth, oldest })
}

/// When the oldest message in the queue was sent, from LocalStack's listing;
/// `None` when the listing is not there or holds no message.
async fn oldest_sent(http: &reqwest::Client, endpoint: &str, url: &str) -> Option<SystemTime> {
    let request = http
        .post(format!("{}{LISTING_PATH}", endpoint.trim_end_matches('/')))
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amz-target", "AmazonSQS.ReceiveMessage")
        .body(json!({ "QueueUrl": url }).to_string());
    let response = request.send().await.ok()?;
    let answer = response.error_for_status().ok()?.text().await.ok()?;
    oldest_in_listing(&answer)
}

/// The smallest `SentTimestamp` (milliseconds since the epoch) of a
/// `ReceiveMessage`-shaped JSON answer.
fn oldest_in_listing(answer: &str) -> Option<SystemTime> {
    let doc: Value = serde_json::from_str(answer).ok()?;
    let sent_ms = |m: &Value| {
        let ms = m.pointer("/Attributes/SentTimestamp")?.as_str()?;
        ms.parse::<u64>().ok()
    };
    let messages = doc.get("Messages")?.as_array()?;
    let oldest_ms = messages.iter().filter_map(sent_ms).min()?;
    Some(UNIX_EPOCH + Duration::from_millis(oldest_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_of_a_queue_is_the_end_of_its_url() {
        assert_eq!(
            name_of("http://127.0.0.1:4566/queue/us-east-1/000000000000/orders-dlq"),
            "orders-dlq"
        );
    }

    #[test]
    fn the_oldest_message_is_the_one_sent_first_whatever_its_place_in_the_listing() {
        let answer = r#"{"Messages":[
            {"MessageId":"b","Attributes":{"SentTimestamp":"1795544835500"}},
            {"MessageId":"a","Attributes":{"SentTimestamp":"1795544835000"}},
            {"MessageId":"c","Attributes":{}}]}"#;
        assert_eq!(
            oldest_in_listing(answer),
            Some(UNIX_EPOCH + Duration::from_millis(1_795_544_835_000))
        );
        assert_eq!(oldest_in_listing(r#"{"Messages":[]}"#), None);
        assert_eq!(oldest_in_listing("<xml/>"), None);
    }
}
