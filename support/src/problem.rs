//! Error answers as `application/problem+json` (RFC 9457), of type
//! `about:blank`: the `detail` tells the client what to change; internal error
//! text never goes into it (it is logged instead).

use http::StatusCode;
use serde::Serialize;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// One error answer's body, and the `Retry-After` that goes with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// A URI naming the kind of problem; `about:blank` means "see the status".
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The status phrase, the same for every occurrence.
    pub title: &'static str,
    /// The HTTP status, repeated in the body for clients that log only bodies.
    pub status: u16,
    /// What went wrong with this request and what to do about it.
    pub detail: String,
    /// The order field at fault (e.g. `items[0].quantity`), for validation problems.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Seconds after which a retry may succeed, sent as the `Retry-After` header.
    #[serde(skip)]
    pub retry_after_secs: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
            retry_after_secs: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}
