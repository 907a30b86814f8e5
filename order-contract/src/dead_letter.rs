//! Why a message is in the dead-letter queue, as attributes on it: the
//! consumer adds a [`Failure`]'s (`failure.*`), `replay-dlq` reads them and
//! removes them on a replay, adding [`REPLAYED_FROM_ATTRIBUTE`]. A message the
//! redrive policy moved has none: [`FailureClass::Redriven`].

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::error::ContractError;

/// SQS's limit on message attributes per message; it refuses a message with
/// more (<https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-message-metadata.html>).
pub const MAX_MESSAGE_ATTRIBUTES: usize = 10;

pub const FAILURE_ATTRIBUTE_PREFIX: &str = "failure.";
pub const CLASS_ATTRIBUTE: &str = "failure.class";
pub const DETAIL_ATTRIBUTE: &str = "failure.detail";
/// The id of the message that failed, on the orders queue (the DLQ copy has its own).
pub const MESSAGE_ID_ATTRIBUTE: &str = "failure.message_id";
pub const RECEIVE_COUNT_ATTRIBUTE: &str = "failure.receive_count";
pub const FAILED_AT_ATTRIBUTE: &str = "failure.failed_at";
pub const CONSUMER_VERSION_ATTRIBUTE: &str = "failure.consumer_version";

/// Set by a replay: the id of the DLQ message the replayed one was.
pub const REPLAYED_FROM_ATTRIBUTE: &str = "replayed_from";

/// The longest detail kept, in bytes: a field and its problem, or an SQLSTATE and its text.
pub const MAX_DETAIL_LEN: usize = 256;

pub fn is_failure_attribute(name: &str) -> bool {
    name.starts_with(FAILURE_ATTRIBUTE_PREFIX)
}

/// Why a message can never be stored as it is; serialised as [`FailureClass::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    InvalidJson,
    /// The detail names the field.
    InvalidOrder,
    /// Written by a newer producer: upgrade the consumer, then replay.
    UnsupportedSchemaVersion,
    /// The detail has the SQLSTATE.
    RowRefused,
    /// Moved by the redrive policy after `maxReceiveCount` receives.
    Redriven,
}

impl FailureClass {
    pub const ALL: [Self; 5] = [
        Self::InvalidJson,
        Self::InvalidOrder,
        Self::UnsupportedSchemaVersion,
        Self::RowRefused,
        Self::Redriven,
    ];

    /// The class of a body the contract refuses.
    pub fn of(err: &ContractError) -> Self {
        match err {
            ContractError::Malformed { .. } => Self::InvalidJson,
            ContractError::Invalid { .. } => Self::InvalidOrder,
            ContractError::UnsupportedVersion { .. } => Self::UnsupportedSchemaVersion,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidOrder => "invalid_order",
            Self::UnsupportedSchemaVersion => "unsupported_schema_version",
            Self::RowRefused => "row_refused",
            Self::Redriven => "redriven",
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown failure class `{0}`; use one of: invalid_json, invalid_order, unsupported_schema_version, row_refused, redriven"
)]
pub struct UnknownClass(pub String);

impl FromStr for FailureClass {
    type Err = UnknownClass;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|class| class.as_str() == name)
            .ok_or_else(|| UnknownClass(name.to_owned()))
    }
}

/// Why a message failed, as its failure attributes say. The consumer sets
/// every field; a reader finds `None` where the message had no room left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub class: FailureClass,
    pub detail: Option<String>,
    pub message_id: Option<String>,
    pub receive_count: Option<u32>,
    pub failed_at: Option<DateTime<Utc>>,
    pub consumer_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureAttribute {
    pub name: &'static str,
    /// `String` or `Number`.
    pub data_type: &'static str,
    pub value: String,
}

impl Failure {
    /// The attributes, most telling first (a message with room for only some
    /// keeps the class and the detail). The detail is cut and cleaned: a
    /// parser's error can quote the body.
    pub fn attributes(&self) -> Vec<FailureAttribute> {
        let failed_at = |at: DateTime<Utc>| at.to_rfc3339_opts(SecondsFormat::Millis, true);
        let detail = self.detail.as_deref().map(sendable_detail);
        [
            (CLASS_ATTRIBUTE, Some(self.class.to_string())),
            (DETAIL_ATTRIBUTE, detail),
            (MESSAGE_ID_ATTRIBUTE, self.message_id.clone()),
            (
                RECEIVE_COUNT_ATTRIBUTE,
                self.receive_count.map(|n| n.to_string()),
            ),
            (FAILED_AT_ATTRIBUTE, self.failed_at.map(failed_at)),
            (CONSUMER_VERSION_ATTRIBUTE, self.consumer_version.clone()),
        ]
        .into_iter()
        .filter_map(|(name, value)| {
            // SQS refuses an empty string value.
            let value = value.filter(|value| !value.is_empty())?;
            let data_type = if name == RECEIVE_COUNT_ATTRIBUTE {
                "Number"
            } else {
                "String"
            };
            Some(FailureAttribute {
                name,
                data_type,
                value,
            })
        })
        .collect()
    }

    /// Reads the failure attributes back through `attribute` (name to string
    /// value); `None` when the message has no known class.
    pub fn read<'a>(attribute: impl Fn(&str) -> Option<&'a str>) -> Option<Self> {
        let class = attribute(CLASS_ATTRIBUTE)?.parse().ok()?;
        let text = |name| attribute(name).map(str::to_owned);
        Some(Self {
            class,
            detail: text(DETAIL_ATTRIBUTE),
            message_id: text(MESSAGE_ID_ATTRIBUTE),
            receive_count: attribute(RECEIVE_COUNT_ATTRIBUTE).and_then(|n| n.parse().ok()),
            failed_at: attribute(FAILED_AT_ATTRIBUTE)
                .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
                .map(|at| at.with_timezone(&Utc)),
            consumer_version: text(CONSUMER_VERSION_ATTRIBUTE),
        })
    }
}

/// `text` cut to at most [`MAX_DETAIL_LEN`] bytes at a character boundary,
/// each character SQS refuses in a message replaced by U+FFFD: SQS takes tab,
/// line feed, carriage return and U+0020 up, except U+FFFE and U+FFFF
/// (<https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessage.html>).
fn sendable_detail(text: &str) -> String {
    text[..text.floor_char_boundary(MAX_DETAIL_LEN)]
        .chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => char::REPLACEMENT_CHARACTER,
            _ => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use chrono::TimeZone;

    use super::*;
    use crate::OrderPlaced;

    fn failure() -> Failure {
        Failure {
            class: FailureClass::RowRefused,
            detail: Some("23514: new row violates check constraint".into()),
            message_id: Some("8d2c-original".into()),
            receive_count: Some(1),
            failed_at: Some(Utc.with_ymd_and_hms(2026, 12, 2, 16, 30, 0).unwrap()),
            consumer_version: Some("0.1.0".into()),
        }
    }

    #[test]
    fn the_attributes_read_back_as_the_failure_they_were_written_from() {
        let written: HashMap<&str, String> = failure()
            .attributes()
            .into_iter()
            .map(|a| (a.name, a.value))
            .collect();
        let read = Failure::read(|name| written.get(name).map(String::as_str));
        assert_eq!(read, Some(failure()));
    }

    #[test]
    fn the_class_and_the_detail_come_first_and_every_name_is_a_failure_attribute() {
        let names: Vec<&str> = failure().attributes().iter().map(|a| a.name).collect();
        assert_eq!(
            names,
            [
                CLASS_ATTRIBUTE,
                DETAIL_ATTRIBUTE,
                MESSAGE_ID_ATTRIBUTE,
                RECEIVE_COUNT_ATTRIBUTE,
                FAILED_AT_ATTRIBUTE,
                CONSUMER_VERSION_ATTRIBUTE
            ]
        );
        assert!(names.iter().all(|name| is_failure_attribute(name)));
        assert!(!is_failure_attribute(REPLAYED_FROM_ATTRIBUTE));
        assert!(!is_failure_attribute(crate::REQUEST_ID_ATTRIBUTE));
    }

    #[test]
    fn a_long_detail_is_cut_at_a_character_boundary() {
        let detail = "é".repeat(MAX_DETAIL_LEN);
        let attributes = Failure {
            detail: Some(detail),
            ..failure()
        }
        .attributes();
        let kept = &attributes[1].value;
        assert!(kept.len() <= MAX_DETAIL_LEN && kept.len() > MAX_DETAIL_LEN - 2);
        assert!(kept.chars().all(|c| c == 'é'));
    }

    #[test]
    fn characters_sqs_refuses_are_replaced_in_the_detail() {
        let attributes = Failure {
            detail: Some("unknown field `a\u{1}b`\tat line 1\u{ffff}".into()),
            ..failure()
        }
        .attributes();
        assert_eq!(
            attributes[1].value,
            "unknown field `a\u{fffd}b`\tat line 1\u{fffd}"
        );
    }

    #[test]
    fn empty_values_are_left_out_because_sqs_refuses_them() {
        let attributes = Failure {
            detail: Some(String::new()),
            message_id: None,
            consumer_version: Some(String::new()),
            ..failure()
        }
        .attributes();
        let names: Vec<&str> = attributes.iter().map(|a| a.name).collect();
        assert_eq!(
            names,
            [
                CLASS_ATTRIBUTE,
                RECEIVE_COUNT_ATTRIBUTE,
                FAILED_AT_ATTRIBUTE
            ]
        );
    }

    #[test]
    fn a_message_without_a_known_class_has_no_recorded_failure() {
        assert_eq!(Failure::read(|_| None), None);
        assert_eq!(
            Failure::read(|name| (name == CLASS_ATTRIBUTE).then_some("gremlins")),
            None
        );
    }

    #[test]
    fn each_contract_error_has_its_class() {
        let class = |body: &str| FailureClass::of(&OrderPlaced::from_json(body).expect_err("bad"));
        assert_eq!(class("not json"), FailureClass::InvalidJson);
        assert_eq!(
            class(r#"{"schema_version": 1}"#),
            FailureClass::InvalidOrder
        );
        let order = crate::Order::from_request_json(
            r#"{"order_id":"3f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10","customer_id":"c",
                "currency":"EUR","items":[{"sku":"B","quantity":1,"unit_price_cents":1}]}"#,
        )
        .expect("valid");
        let newer = OrderPlaced::new(order, Utc::now()).to_json().replace(
            &format!("\"schema_version\":{}", crate::SCHEMA_VERSION),
            "\"schema_version\":99",
        );
        assert_eq!(class(&newer), FailureClass::UnsupportedSchemaVersion);
    }

    #[test]
    fn class_names_parse_back_and_an_unknown_one_lists_the_known() {
        for class in FailureClass::ALL {
            assert_eq!(class.as_str().parse(), Ok(class));
            assert_eq!(
                serde_json::json!(class),
                class.as_str(),
                "serialised by name"
            );
        }
        let err = "gremlins".parse::<FailureClass>().expect_err("unknown");
        for class in FailureClass::ALL {
            assert!(err.to_string().contains(class.as_str()), "{err}");
        }
    }
}
