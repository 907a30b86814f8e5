//! A token bucket per client for `POST /orders`: past it, 429 with `Retry-After`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::client_ip::Client;
use crate::metrics::Metrics;
use crate::problem::Problem;

/// Requests between two sweeps of clients whose bucket is full again.
const SWEEP_EVERY: u64 = 10_000;

#[derive(Debug, Clone)]
pub struct RateLimit {
    limiter: Arc<DefaultKeyedRateLimiter<Client>>,
    checks: Arc<AtomicU64>,
}

impl RateLimit {
    /// A bucket per client, each of `quota`.
    pub fn new(quota: Quota) -> Self {
        Self {
            limiter: Arc::new(RateLimiter::keyed(quota)),
            checks: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Takes a token from `client`'s bucket, or says how long until one is there.
    fn check(&self, client: &Client) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter
            .check_key(client)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// [`Self::check`], answered 429 with `Retry-After` when over the rate.
    pub(crate) fn admit(&self, client: &Client, metrics: &Metrics) -> Result<(), Problem> {
        self.check(client).map_err(|wait| {
            // Whole seconds, rounded up: never invite a retry that is too early.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let secs = secs.max(1);
            // The request's span names the client.
            tracing::info!(retry_after_secs = secs, "rate limited");
            metrics.rate_limited();
            Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "Too many requests from this client; nothing was queued. Retry the same \
                     request in {secs} seconds."
                ),
            )
            .with_retry_after(secs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn one_per_hour(burst: u32) -> Quota {
        let hourly = Quota::with_period(Duration::from_secs(3600)).expect("not zero");
        hourly.allow_burst(NonZeroU32::new(burst).expect("non-zero"))
    }

    #[test]
    fn a_client_gets_its_burst_then_is_told_how_long_to_wait() {
        let limit = RateLimit::new(one_per_hour(2));
        let client = Client::address("198.51.100.7".parse().expect("address"));
        assert!(limit.check(&client).is_ok());
        assert!(limit.check(&client).is_ok());
        let wait = limit.check(&client).expect_err("limited");
        assert!(wait > Duration::from_secs(3500), "{wait:?}");
    }

    #[test]
    fn clients_have_buckets_of_their_own() {
        let limit = RateLimit::new(one_per_hour(1));
        let client = |ip: &str| Client::address(ip.parse().expect("ip"));
        assert!(limit.check(&client("198.51.100.7")).is_ok());
        assert!(limit.check(&client("198.51.100.8")).is_ok());
        assert!(limit.check(&client("198.51.100.7")).is_err());
    }
}
