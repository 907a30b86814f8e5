//! The circuit breaker as `local-esm run` and the tests run it: the breaker's
//! own [`step`](::breaker::step) on the mapping's [`Switch`],
//! with a probe that meets the function's faults as the AWS probe does.
//!
//! In AWS the probe is an invocation of the consumer function, so a throttled
//! function or a runtime that fails its init fails the probe too, and the
//! mapping is paused before those faults spend every receive. [`LocalProbe`]
//! gives the same answers from the driver's [`FunctionState`].
//!
//! [`Switch`]: crate::Switch

use std::time::Duration;

use ::breaker::{self as core, Health, Mapping, Probe};
use tracing::warn;

use crate::driver::{Function, FunctionState};

/// What the AWS probe reports for a throttled function (the `Invoke` error
/// Lambda returns, as `LambdaProbe` words it).
pub const THROTTLED_REASON: &str = "Lambda throttles the consumer function, as it would the mapping's batches: \
     TooManyRequestsException: Rate Exceeded.";

/// What the AWS probe reports when the runtime cannot start: the function
/// error Lambda returns with the runtime's exit.
pub const FAILING_INIT_REASON: &str = "the consumer function failed (Unhandled), as every batch would: \
     {\"errorType\":\"Runtime.ExitError\",\"errorMessage\":\"Error: Runtime exited with error: exit status 1\"}";

/// How often the breaker steps: on the schedule, and while the mapping is
/// paused. Tests compress them; the defaults are the consumer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intervals {
    pub schedule: Duration,
    pub open_probe: Duration,
}

impl Default for Intervals {
    fn default() -> Self {
        Self {
            schedule: core::SCHEDULE_INTERVAL,
            open_probe: core::OPEN_PROBE_INTERVAL,
        }
    }
}

/// The probe of the function as it runs locally: the function's faults first,
/// as Lambda meets them before the code runs, then the consumer's own probe
/// through its batch path (`consumer_lambda::probe::BatchProbe`).
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
        }
    }
}

/// Steps the breaker forever: every `schedule`, every `open_probe` while the
/// mapping is paused. It never ends by itself; the caller decides when to stop.
pub async fn run(probe: &impl Probe, mapping: &impl Mapping, intervals: Intervals) {
    loop {
        let wait = match core::step(probe, mapping).await {
            Ok(step) if step.open() => intervals.open_probe,
            Ok(_) => intervals.schedule,
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
    async fn a_throttled_or_failing_function_fails_the_probe_whatever_the_database_says() {
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
        function.set(Function::Throttled);
        let started = tokio::time::Instant::now();
        tokio::select! {
            () = run(&probe, &switch, intervals) => unreachable!("the loop never ends"),
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
}
