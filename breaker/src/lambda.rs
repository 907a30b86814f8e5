//! The breaker's AWS side: the probe invokes the consumer function itself
//! (<https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html>), so it meets
//! what the mapping's invocations would: throttling, a runtime that cannot
//! start, the network path, the writer's login. The switch is the mapping's `Enabled`.

use aws_sdk_lambda::Client;
use aws_sdk_lambda::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_lambda::operation::invoke::InvokeError;

use super::{
    Health, Mapping, MappingError, MappingState, MappingStatus, PROBE_PAYLOAD, Probe, ProbeAnswer,
};

/// At most this much of a failed function's answer goes into the reason.
const REASON_BYTES: usize = 400;

/// Probes by invoking the consumer function with [`PROBE_PAYLOAD`].
#[derive(Debug, Clone)]
pub struct LambdaProbe {
    client: Client,
    function: String,
}

impl LambdaProbe {
    pub fn new(client: Client, function: impl Into<String>) -> Self {
        Self {
            client,
            function: function.into(),
        }
    }
}

impl Probe for LambdaProbe {
    async fn probe(&self) -> Health {
        match support::lambda::invoke(&self.client, &self.function, PROBE_PAYLOAD).await {
            Ok(answer) => read_answer(answer.function_error.as_deref(), &answer.payload),
            Err(err) => invoke_failed(&err),
        }
    }
}

/// What the function answered: its own verdict, or the function error Lambda
/// reports when the runtime failed to start, crashed or timed out.
fn read_answer(function_error: Option<&str>, payload: &[u8]) -> Health {
    let text = String::from_utf8_lossy(&payload[..payload.len().min(REASON_BYTES)]);
    if let Some(kind) = function_error {
        return Health::Unhealthy(format!(
            "the consumer function failed ({kind}), as every batch would: {text}"
        ));
    }
    match serde_json::from_slice::<ProbeAnswer>(payload) {
        Ok(ProbeAnswer { healthy: true, .. }) => Health::Healthy,
        Ok(ProbeAnswer { reason, .. }) => {
            Health::Unhealthy(reason.unwrap_or_else(|| "the consumer cannot store".into()))
        }
        Err(_) => Health::Unhealthy(format!(
            "the consumer function does not answer probes (an older version?): {text}"
        )),
    }
}

/// A refused invocation says something about the function (throttled, its
/// network interfaces, its code) or about the breaker (its permissions, its
/// settings). Only the first pauses the mapping.
fn invoke_failed(err: &SdkError<InvokeError>) -> Health {
    let detail = support::error_chain(err);
    let Some(service) = err.as_service_error() else {
        // Never reached Lambda, or no answer: nothing is known about the function.
        return Health::Unknown(detail);
    };
    if service.is_too_many_requests_exception() {
        return Health::Unhealthy(format!(
            "Lambda throttles the consumer function, as it would the mapping's batches: {detail}"
        ));
    }
    match service.code() {
        Some(code) if !BREAKERS_OWN.contains(&code) => {
            // Every other error is the function unable to run: its network
            // interfaces, its KMS key, its runtime, Lambda's own failure.
            Health::Unhealthy(format!("Lambda cannot run the consumer function: {detail}"))
        }
        _ => Health::Unknown(detail),
    }
}

/// Error codes of `Invoke` that are about the caller (its permissions,
/// credentials or request), not the function.
const BREAKERS_OWN: &[&str] = &[
    "AccessDeniedException",
    "ExpiredTokenException",
    "InvalidParameterValueException",
    "InvalidRequestContentException",
    "InvalidSignatureException",
    "RequestTooLargeException",
    "ResourceNotFoundException",
    "UnrecognizedClientException",
    "UnsupportedMediaTypeException",
];

/// `GetEventSourceMapping` and `UpdateEventSourceMapping` on one mapping.
#[derive(Debug, Clone)]
pub struct LambdaMapping {
    client: Client,
    uuid: String,
}

impl LambdaMapping {
    pub fn new(client: Client, uuid: impl Into<String>) -> Self {
        Self {
            client,
            uuid: uuid.into(),
        }
    }
}

impl Mapping for LambdaMapping {
    async fn status(&self) -> Result<MappingStatus, MappingError> {
        let mapping = self
            .client
            .get_event_source_mapping()
            .uuid(&self.uuid)
            .send()
            .await
            .map_err(|err| MappingError {
                action: "reading",
                source: Box::new(err),
            })?;
        let state = match mapping.state() {
            Some("Enabled") => MappingState::Enabled,
            Some("Disabled") => MappingState::Disabled,
            other => MappingState::Changing(other.unwrap_or("no state").to_owned()),
        };
        Ok(MappingStatus {
            state,
            since: mapping
                .last_modified()
                .and_then(|at| std::time::SystemTime::try_from(*at).ok()),
        })
    }

    async fn set_enabled(&self, enabled: bool) -> Result<(), MappingError> {
        self.client
            .update_event_source_mapping()
            .uuid(&self.uuid)
            .enabled(enabled)
            .send()
            .await
            .map_err(|err| MappingError {
                action: if enabled { "enabling" } else { "disabling" },
                source: Box::new(err),
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_healthy_answer_is_healthy_and_an_unhealthy_one_keeps_its_reason() {
        assert_eq!(read_answer(None, br#"{"healthy":true}"#), Health::Healthy);
        assert_eq!(
            read_answer(None, br#"{"healthy":false,"reason":"SQLSTATE 28P01"}"#),
            Health::Unhealthy("SQLSTATE 28P01".into())
        );
    }

    #[test]
    fn a_function_error_is_unhealthy_whatever_the_payload_says() {
        let health = read_answer(
            Some("Unhandled"),
            br#"{"errorType":"Runtime.ExitError","errorMessage":"RequestId: 1 Error: Runtime exited with error: exit status 1"}"#,
        );
        match health {
            Health::Unhealthy(reason) => {
                assert!(reason.contains("Unhandled"), "{reason}");
                assert!(reason.contains("Runtime.ExitError"), "{reason}");
            }
            other => panic!("expected unhealthy, got {other:?}"),
        }
    }

    #[test]
    fn an_answer_that_is_not_a_probe_answer_is_unhealthy() {
        assert!(matches!(
            read_answer(None, br#"{"batchItemFailures":[]}"#),
            Health::Unhealthy(_)
        ));
    }
}
