//! [`ContractError`]: why a body is not an acceptable order.

use std::sync::Arc;

/// A body that is not an acceptable order, worded for the person who sent it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ContractError {
    /// Not JSON at all (or truncated): nothing can be said about any field.
    #[error("the body is not valid JSON ({source}); send one JSON object")]
    Malformed {
        // Shared, so that the error stays `Clone` (serde_json's is not).
        #[source]
        source: Arc<serde_json::Error>,
    },
    /// Well-formed JSON, but a field is missing, unknown, of the wrong type or out of range.
    #[error("`{field}` {problem}")]
    Invalid { field: String, problem: String },
    /// A `schema_version` this code does not read, newer (see
    /// [`ContractError::is_newer_version`]) or older than any there was.
    #[error(
        "`schema_version` is {found}, but this code reads versions 1 to {reads}; a newer version waits on the queue until a consumer that reads it is deployed"
    )]
    UnsupportedVersion { found: u32, reads: u32 },
}

impl ContractError {
    pub(crate) fn malformed(source: serde_json::Error) -> Self {
        Self::Malformed {
            source: Arc::new(source),
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// A message of a version newer than this code reads: a valid order that a
    /// later release can take, so the consumer postpones it instead of
    /// dead-lettering it.
    pub fn is_newer_version(&self) -> bool {
        matches!(self, Self::UnsupportedVersion { found, reads } if found > reads)
    }

    /// The field the error is about, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Malformed { .. } => None,
            Self::Invalid { field, .. } => Some(field),
            Self::UnsupportedVersion { .. } => Some("schema_version"),
        }
    }
}

/// Equal when they say the same: serde_json's error has no `PartialEq`, and its
/// text (message, line and column) is all there is to compare.
impl PartialEq for ContractError {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
            && self.to_string() == other.to_string()
    }
}

impl Eq for ContractError {}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    fn syntax_error(json: &str) -> serde_json::Error {
        serde_json::from_str::<serde_json::Value>(json).expect_err("not JSON")
    }

    #[test]
    fn a_malformed_body_says_what_to_send_and_keeps_the_parsers_error() {
        let err = ContractError::malformed(syntax_error("{\"order_id\": "));
        let text = err.to_string();
        assert!(text.starts_with("the body is not valid JSON ("), "{text}");
        assert!(text.contains("line 1 column"), "{text}");
        assert!(text.ends_with("send one JSON object"), "{text}");
        let source = err.source().expect("a source");
        assert_eq!(
            source.to_string(),
            syntax_error("{\"order_id\": ").to_string()
        );
        assert_eq!(err.field(), None);
    }

    #[test]
    fn an_invalid_field_is_named_first() {
        let err = ContractError::invalid("currency", "must be an ISO 4217 code");
        assert_eq!(err.to_string(), "`currency` must be an ISO 4217 code");
        assert_eq!(err.field(), Some("currency"));
    }

    #[test]
    fn errors_that_say_the_same_are_equal() {
        assert_eq!(
            ContractError::malformed(syntax_error("nope")),
            ContractError::malformed(syntax_error("nope"))
        );
        assert_ne!(
            ContractError::malformed(syntax_error("nope")),
            ContractError::malformed(syntax_error("[1,"))
        );
        assert_ne!(
            ContractError::malformed(syntax_error("nope")),
            ContractError::invalid("body", "nope")
        );
    }
}
