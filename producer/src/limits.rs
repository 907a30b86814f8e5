//! Overload protection: how much the service takes on at once, and how long a
//! client may take to send a request. Past a cap the answer is an immediate 503
//! with `Retry-After` (load shedding), so memory stays bounded: at most
//! `max_in_flight` orders (each at most 64 KiB) are held at any time.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::metrics::Metrics;
use crate::problem::Problem;
use crate::server::ServerSettings;

/// What `Retry-After` says when a request is shed: load passes quickly.
pub const SHED_RETRY_AFTER_SECS: u64 = 1;

/// The service's caps and client timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `POST /orders` requests in progress at once (`MAX_IN_FLIGHT`).
    pub max_in_flight: usize,
    /// Orders waiting for a `SendMessageBatch` slot (`MAX_WAITING`).
    pub max_waiting: usize,
    /// Connections open at once (`MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// Time to receive a request's headers (`HEADER_READ_TIMEOUT_MS`). Also the
    /// keep-alive idle timeout, so it must exceed the load balancer's idle
    /// timeout (60 s in the template): otherwise the balancer may send a request
    /// on a connection just closed here, and answer its client 502.
    pub header_read_timeout: Duration,
    /// Time to receive a whole request body (`BODY_READ_TIMEOUT_MS`).
    pub body_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_in_flight: 1024,
            max_waiting: 1024,
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(65),
            body_read_timeout: Duration::from_secs(5),
        }
    }
}

impl Limits {
    pub fn server_settings(&self) -> ServerSettings {
        ServerSettings {
            header_read_timeout: self.header_read_timeout,
            max_connections: self.max_connections,
        }
    }
}

/// Requests in progress, capped.
#[derive(Debug, Clone)]
pub(crate) struct InFlight {
    slots: Arc<Semaphore>,
    max: usize,
}

impl InFlight {
    pub(crate) fn new(max: usize) -> Self {
        let max = max.max(1);
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
        }
    }
}

/// Middleware: admits the request if a slot is free, else sheds it at once.
/// The slot is held until the answer is ready.
pub(crate) async fn shed_when_busy(
    State((in_flight, metrics)): State<(InFlight, Metrics)>,
    request: Request,
    next: Next,
) -> Response {
    let Ok(_slot) = Arc::clone(&in_flight.slots).try_acquire_owned() else {
        tracing::warn!(
            max_in_flight = in_flight.max,
            "shedding a request: too many in progress"
        );
        metrics.shed("in_flight");
        return busy().into_response();
    };
    next.run(request).await
}

/// The answer to a request shed before anything was queued.
pub(crate) fn busy() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "The service is too busy to take this request; nothing was queued. Retry the same \
             request in {SHED_RETRY_AFTER_SECS} second."
        ),
    )
    .with_retry_after(SHED_RETRY_AFTER_SECS)
}
