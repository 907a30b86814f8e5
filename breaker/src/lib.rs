//! The circuit breaker: the consumer's event source mapping is paused while
//! the consumer cannot store or its batches fail, and resumed when it can
//! (after failing batches, once a back-off has run out). Paused, the mapping
//! receives nothing: the orders wait, visible, keeping their receive counts,
//! instead of spending one each backoff cap. AWS names pausing the mapping as
//! the way to stop processing
//! (<https://docs.aws.amazon.com/lambda/latest/api/API_UpdateEventSourceMapping.html>).
//! The probe is the consumer function itself, so a throttled function or a
//! runtime that cannot start fails it too. Its own crate and binary, depending
//! on nothing of the consumer's: a consumer build that cannot start must not
//! stop the breaker.
//!
//! One [`step`] probes and acts; a scheduled run ([`run_until`]) keeps probing
//! a paused mapping every [`OPEN_PROBE_INTERVAL`]. [`figures`] holds the rule on
//! the batches' own figures and the back-off; `lambda` and `cloudwatch` the AWS
//! side; [`function`] the binary's run; [`hook`] the release's pre-traffic hook.

mod cloudwatch;
pub mod figures;
pub mod function;
pub mod hook;
mod lambda;

pub use cloudwatch::CloudWatchFigures;
pub use figures::{Batches, Figures, FiguresError, Hold, NoFigures, TripPolicy};
pub use lambda::{LambdaMapping, LambdaProbe};

use std::future::Future;
use std::time::{Duration, SystemTime};

/// How often the schedule runs the breaker (EventBridge Scheduler's `rate(1 minute)`,
/// its finest rate), and so how soon a failing consumer is paused.
pub const SCHEDULE_INTERVAL: Duration = Duration::from_secs(60);

/// How often a paused mapping is probed: the part of catch-up the breaker adds.
pub const OPEN_PROBE_INTERVAL: Duration = Duration::from_secs(10);

/// The payload that asks the consumer function for a probe instead of a batch.
pub const PROBE_PAYLOAD: &str = r#"{"probe":{}}"#;

/// What a probe of the consumer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// It can reach the database and may write the orders.
    Healthy,
    /// It cannot store now, and why (for the log an operator reads).
    Unhealthy(String),
    /// The breaker could not ask (its own permissions, the network): it
    /// leaves the mapping as it is, so a broken breaker never stops consumption.
    Unknown(String),
}

/// The event source mapping as the breaker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MappingState {
    Enabled,
    Disabled,
    /// Lambda is still applying an earlier change (`Enabling`, `Disabling`,
    /// `Updating`, …): nothing to do until it settles.
    Changing(String),
}

/// What the breaker does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    Keep,
}

/// The decision, on its own: pause a mapping whose consumer cannot store,
/// resume one that can, and leave anything in transition alone.
pub fn decide(health: &Health, state: &MappingState) -> Action {
    match (health, state) {
        (Health::Unhealthy(_), MappingState::Enabled) => Action::Pause,
        (Health::Healthy, MappingState::Disabled) => Action::Resume,
        _ => Action::Keep,
    }
}

/// How long a probe may take: a frozen database must not hold the breaker.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks the consumer whether it can store.
pub trait Probe: Send + Sync {
    fn probe(&self) -> impl Future<Output = Health> + Send;
}

/// The mapping's state, and since when it is so: Lambda's `LastModified`,
/// "the date that the event source mapping was last updated or that its
/// state changed"
/// (<https://docs.aws.amazon.com/lambda/latest/api/API_EventSourceMappingConfiguration.html>),
/// so when it was paused or resumed, or changed since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingStatus {
    pub state: MappingState,
    pub since: Option<SystemTime>,
}

/// The event source mapping's switch.
pub trait Mapping: Send + Sync {
    fn status(&self) -> impl Future<Output = Result<MappingStatus, MappingError>> + Send;
    fn set_enabled(&self, enabled: bool) -> impl Future<Output = Result<(), MappingError>> + Send;
}

/// The mapping could not be read or changed; the next step tries again.
#[derive(Debug, thiserror::Error)]
#[error("{action} the event source mapping failed; the breaker tries again on its next run")]
pub struct MappingError {
    pub action: &'static str,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// What one step saw and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub health: Health,
    pub before: MappingState,
    pub action: Action,
    /// Paused because the batches' figures fail (a trip), whatever the probe said.
    pub tripped: bool,
    /// Left paused although the probe passes: the back-off after a trip.
    pub held: Option<Hold>,
    /// The figures could not be read: decided on the probe alone.
    pub figures_error: Option<String>,
}

impl Step {
    /// Is the mapping paused (or being paused) after this step? Then the
    /// breaker probes again soon.
    pub fn open(&self) -> bool {
        match self.action {
            Action::Pause => true,
            Action::Resume => false,
            Action::Keep => self.before != MappingState::Enabled,
        }
    }

    /// When to probe next: soon while paused, unless a trip's back-off holds
    /// the mapping anyway.
    pub fn next_probe_in(&self) -> Duration {
        if self.open() && !self.tripped && self.held.is_none() {
            OPEN_PROBE_INTERVAL
        } else {
            SCHEDULE_INTERVAL
        }
    }
}

/// Probes, reads the figures, then pauses or resumes the mapping: [`decide`]
/// on the probe, a pause also when the batches fail (see [`figures`]), and no
/// resume while a trip's back-off holds. Logs every change and every reason.
pub async fn step(
    probe: &impl Probe,
    mapping: &impl Mapping,
    figures: &impl Figures,
    policy: TripPolicy,
) -> Result<Step, MappingError> {
    let health = probe.probe().await;
    let status = mapping.status().await?;
    let now = SystemTime::now();
    let mut step = Step {
        action: decide(&health, &status.state),
        health,
        before: status.state,
        tripped: false,
        held: None,
        figures_error: None,
    };
    match (step.action, &step.before) {
        (Action::Keep, MappingState::Enabled) => {
            // Never before the last resume: the figures that paused it are over.
            let from =
                (now - figures::FIGURES_WINDOW).max(status.since.unwrap_or(SystemTime::UNIX_EPOCH));
            match figures.batches(from, now).await {
                Ok(batches) if batches.failing() => {
                    tracing::warn!(?batches, health = ?step.health, "the consumer's batches fail: pausing the event source mapping; orders wait in the queue");
                    step.action = Action::Pause;
                    step.tripped = true;
                }
                Ok(_) => {}
                Err(err) => step.figures_error = Some(support::error_chain(&err)),
            }
        }
        (Action::Resume, _) => {
            if let Some(paused_at) = status.since {
                match held(figures, paused_at, now, policy).await {
                    Ok(hold) => step.held = hold,
                    Err(err) => step.figures_error = Some(support::error_chain(&err)),
                }
            }
            if step.held.is_some() {
                step.action = Action::Keep;
            }
        }
        _ => {}
    }
    log(&step);
    if step.action != Action::Keep {
        mapping.set_enabled(step.action == Action::Resume).await?;
    }
    Ok(step)
}

/// Reads the history of a mapping paused at `paused_at` for [`figures::hold`].
async fn held(
    figures: &impl Figures,
    paused_at: SystemTime,
    now: SystemTime,
    policy: TripPolicy,
) -> Result<Option<Hold>, FiguresError> {
    let window = figures::FIGURES_WINDOW;
    // A trip is reported after its pause, in the minute of its run's end.
    let split = paused_at - SCHEDULE_INTERVAL;
    let before = figures
        .batches(paused_at - window, paused_at + window)
        .await?;
    let earlier = figures.trips(now - figures::TRIP_HORIZON, split).await?;
    let latest = figures.trips(split, now).await?;
    Ok(figures::hold(
        paused_at, now, &before, earlier, latest, policy,
    ))
}

fn log(step: &Step) {
    if let Some(error) = &step.figures_error {
        tracing::error!(%error, "the breaker could not read the consumer's figures; it decides on its probe alone");
    }
    match (&step.action, &step.health) {
        (Action::Pause, Health::Unhealthy(reason)) if !step.tripped => {
            tracing::warn!(%reason, "the consumer cannot store: pausing the event source mapping; orders wait in the queue")
        }
        (Action::Resume, _) => {
            tracing::info!("the consumer can store again: resuming the event source mapping")
        }
        (Action::Keep, _) if step.held.is_some() => {
            tracing::warn!(hold = ?step.held, "the probe passes, but the batches failed after the last resume: the mapping stays paused for its back-off")
        }
        (Action::Keep, Health::Unhealthy(reason)) => {
            tracing::warn!(%reason, state = ?step.before, "the consumer still cannot store")
        }
        (Action::Keep, Health::Unknown(reason)) => {
            tracing::error!(%reason, state = ?step.before, "the breaker could not probe the consumer; the mapping is left as it is")
        }
        _ => tracing::debug!(state = ?step.before, "the consumer can store"),
    }
}

/// One scheduled run of the breaker: a step, then, while the mapping stays
/// paused, a step every [`OPEN_PROBE_INTERVAL`] until `until`. It ends early
/// after a trip or a held step: the back-off outlasts the run. The last step
/// (so a run that tripped returns its trip).
pub async fn run_until(
    probe: &impl Probe,
    mapping: &impl Mapping,
    figures: &impl Figures,
    policy: TripPolicy,
    until: tokio::time::Instant,
) -> Result<Step, MappingError> {
    loop {
        let step = step(probe, mapping, figures, policy).await?;
        let next = tokio::time::Instant::now() + step.next_probe_in();
        if step.next_probe_in() != OPEN_PROBE_INTERVAL || next > until {
            return Ok(step);
        }
        tokio::time::sleep_until(next).await;
    }
}

/// The probe's answer on the wire: what the consumer function returns for
/// [`PROBE_PAYLOAD`], and the breaker reads.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProbeAnswer {
    pub healthy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What became of each record of the synthetic batch (the release hook reads it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<hook::ProbeRecord>,
}

impl From<Health> for ProbeAnswer {
    fn from(health: Health) -> Self {
        let reason = match health {
            Health::Healthy => None,
            Health::Unhealthy(reason) | Health::Unknown(reason) => Some(reason),
        };
        Self {
            healthy: reason.is_none(),
            reason,
            records: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// The template's maxReceiveCount.
    const SIX: TripPolicy = TripPolicy::new(6);

    #[test]
    fn a_consumer_that_cannot_store_pauses_an_enabled_mapping_and_one_that_can_resumes_it() {
        let down = Health::Unhealthy("connection refused".into());
        assert_eq!(decide(&down, &MappingState::Enabled), Action::Pause);
        assert_eq!(decide(&down, &MappingState::Disabled), Action::Keep);
        assert_eq!(
            decide(&Health::Healthy, &MappingState::Disabled),
            Action::Resume
        );
        assert_eq!(
            decide(&Health::Healthy, &MappingState::Enabled),
            Action::Keep
        );
    }

    #[test]
    fn a_probe_that_could_not_be_made_leaves_the_mapping_as_it_is() {
        let unknown = Health::Unknown("AccessDeniedException".into());
        assert_eq!(decide(&unknown, &MappingState::Enabled), Action::Keep);
        assert_eq!(decide(&unknown, &MappingState::Disabled), Action::Keep);
    }

    #[test]
    fn a_mapping_in_transition_is_left_alone() {
        let changing = MappingState::Changing("Enabling".into());
        assert_eq!(decide(&Health::Healthy, &changing), Action::Keep);
        assert_eq!(
            decide(&Health::Unhealthy("x".into()), &changing),
            Action::Keep
        );
    }

    struct Fixed(Health);

    impl Probe for Fixed {
        async fn probe(&self) -> Health {
            self.0.clone()
        }
    }

    /// A mapping whose changes are stamped with the wall clock.
    struct Switch(Mutex<MappingStatus>);

    impl Switch {
        fn new(state: MappingState) -> Self {
            Self(Mutex::new(MappingStatus {
                state,
                since: Some(SystemTime::now()),
            }))
        }

        fn state(&self) -> MappingState {
            self.0.lock().expect("lock").state.clone()
        }
    }

    impl Mapping for Switch {
        async fn status(&self) -> Result<MappingStatus, MappingError> {
            Ok(self.0.lock().expect("lock").clone())
        }

        async fn set_enabled(&self, enabled: bool) -> Result<(), MappingError> {
            *self.0.lock().expect("lock") = MappingStatus {
                state: if enabled {
                    MappingState::Enabled
                } else {
                    MappingState::Disabled
                },
                since: Some(SystemTime::now()),
            };
            Ok(())
        }
    }

    /// Figures that are the same whatever the window, and trips recorded in memory.
    struct Steady(Batches, Mutex<u32>);

    impl Figures for Steady {
        async fn batches(&self, _: SystemTime, _: SystemTime) -> Result<Batches, FiguresError> {
            Ok(self.0)
        }

        async fn trips(&self, _: SystemTime, _: SystemTime) -> Result<u32, FiguresError> {
            Ok(*self.1.lock().expect("lock"))
        }
    }

    const FAILING: Batches = Batches {
        records: 40,
        finished: 0,
        deferred: 0,
        failed_invocations: 0,
    };

    #[tokio::test]
    async fn failing_batches_pause_the_mapping_whatever_the_probe_says() {
        let mapping = Switch::new(MappingState::Enabled);
        let figures = Steady(FAILING, Mutex::new(0));
        let trip = step(&Fixed(Health::Healthy), &mapping, &figures, SIX)
            .await
            .expect("step");
        assert_eq!(trip.action, Action::Pause);
        assert!(trip.tripped);
        assert_eq!(mapping.state(), MappingState::Disabled);
        assert_eq!(
            trip.next_probe_in(),
            SCHEDULE_INTERVAL,
            "the back-off outlasts the run"
        );

        // The next step: the probe passes, the pause is the figures', so it holds.
        let held = step(&Fixed(Health::Healthy), &mapping, &figures, SIX)
            .await
            .expect("step");
        assert_eq!(held.action, Action::Keep);
        assert!(matches!(held.held, Some(Hold::Until(_))), "{:?}", held.held);
        assert_eq!(mapping.state(), MappingState::Disabled);
    }

    #[tokio::test]
    async fn batches_that_store_leave_the_mapping_to_the_probe() {
        let mapping = Switch::new(MappingState::Enabled);
        let stored = Batches {
            records: 40,
            finished: 40,
            ..Batches::default()
        };
        let figures = Steady(stored, Mutex::new(0));
        let keep = step(&Fixed(Health::Healthy), &mapping, &figures, SIX)
            .await
            .expect("step");
        assert_eq!((keep.action, keep.tripped), (Action::Keep, false));
        let down = step(
            &Fixed(Health::Unhealthy("57P01".into())),
            &mapping,
            &figures,
            SIX,
        )
        .await
        .expect("step");
        assert_eq!((down.action, down.tripped), (Action::Pause, false));
        let back = step(&Fixed(Health::Healthy), &mapping, &figures, SIX)
            .await
            .expect("step");
        assert_eq!(back.action, Action::Resume, "a probe's pause is not held");
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_that_trips_ends_at_once() {
        let mapping = Switch::new(MappingState::Enabled);
        let started = tokio::time::Instant::now();
        let last = run_until(
            &Fixed(Health::Healthy),
            &mapping,
            &Steady(FAILING, Mutex::new(0)),
            SIX,
            started + Duration::from_secs(45),
        )
        .await
        .expect("run");
        assert!(last.tripped);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_paused_mapping_is_probed_every_few_seconds_and_a_running_one_every_minute() {
        let mapping = Switch::new(MappingState::Enabled);
        let down = step(
            &Fixed(Health::Unhealthy("28P01".into())),
            &mapping,
            &NoFigures,
            SIX,
        )
        .await
        .expect("step");
        assert_eq!(down.action, Action::Pause);
        assert_eq!(mapping.state(), MappingState::Disabled);
        assert_eq!(down.next_probe_in(), OPEN_PROBE_INTERVAL);

        let still_down = step(
            &Fixed(Health::Unhealthy("28P01".into())),
            &mapping,
            &NoFigures,
            SIX,
        )
        .await
        .expect("step");
        assert_eq!(still_down.action, Action::Keep);
        assert_eq!(still_down.next_probe_in(), OPEN_PROBE_INTERVAL);

        let back = step(&Fixed(Health::Healthy), &mapping, &NoFigures, SIX)
            .await
            .expect("step");
        assert_eq!(back.action, Action::Resume);
        assert_eq!(mapping.state(), MappingState::Enabled);
        assert_eq!(back.next_probe_in(), SCHEDULE_INTERVAL);
    }

    #[tokio::test(start_paused = true)]
    async fn a_scheduled_run_keeps_probing_a_paused_mapping_until_its_deadline() {
        let mapping = Switch::new(MappingState::Enabled);
        let started = tokio::time::Instant::now();
        let last = run_until(
            &Fixed(Health::Unhealthy("connection refused".into())),
            &mapping,
            &NoFigures,
            SIX,
            started + Duration::from_secs(45),
        )
        .await
        .expect("run");
        assert!(last.open());
        // Probes at 0, 10, 20, 30 and 40 s; the one at 50 s is the next run's.
        assert_eq!(started.elapsed(), Duration::from_secs(40));

        let closed = run_until(
            &Fixed(Health::Healthy),
            &mapping,
            &NoFigures,
            SIX,
            started + Duration::from_secs(100),
        )
        .await
        .expect("run");
        assert_eq!(closed.action, Action::Resume);
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(40),
            "a closed breaker returns at once"
        );
    }

    #[test]
    fn an_unhealthy_answer_carries_its_reason() {
        let answer = ProbeAnswer::from(Health::Unhealthy("SQLSTATE 28P01".into()));
        assert_eq!(
            serde_json::to_string(&answer).expect("json"),
            r#"{"healthy":false,"reason":"SQLSTATE 28P01"}"#
        );
        assert_eq!(
            serde_json::to_string(&ProbeAnswer::from(Health::Healthy)).expect("json"),
            r#"{"healthy":true}"#
        );
    }
}
