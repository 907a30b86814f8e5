//! Error answers: [`support::problem::Problem`], plus what only the producer
//! adds, a `catalogue` on a `409` and closing the connection.

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
pub use support::problem::PROBLEM_JSON;

use crate::catalogue::Catalogue;

/// One error answer (`application/problem+json`, RFC 9457).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(flatten)]
    pub body: support::problem::Problem,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalogue: Option<Arc<Catalogue>>,
    /// `Connection: close`: the rest of the request was not read.
    #[serde(skip)]
    pub close_connection: bool,
}

impl From<support::problem::Problem> for Problem {
    fn from(body: support::problem::Problem) -> Self {
        Self {
            body,
            catalogue: None,
            close_connection: false,
        }
    }
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        support::problem::Problem::new(status, detail).into()
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.body = self.body.with_field(field);
        self
    }

    pub fn with_catalogue(mut self, catalogue: Arc<Catalogue>) -> Self {
        self.catalogue = Some(catalogue);
        self
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.body = self.body.with_retry_after(secs);
        self
    }

    pub fn with_connection_close(mut self) -> Self {
        self.close_connection = true;
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (self.body.status_code(), axum::Json(&self)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.body.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.close_connection {
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
