//! Per-batch metrics in CloudWatch Embedded Metric Format: one JSON log line that
//! CloudWatch turns into metrics, with no API call and no extra latency.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

/// The namespace and the breaker's line in it, shared with the `breaker` crate.
pub use breaker::function::{BREAKER_OPEN, NAMESPACE, breaker_emf};

/// What one batch did. Every record is exactly one of: stored, duplicate,
/// conflict, invalid, refused, skewed, postponed, requeued or requeue-failed;
/// every invalid or refused one also dead-lettered or dead-letter-failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchMetrics {
    pub records: usize,
    /// Orders written by this batch.
    pub stored: u64,
    /// Orders that were already stored (redelivery, retried POST, replay).
    pub duplicates: u64,
    /// Orders already stored with other content, newly kept in `order_conflicts`.
    pub conflicts: u64,
    /// Records that are not valid orders: permanent failures, for the DLQ.
    pub invalid: usize,
    /// Orders PostgreSQL refused for their data: permanent failures, for the DLQ.
    pub refused: usize,
    /// Valid orders this build cannot take yet (a newer `schema_version`, a
    /// release fault): retried, but counted here only, never as the
    /// database's postponed, requeued or requeue-failed.
    pub skewed: usize,
    /// Invalid or refused records whose DLQ copy SQS acknowledged.
    pub dead_lettered: usize,
    /// Invalid or refused records left unacknowledged for the redrive policy.
    pub dead_letter_failed: usize,
    /// Valid orders not stored, received again after a backoff.
    pub postponed: usize,
    /// Valid orders not stored, sent again as fresh copies (a long outage).
    pub requeued: usize,
    /// Valid orders whose fresh copy SQS did not acknowledge: left on the queue.
    pub requeue_failed: usize,
    pub latency: Duration,
    /// When the producer received the oldest valid order of the batch (no
    /// requeue resets it, unlike the queue's oldest-message age).
    pub oldest_received_at: Option<DateTime<Utc>>,
}

/// The EMF metric names, one per [`BatchMetrics`] field; the template's alarms
/// name some of them, and its tests read them from here.
pub const RECORDS: &str = "Records";
pub const STORED: &str = "Stored";
pub const DUPLICATES: &str = "Duplicates";
pub const CONFLICTS: &str = "Conflicts";
pub const INVALID: &str = "Invalid";
pub const REFUSED: &str = "Refused";
pub const SKEWED: &str = "Skewed";
pub const POSTPONED: &str = "Postponed";
pub const REQUEUED: &str = "Requeued";
pub const REQUEUE_FAILED: &str = "RequeueFailed";
pub const DEAD_LETTERED: &str = "DeadLettered";
pub const DEAD_LETTER_FAILED: &str = "DeadLetterFailed";
pub const BATCH_LATENCY: &str = "BatchLatency";
pub const OLDEST_ORDER_AGE: &str = "OldestOrderAge";

impl BatchMetrics {
    /// Each count under its metric name.
    pub fn counts(&self) -> [(&'static str, u64); 12] {
        [
            (RECORDS, self.records as u64),
            (STORED, self.stored),
            (DUPLICATES, self.duplicates),
            (CONFLICTS, self.conflicts),
            (INVALID, self.invalid as u64),
            (REFUSED, self.refused as u64),
            (SKEWED, self.skewed as u64),
            (POSTPONED, self.postponed as u64),
            (REQUEUED, self.requeued as u64),
            (REQUEUE_FAILED, self.requeue_failed as u64),
            (DEAD_LETTERED, self.dead_lettered as u64),
            (DEAD_LETTER_FAILED, self.dead_letter_failed as u64),
        ]
    }

    /// The EMF document for this batch, as one line, dimensioned by function name.
    pub fn to_emf(&self, function_name: &str, timestamp_ms: u64) -> String {
        let mut line = json!({ "FunctionName": function_name });
        let mut metrics = Vec::new();
        let mut add = |name: &str, unit: &str, value: serde_json::Value| {
            metrics.push(json!({"Name": name, "Unit": unit}));
            line[name] = value;
        };
        for (name, count) in self.counts() {
            add(name, "Count", json!(count));
        }
        let latency_ms = self.latency.as_secs_f64() * 1000.0;
        add(BATCH_LATENCY, "Milliseconds", json!(latency_ms));
        // Only a batch with a valid order has an oldest order to report.
        if let Some(received_at) = self.oldest_received_at {
            let age_ms = i64::try_from(timestamp_ms)
                .unwrap_or(i64::MAX)
                .saturating_sub(received_at.timestamp_millis())
                .max(0);
            add(OLDEST_ORDER_AGE, "Seconds", json!(age_ms as f64 / 1000.0));
        }
        line["_aws"] = json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["FunctionName"]],
                "Metrics": metrics,
            }],
        });
        line.to_string()
    }
}

/// The counts as `Name=count` pairs, then the latency: the log line of a batch.
impl fmt::Display for BatchMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, count) in self.counts() {
            write!(f, "{name}={count} ")?;
        }
        write!(f, "{BATCH_LATENCY}={} ms", self.latency.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_orders_age_is_reported_in_seconds_and_only_when_there_is_one() {
        let received_at: DateTime<Utc> = "2026-12-02T10:00:00Z".parse().expect("time");
        let metrics = BatchMetrics {
            oldest_received_at: Some(received_at),
            ..BatchMetrics::default()
        };
        let now = received_at.timestamp_millis() as u64 + 90_500;
        let line: serde_json::Value =
            serde_json::from_str(&metrics.to_emf("f", now)).expect("json");
        assert_eq!(line[OLDEST_ORDER_AGE], 90.5);
        let names: Vec<&str> = line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .expect("metrics")
            .iter()
            .filter_map(|m| m["Name"].as_str())
            .collect();
        assert!(names.contains(&OLDEST_ORDER_AGE), "{names:?}");

        let none: serde_json::Value =
            serde_json::from_str(&BatchMetrics::default().to_emf("f", now)).expect("json");
        assert!(none.get(OLDEST_ORDER_AGE).is_none());
        assert!(
            !none.to_string().contains(OLDEST_ORDER_AGE),
            "not listed as a metric either"
        );
    }

    #[test]
    fn the_emf_line_declares_every_metric_it_carries() {
        let metrics = BatchMetrics {
            records: 10,
            stored: 6,
            duplicates: 1,
            conflicts: 1,
            invalid: 1,
            refused: 1,
            skewed: 3,
            postponed: 0,
            requeued: 0,
            requeue_failed: 0,
            dead_lettered: 2,
            dead_letter_failed: 0,
            latency: Duration::from_micros(12_500),
            oldest_received_at: "2026-11-24T18:27:15Z".parse().ok(),
        };
        let line = metrics.to_emf("orders-consumer", 1_795_544_835_000);
        assert!(!line.contains('\n'), "one log line");
        let doc: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(doc["_aws"]["Timestamp"], 1_795_544_835_000_u64);
        for metric in directive["Metrics"].as_array().expect("metrics") {
            let name = metric["Name"].as_str().expect("name");
            assert!(doc[name].is_number(), "{name} is declared and present");
        }
        for dimension in directive["Dimensions"][0].as_array().expect("dimensions") {
            assert!(doc[dimension.as_str().expect("name")].is_string());
        }
        assert_eq!(doc[STORED], 6);
        assert_eq!(doc[CONFLICTS], 1);
        assert_eq!((&doc[INVALID], &doc[REFUSED]), (&1.into(), &1.into()));
        assert_eq!(
            (&doc[DEAD_LETTERED], &doc[DEAD_LETTER_FAILED]),
            (&2.into(), &0.into())
        );
        assert_eq!(doc[SKEWED], 3);
        assert_eq!(doc[BATCH_LATENCY], 12.5);
    }
}
