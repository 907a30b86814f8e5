//! The consumer's own figures: what its batches did, as its EMF line counts
//! them, and when the breaker paused the mapping because of them. A build whose
//! batch path fails on real events passes the synthetic probe, and Lambda's
//! `Errors` does not count records reported in `batchItemFailures`
//! (<https://docs.aws.amazon.com/lambda/latest/dg/monitoring-metrics-types.html>).
//!
//! # The rule
//! In the window (the last [`FIGURES_WINDOW`], never before the last resume),
//! with `total` = records + invocations failed as a whole and `unfinished` =
//! `total` − finished: the batches fail when `unfinished` ≥ 90 % of `total` and
//! either one record was left to the redrive policy (a receive nothing gives
//! back) or at least [`DEFERRED_ENOUGH`] were deferred (the consumer's own
//! retry, so a blip among stored orders never trips it).
//!
//! # The resume rule
//! A pause on the figures (a *trip*) is reported as [`BREAKER_TRIPPED`]. After
//! a trip a passing probe resumes only once [`TripPolicy::backoff`] of the trips
//! over [`TRIP_HORIZON`] has run out. Each trip cycle spends at most one receive
//! of a waiting order, so after [`TripPolicy::resumes_allowed`] trips the
//! mapping stays paused, alarmed, until someone resumes it.
//!
//! [`BREAKER_TRIPPED`]: crate::function::BREAKER_TRIPPED

use std::future::Future;
use std::time::{Duration, SystemTime};

/// How far back the figures are read, at most.
pub const FIGURES_WINDOW: Duration = Duration::from_secs(10 * 60);

/// Deferred records that, at 90 % of the window's, are enough to pause.
pub const DEFERRED_ENOUGH: u64 = 10;

/// How long CloudWatch may take to show a batch's EMF line as a metric.
/// An assumption, not a published bound: CloudWatch documents none.
pub const METRICS_DELAY: Duration = Duration::from_secs(60);

/// The first back-off after a trip; each further trip multiplies it by
/// [`BACKOFF_FACTOR`], up to [`BACKOFF_CAP`].
pub const BACKOFF_BASE: Duration = Duration::from_secs(10 * 60);
pub const BACKOFF_FACTOR: u32 = 4;
pub const BACKOFF_CAP: Duration = Duration::from_secs(12 * 60 * 60);

/// How far back trips count: the orders queue's retention (7 days).
pub const TRIP_HORIZON: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The consumer's EMF metric names (`consumer_lambda::metrics` writes them;
/// `local-esm`'s tests check that the two agree), by the field of
/// [`Batches`] they count in.
pub const RECORDS: &[&str] = &["Records"];
pub const FINISHED: &[&str] = &["Stored", "Duplicates", "Conflicts", "DeadLettered"];
pub const DEFERRED: &[&str] = &["Postponed", "Requeued", "Skewed"];

/// What the consumer's batches did in a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Batches {
    /// Records of the batches that reported their figures.
    pub records: u64,
    /// Stored, duplicates, conflicts and dead-lettered: acknowledged for good.
    pub finished: u64,
    /// Postponed, requeued and skewed: retried by the consumer itself.
    pub deferred: u64,
    /// Invocations that failed as a whole and reported nothing.
    pub failed_invocations: u64,
}

impl Batches {
    /// Records that wait for their visibility timeout and count towards the
    /// redrive policy; a failed invocation counts as one.
    pub fn left_to_redrive(&self) -> u64 {
        self.records
            .saturating_sub(self.finished + self.deferred)
            .saturating_add(self.failed_invocations)
    }

    /// The rule (see the module's doc).
    pub fn failing(&self) -> bool {
        let total = self.records + self.failed_invocations;
        let unfinished = total.saturating_sub(self.finished);
        unfinished > 0
            && unfinished * 10 >= total * 9
            && (self.left_to_redrive() > 0 || self.deferred >= DEFERRED_ENOUGH)
    }
}

/// The figures, read from CloudWatch in AWS and from the batch log locally.
pub trait Figures: Send + Sync {
    /// What the batches did between `from` and `to`.
    fn batches(
        &self,
        from: SystemTime,
        to: SystemTime,
    ) -> impl Future<Output = Result<Batches, FiguresError>> + Send;

    /// How many trips were reported between `from` and `to`.
    fn trips(
        &self,
        from: SystemTime,
        to: SystemTime,
    ) -> impl Future<Output = Result<u32, FiguresError>> + Send;
}

/// No figures at all: the breaker decides on its probe alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFigures;

impl Figures for NoFigures {
    async fn batches(&self, _: SystemTime, _: SystemTime) -> Result<Batches, FiguresError> {
        Ok(Batches::default())
    }

    async fn trips(&self, _: SystemTime, _: SystemTime) -> Result<u32, FiguresError> {
        Ok(0)
    }
}

/// The figures could not be read.
#[derive(Debug, thiserror::Error)]
#[error(
    "reading the consumer's figures failed: the breaker decides on its probe alone until it can (check its cloudwatch:GetMetricData permission)"
)]
pub struct FiguresError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// What bounds the resumes after trips: the orders queue's `maxReceiveCount`,
/// and the first back-off ([`BACKOFF_BASE`]; compressed runs shorten it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TripPolicy {
    pub max_receive_count: u32,
    pub backoff_base: Duration,
}

impl TripPolicy {
    pub const fn new(max_receive_count: u32) -> Self {
        Self {
            max_receive_count,
            backoff_base: BACKOFF_BASE,
        }
    }

    /// The wait before the resume that follows the `trips`-th trip (from 1).
    pub fn backoff(&self, trips: u32) -> Duration {
        let steps = trips.saturating_sub(1).min(16);
        self.backoff_base
            .saturating_mul(BACKOFF_FACTOR.saturating_pow(steps))
            .min(BACKOFF_CAP)
    }

    /// How many trips over [`TRIP_HORIZON`] may still be followed by a resume:
    /// the first cycle and each resumed one spend at most one receive each, and
    /// an order must keep one receive for the good build.
    pub fn resumes_allowed(&self) -> u32 {
        self.max_receive_count.saturating_sub(2)
    }
}

/// Why a paused mapping stays paused although the probe passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The back-off after a trip runs until then.
    Until(SystemTime),
    /// As many trips as receives allow: only a person resumes it now.
    ForAPerson,
}

/// What the history says about a mapping paused at `paused_at`, seen at
/// `now`: `before` are the figures around the pause, `earlier` the trips
/// before it, `latest` the trips since. A pause whose figures fail, or that
/// was reported as a trip, is held for its back-off; any other pause (the
/// probe's) is not.
pub fn hold(
    paused_at: SystemTime,
    now: SystemTime,
    before: &Batches,
    earlier: u32,
    latest: u32,
    policy: TripPolicy,
) -> Option<Hold> {
    let tripped = latest > 0 || (before.failing() && before.left_to_redrive() > 0);
    if !tripped {
        return None;
    }
    let trips = earlier + 1;
    if trips > policy.resumes_allowed() {
        return Some(Hold::ForAPerson);
    }
    let until = paused_at + policy.backoff(trips);
    (now < until).then_some(Hold::Until(until))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The template's maxReceiveCount.
    const SIX: TripPolicy = TripPolicy::new(6);

    fn batches(records: u64, finished: u64, deferred: u64, failed: u64) -> Batches {
        Batches {
            records,
            finished,
            deferred,
            failed_invocations: failed,
        }
    }

    #[test]
    fn a_build_that_fails_every_record_fails_the_rule_from_its_first_record() {
        assert!(batches(1, 0, 0, 0).failing(), "one record left unfinished");
        assert!(batches(0, 0, 0, 1).failing(), "one invocation failed whole");
        assert!(batches(200, 0, 0, 0).failing());
        assert!(
            batches(100, 5, 95, 0).failing(),
            "everything deferred: a build that postpones all"
        );
    }

    #[test]
    fn a_database_blip_among_stored_orders_does_not_fail_the_rule() {
        assert!(!batches(0, 0, 0, 0).failing(), "no batches, no verdict");
        assert!(
            !batches(100, 60, 40, 0).failing(),
            "a blip in steady traffic"
        );
        assert!(
            !batches(4, 1, 3, 0).failing(),
            "one order postponed three times, then stored"
        );
        assert!(
            !batches(9, 0, 9, 0).failing(),
            "a quiet queue's outage is the probe's to see: nine postponements"
        );
        assert!(
            !batches(20, 10, 0, 0).failing(),
            "half left unfinished is not nearly all"
        );
    }

    #[test]
    fn the_back_off_grows_fourfold_from_ten_minutes_up_to_its_cap() {
        assert_eq!(SIX.backoff(1), Duration::from_secs(600));
        assert_eq!(SIX.backoff(2), Duration::from_secs(2_400));
        assert_eq!(SIX.backoff(3), Duration::from_secs(9_600));
        assert_eq!(SIX.backoff(5), BACKOFF_CAP);
        assert_eq!(SIX.backoff(u32::MAX), BACKOFF_CAP);
    }

    #[test]
    fn a_probes_pause_is_not_held_and_a_trip_is_held_for_its_back_off() {
        let paused = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let soon = paused + Duration::from_secs(60);
        let later = paused + BACKOFF_BASE;
        let outage = batches(30, 2, 28, 0);
        assert_eq!(hold(paused, soon, &outage, 3, 0, SIX), None, "the probe's");

        let failing = batches(30, 0, 0, 0);
        assert_eq!(
            hold(paused, soon, &failing, 0, 0, SIX),
            Some(Hold::Until(later)),
            "the figures show the trip before its metric does"
        );
        assert_eq!(hold(paused, later, &failing, 0, 0, SIX), None);
        assert_eq!(
            hold(paused, later, &Batches::default(), 0, 1, SIX),
            None,
            "reported as a trip"
        );
        assert_eq!(
            hold(paused, soon, &Batches::default(), 1, 1, SIX),
            Some(Hold::Until(paused + SIX.backoff(2)))
        );
    }

    #[test]
    fn after_as_many_trips_as_receives_allow_only_a_person_resumes() {
        let paused = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let much_later = paused + TRIP_HORIZON;
        assert_eq!(SIX.resumes_allowed(), 4);
        assert_eq!(
            hold(paused, much_later, &Batches::default(), 3, 1, SIX),
            None
        );
        assert_eq!(
            hold(paused, much_later, &Batches::default(), 4, 1, SIX),
            Some(Hold::ForAPerson)
        );
    }
}
