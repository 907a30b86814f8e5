//! The producer's `/metrics` (Prometheus / OpenMetrics text), read with
//! `prometheus-parse` into the few figures the dashboard shows for it.

use std::collections::BTreeMap;

use prometheus_parse::{Sample, Scrape, Value};

/// The producer's metric names as `producer/src/metrics.rs` registers them
/// (the status integration test reads them from a running producer).
pub const HTTP_REQUESTS: &str = "producer_http_requests_total";
pub const ENQUEUE_SECONDS: &str = "producer_enqueue_seconds";
/// The route whose answers are orders accepted or refused.
pub const ORDERS_ROUTE: &str = "/orders";
/// The answer of an accepted order.
pub const ACCEPTED: &str = "202";

/// The producer's figures on the dashboard.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProducerFigures {
    /// `POST /orders` answered 202.
    pub accepted: u64,
    /// `POST /orders` answered otherwise, by status.
    pub refused: BTreeMap<String, u64>,
    /// Orders SQS confirmed, and the time it took.
    pub queued: Latency,
    /// Orders whose enqueue failed (timeout, SQS down), and the time it took.
    pub failed: Latency,
}

/// A latency histogram in brief.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub sum_seconds: f64,
    /// The upper bound of the bucket that holds the 99th percentile.
    pub p99_at_most_seconds: Option<f64>,
}

impl Latency {
    pub fn mean_seconds(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_seconds / self.count as f64)
    }
}

impl ProducerFigures {
    /// The figures in the text of a scrape; what it cannot read counts as absent.
    pub fn parse(text: &str) -> Self {
        let lines = text.lines().map(|line| Ok(line.to_owned()));
        let samples = Scrape::parse(lines).map_or_else(|_| Vec::new(), |scrape| scrape.samples);
        let mut figures = Self::default();
        for sample in &samples {
            if sample.metric == HTTP_REQUESTS
                && sample.labels.get("route") == Some(ORDERS_ROUTE)
                && sample.labels.get("method") == Some("POST")
            {
                let count = scalar(&sample.value) as u64;
                match sample.labels.get("status") {
                    Some(ACCEPTED) => figures.accepted += count,
                    Some(status) => *figures.refused.entry(status.to_owned()).or_default() += count,
                    None => {}
                }
            }
        }
        figures.queued = latency(&samples, "queued");
        figures.failed = latency(&samples, "failed");
        figures
    }
}

/// A counter's or a gauge's value; the text's `_total` counters, whose
/// `# TYPE` line names them without the suffix, parse as untyped.
fn scalar(value: &Value) -> f64 {
    match value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(_) | Value::Summary(_) => 0.0,
    }
}

fn latency(samples: &[Sample], outcome: &str) -> Latency {
    let of = |name: String| {
        samples
            .iter()
            .filter(move |s| s.metric == name && s.labels.get("outcome") == Some(outcome))
    };
    let total = |name| of(name).map(|s| scalar(&s.value)).sum::<f64>();
    let count = total(format!("{ENQUEUE_SECONDS}_count")) as u64;
    let sum_seconds = total(format!("{ENQUEUE_SECONDS}_sum"));
    let mut buckets: Vec<(f64, f64)> = of(ENQUEUE_SECONDS.to_owned())
        .flat_map(|s| match &s.value {
            Value::Histogram(buckets) => buckets.iter().map(|b| (b.less_than, b.count)).collect(),
            _ => Vec::new(),
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Buckets are cumulative: the first whose count reaches 99 % of all.
    let p99_at_most_seconds = (buckets.iter())
        .find(|(_, cumulative)| count > 0 && *cumulative >= 0.99 * count as f64)
        .map(|(bound, _)| *bound);
    Latency {
        count,
        sum_seconds,
        p99_at_most_seconds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As prometheus_client encodes the producer's registry (trimmed).
    const CAPTURED: &str = r#"# HELP producer_http_requests HTTP requests answered, by route, method and status.
# TYPE producer_http_requests counter
producer_http_requests_total{route="/orders",method="POST",status="202"} 7
producer_http_requests_total{route="/orders",method="POST",status="422"} 2
producer_http_requests_total{route="/orders",method="POST",status="503"} 1
producer_http_requests_total{route="/healthz",method="GET",status="200"} 40
# HELP producer_enqueue_seconds Time from handing an order to the queue until SQS confirmed it (outcome=queued) or it failed.
# TYPE producer_enqueue_seconds histogram
producer_enqueue_seconds_sum{outcome="queued"} 0.035
producer_enqueue_seconds_count{outcome="queued"} 7
producer_enqueue_seconds_bucket{le="0.001",outcome="queued"} 0
producer_enqueue_seconds_bucket{le="0.002",outcome="queued"} 3
producer_enqueue_seconds_bucket{le="0.004",outcome="queued"} 6
producer_enqueue_seconds_bucket{le="0.008",outcome="queued"} 7
producer_enqueue_seconds_bucket{le="+Inf",outcome="queued"} 7
# EOF
"#;

    #[test]
    fn orders_are_counted_accepted_or_refused_by_status_on_the_orders_route_only() {
        let figures = ProducerFigures::parse(CAPTURED);
        assert_eq!(figures.accepted, 7);
        assert_eq!(
            figures.refused,
            BTreeMap::from([("422".to_owned(), 2), ("503".to_owned(), 1)])
        );
    }

    #[test]
    fn the_enqueue_latency_gives_its_mean_and_the_bucket_of_its_99th_percentile() {
        let figures = ProducerFigures::parse(CAPTURED);
        assert_eq!(figures.queued.count, 7);
        assert_eq!(figures.queued.mean_seconds(), Some(0.005));
        assert_eq!(figures.queued.p99_at_most_seconds, Some(0.008));
        assert_eq!(figures.failed, Latency::default());
        assert_eq!(figures.failed.mean_seconds(), None);
    }
}
