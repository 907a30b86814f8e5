//! One line of an export file: one DLQ message as JSON.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{Message, MessageAttributeValue};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::inspect::{AttributeView, MessageView};

/// A DLQ message as `export` writes it and `import` reads it: the body and the
/// message attributes exactly (binary values in base64), and where it stood
/// in the DLQ: its message id, receive count and sent time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub message_id: String,
    pub receive_count: Option<u32>,
    pub sent_at: Option<DateTime<Utc>>,
    pub body: String,
    #[serde(default)]
    pub message_attributes: BTreeMap<String, AttributeView>,
}

/// A line that is not a record, or a record SQS could not take back.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("not an exported message ({0})")]
    Json(#[from] serde_json::Error),
    #[error("attribute `{name}`: {problem}")]
    Attribute { name: String, problem: String },
}

impl Record {
    pub fn of(message: &Message) -> Self {
        let view = MessageView::new(message);
        Self {
            message_id: view.message_id,
            receive_count: view.receive_count,
            sent_at: view.sent_at,
            body: view.body,
            message_attributes: view.message_attributes,
        }
    }

    /// One line of the file, newline included.
    pub fn to_line(&self) -> String {
        // A struct of strings, numbers and maps of strings always serialises.
        let mut line = serde_json::to_string(self)
            .unwrap_or_else(|err| unreachable!("a record serialises: {err}"));
        line.push('\n');
        line
    }

    pub fn from_line(line: &str) -> Result<Self, RecordError> {
        Ok(serde_json::from_str(line)?)
    }

    /// The message attributes as SQS takes them, binary ones decoded.
    pub fn attributes(&self) -> Result<HashMap<String, MessageAttributeValue>, RecordError> {
        self.message_attributes
            .iter()
            .map(|(name, view)| {
                let problem = |problem: String| RecordError::Attribute {
                    name: name.clone(),
                    problem,
                };
                let binary = view
                    .binary_value_base64
                    .as_deref()
                    .map(aws_smithy_types::base64::decode)
                    .transpose()
                    .map_err(|err| problem(format!("its binary value is not base64: {err}")))?;
                let value = MessageAttributeValue::builder()
                    .data_type(&view.data_type)
                    .set_string_value(view.string_value.clone())
                    .set_binary_value(binary.map(Blob::new))
                    .build()
                    .map_err(|err| problem(err.to_string()))?;
                Ok((name.clone(), value))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::types::MessageSystemAttributeName;

    #[test]
    fn a_record_keeps_the_body_and_every_attribute_through_its_line() {
        let binary = MessageAttributeValue::builder()
            .data_type("Binary")
            .binary_value(Blob::new(vec![0u8, 159, 255]))
            .build()
            .expect("attribute");
        let text = MessageAttributeValue::builder()
            .data_type("String.custom")
            .string_value("é \"quoted\"\n")
            .build()
            .expect("attribute");
        let message = Message::builder()
            .message_id("m-1")
            .body("  {\"a\": 1}\n")
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "3")
            .attributes(MessageSystemAttributeName::SentTimestamp, "1796054400000")
            .message_attributes("trace", binary.clone())
            .message_attributes("note", text.clone())
            .build();
        let record = Record::of(&message);
        let line = record.to_line();
        assert_eq!(line.matches('\n').count(), 1, "one line: {line}");
        let back = Record::from_line(line.trim_end()).expect("parses");
        assert_eq!(back, record);
        assert_eq!(back.receive_count, Some(3));
        assert_eq!(back.message_id, "m-1");
        assert_eq!(back.body, "  {\"a\": 1}\n");
        let attributes = back.attributes().expect("attributes");
        assert_eq!(attributes["trace"], binary);
        assert_eq!(attributes["note"], text);
    }

    #[test]
    fn a_line_that_is_not_a_record_says_so() {
        let err = Record::from_line("{\"message_id\":\"m-1\",\"bo").expect_err("cut short");
        assert!(
            err.to_string().starts_with("not an exported message"),
            "{err}"
        );
    }
}
