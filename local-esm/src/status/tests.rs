use super::*;
use consumer_lambda::BatchMetrics;
use consumer_lambda::metrics::{
    CONFLICTS, DEAD_LETTER_FAILED, DEAD_LETTERED, DUPLICATES, INVALID, POSTPONED, RECORDS, REFUSED,
    REQUEUE_FAILED, REQUEUED, SKEWED, STORED,
};
use std::collections::BTreeMap;
use support::queues::Depth;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Layer(&'static str, #[source] Option<Box<Layer>>);

#[test]
fn a_rows_error_keeps_its_own_words_and_the_root_cause_only() {
    let root = Layer("Connection refused", None);
    let middle = Layer("dispatch failure", Some(Box::new(root)));
    let top = Layer("the emulator did not answer", Some(Box::new(middle)));
    assert_eq!(
        brief(&top),
        "the emulator did not answer: Connection refused"
    );
    assert_eq!(brief(&Layer("alone", None)), "alone");
}

fn batch(at: &str, stored: u64, oldest: Option<f64>) -> BatchFigures {
    let metrics = BatchMetrics {
        records: stored as usize + 1,
        stored,
        invalid: 1,
        dead_lettered: 1,
        ..BatchMetrics::default()
    };
    BatchFigures {
        at: at.parse().expect("time"),
        counts: metrics.counts(),
        latency_ms: 12.5,
        oldest_order_age_s: oldest,
    }
}

fn snapshot() -> Snapshot {
    Snapshot {
        at: "2026-12-02T16:40:12Z".parse().expect("time"),
        places: Places {
            queue_url: "http://127.0.0.1:4566/000000000000/orders".into(),
            dlq_url: "http://127.0.0.1:4566/000000000000/orders-dlq".into(),
            metrics_url: "http://127.0.0.1:9464/metrics".into(),
            batch_log: ".dev/batches.jsonl".into(),
            batches_shown: 2,
        },
        queues: vec![
            QueueRow {
                name: "orders".into(),
                figures: Ok(QueueFigures {
                    depth: Depth {
                        visible: 3,
                        in_flight: 1,
                        delayed: 2,
                    },
                    oldest: Oldest::Age(Duration::from_secs(125)),
                }),
            },
            QueueRow {
                name: "orders-dlq".into(),
                figures: Ok(QueueFigures {
                    depth: Depth {
                        visible: 0,
                        in_flight: 0,
                        delayed: 0,
                    },
                    oldest: Oldest::Empty,
                }),
            },
        ],
        batches: Ok(Batches {
            batches: vec![
                batch("2026-12-02T16:40:00Z", 1, None),
                batch("2026-12-02T16:40:05Z", 4, Some(1.5)),
                batch("2026-12-02T16:40:10Z", 9, Some(0.25)),
            ],
            unreadable: 0,
        }),
        producer: Ok(ProducerFigures {
            accepted: 14,
            refused: BTreeMap::from([("422".into(), 1)]),
            queued: prometheus::Latency {
                count: 14,
                sum_seconds: 0.07,
                p99_at_most_seconds: Some(0.008),
            },
            failed: prometheus::Latency::default(),
        }),
    }
}

fn line_starting<'a>(text: &'a str, start: &str) -> &'a str {
    text.lines()
        .find(|line| line.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting with {start:?} in:\n{text}"))
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

#[test]
fn each_queue_is_one_row_of_its_depths_and_oldest_age() {
    let text = render(&snapshot());
    assert_eq!(
        words(line_starting(&text, "orders ")),
        ["orders", "3", "1", "2", "2", "min", "5", "s"]
    );
    assert_eq!(
        words(line_starting(&text, "orders-dlq")),
        ["orders-dlq", "0", "0", "0", "-"]
    );
}

#[test]
fn the_batches_are_shown_newest_first_under_the_consumers_metric_names() {
    let text = render(&snapshot());
    assert_eq!(
        words(line_starting(&text, "batch at")),
        ["batch", "at", "16:40:10", "16:40:05", "all", "3"]
    );
    assert_eq!(
        words(line_starting(&text, STORED)),
        [STORED, "9", "4", "Σ", "14"]
    );
    assert_eq!(
        words(line_starting(&text, OLDEST_ORDER_AGE)),
        [OLDEST_ORDER_AGE, "250", "ms", "1.5", "s", "max", "1.5", "s"]
    );
    for name in [
        RECORDS,
        DUPLICATES,
        CONFLICTS,
        INVALID,
        REFUSED,
        SKEWED,
        POSTPONED,
        REQUEUED,
        REQUEUE_FAILED,
        DEAD_LETTERED,
        DEAD_LETTER_FAILED,
        BATCH_LATENCY,
    ] {
        line_starting(&text, name);
    }
    assert!(text.contains("the newest 2.0 s ago"), "{text}");
}

#[test]
fn the_producer_shows_orders_accepted_refused_by_status_and_enqueue_latency() {
    let text = render(&snapshot());
    assert_eq!(
        words(line_starting(&text, "  orders accepted")),
        ["orders", "accepted", "(202)", "14"]
    );
    assert!(
        line_starting(&text, "  orders refused").ends_with("1: 1 × 422"),
        "{text}"
    );
    assert!(
        line_starting(&text, "  enqueued").ends_with("14, mean 5.0 ms, p99 ≤ 8 ms"),
        "{text}"
    );
}

#[test]
fn a_part_that_is_down_says_so_in_its_row_and_the_rest_is_still_shown() {
    let mut snapshot = snapshot();
    snapshot.queues[1].figures = Err("could not reach the emulator".into());
    snapshot.producer = Err("the producer's metrics did not answer".into());
    let text = render(&snapshot);
    assert!(
        line_starting(&text, "orders-dlq").ends_with("DOWN: could not reach the emulator"),
        "{text}"
    );
    assert!(line_starting(&text, "producer").contains("DOWN: the producer's metrics"));
    line_starting(&text, "orders ");
    line_starting(&text, STORED);
    assert!(snapshot.anything_read());
}

#[test]
fn nothing_read_is_the_only_failure_of_the_command() {
    let mut snapshot = snapshot();
    for queue in &mut snapshot.queues {
        queue.figures = Err("down".into());
    }
    snapshot.producer = Err("down".into());
    assert!(snapshot.anything_read(), "the batch log alone is something");
    snapshot.batches = Err("no batch log".into());
    assert!(!snapshot.anything_read());
}

#[test]
fn no_batch_yet_is_said_as_such() {
    let mut snapshot = snapshot();
    snapshot.batches = Ok(Batches::default());
    let text = render(&snapshot);
    assert!(
        line_starting(&text, "consumer").contains("no batch yet"),
        "{text}"
    );
}

#[test]
fn ages_read_at_a_glance() {
    assert_eq!(age_text(0.25), "250 ms");
    assert_eq!(age_text(14.04), "14.0 s");
    assert_eq!(age_text(185.0), "3 min 5 s");
    assert_eq!(age_text(7800.0), "2 h 10 min");
}
