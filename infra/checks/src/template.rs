//! The queue and event-source settings of `infra/template.yaml`, read so that the
//! local stack behaves like the deployed one and the two cannot drift apart.
//!
//! [`Document`] is the template as data, for anything else that reads it (the
//! template's own tests): CloudFormation's short-form tags such as `!Ref X` stay
//! in the tree as [`Value::Tagged`], and [`intrinsic`] names them.

use std::time::Duration;

pub use serde_yaml_ng::Value;

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
    #[error(
        "{0} in the SAM template is a !Ref to a parameter without a MaxValue: give the parameter one, so its largest value is known"
    )]
    Unbounded(String),
}

/// The queue pair as the template declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    pub visibility_timeout_secs: u32,
    pub retention_secs: u32,
    pub dlq_retention_secs: u32,
    pub max_receive_count: u32,
}

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

    pub fn parse(yaml: &str) -> Result<Self, TemplateError> {
        Self::from_document(&Document::parse(yaml)?)
    }

    pub fn from_document(t: &Document) -> Result<Self, TemplateError> {
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
                // The function's own Timeout, else the template's Globals.
                function_timeout: Duration::from_secs(
                    t.number(&["Resources", FUNCTION, "Properties", "Timeout"])
                        .or_else(|_| t.number(&["Globals", "Function", "Timeout"]))?,
                ),
            },
        })
    }
}

/// A CloudFormation (or SAM) template as a YAML tree.
#[derive(Debug, Clone)]
pub struct Document {
    root: Value,
}

impl Document {
    pub fn from_file(path: &str) -> Result<Self, TemplateError> {
        let text = std::fs::read_to_string(path).map_err(|source| TemplateError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    pub fn parse(yaml: &str) -> Result<Self, TemplateError> {
        Ok(Self {
            root: serde_yaml_ng::from_str(yaml)?,
        })
    }

    pub fn root(&self) -> &Value {
        &self.root
    }

    /// The node at `path` (mapping keys from the top), or an error naming the path.
    pub fn get(&self, path: &[&str]) -> Result<&Value, TemplateError> {
        path.iter()
            .try_fold(&self.root, |node, key| node.get(key))
            .ok_or_else(|| TemplateError::Missing(path.join(".")))
    }

    /// The resources of one `Type` (e.g. `AWS::IAM::Role`), by logical id.
    pub fn resources_of_type<'a>(
        &'a self,
        kind: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Value)> + 'a {
        self.root
            .get("Resources")
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
            .filter_map(|(id, resource)| Some((id.as_str()?, resource)))
            .filter(move |(_, resource)| resource.get("Type").and_then(Value::as_str) == Some(kind))
    }

    /// A literal number, or a `!Ref` to a parameter whose `Default` is one: the
    /// value a deploy gets when nobody overrides it.
    pub fn number<N: TryFrom<u64>>(&self, path: &[&str]) -> Result<N, TemplateError> {
        self.resolve_number(path, Bound::Default)
    }

    /// A literal number, or a `!Ref` to a parameter: its `MaxValue`, the largest
    /// value a deploy can give it.
    pub fn largest<N: TryFrom<u64>>(&self, path: &[&str]) -> Result<N, TemplateError> {
        self.resolve_number(path, Bound::MaxValue)
    }

    fn resolve_number<N: TryFrom<u64>>(
        &self,
        path: &[&str],
        bound: Bound,
    ) -> Result<N, TemplateError> {
        let name = || path[1..].join(".");
        let mut value = self.get(path)?;
        if let Some(parameter) = reference(value) {
            value = match bound {
                Bound::Default => self.get(&["Parameters", parameter, "Default"])?,
                Bound::MaxValue => self
                    .get(&["Parameters", parameter, "MaxValue"])
                    .map_err(|_| TemplateError::Unbounded(name()))?,
            };
        } else if intrinsic(value).is_some() {
            return Err(TemplateError::NotANumber(name()));
        }
        as_u64(value)
            .and_then(|n| N::try_from(n).ok())
            .ok_or_else(|| TemplateError::NotANumber(name()))
    }
}

/// Which value of a parameter stands for a `!Ref` to it.
#[derive(Debug, Clone, Copy)]
enum Bound {
    Default,
    MaxValue,
}

/// A number written as a YAML number or a string ("5"), as CloudFormation accepts both.
pub fn as_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A short-form intrinsic function: its tag without the `!` (`Ref`, `GetAtt`,
/// `Sub`, …) and its argument.
pub fn intrinsic(value: &Value) -> Option<(String, &Value)> {
    match value {
        Value::Tagged(tagged) => Some((
            tagged.tag.to_string().trim_start_matches('!').to_owned(),
            &tagged.value,
        )),
        _ => None,
    }
}

/// The name in a `!Ref Name`.
pub fn reference(value: &Value) -> Option<&str> {
    match intrinsic(value) {
        Some((tag, Value::String(name))) if tag == "Ref" => Some(name),
        _ => None,
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
        assert_eq!(
            template.event_source.function_timeout,
            Duration::from_secs(30)
        );
    }

    #[test]
    fn a_ref_resolves_to_the_parameter_default() {
        let template =
            PROJECT_TEMPLATE.replace("Default: 6\n    MinValue: 3", "Default: 7\n    MinValue: 3");
        let parsed = Template::parse(&template).expect("readable");
        assert_eq!(parsed.queues.max_receive_count, 7);
    }

    #[test]
    fn the_largest_value_of_a_ref_is_its_parameters_max_value() {
        let doc = Document::parse(
            "Parameters:\n  W:\n    Type: Number\n    Default: 1\n    MaxValue: 20\n  U:\n    Type: Number\n    Default: 3\nResources:\n  R:\n    Properties:\n      A: !Ref W\n      B: !Ref U\n      C: 7\n",
        )
        .expect("yaml");
        let path = |key| ["Resources", "R", "Properties", key];
        assert_eq!(doc.number::<u64>(&path("A")).expect("default"), 1);
        assert_eq!(doc.largest::<u64>(&path("A")).expect("max"), 20);
        assert_eq!(doc.largest::<u64>(&path("C")).expect("literal"), 7);
        let err = doc.largest::<u64>(&path("B")).expect_err("no MaxValue");
        assert!(matches!(err, TemplateError::Unbounded(_)), "{err}");
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
