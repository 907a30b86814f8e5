//! The id SQS gives a message: what a batch response names a record by.

use std::fmt;

/// An SQS message id, never empty: Lambda fails a whole batch whose response
/// names a record by an empty `itemIdentifier`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageId(String);

/// A message without an id: it cannot be named in a batch response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an SQS message id cannot be empty")]
pub struct EmptyMessageId;

impl MessageId {
    pub fn new(id: impl Into<String>) -> Result<Self, EmptyMessageId> {
        let id = id.into();
        if id.is_empty() {
            Err(EmptyMessageId)
        } else {
            Ok(Self(id))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<&str> for MessageId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl From<MessageId> for String {
    fn from(id: MessageId) -> Self {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_message_id_is_refused_and_any_other_is_kept_as_it_is() {
        assert_eq!(MessageId::new(""), Err(EmptyMessageId));
        let id = MessageId::new("059f36b4-87a3-44ab-83d2-661975830a7d").expect("an id");
        assert_eq!(id.as_str(), "059f36b4-87a3-44ab-83d2-661975830a7d");
        assert_eq!(id.to_string(), id.as_str());
    }
}
