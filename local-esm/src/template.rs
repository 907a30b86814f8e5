//! The queue and event-source settings of `infra/template.yaml`, read so that the
//! local stack behaves like the deployed one and the two cannot drift apart.

use std::time::Duration;

use serde_yaml_ng::Value;

/// Why the template could not be read; the message names the resource and property.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("could not read the SAM template {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the SAM template is not valid YAML")]
    Parse(#[from] serde_yaml_ng::Error),
    #[error("the SAM template has no {0}; the local stack reads its settings from there")]
    Missing(String),
    #[error(
        "{0} in the SAM template is not a number (or a !Ref to a parameter with a numeric default)"
    )]
    NotANumber(String),
}

/// The queue pair as the template declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    pub visibility_timeout_secs: u32,
    pub retention_secs: u32,
    pub dlq_retention_secs: u32,
    pub max_receive_count: u32,
}

/// The SQS event source of the consumer function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSourceSettings {
    pub batch_size: usize,
    pub batching_window: Duration,
    pub max_concurrency: usize,
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
        let text = std::fs::read_to_string(path).map_err(|source| TemplateError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    pub fn parse(yaml: &str) -> Result<Self, TemplateError> {
        let doc: Value = serde_yaml_ng::from_str(yaml)?;
        let t = Reader { doc: &doc };
        let queue = ["Resources", QUEUE, "Properties"];
        let dlq = ["Resources", DLQ, "Properties"];
        let event = [
            "Resources",
            FUNCTION,
            "Properties",
            "Events",
            EVENT,
            "Properties",
        ];
        Ok(Self {
            queues: QueueSettings {
                visibility_timeout_secs: t
                    .number(&[&queue[..], &["VisibilityTimeout"]].concat())?,
                retention_secs: t.number(&[&queue[..], &["MessageRetentionPeriod"]].concat())?,
                dlq_retention_secs: t.number(&[&dlq[..], &["MessageRetentionPeriod"]].concat())?,
                max_receive_count: t
                    .number(&[&queue[..], &["RedrivePolicy", "maxReceiveCount"]].concat())?,
            },
            event_source: EventSourceSettings {
                batch_size: t.number(&[&event[..], &["BatchSize"]].concat())?,
                batching_window: Duration::from_secs(
                    t.number(&[&event[..], &["MaximumBatchingWindowInSeconds"]].concat())?,
                ),
                max_concurrency: t
                    .number(&[&event[..], &["ScalingConfig", "MaximumConcurrency"]].concat())?,
            },
        })
    }
}

struct Reader<'a> {
    doc: &'a Value,
}

impl Reader<'_> {
    fn get(&self, path: &[&str]) -> Result<&Value, TemplateError> {
        path.iter()
            .try_fold(self.doc, |node, key| node.get(key))
            .ok_or_else(|| TemplateError::Missing(path.join(".")))
    }

    /// A literal number, or a `!Ref` to a parameter whose `Default` is one.
    fn number<N: TryFrom<u64>>(&self, path: &[&str]) -> Result<N, TemplateError> {
        let name = || path[1..].join(".");
        let mut value = self.get(path)?;
        if let Value::Tagged(tagged) = value {
            let parameter = match (tagged.tag.to_string().as_str(), &tagged.value) {
                ("!Ref", Value::String(parameter)) => parameter,
                _ => return Err(TemplateError::NotANumber(name())),
            };
            value = self.get(&["Parameters", parameter, "Default"])?;
        }
        let number = match value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        };
        number
            .and_then(|n| N::try_from(n).ok())
            .ok_or_else(|| TemplateError::NotANumber(name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROJECT_TEMPLATE: &str = include_str!("../../infra/template.yaml");

    #[test]
    fn the_project_template_yields_every_local_setting() {
        let template = Template::parse(PROJECT_TEMPLATE).expect("the template is readable");
        let queues = template.queues;
        assert!(queues.max_receive_count >= 3);
        assert_eq!(queues.dlq_retention_secs, 14 * 24 * 3600);
        assert!(template.event_source.batch_size >= 1);
        assert!(template.event_source.max_concurrency >= 2);
    }

    #[test]
    fn a_ref_resolves_to_the_parameter_default() {
        let template =
            PROJECT_TEMPLATE.replace("Default: 5\n    MinValue: 3", "Default: 7\n    MinValue: 3");
        let parsed = Template::parse(&template).expect("readable");
        assert_eq!(parsed.queues.max_receive_count, 7);
    }

    #[test]
    fn a_missing_setting_is_named() {
        let template = PROJECT_TEMPLATE.replace("VisibilityTimeout:", "VisibilityTimeoutX:");
        let err = Template::parse(&template).expect_err("missing");
        assert!(
            err.to_string()
                .contains("OrdersQueue.Properties.VisibilityTimeout"),
            "{err}"
        );
    }
}
