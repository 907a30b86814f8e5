//! Overload protection, so that memory stays bounded: past the in-flight cap an
//! immediate 503 with `Retry-After` (load shedding), past its own cap ([`ClientCap`])
//! a client gets an immediate 429. The shared in-flight slot is taken only
//! once the body is in ([`InFlight::admit`]): a client that sends slowly holds
//! only slots of its own.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::client_ip::Client;
use crate::metrics::Metrics;
use crate::problem::Problem;

/// What `Retry-After` says when a request is shed: load passes quickly.
pub const SHED_RETRY_AFTER_SECS: u64 = 1;

/// The service's caps and client timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `POST /orders` in progress at once.
    pub max_in_flight: usize,
    /// Orders waiting for a `SendMessageBatch` slot.
    pub max_waiting: usize,
    /// Open connections; further ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Also the keep-alive idle timeout, so it must exceed the load balancer's
    /// (60 s), or the balancer may reuse a connection just closed here: a 502.
    pub header_read_timeout: Duration,
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

    /// A slot until the permit is dropped, or the request shed at once.
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

/// Requests in progress per client, bodies still arriving included, capped:
/// one client cannot take the slots, connections and memory others need.
#[derive(Debug, Clone)]
pub struct ClientCap {
    held: Held,
    max: usize,
}

/// Each client's requests in progress; a client with none has no entry, so the
/// map is never larger than the number of connections.
type Held = Arc<Mutex<HashMap<Client, usize>>>;

fn lock(held: &Held) -> MutexGuard<'_, HashMap<Client, usize>> {
    // The counts stay consistent whatever panicked while holding the lock.
    held.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ClientCap {
    pub fn new(max: NonZeroUsize) -> Self {
        Self {
            held: Arc::default(),
            max: max.get(),
        }
    }

    /// A slot of `client`'s, held until the answer is ready (body read
    /// included), or 429 at once when it holds its `max` already.
    pub(crate) fn admit(&self, client: Client, metrics: &Metrics) -> Result<ClientSlot, Problem> {
        let mut held = lock(&self.held);
        let count = held.entry(client.clone()).or_insert(0);
        if *count >= self.max {
            // The request's span names the client.
            tracing::info!(
                max_in_flight_per_client = self.max,
                "refusing a request: its client has too many in progress"
            );
            metrics.over_client_cap();
            return Err(Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "This client already has {} requests in progress; nothing was queued. Retry \
                     the same request in {SHED_RETRY_AFTER_SECS} second, once some of them have \
                     been answered.",
                    self.max
                ),
            )
            .with_retry_after(SHED_RETRY_AFTER_SECS));
        }
        *count += 1;
        Ok(ClientSlot {
            held: Arc::clone(&self.held),
            key: client,
        })
    }
}

/// One request of a client's, given back when dropped.
#[derive(Debug)]
pub(crate) struct ClientSlot {
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
        ClientCap::new(NonZeroUsize::new(max).expect("non-zero"))
    }

    fn ip(text: &str) -> Client {
        Client::address(text.parse().expect("an address"))
    }

    #[test]
    fn a_client_holds_at_most_its_cap_and_gets_slots_back_when_they_end() {
        let (cap, metrics) = (cap(2), Metrics::new());
        let first = cap.admit(ip("198.51.100.7"), &metrics).expect("first");
        let _second = cap.admit(ip("198.51.100.7"), &metrics).expect("second");
        assert!(
            cap.admit(ip("198.51.100.7"), &metrics).is_err(),
            "over the cap"
        );
        assert!(
            cap.admit(ip("198.51.100.8"), &metrics).is_ok(),
            "another client"
        );
        drop(first);
        assert!(
            cap.admit(ip("198.51.100.7"), &metrics).is_ok(),
            "a slot came back"
        );
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64_and_clients_with_nothing_in_progress_are_forgotten() {
        let (cap, metrics) = (cap(1), Metrics::new());
        let held = cap.admit(ip("2001:db8:1:2::1"), &metrics).expect("first");
        assert!(
            cap.admit(ip("2001:db8:1:2::ffff"), &metrics).is_err(),
            "same /64"
        );
        assert!(
            cap.admit(ip("2001:db8:1:3::1"), &metrics).is_ok(),
            "another /64"
        );
        drop(held);
        assert!(lock(&cap.held).is_empty(), "{:?}", cap.held);
    }
}
