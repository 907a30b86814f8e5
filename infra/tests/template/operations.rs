//! Operations: the alarms and what they watch, the outputs, log retention, and
//! the linters' skips.

use infra::{Value, as_u64, intrinsic, reference};

use crate::helpers::{at, get_att, items, properties, template, text};

#[test]
fn alarms_watch_the_dlq_the_oldest_order_and_the_consumer_and_notify_the_topic() {
    let t = template();
    let alarms: Vec<(String, String, String)> = t
        .resources_of_type("AWS::CloudWatch::Alarm")
        .map(|(id, alarm)| {
            let p = alarm.get("Properties").expect("properties");
            assert!(
                items(p.get("AlarmActions"))
                    .iter()
                    .any(|a| reference(a) == Some("AlarmTopic")),
                "{id} must notify AlarmTopic"
            );
            let dimension = items(p.get("Dimensions"))
                .first()
                .and_then(|d| d.get("Value"))
                .map(|v| {
                    get_att(v)
                        .or_else(|| reference(v).map(str::to_owned))
                        .unwrap_or_default()
                })
                .unwrap_or_default();
            (
                p.get("MetricName").map(text).unwrap_or("").to_owned(),
                dimension,
                id.to_owned(),
            )
        })
        .collect();
    for (metric, dimension, what) in [
        (
            "ApproximateNumberOfMessagesVisible",
            "OrdersDeadLetterQueue.QueueName",
            "the DLQ is not empty",
        ),
        (
            "ApproximateAgeOfOldestMessage",
            "OrdersQueue.QueueName",
            "the oldest order waits too long",
        ),
        (
            "Errors",
            "ConsumerFunction",
            "the consumer fails invocations",
        ),
    ] {
        assert!(
            alarms.iter().any(|(m, d, _)| m == metric && d == dimension),
            "no alarm on {metric} of {dimension} (for: {what}); alarms: {alarms:?}"
        );
    }
    assert_eq!(
        at(&t, &["Parameters", "AlarmEmail", "Default"]).as_str(),
        Some(""),
        "the e-mail subscription is optional"
    );
    assert!(
        at(&t, &["Resources", "AlarmTopicEmail", "Condition"]).as_str() == Some("HasAlarmEmail"),
        "the subscription exists only when AlarmEmail is given"
    );
}

#[test]
fn the_outputs_say_where_the_producer_the_queues_and_the_database_are() {
    let t = template();
    for output in [
        "ProducerUrl",
        "OrdersQueueUrl",
        "OrdersDeadLetterQueueUrl",
        "DatabaseEndpoint",
    ] {
        assert!(
            t.get(&["Outputs", output, "Value"]).is_ok(),
            "the stack needs an output {output}"
        );
    }
}

#[test]
fn the_consumer_logs_are_kept_for_a_set_time() {
    let t = template();
    let group = properties(&t, "ConsumerLogGroup");
    assert!(
        t.number::<u64>(&[
            "Resources",
            "ConsumerLogGroup",
            "Properties",
            "RetentionInDays"
        ])
        .is_ok(),
        "ConsumerLogGroup needs RetentionInDays"
    );
    assert_eq!(
        properties(&t, "ConsumerFunction")
            .get("LoggingConfig")
            .and_then(|l| l.get("LogGroup"))
            .and_then(reference),
        Some("ConsumerLogGroup"),
        "the function logs to ConsumerLogGroup"
    );
    let sub = |v: Option<&Value>| match v.and_then(intrinsic) {
        Some((_, Value::String(s))) => s.clone(),
        _ => String::new(),
    };
    assert_eq!(
        sub(group.get("LogGroupName")),
        format!(
            "/aws/lambda/{}",
            sub(properties(&t, "ConsumerFunction").get("FunctionName"))
        ),
        "the log group carries the function's name, so nothing else creates one without retention"
    );
}

#[test]
fn every_checkov_skip_sits_on_its_resource_with_a_reason() {
    let t = template();
    assert!(
        t.get(&["Metadata", "checkov"]).is_err() && t.get(&["Metadata", "cfn-lint"]).is_err(),
        "no template-wide skips: put each on the resource it concerns"
    );
    let resources = at(&t, &["Resources"]).as_mapping().expect("resources");
    let mut skips = 0;
    for (id, resource) in resources {
        for skip in items(
            resource
                .get("Metadata")
                .and_then(|m| m.get("checkov"))
                .and_then(|c| c.get("skip")),
        ) {
            skips += 1;
            let check = skip.get("id").map(text).unwrap_or("");
            let comment = skip.get("comment").map(text).unwrap_or("");
            assert!(
                check.starts_with("CKV") && comment.len() >= 40,
                "{}: checkov skip {check:?} needs an id and a comment that says why ({comment:?})",
                text(id)
            );
        }
    }
    assert!(skips > 0);
}

#[test]
fn a_conflicting_order_raises_an_alarm_on_the_consumers_conflicts_metric() {
    let t = template();
    let alarm = t
        .resources_of_type("AWS::CloudWatch::Alarm")
        .filter_map(|(_, a)| a.get("Properties"))
        .find(|p| p.get("MetricName").map(text) == Some(consumer_lambda::metrics::CONFLICTS))
        .expect("an alarm on the consumer's Conflicts metric");
    assert_eq!(
        alarm.get("Namespace").map(text),
        Some(consumer_lambda::metrics::NAMESPACE),
        "the consumer's EMF namespace"
    );
    let dimensions = items(alarm.get("Dimensions"));
    assert_eq!(
        dimensions.len(),
        1,
        "the consumer's metrics have one dimension"
    );
    assert_eq!(dimensions[0].get("Name").map(text), Some("FunctionName"));
    assert_eq!(
        dimensions[0].get("Value").and_then(reference),
        Some("ConsumerFunction"),
        "FunctionName is the function's name (!Ref ConsumerFunction)"
    );
    assert_eq!(alarm.get("Statistic").map(text), Some("Sum"));
    assert_eq!(alarm.get("Period").and_then(as_u64), Some(300));
    assert_eq!(alarm.get("Threshold").and_then(as_u64), Some(0));
    assert_eq!(
        alarm.get("ComparisonOperator").map(text),
        Some("GreaterThanThreshold"),
        "any conflict at all (Sum > 0)"
    );
    assert_eq!(
        alarm.get("TreatMissingData").map(text),
        Some("notBreaching")
    );
    assert!(
        items(alarm.get("AlarmActions"))
            .iter()
            .any(|a| reference(a) == Some("AlarmTopic")),
        "the alarm notifies AlarmTopic"
    );
}

/// An alarm on one of the consumer's own EMF metrics, by metric name.
fn consumer_metric_alarm<'a>(t: &'a infra::Document, metric: &str) -> &'a Value {
    let alarm = t
        .resources_of_type("AWS::CloudWatch::Alarm")
        .filter_map(|(_, a)| a.get("Properties"))
        .find(|p| {
            p.get("MetricName").map(text) == Some(metric)
                && p.get("Namespace").map(text) == Some(consumer_lambda::metrics::NAMESPACE)
        })
        .unwrap_or_else(|| panic!("an alarm on the consumer's {metric} metric"));
    let dimensions = items(alarm.get("Dimensions"));
    assert_eq!(dimensions.len(), 1);
    assert_eq!(
        dimensions[0].get("Value").and_then(reference),
        Some("ConsumerFunction")
    );
    alarm
}

#[test]
fn the_oldest_orders_age_which_no_requeue_resets_raises_an_alarm() {
    let t = template();
    let alarm = consumer_metric_alarm(&t, consumer_lambda::metrics::OLDEST_ORDER_AGE);
    assert_eq!(alarm.get("Statistic").map(text), Some("Maximum"));
    assert_eq!(
        alarm.get("Threshold").and_then(reference),
        Some("OldestMessageAgeAlarmSeconds"),
        "the same threshold as the queue's own oldest-message age"
    );
}

#[test]
fn postponements_sustained_for_minutes_raise_an_alarm() {
    let t = template();
    let alarm = consumer_metric_alarm(&t, consumer_lambda::metrics::POSTPONED);
    let period = alarm.get("Period").and_then(as_u64).expect("period");
    let periods = alarm
        .get("EvaluationPeriods")
        .and_then(as_u64)
        .expect("periods");
    assert_eq!(
        alarm.get("DatapointsToAlarm").and_then(as_u64),
        Some(periods),
        "every period in a row: a sustained failure, not a blip"
    );
    assert!(period * periods <= 5 * 60, "within minutes");
}

#[test]
fn every_alarm_on_the_consumers_namespace_names_a_metric_the_consumer_emits() {
    use consumer_lambda::metrics::{BatchMetrics, NAMESPACE, breaker_emf};
    let batch = BatchMetrics {
        oldest_received_at: "2026-12-02T10:00:00Z".parse().ok(),
        ..BatchMetrics::default()
    };
    let mut emitted: Vec<String> = Vec::new();
    for line in [batch.to_emf("f", 0), breaker_emf(true, "f", 0)] {
        let doc: Value = serde_json::from_str(&line).expect("an EMF line is JSON");
        emitted.extend(
            items(doc["_aws"]["CloudWatchMetrics"][0].get("Metrics"))
                .iter()
                .filter_map(|m| m.get("Name").and_then(Value::as_str))
                .map(str::to_owned),
        );
    }
    let t = template();
    let named: Vec<&str> = t
        .resources_of_type("AWS::CloudWatch::Alarm")
        .filter_map(|(_, a)| a.get("Properties"))
        .filter(|p| p.get("Namespace").map(text) == Some(NAMESPACE))
        .filter_map(|p| p.get("MetricName").map(text))
        .collect();
    assert!(named.len() >= 4, "{named:?}");
    for metric in named {
        assert!(
            emitted.iter().any(|e| e == metric),
            "an alarm names {metric}, which the consumer never emits ({emitted:?})"
        );
    }
}
