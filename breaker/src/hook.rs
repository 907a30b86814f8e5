//! The pre-traffic hook of the consumer's gradual release (`TASK=hook`): it
//! invokes the new version (`CONSUMER_VERSION`) with [`RELEASE_PROBE_PAYLOAD`],
//! a synthetic batch whose canary order must come back stored (rolled back) and
//! whose poison record must be dead-lettered (to the probe's own DLQ), and
//! always reports `Succeeded` or `Failed`; CodeDeploy rolls back on `Failed`
//! (<https://docs.aws.amazon.com/codedeploy/latest/APIReference/API_PutLifecycleEventHookExecutionStatus.html>).
//! In the breaker's binary: a consumer build that cannot start must fail its
//! own check, not take the check down with it.

use std::time::Duration;

use aws_sdk_codedeploy::types::LifecycleEventStatus;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use support::{Env, EnvError};

/// The probe with a poison record beside its canary order. `{"probe":{}}`
/// (the breaker's) still answers as before.
pub const RELEASE_PROBE_PAYLOAD: &str = r#"{"probe":{"poison":true}}"#;

/// Kept back from the hook's own deadline to report the verdict.
pub const REPORT_MARGIN: Duration = Duration::from_secs(10);

/// What the consumer did with one record of a probe's synthetic batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRecord {
    pub message_id: String,
    pub sent: Sent,
    pub outcome: RecordOutcome,
    /// Why, when it was not stored: the DLQ's failure class, the store's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What the probe put in a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sent {
    /// A valid order of the probe's own.
    Order,
    /// A body that is not an order.
    Poison,
}

/// What became of a record, as the handler answered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordOutcome {
    /// Written (in the probe's transaction) and acknowledged.
    Stored,
    /// Already stored, acknowledged.
    Duplicate,
    /// Kept aside as a conflict, acknowledged.
    Conflict,
    /// Sent to the (probe's) DLQ and acknowledged.
    DeadLettered,
    /// Left unacknowledged for SQS to deliver again.
    Retried,
    /// Acknowledged, yet neither stored nor dead-lettered: a lost order.
    Dropped,
}

/// The hook's verdict on a new version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Succeeded,
    Failed(String),
}

/// Reads the new version's answer to [`RELEASE_PROBE_PAYLOAD`]: it passes only
/// if every order came back stored and every poison record dead-lettered,
/// with at least one of each.
pub fn verdict(function_error: Option<&str>, payload: &[u8]) -> Verdict {
    let text = String::from_utf8_lossy(&payload[..payload.len().min(400)]);
    if let Some(kind) = function_error {
        return Verdict::Failed(format!("the new version failed ({kind}): {text}"));
    }
    let Ok(answer) = serde_json::from_slice::<crate::ProbeAnswer>(payload) else {
        return Verdict::Failed(format!(
            "the new version does not answer the release probe: {text}"
        ));
    };
    let expected = |sent: Sent| match sent {
        Sent::Order => RecordOutcome::Stored,
        Sent::Poison => RecordOutcome::DeadLettered,
    };
    let mut wrong: Vec<String> = answer
        .records
        .iter()
        .filter(|r| r.outcome != expected(r.sent))
        .map(|r| {
            format!(
                "{:?} {} was {:?}, not {:?}{}",
                r.sent,
                r.message_id,
                r.outcome,
                expected(r.sent),
                r.detail
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            )
        })
        .collect();
    for sent in [Sent::Order, Sent::Poison] {
        if !answer.records.iter().any(|r| r.sent == sent) {
            wrong.push(format!("the answer names no {sent:?} record"));
        }
    }
    if wrong.is_empty() {
        Verdict::Succeeded
    } else {
        if let Some(reason) = answer.reason {
            wrong.push(reason);
        }
        Verdict::Failed(wrong.join("; "))
    }
}

/// What CodeDeploy invokes a Lambda hook with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HookEvent {
    pub deployment_id: String,
    pub lifecycle_event_hook_execution_id: String,
}

/// The reporting failed: Lambda then retries the hook (CodeDeploy invokes it
/// asynchronously), and without any status CodeDeploy fails the hook after its hour.
#[derive(Debug, thiserror::Error)]
#[error("reporting {status:?} to CodeDeploy failed")]
pub struct ReportError {
    status: LifecycleEventStatus,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// Invokes `version` with the release probe, waiting at most `timeout`, and
/// reports the verdict to CodeDeploy for `event`.
pub async fn check_and_report(
    lambda: &aws_sdk_lambda::Client,
    codedeploy: &aws_sdk_codedeploy::Client,
    version: &str,
    event: &HookEvent,
    timeout: Duration,
) -> Result<Verdict, ReportError> {
    let invoked = support::lambda::invoke(lambda, version, RELEASE_PROBE_PAYLOAD);
    let verdict = match tokio::time::timeout(timeout, invoked).await {
        Ok(Ok(answer)) => verdict(answer.function_error.as_deref(), &answer.payload),
        Ok(Err(err)) => Verdict::Failed(format!(
            "Lambda could not invoke the new version {version}: {}",
            support::error_chain(&err)
        )),
        Err(_) => Verdict::Failed(format!(
            "the new version {version} did not answer within {} s",
            timeout.as_secs()
        )),
    };
    let status = match &verdict {
        Verdict::Succeeded => {
            tracing::info!(version, deployment = %event.deployment_id, "the new version stores the canary order and dead-letters the poison: Succeeded");
            LifecycleEventStatus::Succeeded
        }
        Verdict::Failed(reason) => {
            tracing::error!(version, deployment = %event.deployment_id, %reason, "the new version fails the release check: Failed, CodeDeploy rolls back");
            LifecycleEventStatus::Failed
        }
    };
    codedeploy
        .put_lifecycle_event_hook_execution_status()
        .deployment_id(&event.deployment_id)
        .lifecycle_event_hook_execution_id(&event.lifecycle_event_hook_execution_id)
        .status(status.clone())
        .send()
        .await
        .map_err(|err| ReportError {
            status,
            source: Box::new(err),
        })?;
    Ok(verdict)
}

/// `CONSUMER_VERSION`: the new version's ARN (`!Ref ConsumerFunction.Version`),
/// qualified by its number: never the alias, never `$LATEST`.
pub fn consumer_version(lookup: impl Fn(&str) -> Option<String>) -> Result<String, EnvError> {
    let version = Env::new(lookup).required(
        "CONSUMER_VERSION",
        "set it to the consumer version the release checks (!Ref ConsumerFunction.Version)",
    )?;
    // arn:aws:lambda:REGION:ACCOUNT:function:NAME:VERSION
    let parts: Vec<&str> = version.split(':').collect();
    let numbered = parts
        .last()
        .is_some_and(|q| q.bytes().all(|b| b.is_ascii_digit()));
    if parts.len() == 8 && parts[0] == "arn" && numbered {
        Ok(version)
    } else {
        Err(EnvError::Invalid {
            name: "CONSUMER_VERSION",
            value: version,
            expected:
                "a published version's ARN, ending in its number (!Ref ConsumerFunction.Version)"
                    .into(),
        })
    }
}

/// Serves the hook function.
pub async fn run() -> Result<(), Error> {
    let version = consumer_version(|name| std::env::var(name).ok())?;
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let lambda = aws_sdk_lambda::Client::new(&aws);
    let codedeploy = aws_sdk_codedeploy::Client::new(&aws);
    let (lambda, codedeploy, version) = (&lambda, &codedeploy, version.as_str());
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<HookEvent>| async move {
            let timeout =
                support::lambda::time_left(event.context.deadline).saturating_sub(REPORT_MARGIN);
            let verdict =
                check_and_report(lambda, codedeploy, version, &event.payload, timeout).await?;
            Ok::<Value, Error>(match verdict {
                Verdict::Succeeded => json!({"status": "Succeeded"}),
                Verdict::Failed(reason) => json!({"status": "Failed", "reason": reason}),
            })
        },
    ))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(records: &[(Sent, RecordOutcome)]) -> Vec<u8> {
        let records: Vec<ProbeRecord> = records
            .iter()
            .enumerate()
            .map(|(i, (sent, outcome))| ProbeRecord {
                message_id: format!("m-{i}"),
                sent: *sent,
                outcome: *outcome,
                detail: None,
            })
            .collect();
        serde_json::to_vec(&json!({"healthy": true, "records": records})).expect("json")
    }

    #[test]
    fn a_stored_canary_and_a_dead_lettered_poison_succeed() {
        let payload = answer(&[
            (Sent::Order, RecordOutcome::Stored),
            (Sent::Poison, RecordOutcome::DeadLettered),
        ]);
        assert_eq!(verdict(None, &payload), Verdict::Succeeded);
    }

    #[test]
    fn a_canary_not_stored_fails_naming_what_became_of_it() {
        let payload = answer(&[
            (Sent::Order, RecordOutcome::Retried),
            (Sent::Poison, RecordOutcome::DeadLettered),
        ]);
        match verdict(None, &payload) {
            Verdict::Failed(reason) => assert!(reason.contains("Retried"), "{reason}"),
            other => panic!("expected Failed, got {other:?}"),
        }
    }

    #[test]
    fn poison_stored_or_retried_fails() {
        for outcome in [
            RecordOutcome::Stored,
            RecordOutcome::Retried,
            RecordOutcome::Dropped,
        ] {
            let payload = answer(&[
                (Sent::Order, RecordOutcome::Stored),
                (Sent::Poison, outcome),
            ]);
            assert!(
                matches!(verdict(None, &payload), Verdict::Failed(_)),
                "{outcome:?}"
            );
        }
    }

    #[test]
    fn an_answer_without_a_canary_or_a_poison_record_fails() {
        let only_order = answer(&[(Sent::Order, RecordOutcome::Stored)]);
        assert!(matches!(verdict(None, &only_order), Verdict::Failed(_)));
        // A version from before per-record answers: healthy, but it says nothing.
        assert!(matches!(
            verdict(None, br#"{"healthy":true}"#),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn a_function_error_or_an_answer_that_is_not_a_probe_answer_fails() {
        let payload = answer(&[
            (Sent::Order, RecordOutcome::Stored),
            (Sent::Poison, RecordOutcome::DeadLettered),
        ]);
        match verdict(Some("Unhandled"), &payload) {
            Verdict::Failed(reason) => assert!(reason.contains("Unhandled"), "{reason}"),
            other => panic!("expected Failed, got {other:?}"),
        }
        assert!(matches!(
            verdict(None, br#"{"batchItemFailures":[]}"#),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn codedeploys_event_names_the_deployment_and_the_hook_execution() {
        let event: HookEvent = serde_json::from_str(
            r#"{"DeploymentId":"d-ABC123","LifecycleEventHookExecutionId":"eyJ..."}"#,
        )
        .expect("CodeDeploy's event");
        assert_eq!(event.deployment_id, "d-ABC123");
        assert_eq!(event.lifecycle_event_hook_execution_id, "eyJ...");
    }

    #[test]
    fn the_hook_checks_a_published_version_never_the_alias_or_latest() {
        let set = |value: &'static str| {
            move |name: &str| (name == "CONSUMER_VERSION").then(|| value.to_owned())
        };
        let function = "arn:aws:lambda:eu-west-1:123456789012:function:orders-consumer";
        assert!(
            consumer_version(set(
                "arn:aws:lambda:eu-west-1:123456789012:function:orders-consumer:7"
            ))
            .is_ok()
        );
        for wrong in [
            function,
            "arn:aws:lambda:eu-west-1:123456789012:function:orders-consumer:live",
            "arn:aws:lambda:eu-west-1:123456789012:function:orders-consumer:$LATEST",
            "7",
        ] {
            let err = consumer_version(set(wrong)).expect_err(wrong);
            assert!(err.to_string().contains("CONSUMER_VERSION"), "{err}");
        }
        assert!(consumer_version(|_| None).is_err());
    }
}
