//! The SQS calls every command shares: a queue's attributes, the DLQ's source
//! queue, receiving with every attribute, and handing messages back.

use std::collections::HashMap;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageSystemAttributeName, QueueAttributeName,
};
use tracing::warn;

/// SQS's limit on entries per batch call and messages per receive.
pub(crate) const MAX_BATCH: usize = 10;

/// An SQS call that failed, with what we were doing and what the operator can
/// check. The SDK's error is the source.
///
/// The Display also says, in one line, what SQS answered (code and message) or
/// why it could not be reached: the SDK's own Display leaves the message out of
/// the errors it does not model ("unhandled error (AccessDenied)").
/// [`error_chain`] therefore stops here rather than repeat the SDK's chain.
#[derive(Debug, thiserror::Error)]
#[error("could not {action}: {detail}{}", hint_suffix(self.hint))]
pub struct SqsError {
    action: String,
    code: Option<String>,
    message: Option<String>,
    status: Option<u16>,
    detail: String,
    hint: Option<&'static str>,
    #[source]
    source: BoxError,
}

/// The SDK's error, boxed: its type differs with each operation.
type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

fn hint_suffix(hint: Option<&'static str>) -> String {
    hint.map(|h| format!("\n  hint: {h}")).unwrap_or_default()
}

impl SqsError {
    pub(crate) fn new<E>(action: impl Into<String>, err: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let code = err.code().map(str::to_owned);
        let message = err.message().map(str::to_owned);
        let status = err.raw_response().map(|r| r.status().as_u16());
        let chain = error_chain(&err);
        let hint = match &err {
            SdkError::DispatchFailure(failure) if failure.is_io() || failure.is_timeout() => {
                Some(UNREACHABLE)
            }
            SdkError::TimeoutError(_) => Some(UNREACHABLE),
            SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_)
                if chain.contains("credential") =>
            {
                Some(NO_CREDENTIALS)
            }
            SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_) => Some(
                "check AWS_REGION, AWS_ENDPOINT_URL and the credentials (AWS_PROFILE, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)",
            ),
            _ => code.as_deref().and_then(hint_for_code),
        };
        let detail = match (&code, &message) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.clone(),
            _ => chain,
        };
        Self {
            action: action.into(),
            code,
            message,
            status,
            detail,
            hint,
            source: Box::new(err),
        }
    }

    /// The service's error code, when SQS answered with one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// Whether the endpoint answered that it does not implement this call at all
    /// (an older emulator, or an SQS-compatible service without move tasks).
    pub fn is_unsupported_operation(&self) -> bool {
        is_unsupported(self.code.as_deref(), self.message.as_deref(), self.status)
    }
}

const UNREACHABLE: &str = "SQS did not answer. Locally: is scripts/dev running (AWS_ENDPOINT_URL in .dev/env)? \
     Against AWS: check the network and AWS_REGION, and unset AWS_ENDPOINT_URL";
const NO_CREDENTIALS: &str = "no usable AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
     (locally, scripts/replay-dlq reads test credentials from .dev/env)";

/// The error and its sources, each said once: "dispatch failure: io error: …".
/// (The SDK's own DisplayErrorContext appends a Debug dump meant for bug reports.)
/// An [`SqsError`] ends the chain: its Display has already said its source's gist.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    support::error_chain_once(err, |err| err.is::<SqsError>())
}

fn hint_for_code(code: &str) -> Option<&'static str> {
    match code {
        "AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist" => Some(
            "no such queue: check the URL, and that AWS_REGION and AWS_ENDPOINT_URL point where it lives",
        ),
        "AccessDenied" | "AccessDeniedException" => {
            Some("access denied: the credentials in use lack this permission on the queue")
        }
        "InvalidClientTokenId"
        | "UnrecognizedClientException"
        | "ExpiredToken"
        | "SignatureDoesNotMatch"
        | "InvalidSecurity" => Some(
            "the credentials were refused: check AWS_PROFILE or the AWS_* variables (locally, scripts/replay-dlq reads .dev/env)",
        ),
        _ => None,
    }
}

/// Codes and answers by which endpoints say "I do not implement this call".
pub(crate) fn is_unsupported(
    code: Option<&str>,
    message: Option<&str>,
    status: Option<u16>,
) -> bool {
    const CODES: [&str; 7] = [
        "UnsupportedOperation",
        "AWS.SimpleQueueService.UnsupportedOperation",
        "InvalidAction",
        "NotImplemented",
        "UnknownOperation",
        "UnknownOperationException",
        "InvalidOperation",
    ];
    if code.is_some_and(|c| CODES.contains(&c)) || status == Some(501) {
        return true;
    }
    message.is_some_and(|m| {
        let m = m.to_ascii_lowercase();
        m.contains("not yet implemented") || m.contains("not implemented")
    })
}

/// Why the DLQ's messages have no usable way back: the destination is unknown,
/// ambiguous or the DLQ itself, a queue is FIFO, or the queues could not be read.
/// Raised before any message is touched.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Sqs(#[from] SqsError),
    #[error(
        "the DLQ {dlq} is not the dead-letter queue of any queue (ListDeadLetterSourceQueues is empty): pass --to URL to say where its messages go"
    )]
    NoSource { dlq: String },
    #[error(
        "the DLQ {dlq} is the dead-letter queue of {} queues ({}): pass --to URL to choose one",
        sources.len(),
        sources.join(", ")
    )]
    SeveralSources { dlq: String, sources: Vec<String> },
    #[error(
        "{url} is a FIFO queue; this tool replays standard queues only (a FIFO replay needs each message's group and deduplication id): use `replay --native`, which SQS runs itself"
    )]
    Fifo { url: String },
    #[error(
        "the destination is the DLQ itself ({url}): pass --to the URL of the queue its messages came from"
    )]
    SameQueue { url: String },
}

/// What the tool needs to know about a queue; read, never derived from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    pub url: String,
    pub arn: String,
    pub fifo: bool,
    /// ApproximateNumberOfMessages: visible ones.
    pub visible: u64,
    /// ApproximateNumberOfMessagesNotVisible: received and not yet deleted or released.
    pub in_flight: u64,
}

/// Reads the queue's ARN, type and depth.
pub async fn describe(sqs: &Client, url: &str) -> Result<QueueInfo, SqsError> {
    let response = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .attribute_names(QueueAttributeName::FifoQueue)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(|err| SqsError::new(format!("read the attributes of {url}"), err))?;
    let attributes = response.attributes().cloned().unwrap_or_default();
    let get = |name: &QueueAttributeName| attributes.get(name).map(String::as_str);
    let number = |name: &QueueAttributeName| get(name).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(QueueInfo {
        url: url.to_owned(),
        arn: get(&QueueAttributeName::QueueArn)
            .unwrap_or_default()
            .to_owned(),
        // Standard queues may omit the attribute altogether.
        fifo: get(&QueueAttributeName::FifoQueue) == Some("true"),
        visible: number(&QueueAttributeName::ApproximateNumberOfMessages),
        in_flight: number(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    })
}

/// The queue whose redrive policy names this DLQ: where its messages came from.
pub async fn source_queue(sqs: &Client, dlq_url: &str) -> Result<String, RouteError> {
    let mut sources = Vec::new();
    let mut pages = sqs
        .list_dead_letter_source_queues()
        .queue_url(dlq_url)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|err| SqsError::new(format!("list the source queues of {dlq_url}"), err))?;
        sources.extend(page.queue_urls);
    }
    match sources.len() {
        0 => Err(RouteError::NoSource {
            dlq: dlq_url.to_owned(),
        }),
        1 => Ok(sources.remove(0)),
        _ => Err(RouteError::SeveralSources {
            dlq: dlq_url.to_owned(),
            sources,
        }),
    }
}

/// Receives up to `max` messages (at most 10) with every system and message
/// attribute, hiding them for `visibility_secs`. Waits up to a second: a long
/// poll asks every SQS server, where a short one samples a few and may answer
/// "empty" while messages remain.
pub(crate) async fn receive(
    sqs: &Client,
    url: &str,
    max: usize,
    visibility_secs: u32,
) -> Result<Vec<Message>, SqsError> {
    let response = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
        .visibility_timeout(visibility_secs as i32)
        .wait_time_seconds(1)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .map_err(|err| SqsError::new(format!("receive from {url}"), err))?;
    Ok(response.messages.unwrap_or_default())
}

/// Deletes the messages of `receipt_handles` (at most 10) from `url` in one
/// call; returns those SQS did not delete, by position, with its reason. An
/// error means the call itself failed: nothing is known to be deleted.
pub(crate) async fn delete_batch(
    sqs: &Client,
    url: &str,
    receipt_handles: &[&str],
) -> Result<Vec<(usize, String)>, SqsError> {
    let entries = receipt_handles
        .iter()
        .enumerate()
        .filter_map(|(index, handle)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(index.to_string())
                .receipt_handle(*handle)
                .build()
                .ok()
        })
        .collect::<Vec<_>>();
    let response = sqs
        .delete_message_batch()
        .queue_url(url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|err| SqsError::new(format!("delete from the DLQ {url}"), err))?;
    Ok(response
        .failed()
        .iter()
        .filter_map(|f| {
            let problem = format!("{}: {}", f.code(), f.message().unwrap_or("no message"));
            f.id().parse().ok().map(|i| (i, problem))
        })
        .collect())
}

/// Messages this run has received and keeps hidden, by message id → latest
/// receipt handle, until [`release`](Held::release) makes them visible again.
#[derive(Debug, Default)]
pub(crate) struct Held {
    handles: HashMap<String, String>,
}

impl Held {
    pub(crate) fn hold(&mut self, message_id: &str, receipt_handle: &str) {
        self.handles
            .insert(message_id.to_owned(), receipt_handle.to_owned());
    }

    /// Makes every held message visible again at once (visibility timeout 0).
    /// Best effort: one SQS could not release simply reappears when its
    /// visibility timeout ends, so failures are logged, not returned.
    pub(crate) async fn release(&mut self, sqs: &Client, url: &str) {
        let handles: Vec<(String, String)> = self.handles.drain().collect();
        for chunk in handles.chunks(MAX_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(index, (_, handle))| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(index.to_string())
                        .receipt_handle(handle)
                        .visibility_timeout(0)
                        .build()
                })
                .collect::<Result<Vec<_>, _>>();
            let entries = match entries {
                Ok(entries) => entries,
                Err(err) => {
                    warn!(error = %err, "could not build a visibility request");
                    continue;
                }
            };
            match sqs
                .change_message_visibility_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(response) => {
                    for failed in response.failed() {
                        let message_id = failed
                            .id()
                            .parse::<usize>()
                            .ok()
                            .and_then(|i| chunk.get(i))
                            .map_or("?", |(id, _)| id.as_str());
                        warn!(
                            message_id,
                            code = failed.code(),
                            "could not make the message visible again; it reappears when its visibility timeout ends"
                        );
                    }
                }
                Err(err) => warn!(
                    error = %SqsError::new(format!("make messages of {url} visible again"), err),
                    "they reappear when their visibility timeout ends"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_that_lack_move_tasks_are_recognised_by_code_status_or_message() {
        assert!(is_unsupported(
            Some("UnsupportedOperation"),
            None,
            Some(400)
        ));
        assert!(is_unsupported(Some("InvalidAction"), None, Some(400)));
        assert!(is_unsupported(None, None, Some(501)));
        assert!(is_unsupported(
            Some("InternalFailure"),
            Some("API action 'StartMessageMoveTask' for service 'sqs' not yet implemented"),
            Some(500)
        ));
    }

    #[test]
    fn ordinary_failures_are_not_mistaken_for_a_missing_feature() {
        assert!(!is_unsupported(
            Some("AccessDenied"),
            Some("denied"),
            Some(403)
        ));
        assert!(!is_unsupported(
            Some("AWS.SimpleQueueService.NonExistentQueue"),
            None,
            Some(400)
        ));
        assert!(!is_unsupported(None, None, None));
    }

    #[test]
    fn a_missing_queue_error_tells_where_to_look() {
        let hint = hint_for_code("AWS.SimpleQueueService.NonExistentQueue").expect("a hint");
        assert!(hint.contains("AWS_ENDPOINT_URL"), "{hint}");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("dispatch failure")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn an_error_chain_says_each_cause_once_without_debug_dumps() {
        let err = Outer(std::io::Error::other("connection refused"));
        assert_eq!(error_chain(&err), "dispatch failure: connection refused");
    }

    #[test]
    fn an_sqs_error_keeps_the_sdks_error_and_says_it_once_in_a_chain() {
        use aws_sdk_sqs::operation::get_queue_attributes::GetQueueAttributesError;
        use std::error::Error;

        let failure = SdkError::<GetQueueAttributesError, HttpResponse>::construction_failure(
            Outer(std::io::Error::other("no credentials in the environment")),
        );
        let err = SqsError::new("read the attributes of http://q/dlq", failure);
        let source = err.source().expect("the SDK's error");
        assert!(
            error_chain(source).contains("no credentials in the environment"),
            "{source}"
        );
        let text = err.to_string();
        assert!(text.contains("hint: no usable AWS credentials"), "{text}");
        assert_eq!(error_chain(&err), text, "the SDK's chain is not repeated");
    }

    #[test]
    fn no_source_queue_asks_for_to() {
        let err = RouteError::NoSource {
            dlq: "http://q/dlq".into(),
        };
        assert!(err.to_string().contains("pass --to URL"), "{err}");
        let err = RouteError::SeveralSources {
            dlq: "http://q/dlq".into(),
            sources: vec!["http://q/a".into(), "http://q/b".into()],
        };
        assert!(
            err.to_string()
                .contains("2 queues (http://q/a, http://q/b)"),
            "{err}"
        );
    }
}
