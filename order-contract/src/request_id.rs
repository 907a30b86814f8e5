//! The request id that follows one order from the HTTP request (`X-Request-Id`)
//! to its row. The consumer keeps it only when well formed by the producer's
//! rule, so a hand-made message cannot put in the table what the producer refuses.

use std::fmt;

pub const REQUEST_ID_ATTRIBUTE: &str = "request_id";

pub const MAX_REQUEST_ID_LEN: usize = 128;

/// A well-formed request id: 1 to [`MAX_REQUEST_ID_LEN`] characters of
/// `A-Z a-z 0-9 - _ . :` (UUIDs, ULIDs, trace ids), safe in logs, headers and
/// a database column without escaping.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    pub fn parse(id: &str) -> Option<Self> {
        Self::is_well_formed(id).then(|| Self(id.to_owned()))
    }

    pub fn is_well_formed(id: &str) -> bool {
        (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_ulids_and_trace_ids_are_well_formed() {
        for id in [
            "3f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10",
            "01HZY3K8M4Q",
            "Root:1-67891233-abcdef012345678912345678",
            "a",
            &"x".repeat(MAX_REQUEST_ID_LEN),
        ] {
            assert_eq!(
                RequestId::parse(id).as_ref().map(RequestId::as_str),
                Some(id)
            );
        }
    }

    #[test]
    fn empty_long_or_odd_ids_are_not() {
        for id in [
            "",
            &"x".repeat(MAX_REQUEST_ID_LEN + 1),
            "with space",
            "new\nline",
            "nul\0byte",
            "quote\"",
            "semi;colon",
            "ünï",
        ] {
            assert_eq!(RequestId::parse(id), None, "{id:?}");
        }
    }
}
