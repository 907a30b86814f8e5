//! The `breaker` function: its settings, one scheduled run, and the metric
//! line it prints after each run.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};
use support::lambda::epoch_millis;
use support::{Env, EnvError, FromEnv};

use crate::{
    CloudWatchFigures, Figures, LambdaMapping, LambdaProbe, Mapping, MappingError, PROBE_TIMEOUT,
    Probe, ProbeAnswer, TripPolicy, run_until,
};

/// CloudWatch namespace the breaker reports in: the consumer's, so that its
/// metric sits beside the batches' (the consumer's `metrics` re-exports it).
pub const NAMESPACE: &str = "OrdersConsumer";

/// The breaker's metric: 1 while the mapping is paused.
pub const BREAKER_OPEN: &str = "BreakerOpen";

/// 1 for each pause on the batches' figures (a trip): the history the
/// back-off is read from (see [`crate::figures`]).
pub const BREAKER_TRIPPED: &str = "BreakerTripped";

/// The settings of the breaker function: the function it probes and the event
/// source mapping it pauses and resumes.
#[derive(Debug, Clone)]
pub struct Config {
    /// `CONSUMER_FUNCTION`: the consumer function's name or ARN.
    pub consumer_function: String,
    /// `EVENT_SOURCE_MAPPING`: the UUID of the consumer's mapping on the orders queue.
    pub event_source_mapping: String,
    /// `MAX_RECEIVE_COUNT`: the orders queue's, which bounds the resumes after trips.
    pub max_receive_count: u32,
}

impl FromEnv for Config {
    type Error = EnvError;

    fn read(env: &Env<impl Fn(&str) -> Option<String>>) -> Result<Self, EnvError> {
        Ok(Self {
            consumer_function: env.required("CONSUMER_FUNCTION", "set it to the consumer function the breaker probes")?,
            event_source_mapping: env.required("EVENT_SOURCE_MAPPING", "set it to the UUID of the consumer's event source mapping, which the breaker pauses and resumes")?,
            // SQS allows 1 to 1,000.
            max_receive_count: env.required_bounded("MAX_RECEIVE_COUNT", 1..=1000, "a whole number", "set it to the orders queue's maxReceiveCount, which bounds how often the breaker resumes failing batches")?,
        })
    }
}

/// The breaker's EMF line after a run: `BreakerOpen` is 1 while the event
/// source mapping is paused because the consumer cannot store (the template
/// alarms on it), dimensioned by the consumer function it guards.
pub fn breaker_emf(open: bool, consumer_function: &str, timestamp_ms: u64) -> String {
    emf_count(BREAKER_OPEN, open.into(), consumer_function, timestamp_ms)
}

/// One EMF line: the count `name` = `value` for the consumer function (a run
/// that tripped adds [`BREAKER_TRIPPED`] 1).
fn emf_count(name: &str, value: u8, consumer_function: &str, timestamp_ms: u64) -> String {
    json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["FunctionName"]],
                "Metrics": [{"Name": name, "Unit": "Count"}],
            }],
        },
        "FunctionName": consumer_function,
        name: value,
    })
    .to_string()
}

/// Serves the breaker function: each scheduled invocation probes the consumer
/// function, pauses or resumes its event source mapping, and while it stays
/// paused probes again every few seconds until shortly before its deadline.
pub async fn run() -> Result<(), Error> {
    let config = Config::from_env()?;
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let lambda = aws_sdk_lambda::Client::new(&aws);
    let probe = LambdaProbe::new(lambda.clone(), config.consumer_function.clone());
    let mapping = LambdaMapping::new(lambda, config.event_source_mapping);
    let (consumer_function, alias) = name_and_alias(&config.consumer_function);
    let figures = CloudWatchFigures::new(
        aws_sdk_cloudwatch::Client::new(&aws),
        consumer_function,
        alias.map(str::to_owned),
    );
    let policy = TripPolicy::new(config.max_receive_count);
    let (probe, mapping, figures) = (&probe, &mapping, &figures);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let left = support::lambda::time_left(event.context.deadline);
        // A probe takes at most PROBE_TIMEOUT plus Lambda's own latency.
        let until = tokio::time::Instant::now() + left.saturating_sub(PROBE_TIMEOUT * 2);
        let (lines, answer) =
            one_run(probe, mapping, figures, policy, until, consumer_function).await;
        for line in lines {
            println!("{line}");
        }
        Ok::<_, Error>(answer?)
    }))
    .await
}

/// One scheduled run: its metric line, always (and the trip's line when it
/// tripped), and its answer. A run whose
/// mapping call failed reports the breaker open (the mapping's state is not
/// known, and may be paused: the paused alarm then fires if it lasts) and
/// fails, so Lambda counts it among the breaker's `Errors`.
pub async fn one_run(
    probe: &impl Probe,
    mapping: &impl Mapping,
    figures: &impl Figures,
    policy: TripPolicy,
    until: tokio::time::Instant,
    consumer_function: &str,
) -> (Vec<String>, Result<Value, MappingError>) {
    let last = run_until(probe, mapping, figures, policy, until).await;
    let now = epoch_millis();
    let last = match last {
        Ok(last) => last,
        Err(err) => {
            tracing::error!(error = %support::error_chain(&err), "the breaker could not read or switch the mapping");
            return (vec![breaker_emf(true, consumer_function, now)], Err(err));
        }
    };
    let mut lines = vec![breaker_emf(last.open(), consumer_function, now)];
    if last.tripped {
        lines.push(emf_count(BREAKER_TRIPPED, 1, consumer_function, now));
    }
    let answer = json!({
        "open": last.open(),
        "action": format!("{:?}", last.action),
        "tripped": last.tripped,
        "held": last.held.is_some(),
        "health": ProbeAnswer::from(last.health),
    });
    (lines, Ok(answer))
}

/// The function's name, as the consumer's metrics carry it, and its alias,
/// from the name or ARN (qualified by the alias,
/// `arn:aws:lambda:…:function:NAME:live`) the breaker is given.
fn name_and_alias(function: &str) -> (&str, Option<&str>) {
    if !function.starts_with("arn:") {
        return (function, None);
    }
    let mut parts = function.split(':').skip(6);
    (parts.next().unwrap_or(function), parts.next())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn the_breaker_needs_the_function_it_probes_and_the_mapping_it_pauses() {
        let lookup = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let config = Config::from_lookup(lookup(&[
            ("CONSUMER_FUNCTION", "orders-consumer"),
            ("EVENT_SOURCE_MAPPING", "a1b2"),
            ("MAX_RECEIVE_COUNT", "6"),
        ]))
        .expect("valid");
        assert_eq!(config.consumer_function, "orders-consumer");
        assert_eq!(config.event_source_mapping, "a1b2");
        assert_eq!(config.max_receive_count, 6);
        let err = Config::from_lookup(lookup(&[("CONSUMER_FUNCTION", "orders-consumer")]))
            .expect_err("no mapping");
        assert!(err.to_string().contains("EVENT_SOURCE_MAPPING"), "{err}");
    }

    #[test]
    fn the_metric_names_the_function_the_alias_arn_qualifies() {
        let arn = "arn:aws:lambda:eu-west-1:123456789012:function:orders-consumer";
        assert_eq!(
            name_and_alias(&format!("{arn}:live")),
            ("orders-consumer", Some("live"))
        );
        assert_eq!(name_and_alias(arn), ("orders-consumer", None));
        assert_eq!(name_and_alias("orders-consumer"), ("orders-consumer", None));
    }

    struct Down;

    impl Probe for Down {
        async fn probe(&self) -> crate::Health {
            crate::Health::Unhealthy("connection refused".into())
        }
    }

    struct Unreadable;

    impl Mapping for Unreadable {
        async fn status(&self) -> Result<crate::MappingStatus, MappingError> {
            Err(MappingError {
                action: "reading",
                source: "AccessDeniedException".into(),
            })
        }

        async fn set_enabled(&self, _: bool) -> Result<(), MappingError> {
            unreachable!("never read, never switched")
        }
    }

    #[tokio::test]
    async fn a_run_whose_mapping_call_fails_still_reports_and_fails() {
        let (lines, answer) = one_run(
            &Down,
            &Unreadable,
            &crate::NoFigures,
            TripPolicy::new(6),
            tokio::time::Instant::now(),
            "orders-consumer",
        )
        .await;
        let [line] = lines.as_slice() else {
            panic!("one line: {lines:?}")
        };
        let line: Value = serde_json::from_str(line).expect("json");
        assert_eq!(line[BREAKER_OPEN], 1, "unknown counts as paused");
        assert!(answer.is_err(), "Lambda counts the run among its Errors");
    }

    struct Up;

    impl Probe for Up {
        async fn probe(&self) -> crate::Health {
            crate::Health::Healthy
        }
    }

    struct Enabled;

    impl Mapping for Enabled {
        async fn status(&self) -> Result<crate::MappingStatus, MappingError> {
            Ok(crate::MappingStatus {
                state: crate::MappingState::Enabled,
                since: None,
            })
        }

        async fn set_enabled(&self, _: bool) -> Result<(), MappingError> {
            Ok(())
        }
    }

    struct Failing;

    impl Figures for Failing {
        async fn batches(
            &self,
            _: SystemTime,
            _: SystemTime,
        ) -> Result<crate::Batches, crate::FiguresError> {
            Ok(crate::Batches {
                records: 10,
                ..crate::Batches::default()
            })
        }

        async fn trips(&self, _: SystemTime, _: SystemTime) -> Result<u32, crate::FiguresError> {
            Ok(0)
        }
    }

    #[tokio::test]
    async fn a_run_that_trips_reports_the_trip_beside_the_open_breaker() {
        let (lines, answer) = one_run(
            &Up,
            &Enabled,
            &Failing,
            TripPolicy::new(6),
            tokio::time::Instant::now(),
            "orders-consumer",
        )
        .await;
        let [open, trip] = lines.as_slice() else {
            panic!("two lines: {lines:?}")
        };
        let open: Value = serde_json::from_str(open).expect("json");
        let trip: Value = serde_json::from_str(trip).expect("json");
        assert_eq!(open[BREAKER_OPEN], 1);
        assert_eq!(trip[BREAKER_TRIPPED], 1);
        assert_eq!(trip["FunctionName"], "orders-consumer");
        assert_eq!(trip["_aws"]["CloudWatchMetrics"][0]["Namespace"], NAMESPACE);
        assert_eq!(answer.expect("an answer")["tripped"], true);
    }

    #[test]
    fn the_breakers_line_says_open_as_one_for_the_consumer_function() {
        let line: serde_json::Value =
            serde_json::from_str(&breaker_emf(true, "orders-consumer", 1)).expect("json");
        assert_eq!(line["BreakerOpen"], 1);
        assert_eq!(line["FunctionName"], "orders-consumer");
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
            BREAKER_OPEN
        );
    }
}
