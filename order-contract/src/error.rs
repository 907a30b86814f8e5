//! [`ContractError`]: why a body is not an acceptable order.

/// A body that is not an acceptable order, worded for the person who sent it.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    /// Not JSON at all (or truncated): nothing can be said about any field.
    #[error("the body is not valid JSON ({0}); send one JSON object")]
    Malformed(#[from] serde_json::Error),
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

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    fn syntax_error(json: &str) -> serde_json::Error {
        serde_json::from_str::<serde_json::Value>(json).expect_err("not JSON")
    }

    #[test]
    fn a_malformed_body_says_what_to_send_and_keeps_the_parsers_error() {
        let err = ContractError::Malformed(syntax_error("{\"order_id\": "));
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
}
