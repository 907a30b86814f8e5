//! The circuit breaker: what it may do, what it is told, how often it runs, and
//! the alarm on what it reports; each figure read from the code's own constants.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use support::FromEnv;

use breaker::function::{BREAKER_OPEN, NAMESPACE};
use breaker::{OPEN_PROBE_INTERVAL, PROBE_TIMEOUT, SCHEDULE_INTERVAL};
use infra::{as_u64, reference};

use crate::helpers::{
    actions, at, granted, items, max_receive_count, properties, role_statements, template, text,
    visibility_timeout,
};

#[test]
fn the_breaker_may_only_invoke_the_consumer_and_switch_its_mapping() {
    let t = template();
    let statements = role_statements(&t, "BreakerRole");
    let granted = granted(&t, "BreakerRole");
    let mapping = "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:event-source-mapping:${ConsumerFunctionOrders}";
    let expected: BTreeSet<(String, String)> = [
        ("logs:CreateLogStream", "${BreakerLogGroup.Arn}"),
        ("logs:PutLogEvents", "${BreakerLogGroup.Arn}"),
        // The alias the mapping invokes, never $LATEST.
        ("lambda:InvokeFunction", "Ref:ConsumerFunction.Alias"),
        ("lambda:GetEventSourceMapping", mapping),
        ("lambda:UpdateEventSourceMapping", mapping),
        // The batches' figures: GetMetricData has no resource-level permissions.
        ("cloudwatch:GetMetricData", "*"),
    ]
    .into_iter()
    .map(|(a, r)| (a.to_owned(), r.to_owned()))
    .collect();
    assert_eq!(granted, expected);
    assert!(
        statements
            .values()
            .all(|s| s.get("Effect").map(text) == Some("Allow"))
    );
    // The pause switch, no more: the mapping may only be updated while it
    // invokes the consumer's alias.
    let switch = statements
        .values()
        .find(|s| actions(s).contains("lambda:UpdateEventSourceMapping"))
        .expect("the switch");
    assert_eq!(
        switch
            .get("Condition")
            .and_then(|c| c.get("StringEquals"))
            .and_then(|c| c.get("lambda:FunctionArn"))
            .and_then(reference),
        Some("ConsumerFunction.Alias"),
        "{switch:?}"
    );
    assert_eq!(
        actions(switch).len(),
        1,
        "Get needs no condition, Update alone has one"
    );
    let figures = statements
        .values()
        .find(|s| actions(s).contains("cloudwatch:GetMetricData"))
        .expect("the figures");
    assert_eq!(
        actions(figures).len(),
        1,
        "\"*\" for GetMetricData only: {figures:?}"
    );
}

#[test]
fn the_consumer_is_invoked_through_its_alias() {
    let t = template();
    assert_eq!(
        properties(&t, "ConsumerFunction")
            .get("AutoPublishAlias")
            .map(text),
        Some("live")
    );
}

#[test]
fn the_breaker_switches_the_mapping_sam_makes_for_the_consumers_queue() {
    let t = template();
    // SAM names the mapping of an SQS event <function><event>.
    let events = at(
        &t,
        &["Resources", "ConsumerFunction", "Properties", "Events"],
    )
    .as_mapping()
    .expect("events");
    let sqs: Vec<String> = events
        .iter()
        .filter(|(_, e)| e.get("Type").map(text) == Some("SQS"))
        .map(|(name, _)| format!("ConsumerFunction{}", text(name)))
        .collect();
    assert_eq!(sqs, ["ConsumerFunctionOrders"], "one SQS event source");

    let env = at(
        &t,
        &[
            "Resources",
            "BreakerFunction",
            "Properties",
            "Environment",
            "Variables",
        ],
    );
    assert_eq!(
        env.get("CONSUMER_FUNCTION").and_then(reference),
        Some("ConsumerFunction.Alias"),
        "the breaker probes the alias the mapping invokes"
    );
    assert_eq!(
        env.get("EVENT_SOURCE_MAPPING").and_then(reference),
        Some(sqs[0].as_str())
    );
    assert_eq!(
        env.get("MAX_RECEIVE_COUNT").and_then(reference),
        Some("MaxReceiveCount"),
        "the queue's own, which bounds the resumes after failing batches"
    );
    let resolved: HashMap<&str, &str> = [
        ("CONSUMER_FUNCTION", "orders-consumer"),
        (
            "EVENT_SOURCE_MAPPING",
            "14e0db71-5d35-4eb5-b481-8945cf9d10c2",
        ),
        ("MAX_RECEIVE_COUNT", "6"),
    ]
    .into();
    breaker::function::Config::from_lookup(|name| resolved.get(name).map(|v| (*v).to_owned()))
        .unwrap_or_else(|err| panic!("the breaker refuses the template's environment: {err}"));
    assert!(
        env.as_mapping().expect("variables").len() == resolved.len(),
        "the breaker is told nothing else"
    );
}

#[test]
fn the_breaker_is_its_own_build_of_its_own_crate() {
    let t = template();
    let function = at(&t, &["Resources", "BreakerFunction"]);
    assert_eq!(
        function
            .get("Metadata")
            .and_then(|m| m.get("BuildProperties"))
            .and_then(|b| b.get("Binary"))
            .map(text),
        Some("breaker"),
        "a consumer build that cannot start must not stop the breaker"
    );
    assert_eq!(
        function
            .get("Properties")
            .and_then(|p| p.get("CodeUri"))
            .map(text),
        Some("../breaker")
    );
}

#[test]
fn the_breaker_runs_outside_the_vpc_on_the_schedule_its_code_expects() {
    let t = template();
    let function = properties(&t, "BreakerFunction");
    assert!(
        function.get("VpcConfig").is_none(),
        "it calls only Lambda's API, reachable without a VPC endpoint from outside a VPC"
    );
    let events = function
        .get("Events")
        .and_then(|e| e.as_mapping())
        .expect("a schedule");
    let schedules: Vec<&str> = events
        .iter()
        .filter(|(_, e)| e.get("Type").map(text) == Some("ScheduleV2"))
        .filter_map(|(_, e)| e.get("Properties")?.get("ScheduleExpression").map(text))
        .collect();
    let minutes = SCHEDULE_INTERVAL.as_secs() / 60;
    let unit = if minutes == 1 { "minute" } else { "minutes" };
    assert_eq!(schedules, [format!("rate({minutes} {unit})").as_str()]);

    // A run stops probing two probe timeouts before its deadline and must end
    // before the next run begins; in between it has room for probes.
    let timeout = Duration::from_secs(
        function
            .get("Timeout")
            .and_then(as_u64)
            .expect("the breaker's own Timeout"),
    );
    assert!(
        timeout < SCHEDULE_INTERVAL,
        "runs do not pile up: {timeout:?}"
    );
    assert!(
        timeout >= OPEN_PROBE_INTERVAL * 3 + PROBE_TIMEOUT * 2,
        "a run has room for several probes: {timeout:?}"
    );
    assert_eq!(
        function
            .get("EventInvokeConfig")
            .and_then(|c| c.get("MaximumRetryAttempts"))
            .and_then(as_u64),
        Some(0),
        "a failed run is not retried: the next minute's run replaces it"
    );
}

#[test]
fn a_paused_consumer_raises_an_alarm_on_the_breakers_own_metric() {
    let t = template();
    let alarm = properties(&t, "ConsumerPausedAlarm");
    assert_eq!(alarm.get("Namespace").map(text), Some(NAMESPACE));
    assert_eq!(alarm.get("MetricName").map(text), Some(BREAKER_OPEN));
    let dimensions = items(alarm.get("Dimensions"));
    assert_eq!(dimensions.len(), 1);
    assert_eq!(dimensions[0].get("Name").map(text), Some("FunctionName"));
    assert_eq!(
        dimensions[0].get("Value").and_then(reference),
        Some("ConsumerFunction"),
        "the breaker reports under the consumer function's name"
    );
    let period = alarm.get("Period").and_then(as_u64).expect("a period");
    let periods = alarm
        .get("EvaluationPeriods")
        .and_then(as_u64)
        .expect("evaluation periods");
    assert!(
        period * periods <= 5 * 60,
        "an operator hears of a paused consumer within minutes"
    );
    // The breaker reports every run, also when its mapping call fails: a
    // silent breaker may have left the mapping paused, so silence alarms too.
    assert!(period >= SCHEDULE_INTERVAL.as_secs());
    assert_eq!(
        alarm.get("TreatMissingData").map(text),
        Some("breaching"),
        "a breaker that stopped reporting never lets the alarm return to OK"
    );
    assert!(
        items(alarm.get("AlarmActions"))
            .iter()
            .any(|a| reference(a) == Some("AlarmTopic"))
    );
}

#[test]
fn the_breakers_own_errors_raise_an_alarm_within_minutes() {
    let t = template();
    let resources = at(&t, &["Resources"]).as_mapping().expect("resources");
    let alarm = resources
        .values()
        .filter(|r| r.get("Type").map(text) == Some("AWS::CloudWatch::Alarm"))
        .filter_map(|r| r.get("Properties"))
        .find(|p| {
            p.get("Namespace").map(text) == Some("AWS/Lambda")
                && p.get("MetricName").map(text) == Some("Errors")
                && items(p.get("Dimensions"))
                    .iter()
                    .any(|d| d.get("Value").and_then(reference) == Some("BreakerFunction"))
        })
        .expect("an alarm on the breaker function's Errors");
    let period = alarm.get("Period").and_then(as_u64).expect("a period");
    let periods = alarm
        .get("EvaluationPeriods")
        .and_then(as_u64)
        .expect("periods");
    assert!(period * periods <= 5 * 60);
    assert!(
        items(alarm.get("AlarmActions"))
            .iter()
            .any(|a| reference(a) == Some("AlarmTopic"))
    );
}

#[test]
fn a_throttled_or_failing_consumer_spends_at_most_one_receive_before_the_breaker_pauses_it() {
    // Neither fault runs the handler, so neither postpones or requeues: each
    // receive in the window before the breaker's next step is spent. The
    // window: a schedule interval, the probe, and a long poll already under
    // way when the mapping is paused (SQS's longest wait, 20 s).
    let t = template();
    let visibility: u64 = visibility_timeout(&t);
    let max_receive_count: u64 = u64::from(max_receive_count(&t));
    let smallest_allowed = as_u64(at(&t, &["Parameters", "MaxReceiveCount", "MinValue"]))
        .expect("MaxReceiveCount's MinValue");
    let window = SCHEDULE_INTERVAL + PROBE_TIMEOUT + Duration::from_secs(20);
    // A message hides for the visibility timeout after each receive, so
    // receives of one message are at least that far apart.
    let spent = window.as_secs() / visibility + 1;
    println!(
        "detection window {window:?}: at most {spent} receive(s) of {max_receive_count} spent; \
         without the breaker a valid order reaches the DLQ after {} s",
        max_receive_count * visibility
    );
    assert_eq!(spent, 1, "window {window:?}, visibility {visibility} s");
    assert!(
        spent < smallest_allowed,
        "even at MaxReceiveCount's MinValue ({smallest_allowed}) receives are left once paused"
    );
}
