//! The queue and event-source settings of `infra/template.yaml`, read with
//! `infra`' reader so that the local stack behaves like the deployed one
//! and the two cannot drift apart.

use std::time::Duration;

use infra::Document;
pub use infra::TemplateError;
use support::queues::QueueSettings;

/// The SQS event source of the consumer function, and the function's timeout,
/// which the local driver enforces as Lambda does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSourceSettings {
    pub batch_size: usize,
    pub batching_window: Duration,
    pub max_concurrency: usize,
    pub function_timeout: Duration,
}

/// The parts of the template the local stack needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Template {
    pub queues: QueueSettings,
    pub event_source: EventSourceSettings,
}

const QUEUE: &str = "OrdersQueue";
const DLQ: &str = "OrdersDeadLetterQueue";
const FUNCTION: &str = "ConsumerFunction";
const EVENT: &str = "Orders";

impl Template {
    pub fn from_file(path: &str) -> Result<Self, TemplateError> {
        Self::from_document(&Document::from_file(path)?)
    }

    pub fn from_document(t: &Document) -> Result<Self, TemplateError> {
        let at = |resource, path: &[&'static str]| {
            [&["Resources", resource, "Properties"][..], path].concat()
        };
        let event = |path: &[&'static str]| {
            let path = [&["Events", EVENT, "Properties"][..], path].concat();
            at(FUNCTION, &path)
        };
        let seconds = |path: &[&str]| t.number(path).map(Duration::from_secs);
        Ok(Self {
            queues: QueueSettings {
                visibility_timeout_secs: t.number(&at(QUEUE, &["VisibilityTimeout"]))?,
                retention_secs: t.number(&at(QUEUE, &["MessageRetentionPeriod"]))?,
                dlq_retention_secs: t.number(&at(DLQ, &["MessageRetentionPeriod"]))?,
                max_receive_count: t.number(&at(QUEUE, &["RedrivePolicy", "maxReceiveCount"]))?,
            },
            event_source: EventSourceSettings {
                batch_size: t.number(&event(&["BatchSize"]))?,
                batching_window: seconds(&event(&["MaximumBatchingWindowInSeconds"]))?,
                max_concurrency: t.number(&event(&["ScalingConfig", "MaximumConcurrency"]))?,
                // The function's own Timeout, else the template's Globals.
                function_timeout: seconds(&at(FUNCTION, &["Timeout"]))
                    .or_else(|_| seconds(&["Globals", "Function", "Timeout"]))?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use infra::as_u64;

    const PROJECT_TEMPLATE: &str = include_str!("../../infra/template.yaml");

    fn project() -> Document {
        Document::parse(PROJECT_TEMPLATE).expect("the template is YAML")
    }

    /// A literal in the template, read without the settings' own code.
    fn raw(t: &Document, path: &[&str]) -> Option<u64> {
        t.get(path).ok().and_then(as_u64)
    }

    #[test]
    fn the_local_stack_reads_the_same_queue_and_event_settings_as_the_template_declares() {
        let t = project();
        let local = Template::from_document(&t).expect("local-esm reads the template");
        let parameter_default = |name: &str| raw(&t, &["Parameters", name, "Default"]);
        let queue = |p: &str| raw(&t, &["Resources", QUEUE, "Properties", p]);

        assert_eq!(
            Some(u64::from(local.queues.visibility_timeout_secs)),
            queue("VisibilityTimeout")
        );
        assert_eq!(
            Some(u64::from(local.queues.retention_secs)),
            queue("MessageRetentionPeriod")
        );
        assert_eq!(
            Some(u64::from(local.queues.dlq_retention_secs)),
            raw(
                &t,
                &["Resources", DLQ, "Properties", "MessageRetentionPeriod"]
            )
        );
        assert_eq!(
            Some(u64::from(local.queues.max_receive_count)),
            parameter_default("MaxReceiveCount"),
            "the local redrive policy must use the MaxReceiveCount parameter's default"
        );
        assert_eq!(
            Some(local.event_source.batch_size as u64),
            parameter_default("BatchSize")
        );
        assert_eq!(
            Some(local.event_source.batching_window.as_secs()),
            parameter_default("MaximumBatchingWindowInSeconds")
        );
        assert_eq!(
            Some(local.event_source.max_concurrency as u64),
            parameter_default("MaximumConcurrency")
        );
        assert_eq!(
            Some(local.event_source.function_timeout.as_secs()),
            raw(&t, &["Globals", "Function", "Timeout"]),
            "the function's timeout comes from Globals when the function sets none"
        );
    }

    #[test]
    fn a_missing_setting_is_named() {
        let template = PROJECT_TEMPLATE.replace("VisibilityTimeout:", "VisibilityTimeoutX:");
        let t = Document::parse(&template).expect("still YAML");
        let err = Template::from_document(&t).expect_err("missing");
        assert!(
            err.to_string()
                .contains("OrdersQueue.Properties.VisibilityTimeout"),
            "{err}"
        );
    }
}
