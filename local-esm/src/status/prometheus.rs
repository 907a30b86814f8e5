//! The producer's `/metrics` (Prometheus / OpenMetrics text), read into the
//! few figures the dashboard shows for it.

use std::collections::BTreeMap;

/// The producer's metric names (its `Registry` prefix `producer`, and the
/// suffixes the text format adds), as `producer/src/metrics.rs` registers
/// them; the status integration test reads them from a running producer.
pub const HTTP_REQUESTS: &str = "producer_http_requests_total";
pub const ENQUEUE_SECONDS: &str = "producer_enqueue_seconds";
/// The route whose answers are orders accepted or refused.
pub const ORDERS_ROUTE: &str = "/orders";
/// The answer of an accepted order.
pub const ACCEPTED: &str = "202";

/// One sample line: `name{label="value",…} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(label, _)| label == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Every sample of the text; comment lines (`# HELP`, `# TYPE`, `# EOF`) and
/// lines that are not samples are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    // The value, then an optional timestamp.
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// `a="x",b="y\"z"}` → the labels and what follows the `}`.
fn parse_labels(mut text: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start_matches([',', ' ']);
        if let Some(after) = text.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = text.find('=')?;
        let name = text[..eq].trim().to_owned();
        let mut chars = text[eq + 1..].char_indices();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                other => value.push(other),
            }
        };
        labels.push((name, value));
        text = &text[eq + 1 + end + 1..];
    }
}

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
    pub fn from_samples(samples: &[Sample]) -> Self {
        let mut figures = Self::default();
        for sample in samples {
            if sample.name == HTTP_REQUESTS
                && sample.label("route") == Some(ORDERS_ROUTE)
                && sample.label("method") == Some("POST")
            {
                let count = sample.value as u64;
                match sample.label("status") {
                    Some(ACCEPTED) => figures.accepted += count,
                    Some(status) => *figures.refused.entry(status.to_owned()).or_default() += count,
                    None => {}
                }
            }
        }
        figures.queued = latency(samples, "queued");
        figures.failed = latency(samples, "failed");
        figures
    }
}

fn latency(samples: &[Sample], outcome: &str) -> Latency {
    let of = |suffix: &str| {
        let name = format!("{ENQUEUE_SECONDS}{suffix}");
        samples
            .iter()
            .filter(move |s| s.name == name && s.label("outcome") == Some(outcome))
    };
    let count = of("_count").map(|s| s.value as u64).sum();
    let sum_seconds = of("_sum").map(|s| s.value).sum();
    let mut buckets: Vec<(f64, f64)> = of("_bucket")
        .filter_map(|s| {
            let le = s.label("le")?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, s.value))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Buckets are cumulative: the first whose count reaches 99 % of all.
    let p99_at_most_seconds = (count > 0)
        .then(|| {
            buckets
                .iter()
                .find(|(_, cumulative)| *cumulative >= 0.99 * count as f64)
                .map(|(bound, _)| *bound)
        })
        .flatten();
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
    fn samples_are_read_with_their_labels_and_comments_are_skipped() {
        let samples = parse(CAPTURED);
        assert_eq!(samples.len(), 11);
        assert_eq!(samples[0].name, HTTP_REQUESTS);
        assert_eq!(samples[0].label("status"), Some("202"));
        assert_eq!(samples[0].value, 7.0);
        assert_eq!(samples[10].label("le"), Some("+Inf"));
    }

    #[test]
    fn a_label_value_may_hold_escaped_quotes_commas_and_braces() {
        let samples = parse(r#"m{a="x\"y,}",b="\\n"} 1.5 1700000000"#);
        assert_eq!(
            samples,
            [Sample {
                name: "m".into(),
                labels: vec![("a".into(), "x\"y,}".into()), ("b".into(), "\\n".into())],
                value: 1.5,
            }]
        );
    }

    #[test]
    fn a_line_that_is_not_a_sample_is_skipped() {
        assert!(parse("garbage\nm{a=unquoted} 1\nm{a=\"open").is_empty());
    }

    #[test]
    fn orders_are_counted_accepted_or_refused_by_status_on_the_orders_route_only() {
        let figures = ProducerFigures::from_samples(&parse(CAPTURED));
        assert_eq!(figures.accepted, 7);
        assert_eq!(
            figures.refused,
            BTreeMap::from([("422".to_owned(), 2), ("503".to_owned(), 1)])
        );
    }

    #[test]
    fn the_enqueue_latency_gives_its_mean_and_the_bucket_of_its_99th_percentile() {
        let figures = ProducerFigures::from_samples(&parse(CAPTURED));
        assert_eq!(figures.queued.count, 7);
        assert_eq!(figures.queued.mean_seconds(), Some(0.005));
        assert_eq!(figures.queued.p99_at_most_seconds, Some(0.008));
        assert_eq!(figures.failed, Latency::default());
        assert_eq!(figures.failed.mean_seconds(), None);
    }
}
