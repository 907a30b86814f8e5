//! SQS as every crate calls it: [`SqsError`] classifies a failed call;
//! [`send_all`] and [`send_batch`] send in batches with an [`Outcome`] per
//! entry; [`change_visibility`] for many messages at once.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, MessageAttributeValue, SendMessageBatchRequestEntry,
};
use futures::stream::{self, StreamExt};

/// SendMessageBatch's limits: ten entries, and 1 MiB for one message and for
/// the sum of a batch's messages
/// (<https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessageBatch.html>).
pub const MAX_BATCH_ENTRIES: usize = 10;
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
pub const MAX_MESSAGE_BYTES: usize = MAX_BATCH_BYTES;
/// Batch calls in flight at once.
pub const CALLS_IN_FLIGHT: usize = 16;

/// A message's size as SQS counts it: the body, and each attribute's name,
/// type and value (<https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_MessageAttributeValue.html>).
pub fn message_size(
    body: &str,
    attributes: Option<&HashMap<String, MessageAttributeValue>>,
) -> usize {
    let attributes = attributes.into_iter().flatten();
    body.len()
        + attributes
            .map(|(name, value)| attribute_size(name, value))
            .sum::<usize>()
}

pub fn attribute_size(name: &str, value: &MessageAttributeValue) -> usize {
    name.len()
        + value.data_type().len()
        + value.string_value().map_or(0, str::len)
        + value.binary_value().map_or(0, |b| b.as_ref().len())
}

/// [`message_size`] of an entry. Its system attributes (a trace header) do not
/// count (<https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessage.html>).
pub fn entry_size(entry: &SendMessageBatchRequestEntry) -> usize {
    message_size(entry.message_body(), entry.message_attributes())
}

/// Consecutive groups of at most [`MAX_BATCH_ENTRIES`] items whose sizes add
/// up to at most [`MAX_BATCH_BYTES`]; an item larger than that goes alone
/// (SQS then refuses it alone, not its neighbours).
pub fn batches<T>(items: impl IntoIterator<Item = T>, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut groups: Vec<Vec<T>> = Vec::new();
    let mut bytes = 0;
    for item in items {
        let item_bytes = size(&item);
        match groups.last_mut() {
            Some(group)
                if group.len() < MAX_BATCH_ENTRIES && bytes + item_bytes <= MAX_BATCH_BYTES =>
            {
                bytes += item_bytes;
                group.push(item);
            }
            _ => {
                bytes = item_bytes;
                groups.push(vec![item]);
            }
        }
    }
    groups
}

/// What became of one entry of a batch.
#[derive(Debug, Clone)]
pub enum Outcome {
    Sent {
        message_id: String,
    },
    /// `sender_fault`: resending it as it is can never pass.
    Refused {
        code: String,
        message: String,
        sender_fault: bool,
    },
    /// Neither sent nor refused: treat it as not sent.
    Unreported,
    /// The call carrying it failed as a whole.
    NotSent(Arc<SqsError>),
}

impl Outcome {
    /// Why it is not on the queue, in one line; `None` once sent.
    pub fn problem(&self) -> Option<String> {
        match self {
            Self::Sent { .. } => None,
            Self::Refused { code, message, .. } => Some(format!("{code}: {message}")),
            Self::Unreported => Some("SQS did not report this entry".to_owned()),
            Self::NotSent(err) => Some(err.to_string()),
        }
    }
}

/// One SendMessageBatch call with the entries as given (at most ten; their
/// ids are replaced by their positions); one [`Outcome`] per entry, in order.
/// An error means the call failed as a whole: nothing is known to be sent.
pub async fn send_batch(
    client: &Client,
    queue_url: &str,
    mut entries: Vec<SendMessageBatchRequestEntry>,
) -> Result<Vec<Outcome>, SqsError> {
    for (index, entry) in entries.iter_mut().enumerate() {
        entry.id = index.to_string();
    }
    let count = entries.len();
    let output = client
        .send_message_batch()
        .queue_url(queue_url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|err| SqsError::new(format!("send a batch to {queue_url}"), err))?;
    let mut outcomes = vec![Outcome::Unreported; count];
    for sent in output.successful {
        if let Some(outcome) = by_id(&mut outcomes, &sent.id) {
            *outcome = Outcome::Sent {
                message_id: sent.message_id,
            };
        }
    }
    for refused in output.failed {
        if let Some(outcome) = by_id(&mut outcomes, &refused.id) {
            *outcome = Outcome::Refused {
                code: refused.code,
                message: refused.message.unwrap_or_default(),
                sender_fault: refused.sender_fault,
            };
        }
    }
    Ok(outcomes)
}

/// Sends every entry in [`batches`], [`CALLS_IN_FLIGHT`] calls at once; one
/// [`Outcome`] per entry, in order.
pub async fn send_all(
    client: &Client,
    queue_url: &str,
    entries: Vec<SendMessageBatchRequestEntry>,
) -> Vec<Outcome> {
    // Built in a loop, not by a closure: a closure's future would not be
    // `Send` for every lifetime of its arguments.
    let mut calls = Vec::new();
    for batch in batches(entries, entry_size) {
        let count = batch.len();
        calls.push(async move {
            let sent = send_batch(client, queue_url, batch).await;
            sent.unwrap_or_else(|err| vec![Outcome::NotSent(Arc::new(err)); count])
        });
    }
    in_flight(calls).await
}

/// The calls' results in order, [`CALLS_IN_FLIGHT`] calls at once.
async fn in_flight<T>(calls: Vec<impl Future<Output = Vec<T>>>) -> Vec<T> {
    stream::iter(calls).buffered(CALLS_IN_FLIGHT).concat().await
}

/// Sets each message's visibility timeout (receipt handle, seconds) with
/// ChangeMessageVisibilityBatch; for each, in order, why SQS did not change it
/// (`None`: changed).
pub async fn change_visibility(
    client: &Client,
    queue_url: &str,
    messages: &[(&str, i32)],
) -> Vec<Option<String>> {
    let mut calls = Vec::new();
    for chunk in messages.chunks(MAX_BATCH_ENTRIES) {
        calls.push(async move {
            let entries = chunk.iter().enumerate().map(|(index, (handle, secs))| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(*handle)
                    .visibility_timeout(*secs)
                    .build()
            });
            let call = client
                .change_message_visibility_batch()
                .queue_url(queue_url)
                .set_entries(entries.collect::<Result<_, _>>().ok())
                .send()
                .await;
            let mut problems = vec![None; chunk.len()];
            match call {
                Ok(output) => {
                    for failed in output.failed {
                        if let Some(slot) = by_id(&mut problems, &failed.id) {
                            let message = failed.message.unwrap_or_default();
                            *slot = Some(format!("{}: {message}", failed.code));
                        }
                    }
                }
                Err(err) => {
                    let action = format!("change the visibility of messages of {queue_url}");
                    problems.fill(Some(SqsError::new(action, err).to_string()));
                }
            }
            problems
        });
    }
    in_flight(calls).await
}

/// The item of a batch entry whose id is its position, as the calls here number them.
fn by_id<'a, T>(items: &'a mut [T], id: &str) -> Option<&'a mut T> {
    items.get_mut(id.parse::<usize>().ok()?)
}

/// An AWS call that failed, with what we were doing, what the service answered
/// (the SDK's own Display leaves its message out) and what to check.
#[derive(Debug, thiserror::Error)]
#[error("could not {action}: {detail}{}", hint.map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
pub struct SqsError {
    action: String,
    /// What kind of failure, in a few stable words (a metric's label).
    kind: &'static str,
    detail: String,
    hint: Option<&'static str>,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl SqsError {
    pub fn new<E>(action: impl Into<String>, err: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let chain = crate::error_chain(&err);
        let (kind, hint) = classify(&err, &chain);
        let detail = match (err.code(), err.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.to_owned(),
            _ => chain,
        };
        Self {
            action: action.into(),
            kind,
            detail,
            hint,
            source: Box::new(err),
        }
    }

    /// `timeout`, `unreachable`, `bad_response`, `throttled`, `queue_missing`,
    /// `denied`, `service` or `other`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }
}

/// The failure's kind and, when there is one, what to check.
fn classify<E: ProvideErrorMetadata>(
    err: &SdkError<E, HttpResponse>,
    chain: &str,
) -> (&'static str, Option<&'static str>) {
    let settings = if chain.contains("credential") {
        NO_CREDENTIALS
    } else {
        "check AWS_REGION, AWS_ENDPOINT_URL and the credentials (AWS_PROFILE, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
    };
    match err {
        SdkError::TimeoutError(_) => ("timeout", Some(UNREACHABLE)),
        SdkError::DispatchFailure(f) if f.is_timeout() => ("timeout", Some(UNREACHABLE)),
        SdkError::DispatchFailure(f) if f.is_io() => ("unreachable", Some(UNREACHABLE)),
        SdkError::DispatchFailure(_) => ("unreachable", Some(settings)),
        SdkError::ConstructionFailure(_) => ("other", Some(settings)),
        SdkError::ResponseError(_) => ("bad_response", None),
        SdkError::ServiceError(_) => match err.code().unwrap_or_default() {
            code if code.contains("Throttl") || code == "OverLimit" => ("throttled", None),
            code if code.contains("NonExistentQueue") || code == "QueueDoesNotExist" => {
                ("queue_missing", Some(NO_QUEUE))
            }
            code if code.contains("AccessDenied") => ("denied", Some(DENIED)),
            code if code.contains("Signature") || code.contains("Token") => {
                ("denied", Some(REFUSED))
            }
            "UnrecognizedClientException" | "InvalidSecurity" => ("service", Some(REFUSED)),
            _ => ("service", None),
        },
        _ => ("other", None),
    }
}

const UNREACHABLE: &str = "AWS did not answer. Locally: is scripts/dev running (AWS_ENDPOINT_URL in .dev/env)? \
     Against AWS: check the network and AWS_REGION, and unset AWS_ENDPOINT_URL";
const NO_CREDENTIALS: &str = "no usable AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
     (locally, the scripts read test credentials from .dev/env)";
const NO_QUEUE: &str =
    "no such queue: check the URL, and that AWS_REGION and AWS_ENDPOINT_URL point where it lives";
const DENIED: &str = "access denied: the credentials in use lack this permission";
const REFUSED: &str = "the credentials were refused: check AWS_PROFILE or the AWS_* variables (locally, the scripts read .dev/env)";

/// The chain of `err`, each cause once, ending at an [`SqsError`], whose
/// Display has already said its source's gist.
pub fn sqs_error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    crate::error_chain_once(err, |err| err.is::<SqsError>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body_bytes: usize) -> SendMessageBatchRequestEntry {
        SendMessageBatchRequestEntry::builder()
            .id("x")
            .message_body("b".repeat(body_bytes))
            .message_attributes(
                "failure_class",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("invalid_json")
                    .build()
                    .expect("an attribute"),
            )
            .build()
            .expect("an entry")
    }

    #[test]
    fn an_entry_counts_its_body_and_each_attributes_name_type_and_value() {
        let size = "failure_class".len() + "String".len() + "invalid_json".len();
        assert_eq!(entry_size(&entry(100)), 100 + size);
    }

    #[test]
    fn ten_large_messages_go_in_batches_that_each_fit_the_total_limit() {
        let large: Vec<_> = (0..10).map(|_| entry(300 * 1024)).collect();
        let groups = batches(large, entry_size);
        assert_eq!(
            groups.iter().map(Vec::len).collect::<Vec<_>>(),
            [3, 3, 3, 1]
        );
        for group in &groups {
            assert!(group.iter().map(entry_size).sum::<usize>() <= MAX_BATCH_BYTES);
        }
    }

    #[test]
    fn small_messages_go_ten_to_a_batch() {
        let groups = batches((0..25).map(|_| entry(10)), entry_size);
        assert_eq!(groups.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);
    }

    #[test]
    fn a_message_larger_than_the_limit_goes_alone() {
        let groups = batches([10, MAX_BATCH_BYTES + 1, 10], |size| *size);
        assert_eq!(groups, [vec![10], vec![MAX_BATCH_BYTES + 1], vec![10]]);
    }

    #[test]
    fn an_sdk_failure_is_classified_in_a_few_stable_words() {
        use aws_sdk_sqs::error::{ConnectorError, ErrorMetadata};
        use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchError;

        type Failure = SdkError<SendMessageBatchError, HttpResponse>;
        let answered = |code: &str| {
            let response = HttpResponse::new(400.try_into().expect("a status"), "".into());
            let err = SendMessageBatchError::generic(ErrorMetadata::builder().code(code).build());
            Failure::service_error(err, response)
        };
        let io = || ConnectorError::io(Box::new(std::io::Error::other("refused")));
        let cases = [
            (
                Failure::timeout_error(std::io::Error::other("slow")),
                "timeout",
            ),
            (Failure::dispatch_failure(io()), "unreachable"),
            (answered("ThrottlingException"), "throttled"),
            (
                answered("AWS.SimpleQueueService.NonExistentQueue"),
                "queue_missing",
            ),
            (answered("AccessDenied"), "denied"),
            (answered("InternalError"), "service"),
        ];
        for (failure, kind) in cases {
            assert_eq!(SqsError::new("send", failure).kind(), kind);
        }
    }

    #[test]
    fn the_error_chain_prints_an_sdk_dispatch_failures_cause() {
        use aws_sdk_sqs::error::ConnectorError;
        use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchError;

        let failure = SdkError::<SendMessageBatchError, HttpResponse>::dispatch_failure(
            ConnectorError::io(Box::new(std::io::Error::other("connection refused"))),
        );
        let text = crate::error_chain(&failure);
        assert!(text.contains("connection refused"), "{text}");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("dispatch failure")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn an_sqs_error_says_what_to_do_and_its_chain_does_not_repeat_the_sdks() {
        use aws_sdk_sqs::operation::get_queue_attributes::GetQueueAttributesError;
        use std::error::Error;

        let failure = SdkError::<GetQueueAttributesError, HttpResponse>::construction_failure(
            Outer(std::io::Error::other("no credentials in the environment")),
        );
        let err = SqsError::new("read the attributes of http://q/dlq", failure);
        let source = err.source().expect("the SDK's error");
        assert!(
            crate::error_chain(source).contains("no credentials"),
            "{source}"
        );
        let text = err.to_string();
        assert!(text.contains("hint: no usable AWS credentials"), "{text}");
        assert_eq!(sqs_error_chain(&err), text);
    }
}
