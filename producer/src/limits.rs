//! Overload protection: how much the service takes on at once, and how long a
//! client may take to send a request. Past the in-flight cap the answer is an
//! immediate 503 with `Retry-After` (load shedding); past its own cap a client
//! gets an immediate 429. Memory stays bounded: at most `max_in_flight` orders
//! wait for SQS, and every body being read is one of a capped number of
//! connections, each at most 64 KiB.
//!
//! The in-flight slot is taken only once the body is in ([`InFlight::admit`],
//! from the handler): a client that sends its body slowly holds a connection
//! and a slot of its own client's cap ([`ClientCap`]), never one of the slots
//! every client shares.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::client_ip::{Client, TrustedProxies};
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

    /// Takes a slot, held until the returned permit is dropped, or sheds the
    /// request at once when none is free.
    pub(crate) fn admit(&self, metrics: &Metrics) -> Result<OwnedSemaphorePermit, Problem> {
        Arc::clone(&self.slots).try_acquire_owned().map_err(|_| {
            tracing::warn!(
                max_in_flight = self.max,
                "shedding a request: too many in progress"
            );
            metrics.shed("in_flight");
            busy()
        })
    }
}

/// Requests in progress per client, bodies still arriving included, capped
/// (`MAX_IN_FLIGHT_PER_CLIENT`): one client cannot take the in-flight slots,
/// nor the connections and memory of bodies being read, that every other
/// client needs. Clients are told apart as the rate limit tells them apart
/// (an IPv4 address, an IPv6 /64).
#[derive(Debug, Clone)]
pub struct ClientCap {
    held: Held,
    max: usize,
    proxies: Arc<TrustedProxies>,
}

/// Each client's requests in progress; a client with none has no entry, so the
/// map is never larger than the number of connections.
type Held = Arc<Mutex<HashMap<Client, usize>>>;

fn lock(held: &Held) -> MutexGuard<'_, HashMap<Client, usize>> {
    // The counts stay consistent whatever panicked while holding the lock.
    held.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ClientCap {
    /// At most `max` requests at once per client, who is found through `proxies`.
    pub fn new(max: NonZeroUsize, proxies: TrustedProxies) -> Self {
        Self {
            held: Arc::default(),
            max: max.get(),
            proxies: Arc::new(proxies),
        }
    }

    /// A slot of `client`'s, or `None` when it holds its `max` already.
    fn admit(&self, client: Client) -> Option<ClientSlot> {
        let mut held = lock(&self.held);
        let count = held.entry(client.clone()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            held: Arc::clone(&self.held),
            key: client,
        })
    }
}

/// One request of a client's, given back when dropped.
#[derive(Debug)]
struct ClientSlot {
    held: Held,
    key: Client,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut held = lock(&self.held);
        if let Some(count) = held.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

/// Middleware: admits the request while its client holds fewer than its cap,
/// else answers 429 at once. The slot is held until the answer is ready, so it
/// covers the time the body takes to arrive.
pub(crate) async fn cap_per_client(
    State((cap, metrics)): State<(ClientCap, Metrics)>,
    request: Request,
    next: Next,
) -> Response {
    let client = cap.proxies.client_of(&request);
    tracing::Span::current().record("client", tracing::field::display(&client));
    let Some(_slot) = cap.admit(client.clone()) else {
        tracing::info!(
            %client,
            max_in_flight_per_client = cap.max,
            "refusing a request: its client has too many in progress"
        );
        metrics.over_client_cap();
        return over_client_cap(cap.max).into_response();
    };
    next.run(request).await
}

/// The answer to a client that already holds its cap of requests.
fn over_client_cap(max: usize) -> Problem {
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "This client already has {max} requests in progress; nothing was queued. Retry the \
             same request in {SHED_RETRY_AFTER_SECS} second, once some of them have been answered."
        ),
    )
    .with_retry_after(SHED_RETRY_AFTER_SECS)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(max: usize) -> ClientCap {
        ClientCap::new(
            NonZeroUsize::new(max).expect("non-zero"),
            TrustedProxies::none(),
        )
    }

    fn ip(text: &str) -> Client {
        Client::address(text.parse().expect("an address"))
    }

    #[test]
    fn a_client_holds_at_most_its_cap_and_gets_slots_back_when_they_end() {
        let cap = cap(2);
        let first = cap.admit(ip("198.51.100.7")).expect("first");
        let _second = cap.admit(ip("198.51.100.7")).expect("second");
        assert!(cap.admit(ip("198.51.100.7")).is_none(), "over the cap");
        assert!(cap.admit(ip("198.51.100.8")).is_some(), "another client");
        drop(first);
        assert!(cap.admit(ip("198.51.100.7")).is_some(), "a slot came back");
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64_and_clients_with_nothing_in_progress_are_forgotten() {
        let cap = cap(1);
        let held = cap.admit(ip("2001:db8:1:2::1")).expect("first");
        assert!(cap.admit(ip("2001:db8:1:2::ffff")).is_none(), "same /64");
        assert!(cap.admit(ip("2001:db8:1:3::1")).is_some(), "another /64");
        drop(held);
        assert!(lock(&cap.held).is_empty(), "{:?}", cap.held);
    }
}
