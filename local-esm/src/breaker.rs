//! The circuit breaker as `local-esm run` and the tests run it: the breaker's
//! own [`step`](::breaker::step) on the mapping's [`Switch`](crate::Switch).
//! In AWS the probe invokes the consumer function, so a throttled function or
//! a failing init fails it too; [`LocalProbe`] answers the same from the
//! driver's [`FunctionState`]. The batches' figures are the batch log's lines
//! ([`LocalFigures`]), as CloudWatch's are in AWS.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

pub use ::breaker::TripPolicy;
use ::breaker::{self as core, Batches, Figures, FiguresError, Health, Mapping, Probe};
use chrono::{DateTime, Utc};
use tracing::warn;

use crate::batches::{self, BatchFigures};
use crate::driver::{Function, FunctionState};

/// What the AWS probe reports for a throttled function, as `LambdaProbe` words it.
pub const THROTTLED_REASON: &str = "Lambda throttles the consumer function, as it would the mapping's batches: \
     TooManyRequestsException: Rate Exceeded.";

/// What the AWS probe reports when the runtime cannot start.
pub const FAILING_INIT_REASON: &str = "the consumer function failed (Unhandled), as every batch would: \
     {\"errorType\":\"Runtime.ExitError\",\"errorMessage\":\"Error: Runtime exited with error: exit status 1\"}";

/// What the probe reports for a release whose batch path fails every record.
pub const FAILING_BATCHES_REASON: &str =
    "the probe's synthetic record failed in the consumer's batch path, as every batch does";

/// How often the breaker steps: on the schedule, and while the mapping is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intervals {
    pub schedule: Duration,
    pub open_probe: Duration,
}

impl Intervals {
    /// The breaker's clock `speedup` times faster (`local-esm run
    /// --breaker-speedup`): these intervals and `policy`'s back-off divided.
    pub fn sped_up(speedup: u32, policy: &mut TripPolicy) -> Self {
        let speedup = speedup.max(1);
        policy.backoff_base /= speedup;
        Self {
            schedule: core::SCHEDULE_INTERVAL / speedup,
            open_probe: core::OPEN_PROBE_INTERVAL / speedup,
        }
    }
}

/// The function's faults first, as Lambda meets them before the code runs,
/// then the consumer's own probe (`consumer_lambda::probe::BatchProbe`).
pub struct LocalProbe<'a, P> {
    function: FunctionState,
    store: &'a P,
}

impl<'a, P: Probe> LocalProbe<'a, P> {
    pub fn new(function: FunctionState, store: &'a P) -> Self {
        Self { function, store }
    }
}

impl<P: Probe> Probe for LocalProbe<'_, P> {
    async fn probe(&self) -> Health {
        match self.function.get() {
            Function::Running => self.store.probe().await,
            Function::Throttled => Health::Unhealthy(THROTTLED_REASON.into()),
            Function::FailingInit => Health::Unhealthy(FAILING_INIT_REASON.into()),
            Function::FailingBatches => Health::Unhealthy(FAILING_BATCHES_REASON.into()),
        }
    }
}

/// Each batch's EMF line in the batch log (without one the breaker decides on
/// its probe alone), and the trips in memory: the breaker lives as long as the run.
#[derive(Debug, Default)]
pub struct LocalFigures {
    log: Option<PathBuf>,
    trips: Mutex<Vec<SystemTime>>,
}

impl LocalFigures {
    pub fn new(log: Option<PathBuf>) -> Self {
        Self {
            log,
            ..Self::default()
        }
    }

    fn trip_log(&self) -> MutexGuard<'_, Vec<SystemTime>> {
        self.trips.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Figures for LocalFigures {
    async fn batches(&self, from: SystemTime, to: SystemTime) -> Result<Batches, FiguresError> {
        let Some(path) = &self.log else {
            return Ok(Batches::default());
        };
        let read = batches::read(path).map_err(|err| FiguresError(Box::new(err)))?;
        let (from, to) = (DateTime::<Utc>::from(from), DateTime::<Utc>::from(to));
        let in_window = read.batches.iter().filter(|b| from <= b.at && b.at <= to);
        let sum = |names: &[&str]| -> u64 {
            let of_batch = |b: &BatchFigures| names.iter().map(|name| b.count(name)).sum::<u64>();
            in_window.clone().map(of_batch).sum()
        };
        Ok(Batches {
            records: sum(core::figures::RECORDS),
            finished: sum(core::figures::FINISHED),
            deferred: sum(core::figures::DEFERRED),
            // A failed invocation's line has records and nothing else.
            failed_invocations: 0,
        })
    }

    async fn trips(&self, from: SystemTime, to: SystemTime) -> Result<u32, FiguresError> {
        let in_window = |at: &&SystemTime| from <= **at && **at < to;
        Ok(self.trip_log().iter().filter(in_window).count() as u32)
    }
}

/// Steps the breaker forever: every `schedule`, every `open_probe` while the
/// mapping is paused and no trip's back-off holds it.
pub async fn run(
    probe: &impl Probe,
    mapping: &impl Mapping,
    figures: &LocalFigures,
    policy: TripPolicy,
    intervals: Intervals,
) {
    loop {
        let wait = match core::step(probe, mapping, figures, policy).await {
            Ok(step) => {
                if step.tripped {
                    figures.trip_log().push(SystemTime::now());
                }
                if step.next_probe_in() == core::OPEN_PROBE_INTERVAL {
                    intervals.open_probe
                } else {
                    intervals.schedule
                }
            }
            Err(err) => {
                warn!(error = %support::error_chain(&err), "the breaker's step failed");
                intervals.schedule
            }
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Switch;

    struct Fixed(Health);

    impl Probe for Fixed {
        async fn probe(&self) -> Health {
            self.0.clone()
        }
    }

    #[tokio::test]
    async fn a_throttled_function_or_a_bad_release_fails_the_probe_whatever_the_database_says() {
        let function = FunctionState::default();
        let store = Fixed(Health::Healthy);
        let probe = LocalProbe::new(function.clone(), &store);
        assert_eq!(probe.probe().await, Health::Healthy);
        function.set(Function::Throttled);
        assert_eq!(
            probe.probe().await,
            Health::Unhealthy(THROTTLED_REASON.into())
        );
        function.set(Function::FailingInit);
        assert_eq!(
            probe.probe().await,
            Health::Unhealthy(FAILING_INIT_REASON.into())
        );
        function.set(Function::FailingBatches);
        assert_eq!(
            probe.probe().await,
            Health::Unhealthy(FAILING_BATCHES_REASON.into())
        );
        function.set(Function::Running);
        assert_eq!(probe.probe().await, Health::Healthy);
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_pauses_at_once_and_probes_a_paused_mapping_on_the_open_interval() {
        let function = FunctionState::default();
        let store = Fixed(Health::Healthy);
        let probe = LocalProbe::new(function.clone(), &store);
        let switch = Switch::default();
        let intervals = Intervals {
            schedule: Duration::from_secs(60),
            open_probe: Duration::from_secs(1),
        };
        let figures = LocalFigures::default();
        function.set(Function::Throttled);
        let started = tokio::time::Instant::now();
        tokio::select! {
            () = run(&probe, &switch, &figures, TripPolicy::new(6), intervals) => unreachable!("the loop never ends"),
            () = async {
                // The first step pauses at once.
                tokio::task::yield_now().await;
                assert!(!switch.enabled());
                // Within one open interval of the fault ending, it resumes.
                tokio::time::sleep(Duration::from_millis(5_500)).await;
                function.set(Function::Running);
                tokio::time::sleep(Duration::from_millis(600)).await;
                assert!(switch.enabled());
            } => {}
        }
        assert!(started.elapsed() < Duration::from_secs(7));
    }

    fn batch_log(test: &str) -> (crate::batches::BatchLog, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("local-esm-breaker-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("batches.jsonl");
        let log = crate::batches::BatchLog::create(&path, 100).expect("log");
        (log, path)
    }

    fn failed(records: usize) -> consumer_lambda::BatchMetrics {
        consumer_lambda::BatchMetrics {
            records,
            ..consumer_lambda::BatchMetrics::default()
        }
    }

    #[tokio::test]
    async fn the_local_figures_are_the_batch_logs_lines_in_the_window() {
        let (log, path) = batch_log("window");
        let now = SystemTime::now();
        let stored = consumer_lambda::BatchMetrics {
            records: 10,
            stored: 7,
            duplicates: 1,
            postponed: 1,
            skewed: 1,
            ..consumer_lambda::BatchMetrics::default()
        };
        log.append(&stored, now - Duration::from_secs(3_600))
            .expect("append");
        log.append(&stored, now - Duration::from_secs(60))
            .expect("append");
        log.append(&failed(4), now - Duration::from_secs(30))
            .expect("append");
        let figures = LocalFigures::new(Some(path));
        let read = figures
            .batches(now - Duration::from_secs(600), now)
            .await
            .expect("read");
        assert_eq!(
            read,
            Batches {
                records: 14,
                finished: 8,
                deferred: 2,
                failed_invocations: 0
            }
        );
        assert_eq!(read.left_to_redrive(), 4, "the failed batch's records");
    }

    #[tokio::test(start_paused = true)]
    async fn the_local_breaker_pauses_on_failing_batches_although_the_probe_passes() {
        let switch = Switch::default();
        let (log, path) = batch_log("trip");
        // A batch after the mapping started (the log keeps milliseconds).
        let after = SystemTime::now() + Duration::from_millis(2);
        log.append(&failed(10), after).expect("append");
        while SystemTime::now() <= after {
            std::hint::spin_loop();
        }
        let figures = LocalFigures::new(Some(path));
        let store = Fixed(Health::Healthy);
        let probe = LocalProbe::new(FunctionState::default(), &store);
        let intervals = Intervals {
            schedule: Duration::from_secs(60),
            open_probe: Duration::from_secs(1),
        };
        tokio::select! {
            () = run(&probe, &switch, &figures, TripPolicy::new(6), intervals) => unreachable!("the loop never ends"),
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
        assert!(!switch.enabled(), "paused, and held for its back-off");
        let trips = figures
            .trips(
                SystemTime::UNIX_EPOCH,
                SystemTime::now() + Duration::from_secs(1),
            )
            .await
            .expect("trips");
        assert_eq!(trips, 1, "one trip, then held: no second pause");
    }

    #[test]
    fn the_breaker_reads_the_metric_names_the_consumer_writes() {
        use consumer_lambda::metrics as m;
        assert_eq!(core::figures::RECORDS, [m::RECORDS]);
        assert_eq!(
            core::figures::FINISHED,
            [m::STORED, m::DUPLICATES, m::CONFLICTS, m::DEAD_LETTERED]
        );
        assert_eq!(
            core::figures::DEFERRED,
            [m::POSTPONED, m::REQUEUED, m::SKEWED]
        );
    }

    /// The template's schedule of the breaker, `rate(N minute[s])`.
    fn schedule_rate(t: &infra::Document) -> Duration {
        let events = t
            .get(&["Resources", "BreakerFunction", "Properties", "Events"])
            .expect("the breaker's events");
        let expression = events
            .as_mapping()
            .into_iter()
            .flatten()
            .find_map(|(_, e)| e.get("Properties")?.get("ScheduleExpression")?.as_str())
            .expect("a schedule");
        let minutes: u64 = expression
            .strip_prefix("rate(")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a rate in minutes: {expression}"));
        Duration::from_secs(minutes * 60)
    }

    #[test]
    fn a_bad_release_lasting_indefinitely_never_spends_max_receive_count_receives() {
        use ::breaker::figures::{
            BACKOFF_BASE, FIGURES_WINDOW, Hold, METRICS_DELAY, TRIP_HORIZON, hold,
        };
        const TEMPLATE: &str = include_str!("../../infra/template.yaml");
        let t = infra::Document::parse(TEMPLATE).expect("YAML");
        let local = crate::Template::from_document(&t).expect("settings");
        let number = |path: &[&str]| t.get(path).ok().and_then(infra::as_u64).expect("a number");
        let visibility = Duration::from_secs(u64::from(local.queues.visibility_timeout_secs));
        let retention = Duration::from_secs(u64::from(local.queues.retention_secs));
        let schedule = schedule_rate(&t);
        assert_eq!(
            schedule,
            core::SCHEDULE_INTERVAL,
            "the code's schedule is the template's"
        );
        let widest_window = Duration::from_secs(number(&[
            "Parameters",
            "MaximumBatchingWindowInSeconds",
            "MaxValue",
        ]));

        // One cycle, from a waiting order's failing receive to the pause: the
        // batching window and the invocation (its figures are printed at its
        // end), CloudWatch's delay, the breaker's next run and its probe, and
        // a long poll already under way (SQS's longest wait, 20 s).
        let exposure = widest_window
            + local.event_source.function_timeout
            + METRICS_DELAY
            + schedule
            + core::PROBE_TIMEOUT
            + Duration::from_secs(20);
        // Receives of one message are a visibility timeout apart.
        let per_cycle = exposure.as_secs() / visibility.as_secs() + 1;
        assert_eq!(
            per_cycle, 1,
            "{exposure:?} against a visibility timeout of {visibility:?}"
        );
        // A pause's figures are its own: the window ends before the last resume's.
        assert!(FIGURES_WINDOW <= BACKOFF_BASE);
        assert!(
            FIGURES_WINDOW >= exposure,
            "a quiet queue's failing receive is in the window"
        );
        // Trips count over the queue's retention: no waiting order is older.
        assert!(TRIP_HORIZON >= retention);

        let failing = Batches {
            records: 1,
            ..Batches::default()
        };
        let smallest = number(&["Parameters", "MaxReceiveCount", "MinValue"]) as u32;
        for max_receive_count in smallest..=local.queues.max_receive_count {
            let policy = TripPolicy::new(max_receive_count);
            // The bad release never ends: each resume is followed by a trip.
            let mut paused_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
            let (mut cycles, mut earlier, mut resumed_after) = (1u64, 0, Vec::new());
            loop {
                match hold(paused_at, paused_at, &failing, earlier, 1, policy) {
                    Some(Hold::Until(resume)) => {
                        let after = resume.duration_since(paused_at).expect("later");
                        assert_eq!(
                            hold(paused_at, resume, &failing, earlier, 1, policy),
                            None,
                            "it resumes when its back-off has run out"
                        );
                        resumed_after.push(after);
                        cycles += 1;
                        earlier += 1;
                        paused_at = resume + exposure;
                    }
                    Some(Hold::ForAPerson) => break,
                    None => panic!("a trip is always held"),
                }
            }
            let spent = cycles * per_cycle;
            println!(
                "maxReceiveCount {max_receive_count}: {cycles} cycle(s) of at most {exposure:?}, \
                 resumes after {resumed_after:?}, then paused until someone resumes it: \
                 at most {spent} receive(s) spent"
            );
            assert!(
                spent < u64::from(max_receive_count),
                "{spent} receives of {max_receive_count}: the redrive policy would move the order"
            );
        }
    }
}
