//! What a DLQ message is: its [`Record`] (what `export` writes), its order when
//! one can be read, and why it is in the DLQ. Pure functions of the message.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};
use chrono::{DateTime, Utc};
use order_contract::{Failure, FailureClass, OrderPlaced};
use serde::{Deserialize, Serialize};

/// A DLQ message as one line of an export file: the body and the message
/// attributes exactly, and where it stood in the DLQ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub message_id: String,
    /// ApproximateReceiveCount, this look included.
    pub receive_count: Option<u32>,
    pub sent_at: Option<DateTime<Utc>>,
    pub body: String,
    #[serde(default)]
    pub message_attributes: BTreeMap<String, AttributeView>,
}

/// A message attribute, binary values in base64 so that JSON can carry them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeView {
    pub data_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub string_value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary_value_base64: Option<String>,
}

/// One DLQ message as `peek` shows it: its record, and what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageView {
    #[serde(flatten)]
    pub record: Record,
    /// The `order_id` field, when the body is JSON with one, valid order or not.
    pub order_id: Option<String>,
    pub first_received_at: Option<DateTime<Utc>>,
    /// Body and message attributes, counted as SQS counts a message's size.
    pub size_bytes: usize,
    pub excerpt: String,
    /// Why the contract rejects the body; `None` for a valid order.
    pub invalid_reason: Option<String>,
    pub failure_class: FailureClass,
    /// The failure's detail (the field, or the SQLSTATE and its text).
    pub failure_detail: Option<String>,
    /// Whether the failure attributes say why (`false`: the body judged again).
    pub failure_recorded: bool,
}

/// Characters of the body shown in the table's excerpt.
pub const EXCERPT_CHARS: usize = 40;

impl MessageView {
    /// Without failure attributes, a valid order is `redriven` (the redrive
    /// policy moved it), and any other body has the contract's class.
    pub fn new(message: &Message) -> Self {
        let body = message.body().unwrap_or_default();
        let system = |name| message.attributes().and_then(|a| a.get(&name));
        let time = |name| DateTime::from_timestamp_millis(system(name)?.parse().ok()?);
        let attributes = message.message_attributes().cloned().unwrap_or_default();
        let parsed = OrderPlaced::from_json(body);
        let (order_id, invalid_reason) = match &parsed {
            Ok(placed) => (Some(placed.order.order_id().to_string()), None),
            Err(err) => (lenient_order_id(body), Some(err.to_string())),
        };
        let recorded = Failure::read(|name| attributes.get(name)?.string_value());
        let (failure_class, failure_detail, failure_recorded) = match (recorded, &parsed) {
            (Some(failure), _) => (failure.class, failure.detail, true),
            (None, Ok(_)) => (FailureClass::Redriven, None, false),
            (None, Err(err)) => (FailureClass::of(err), Some(err.to_string()), false),
        };
        Self {
            record: Record {
                message_id: message.message_id().unwrap_or_default().to_owned(),
                receive_count: system(MessageSystemAttributeName::ApproximateReceiveCount)
                    .and_then(|n| n.parse().ok()),
                sent_at: time(MessageSystemAttributeName::SentTimestamp),
                body: body.to_owned(),
                message_attributes: attributes
                    .iter()
                    .map(|(name, value)| (name.clone(), AttributeView::new(value)))
                    .collect(),
            },
            order_id,
            first_received_at: time(MessageSystemAttributeName::ApproximateFirstReceiveTimestamp),
            size_bytes: support::sqs::message_size(body, Some(&attributes)),
            excerpt: excerpt(body, EXCERPT_CHARS),
            invalid_reason,
            failure_class,
            failure_detail,
            failure_recorded,
        }
    }

    pub fn is_valid(&self) -> bool {
        self.invalid_reason.is_none()
    }
}

/// A line that is not a record, or a record SQS could not take back.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("not an exported message ({0})")]
    Json(#[from] serde_json::Error),
    #[error("attribute `{name}`: its binary value is not base64: {problem}")]
    Attribute { name: String, problem: String },
}

impl Record {
    /// One line of the file, newline included.
    pub fn to_line(&self) -> String {
        // A struct of strings, numbers and maps of strings always serialises.
        let line = serde_json::to_string(self)
            .unwrap_or_else(|err| unreachable!("a record serialises: {err}"));
        line + "\n"
    }

    /// A line of the file and the message attributes as SQS takes them.
    pub fn from_line(
        line: &str,
    ) -> Result<(Self, HashMap<String, MessageAttributeValue>), RecordError> {
        let record: Self = serde_json::from_str(line)?;
        let attributes = record
            .message_attributes
            .iter()
            .map(|(name, view)| {
                let binary = view
                    .binary_value_base64
                    .as_deref()
                    .map(aws_smithy_types::base64::decode)
                    .transpose()
                    .map_err(|err| RecordError::Attribute {
                        name: name.clone(),
                        problem: err.to_string(),
                    })?;
                let value = MessageAttributeValue::builder()
                    .data_type(&view.data_type)
                    .set_string_value(view.string_value.clone())
                    .set_binary_value(binary.map(Blob::new))
                    .build()
                    // Only a missing data type fails, and serde required it.
                    .unwrap_or_else(|err| unreachable!("an attribute with a type: {err}"));
                Ok((name.clone(), value))
            })
            .collect::<Result<_, RecordError>>()?;
        Ok((record, attributes))
    }
}

impl AttributeView {
    pub fn new(value: &MessageAttributeValue) -> Self {
        Self {
            data_type: value.data_type().to_owned(),
            string_value: value.string_value().map(str::to_owned),
            binary_value_base64: value
                .binary_value()
                .map(|b| aws_smithy_types::base64::encode(b.as_ref())),
        }
    }
}

fn lenient_order_id(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    value.get("order_id")?.as_str().map(str::to_owned)
}

/// The first `max` characters on one line: control characters (newlines, tabs)
/// become spaces so that a table row stays a row; "…" marks a cut.
pub fn excerpt(body: &str, max: usize) -> String {
    let mut out: String = body
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if body.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    const ORDER_ID: Uuid = Uuid::from_u128(0x3f0c1b6e_6a3b_4f7e_9d43_1b8d6f2a9c10);

    /// The fixture's one-line order under [`ORDER_ID`], as the producer enqueues it.
    fn valid() -> String {
        let request = order_contract::fixtures::order_request_with_id(ORDER_ID, 42, 1);
        let order = order_contract::fixtures::order_from_request(&request);
        let received_at = "2026-11-24T18:27:15.123Z".parse().expect("a timestamp");
        OrderPlaced::new(order, received_at).to_json()
    }

    /// [`valid`] with its first line's quantity 0.
    fn invalid() -> String {
        let mut body: serde_json::Value = serde_json::from_str(&valid()).expect("JSON");
        body["items"][0]["quantity"] = 0.into();
        body.to_string()
    }

    fn view(body: &str, failure: Option<&Failure>) -> MessageView {
        let mut message = Message::builder().message_id("m-1").body(body);
        for a in failure.map(Failure::attributes).unwrap_or_default() {
            let value = MessageAttributeValue::builder()
                .data_type(a.data_type)
                .string_value(a.value)
                .build()
                .expect("attribute");
            message = message.message_attributes(a.name, value);
        }
        MessageView::new(&message.build())
    }

    #[test]
    fn a_valid_order_without_failure_attributes_is_one_the_redrive_policy_moved() {
        let view = view(&valid(), None);
        assert_eq!(
            view.order_id.as_deref(),
            Some("3f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10")
        );
        assert!(view.is_valid());
        assert_eq!(view.failure_class, FailureClass::Redriven);
        assert_eq!((view.failure_detail, view.failure_recorded), (None, false));
    }

    #[test]
    fn an_invalid_order_keeps_its_id_and_the_body_says_the_class_and_the_field() {
        let view = view(&invalid(), None);
        assert!(
            view.invalid_reason
                .expect("invalid")
                .contains("items[0].quantity")
        );
        assert_eq!(
            view.order_id.as_deref(),
            Some("3f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10"),
            "the id of an invalid order is still shown"
        );
        assert_eq!(view.failure_class, FailureClass::InvalidOrder);
        assert!(
            view.failure_detail
                .expect("detail")
                .contains("items[0].quantity")
        );
    }

    #[test]
    fn text_that_is_not_json_has_no_order_id_and_is_invalid_json() {
        let view = view("this is not JSON", None);
        assert_eq!(view.order_id, None);
        assert!(
            view.invalid_reason
                .expect("invalid")
                .contains("not valid JSON")
        );
        assert_eq!(view.failure_class, FailureClass::InvalidJson);
    }

    #[test]
    fn the_reason_the_consumer_recorded_wins_over_the_body() {
        let failure = Failure {
            class: FailureClass::RowRefused,
            detail: Some("23514: violates check constraint".into()),
            message_id: Some("original".into()),
            receive_count: Some(1),
            failed_at: None,
            consumer_version: Some("0.1.0".into()),
        };
        let view = view(&valid(), Some(&failure));
        assert_eq!(view.failure_class, FailureClass::RowRefused);
        assert_eq!(
            view.failure_detail.as_deref(),
            Some("23514: violates check constraint")
        );
        assert!(view.failure_recorded && view.is_valid());
    }

    #[test]
    fn an_excerpt_is_one_line_and_marks_a_cut() {
        assert_eq!(excerpt("a\nb\tc", 10), "a b c");
        assert_eq!(excerpt("abcdef", 3), "abc…");
        assert_eq!(excerpt("abc", 3), "abc");
        assert_eq!(excerpt("ééééé", 2), "éé…", "characters, not bytes");
    }

    #[test]
    fn a_message_is_described_from_its_attributes_and_its_record_survives_its_line() {
        let binary = MessageAttributeValue::builder()
            .data_type("Binary")
            .binary_value(Blob::new(vec![0u8, 255]))
            .build()
            .expect("attribute");
        let text = MessageAttributeValue::builder()
            .data_type("String.custom")
            .string_value("é \"quoted\"\n")
            .build()
            .expect("attribute");
        let body = "  {\"a\": 1}\n";
        let message = Message::builder()
            .message_id("m-1")
            .body(body)
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "6")
            .attributes(MessageSystemAttributeName::SentTimestamp, "1796054400000")
            .attributes(
                MessageSystemAttributeName::ApproximateFirstReceiveTimestamp,
                "1796054401500",
            )
            .message_attributes("trace", binary.clone())
            .message_attributes("note", text.clone())
            .build();
        let view = MessageView::new(&message);
        assert_eq!(view.record.receive_count, Some(6));
        assert_eq!(
            view.record.sent_at.map(|t| t.to_rfc3339()),
            Some("2026-11-30T16:00:00+00:00".to_owned())
        );
        assert_eq!(
            view.first_received_at.map(|t| t.timestamp_millis()),
            Some(1_796_054_401_500)
        );
        assert_eq!(
            view.size_bytes,
            body.len()
                + "trace".len()
                + "Binary".len()
                + 2
                + "note".len()
                + "String.custom".len()
                + "é \"quoted\"\n".len()
        );
        assert_eq!(
            view.record.message_attributes["trace"]
                .binary_value_base64
                .as_deref(),
            Some("AP8=")
        );
        let line = view.record.to_line();
        assert_eq!(line.matches('\n').count(), 1, "one line: {line}");
        let (back, attributes) = Record::from_line(line.trim_end()).expect("parses");
        assert_eq!(back, view.record);
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
