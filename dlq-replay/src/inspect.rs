//! What a DLQ message is: its order (when one can be read), its SQS history,
//! why it is in the DLQ ([`Reason`]) and why the contract rejects it. Pure
//! functions of the received message.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};
use chrono::{DateTime, Utc};
use order_contract::{Failure, FailureClass, OrderPlaced};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Characters of the body shown in the table's excerpt.
pub const EXCERPT_CHARS: usize = 40;

/// One DLQ message, as `peek` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageView {
    pub message_id: String,
    /// The `order_id` field, when the body is JSON with one (even an invalid order has it).
    pub order_id: Option<String>,
    /// ApproximateReceiveCount, this look included.
    pub receive_count: Option<u32>,
    pub first_received_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
    /// Body and message attributes, counted as SQS counts a message's size.
    pub size_bytes: usize,
    pub excerpt: String,
    /// Why the contract rejects the body; `None` for a valid `OrderPlaced`.
    pub invalid_reason: Option<String>,
    /// Why the message is in the DLQ: its failure class.
    #[serde(serialize_with = "class_name")]
    pub failure_class: FailureClass,
    /// The failure's detail (the field, or the SQLSTATE and its text).
    pub failure_detail: Option<String>,
    /// Whether the consumer recorded the reason in the failure attributes
    /// (`false`: read from the body, as for a message the redrive policy moved).
    pub failure_recorded: bool,
    pub body: String,
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

impl MessageView {
    pub fn new(message: &Message) -> Self {
        let body = message.body().unwrap_or_default();
        let verdict = Verdict::of(body);
        let system = |name: MessageSystemAttributeName| {
            message
                .attributes()
                .and_then(|a| a.get(&name))
                .map(String::as_str)
        };
        let attributes = message.message_attributes().cloned().unwrap_or_default();
        let reason = Reason::of(&attributes, body);
        Self {
            message_id: message.message_id().unwrap_or_default().to_owned(),
            order_id: verdict.order_id,
            receive_count: system(MessageSystemAttributeName::ApproximateReceiveCount)
                .and_then(|n| n.parse().ok()),
            first_received_at: system(MessageSystemAttributeName::ApproximateFirstReceiveTimestamp)
                .and_then(from_epoch_millis),
            sent_at: system(MessageSystemAttributeName::SentTimestamp).and_then(from_epoch_millis),
            size_bytes: support::sqs::message_size(body, Some(&attributes)),
            excerpt: excerpt(body, EXCERPT_CHARS),
            invalid_reason: verdict.invalid_reason,
            failure_class: reason.class,
            failure_detail: reason.detail,
            failure_recorded: reason.recorded,
            body: body.to_owned(),
            message_attributes: attributes
                .iter()
                .map(|(name, value)| (name.clone(), AttributeView::new(value)))
                .collect(),
        }
    }

    pub fn is_valid(&self) -> bool {
        self.invalid_reason.is_none()
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

pub(crate) fn class_name<S: serde::Serializer>(
    class: &FailureClass,
    out: S,
) -> Result<S::Ok, S::Error> {
    out.serialize_str(class.as_str())
}

/// Why a message is in the DLQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub class: FailureClass,
    pub detail: Option<String>,
    /// Read from the failure attributes the consumer wrote, rather than from the body.
    pub recorded: bool,
}

impl Reason {
    /// The failure attributes when the message has them; otherwise the body
    /// re-parsed: the contract's class for a body it refuses, `redriven` for a
    /// valid order (the redrive policy moved it, the handler never said why).
    pub fn of(attributes: &HashMap<String, MessageAttributeValue>, body: &str) -> Self {
        let recorded = Failure::read(|name| {
            attributes
                .get(name)
                .and_then(MessageAttributeValue::string_value)
        });
        if let Some(failure) = recorded {
            return Self {
                class: failure.class,
                detail: failure.detail,
                recorded: true,
            };
        }
        match OrderPlaced::from_json(body) {
            Ok(_) => Self {
                class: FailureClass::Redriven,
                detail: None,
                recorded: false,
            },
            Err(err) => Self {
                class: FailureClass::of(&err),
                detail: Some(err.to_string()),
                recorded: false,
            },
        }
    }
}

/// What the contract says about a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub order_id: Option<String>,
    pub invalid_reason: Option<String>,
}

impl Verdict {
    /// Validates with the consumer's own code, so "invalid" here means exactly
    /// "the consumer would reject it again".
    pub fn of(body: &str) -> Self {
        match OrderPlaced::from_json(body) {
            Ok(placed) => Self {
                order_id: Some(placed.order.order_id().to_string()),
                invalid_reason: None,
            },
            Err(err) => Self {
                order_id: lenient_order_id(body),
                invalid_reason: Some(err.to_string()),
            },
        }
    }

    /// The order id as a UUID, for `--order-id` (which compares ids, not spellings).
    pub fn order_uuid(&self) -> Option<Uuid> {
        self.order_id.as_deref().and_then(|id| id.parse().ok())
    }
}

/// The `order_id` of any JSON object that has one as a string, valid order or not.
fn lenient_order_id(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    value.get("order_id")?.as_str().map(str::to_owned)
}

fn from_epoch_millis(text: &str) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(text.parse().ok()?)
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
    use aws_sdk_sqs::primitives::Blob;

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

    #[test]
    fn a_valid_order_has_its_id_and_no_reason() {
        let verdict = Verdict::of(&valid());
        assert_eq!(
            verdict.order_id.as_deref(),
            Some("3f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10")
        );
        assert_eq!(verdict.invalid_reason, None);
    }

    #[test]
    fn an_order_that_fails_validation_is_reported_with_its_field() {
        let verdict = Verdict::of(&invalid());
        let reason = verdict.invalid_reason.expect("invalid");
        assert!(reason.contains("items[0].quantity"), "{reason}");
        assert_eq!(
            verdict.order_id.as_deref(),
            Some("3f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10"),
            "the id of an invalid order is still shown"
        );
    }

    #[test]
    fn text_that_is_not_json_is_invalid_and_has_no_order_id() {
        let verdict = Verdict::of("this is not JSON");
        assert_eq!(verdict.order_id, None);
        assert!(
            verdict
                .invalid_reason
                .expect("invalid")
                .contains("not valid JSON")
        );
    }

    #[test]
    fn an_order_id_is_compared_as_a_uuid_whatever_its_case() {
        let verdict = Verdict::of(&valid().replace("3f0c1b6e", "3F0C1B6E"));
        assert_eq!(
            verdict.order_uuid(),
            Some(
                "3f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10"
                    .parse()
                    .expect("uuid")
            )
        );
    }

    #[test]
    fn an_excerpt_is_one_line_and_marks_a_cut() {
        assert_eq!(excerpt("a\nb\tc", 10), "a b c");
        assert_eq!(excerpt("abcdef", 3), "abc…");
        assert_eq!(excerpt("abc", 3), "abc");
        assert_eq!(excerpt("ééééé", 2), "éé…", "characters, not bytes");
    }

    fn failure_attributes(failure: &Failure) -> HashMap<String, MessageAttributeValue> {
        failure
            .attributes()
            .into_iter()
            .map(|a| {
                let value = MessageAttributeValue::builder()
                    .data_type(a.data_type)
                    .string_value(a.value)
                    .build()
                    .expect("attribute");
                (a.name.to_owned(), value)
            })
            .collect()
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
        let reason = Reason::of(&failure_attributes(&failure), &valid());
        assert_eq!(
            reason,
            Reason {
                class: FailureClass::RowRefused,
                detail: Some("23514: violates check constraint".into()),
                recorded: true,
            }
        );
    }

    #[test]
    fn without_failure_attributes_the_body_says_the_class() {
        let none = HashMap::new();
        let not_json = Reason::of(&none, "this is not JSON");
        assert_eq!(not_json.class, FailureClass::InvalidJson);
        assert!(!not_json.recorded);
        assert!(
            not_json.detail.expect("detail").contains("not valid JSON"),
            "the contract's message is the detail"
        );
        let invalid = Reason::of(&none, &invalid());
        assert_eq!(invalid.class, FailureClass::InvalidOrder);
        assert!(
            invalid
                .detail
                .expect("detail")
                .contains("items[0].quantity")
        );
        assert_eq!(
            Reason::of(&none, &valid()),
            Reason {
                class: FailureClass::Redriven,
                detail: None,
                recorded: false,
            },
            "a valid order without attributes is one the redrive policy moved"
        );
    }

    #[test]
    fn a_message_is_described_from_its_attributes() {
        let body = valid();
        let message = Message::builder()
            .message_id("m-1")
            .body(&body)
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "6")
            .attributes(MessageSystemAttributeName::SentTimestamp, "1796054400000")
            .attributes(
                MessageSystemAttributeName::ApproximateFirstReceiveTimestamp,
                "1796054401500",
            )
            .message_attributes(
                "trace",
                MessageAttributeValue::builder()
                    .data_type("Binary")
                    .binary_value(Blob::new(vec![0u8, 255]))
                    .build()
                    .expect("attribute"),
            )
            .build();
        let view = MessageView::new(&message);
        assert_eq!(view.message_id, "m-1");
        assert_eq!(view.receive_count, Some(6));
        assert_eq!(
            view.sent_at.map(|t| t.to_rfc3339()),
            Some("2026-11-30T16:00:00+00:00".to_owned())
        );
        assert_eq!(
            view.first_received_at.map(|t| t.timestamp_millis()),
            Some(1_796_054_401_500)
        );
        assert_eq!(
            view.size_bytes,
            body.len() + "trace".len() + "Binary".len() + 2
        );
        assert_eq!(
            view.message_attributes["trace"]
                .binary_value_base64
                .as_deref(),
            Some("AP8=")
        );
        assert!(view.is_valid());
    }
}
