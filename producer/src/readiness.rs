//! `/readyz`'s queue check, cached: it is reachable from the internet, so a
//! call must not cost a call to SQS. Callers during a check share its result.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::queue::{EnqueueError, OrderQueue};

pub const DEFAULT_READY_CACHE: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct ReadinessCache {
    ttl: Duration,
    /// When the queue was last checked, and what that check found.
    last: Mutex<Option<(Instant, Result<(), EnqueueError>)>>,
}

impl ReadinessCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            last: Mutex::new(None),
        }
    }

    /// Whether `queue` can take orders: a dead sender at once (as
    /// [`EnqueueError::Stopped`]), the queue's reachability at most `ttl` late.
    pub async fn check<Q: OrderQueue>(&self, queue: &Q) -> Result<(), EnqueueError> {
        if queue.is_stopped() {
            return Err(EnqueueError::Stopped);
        }
        // Held across the check, so concurrent callers wait for one check
        // instead of each starting their own.
        let mut last = self.last.lock().await;
        match &*last {
            Some((at, result)) if at.elapsed() < self.ttl => result.clone(),
            _ => {
                let result = queue.check().await;
                *last = Some((Instant::now(), result.clone()));
                result
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::OrderMessage;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// Counts checks; `down` and `stopped` can be flipped by the test.
    #[derive(Debug, Default)]
    struct Counting {
        checks: AtomicUsize,
        down: AtomicBool,
        stopped: AtomicBool,
    }

    impl OrderQueue for Counting {
        async fn send(&self, _message: OrderMessage) -> Result<String, EnqueueError> {
            Ok("msg".into())
        }

        async fn check(&self) -> Result<(), EnqueueError> {
            self.checks.fetch_add(1, Ordering::SeqCst);
            // Lets concurrent callers pile up on the lock while a check runs.
            tokio::task::yield_now().await;
            if self.down.load(Ordering::SeqCst) {
                Err(EnqueueError::TimedOut(Duration::from_secs(2)))
            } else {
                Ok(())
            }
        }

        fn is_stopped(&self) -> bool {
            self.stopped.load(Ordering::SeqCst)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn many_calls_within_the_ttl_cost_one_check() {
        let queue = Arc::new(Counting::default());
        let cache = Arc::new(ReadinessCache::new(Duration::from_secs(5)));
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let (queue, cache) = (Arc::clone(&queue), Arc::clone(&cache));
            calls.spawn(async move { cache.check(&*queue).await });
        }
        while let Some(result) = calls.join_next().await {
            assert!(result.expect("task").is_ok());
        }
        assert_eq!(queue.checks.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_result_older_than_the_ttl_is_checked_again() {
        let queue = Counting::default();
        let cache = ReadinessCache::new(Duration::from_secs(5));
        assert!(cache.check(&queue).await.is_ok());

        queue.down.store(true, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(cache.check(&queue).await.is_ok(), "still the cached answer");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(matches!(
            cache.check(&queue).await,
            Err(EnqueueError::TimedOut(_))
        ));
        assert_eq!(queue.checks.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_check_is_cached_too() {
        let queue = Counting::default();
        queue.down.store(true, Ordering::SeqCst);
        let cache = ReadinessCache::new(Duration::from_secs(5));
        for _ in 0..3 {
            assert!(cache.check(&queue).await.is_err());
        }
        assert_eq!(queue.checks.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopped_sender_is_reported_at_once_whatever_the_cache_says() {
        let queue = Counting::default();
        let cache = ReadinessCache::new(Duration::from_secs(5));
        assert!(cache.check(&queue).await.is_ok());
        queue.stopped.store(true, Ordering::SeqCst);
        assert!(matches!(
            cache.check(&queue).await,
            Err(EnqueueError::Stopped)
        ));
        assert_eq!(queue.checks.load(Ordering::SeqCst), 1);
    }
}
