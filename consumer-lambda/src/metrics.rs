//! Per-batch metrics in CloudWatch Embedded Metric Format: one JSON log line that
//! CloudWatch turns into metrics, with no API call and no extra latency.

use std::time::Duration;

use serde_json::json;

/// CloudWatch namespace of the consumer's metrics.
pub const NAMESPACE: &str = "OrdersConsumer";

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchMetrics {
    pub records: usize,
    /// Orders written by this batch.
    pub stored: u64,
    /// Orders that were already stored (redelivery, retried POST, replay).
    pub duplicates: u64,
    /// Orders already stored with other content, newly kept in `order_conflicts`.
    pub conflicts: u64,
    /// Permanent failures, bound for the DLQ: records that are not valid orders,
    /// and orders PostgreSQL refused for their data.
    pub rejected: usize,
    /// Valid records not stored (database trouble), postponed to be retried.
    pub retried: usize,
    /// Valid records not stored, sent again as fresh copies (a long outage).
    pub requeued: usize,
    pub latency: Duration,
}

impl BatchMetrics {
    /// The EMF document for this batch, as one line, dimensioned by function name.
    pub fn to_emf(&self, function_name: &str, timestamp_ms: u64) -> String {
        let metric = |name: &str, unit: &str| json!({"Name": name, "Unit": unit});
        json!({
            "_aws": {
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [["FunctionName"]],
                    "Metrics": [
                        metric("Records", "Count"),
                        metric("Stored", "Count"),
                        metric("Duplicates", "Count"),
                        metric("Conflicts", "Count"),
                        metric("Rejected", "Count"),
                        metric("Retried", "Count"),
                        metric("Requeued", "Count"),
                        metric("BatchLatency", "Milliseconds"),
                    ],
                }],
            },
            "FunctionName": function_name,
            "Records": self.records,
            "Stored": self.stored,
            "Duplicates": self.duplicates,
            "Conflicts": self.conflicts,
            "Rejected": self.rejected,
            "Retried": self.retried,
            "Requeued": self.requeued,
            "BatchLatency": self.latency.as_secs_f64() * 1000.0,
        })
        .to_string()
    }
}

/// The circuit breaker's EMF line after a run: `BreakerOpen` is 1 while the
/// event source mapping is paused because the consumer cannot store (the
/// template alarms on it), dimensioned by the consumer function it guards.
pub fn breaker_emf(open: bool, consumer_function: &str, timestamp_ms: u64) -> String {
    json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["FunctionName"]],
                "Metrics": [{"Name": BREAKER_OPEN, "Unit": "Count"}],
            }],
        },
        "FunctionName": consumer_function,
        BREAKER_OPEN: u8::from(open),
    })
    .to_string()
}

/// The breaker's metric: 1 while the mapping is paused.
pub const BREAKER_OPEN: &str = "BreakerOpen";

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn the_emf_line_declares_every_metric_it_carries() {
        let metrics = BatchMetrics {
            records: 10,
            stored: 6,
            duplicates: 1,
            conflicts: 1,
            rejected: 2,
            retried: 1,
            requeued: 0,
            latency: Duration::from_micros(12_500),
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
        assert_eq!(doc["Stored"], 6);
        assert_eq!(doc["Conflicts"], 1);
        assert_eq!(doc["BatchLatency"], 12.5);
    }
}
