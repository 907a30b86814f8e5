//! Skew is ours: the consumer's code is updated after the schema it writes,
//! and valid orders it cannot take yet raise an alarm once they outlast a
//! release.

use infra::{as_u64, reference};

use crate::helpers::{at, items, properties, template, text};

#[test]
fn every_function_that_writes_as_the_writer_is_updated_after_the_schema() {
    let t = template();
    let writers: Vec<&str> = t
        .resources_of_type("AWS::Serverless::Function")
        .filter(|(_, function)| {
            function
                .get("Properties")
                .and_then(|p| p.get("Environment"))
                .and_then(|e| e.get("Variables"))
                .and_then(|v| v.get("DB_USER"))
                .and_then(reference)
                == Some("DatabaseWriterUsername")
        })
        .map(|(id, _)| id)
        .collect();
    assert!(writers.contains(&"ConsumerFunction"), "{writers:?}");
    for id in writers {
        let depends: Vec<&str> = items(at(&t, &["Resources", id]).get("DependsOn"))
            .into_iter()
            .map(text)
            .collect();
        assert!(
            depends.contains(&"DatabaseSchema"),
            "{id} must be DependsOn: DatabaseSchema, so its code never runs before its migrations (it has {depends:?})"
        );
    }
}

#[test]
fn skew_that_outlasts_a_release_raises_an_alarm_on_the_topic_the_others_notify() {
    let t = template();
    let alarm = properties(&t, "ConsumerSkewAlarm");
    assert_eq!(
        alarm.get("Namespace").map(text),
        Some(consumer_lambda::metrics::NAMESPACE)
    );
    assert_eq!(
        alarm.get("MetricName").map(text),
        Some(consumer_lambda::metrics::SKEWED)
    );
    let dimensions = items(alarm.get("Dimensions"));
    assert_eq!(dimensions.len(), 1);
    assert_eq!(
        dimensions[0].get("Value").and_then(reference),
        Some("ConsumerFunction")
    );
    assert_eq!(alarm.get("Statistic").map(text), Some("Sum"));
    let period = alarm.get("Period").and_then(as_u64).expect("Period");
    let periods = alarm
        .get("EvaluationPeriods")
        .and_then(as_u64)
        .expect("EvaluationPeriods");
    let breaching = alarm
        .get("DatapointsToAlarm")
        .and_then(as_u64)
        .unwrap_or(periods);
    // A record postponed as skew comes back within the backoff's cap (a
    // minute), so a minute without a skewed record is rare while skew lasts.
    let cap = consumer_lambda::Backoff::default().cap().as_secs();
    assert!(
        period >= cap,
        "a period of {period} s sees each skewed record again"
    );
    // A release in progress (a gradual shift of the consumer, a rolling
    // update of the producer) skews for minutes: no alarm before ten of them.
    assert!(period * breaching >= 10 * 60, "{breaching} × {period} s");
    assert!(period * periods <= 30 * 60, "but within half an hour");
    let postponing = properties(&t, "ConsumerPostponingAlarm");
    for actions in ["AlarmActions", "OKActions"] {
        assert_eq!(alarm.get(actions), postponing.get(actions), "{actions}");
    }
    assert_eq!(
        alarm.get("TreatMissingData").map(text),
        Some("notBreaching"),
        "no batches, no skew"
    );
}
