//! Error answers as `application/problem+json` (RFC 9457).
//!
//! Every problem uses the type `about:blank`, so its `title` is the status
//! phrase; the `detail` tells the client what to change, and a problem about one
//! field of the order names it in an extra `field` member. Internal error text
//! never goes into a problem: the cause is logged instead.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The media type of every error answer.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One error answer (`application/problem+json`, RFC 9457).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem; `about:blank` means "see the status".
    #[serde(rename = "type")]
    #[schema(example = "about:blank")]
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
    /// The current catalogue, on a `409` for a price that changed: the prices to
    /// show the customer before the order is sent again.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::catalogue::Catalogue>)]
    pub catalogue: Option<std::sync::Arc<crate::catalogue::Catalogue>>,
    /// Seconds after which a retry may succeed, sent as the `Retry-After` header.
    #[serde(skip)]
    pub retry_after_secs: Option<u64>,
    /// Whether to close the connection after answering (`Connection: close`):
    /// the rest of the request was not read, so the connection cannot be reused.
    #[serde(skip)]
    pub close_connection: bool,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
            catalogue: None,
            retry_after_secs: None,
            close_connection: false,
        }
    }

    /// Names the order field the problem is about.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Carries the current `catalogue`.
    pub fn with_catalogue(
        mut self,
        catalogue: std::sync::Arc<crate::catalogue::Catalogue>,
    ) -> Self {
        self.catalogue = Some(catalogue);
        self
    }

    /// Tells the client to retry after `secs` seconds (`Retry-After`).
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// Closes the connection after the answer.
    pub fn with_connection_close(mut self) -> Self {
        self.close_connection = true;
        self
    }

    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let retry_after = self.retry_after_secs;
        let close = self.close_connection;
        let body = serde_json::to_vec(&self).unwrap_or_else(|err| {
            // Strings and integers always serialize; keep a valid answer regardless.
            tracing::error!(error = %err, "cannot serialize a problem");
            br#"{"type":"about:blank","title":"Internal Server Error","status":500}"#.to_vec()
        });
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if close {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parts(problem: Problem) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let response = problem.into_response();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (
            status,
            headers,
            serde_json::from_slice(&body).expect("JSON body"),
        )
    }

    #[tokio::test]
    async fn a_problem_carries_the_rfc_9457_members() {
        let (status, headers, body) =
            parts(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "fix it").with_field("currency"))
                .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(headers[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(
            body,
            serde_json::json!({
                "type": "about:blank",
                "title": "Unprocessable Entity",
                "status": 422,
                "detail": "fix it",
                "field": "currency",
            })
        );
        assert!(headers.get(header::RETRY_AFTER).is_none());
    }

    #[tokio::test]
    async fn a_retryable_problem_says_when_to_retry() {
        let (status, headers, body) =
            parts(Problem::new(StatusCode::SERVICE_UNAVAILABLE, "later").with_retry_after(5)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::RETRY_AFTER], "5");
        assert!(body.get("field").is_none(), "{body}");
        assert!(body.get("retry_after_secs").is_none(), "{body}");
    }
}
