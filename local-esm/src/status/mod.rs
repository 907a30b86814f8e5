//! `local-esm status`: the CloudWatch dashboard's figures for the local stack,
//! as a table. The queues ([`queues`]), the consumer's batch log and the
//! producer's `/metrics` ([`prometheus`]) are read each on its own, so that one
//! being down leaves the others on screen.

pub mod prometheus;
pub mod queues;

use std::fmt::Write;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use consumer_lambda::metrics::{BATCH_LATENCY, OLDEST_ORDER_AGE};
use support::error_chain;

use crate::batches::{self, BatchFigures, Batches};
use prometheus::ProducerFigures;
use queues::{Oldest, QueueFigures};

/// How long one part may take before its row says it did not answer: a
/// stalled part must not hold up the others, nor `--watch`.
const PART_TIMEOUT: Duration = Duration::from_secs(3);

/// Where `local-esm status` reads each part.
#[derive(Debug, Clone, clap::Args)]
pub struct Places {
    #[arg(long, env = "QUEUE_URL")]
    pub queue_url: String,
    #[arg(long, env = "DLQ_URL")]
    pub dlq_url: String,
    /// The producer's Prometheus metrics.
    #[arg(
        long,
        env = "METRICS_URL",
        default_value = "http://127.0.0.1:9464/metrics"
    )]
    pub metrics_url: String,
    /// The file `local-esm run --batch-log` writes.
    #[arg(long, env = "BATCH_LOG", default_value = ".dev/batches.jsonl")]
    pub batch_log: PathBuf,
    /// How many of the last batches to show.
    #[arg(long = "batches", value_name = "BATCHES", default_value_t = 5)]
    pub batches_shown: usize,
}

/// The clients that read the [`Places`].
#[derive(Debug, Clone)]
pub struct Sources {
    pub sqs: aws_sdk_sqs::Client,
    pub http: reqwest::Client,
    /// The emulator's endpoint (`AWS_ENDPOINT_URL`), for the messages' ages;
    /// `None` against AWS, which has no such listing.
    pub sqs_endpoint: Option<String>,
    pub places: Places,
}

/// One queue's row: its name, and its figures or why they could not be read.
#[derive(Debug, Clone)]
pub struct QueueRow {
    pub name: String,
    pub figures: Result<QueueFigures, String>,
}

/// Everything read at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at: DateTime<Utc>,
    pub places: Places,
    pub queues: Vec<QueueRow>,
    pub batches: Result<Batches, String>,
    pub producer: Result<ProducerFigures, String>,
}

impl Snapshot {
    /// False only when no part could be read: `status` then exits non-zero.
    pub fn anything_read(&self) -> bool {
        self.queues.iter().any(|q| q.figures.is_ok())
            || self.batches.is_ok()
            || self.producer.is_ok()
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "the producer's metrics at {url} did not answer: is scripts/dev running (METRICS_URL in .dev/env)?"
)]
pub struct ProducerError {
    url: String,
    #[source]
    source: reqwest::Error,
}

impl Sources {
    /// Reads every part at once, each within [`PART_TIMEOUT`].
    pub async fn read(&self) -> Snapshot {
        let queue = |url: String| async move {
            let name = queues::name_of(&url).to_owned();
            let endpoint = self.sqs_endpoint.as_deref();
            let figures = within(queues::read(&self.sqs, &self.http, endpoint, &url)).await;
            QueueRow { name, figures }
        };
        let (orders, dlq, producer) = tokio::join!(
            queue(self.places.queue_url.clone()),
            queue(self.places.dlq_url.clone()),
            within(self.producer()),
        );
        let batches = batches::read(&self.places.batch_log).map_err(|err| error_chain(&err));
        Snapshot {
            at: Utc::now(),
            queues: vec![orders, dlq],
            places: self.places.clone(),
            batches,
            producer,
        }
    }

    async fn producer(&self) -> Result<ProducerFigures, ProducerError> {
        let url = &self.places.metrics_url;
        let read = async {
            let response = self.http.get(url).send().await?;
            response.error_for_status()?.text().await
        };
        let text = read.await.map_err(|source| ProducerError {
            url: url.clone(),
            source,
        })?;
        Ok(ProducerFigures::parse(&text))
    }
}

/// What a row says of an error: its own words (what failed, what to do) and
/// the root cause (`Connection refused`), without the SDK's layers between.
fn brief(err: &dyn std::error::Error) -> String {
    match std::iter::successors(err.source(), |cause| cause.source()).last() {
        Some(root) => format!("{err}: {root}"),
        None => err.to_string(),
    }
}

async fn within<T, E: std::error::Error>(
    part: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(PART_TIMEOUT, part).await {
        Ok(read) => read.map_err(|err| brief(&err)),
        Err(_) => Err(format!("no answer within {} s", PART_TIMEOUT.as_secs_f64())),
    }
}

/// The snapshot as text: three tables, a row saying why where a part is down.
pub fn render(snapshot: &Snapshot) -> String {
    let at = snapshot.at.format("%Y-%m-%d %H:%M:%S UTC");
    let mut out = format!("Local system at {at}\n\n");
    render_queues(&mut out, &snapshot.queues);
    out.push('\n');
    render_batches(&mut out, snapshot);
    out.push('\n');
    render_producer(&mut out, snapshot);
    out
}

fn render_queues(out: &mut String, rows: &[QueueRow]) {
    let header = ["queue", "visible", "in flight", "delayed", "oldest"];
    let mut table = vec![cells(header)];
    let mut down = Vec::new();
    for row in rows {
        match &row.figures {
            Ok(figures) => table.push(vec![
                row.name.clone(),
                figures.depth.visible.to_string(),
                figures.depth.in_flight.to_string(),
                figures.depth.delayed.to_string(),
                match &figures.oldest {
                    Oldest::Empty => "-".to_owned(),
                    Oldest::Age(age) => age_text(age.as_secs_f64()),
                    Oldest::Unknown => "n/a".to_owned(),
                },
            ]),
            Err(why) => down.push((row.name.clone(), why.clone())),
        }
    }
    write_table(out, &table, None);
    for (name, why) in down {
        let _ = writeln!(out, "{name:<10}  DOWN: {why}");
    }
}

fn render_batches(out: &mut String, snapshot: &Snapshot) {
    let batches = match &snapshot.batches {
        Ok(batches) => batches,
        Err(why) => {
            let _ = writeln!(out, "consumer    DOWN: {why}");
            return;
        }
    };
    let all = &batches.batches;
    let shown = snapshot.places.batches_shown.max(1);
    let newest_first: Vec<&BatchFigures> = all.iter().rev().take(shown).collect();
    let log = snapshot.places.batch_log.display();
    let Some(newest) = newest_first.first() else {
        let _ = writeln!(out, "consumer    no batch yet ({log})");
        return;
    };
    let ago = (snapshot.at - newest.at).num_milliseconds().max(0) as f64 / 1000.0;
    let _ = writeln!(
        out,
        "consumer    the last {} of {} batches kept in {log}, newest first (the newest {} ago)",
        newest_first.len(),
        all.len(),
        age_text(ago),
    );
    // A row: its name, the newest batches' cells, then what all of them make.
    let row = |name: &str, cell: &dyn Fn(&BatchFigures) -> String, all: String| {
        let mut row = vec![name.to_owned()];
        row.extend(newest_first.iter().map(|b| cell(b)));
        row.push(all);
        row
    };
    let at = |b: &BatchFigures| b.at.format("%H:%M:%S").to_string();
    let mut table = vec![row("batch at", &at, format!("all {}", all.len()))];
    for (name, _) in newest.counts {
        let sum = all.iter().map(|b| b.count(name)).sum::<u64>();
        let count = |b: &BatchFigures| b.count(name).to_string();
        table.push(row(name, &count, format!("Σ {sum}")));
    }
    let slowest = all.iter().map(|b| b.latency_ms).fold(0.0, f64::max);
    let latency = |b: &BatchFigures| ms_text(b.latency_ms);
    let slowest = format!("max {}", ms_text(slowest));
    table.push(row(BATCH_LATENCY, &latency, slowest));
    let oldest = |b: &BatchFigures| b.oldest_order_age_s.map_or("-".to_owned(), age_text);
    let ages = all.iter().filter_map(|b| b.oldest_order_age_s);
    let oldest_of_all = ages.reduce(f64::max);
    let oldest_of_all =
        oldest_of_all.map_or("-".to_owned(), |max| format!("max {}", age_text(max)));
    table.push(row(OLDEST_ORDER_AGE, &oldest, oldest_of_all));
    write_table(out, &table, None);
    if batches.unreadable > 0 {
        let _ = writeln!(
            out,
            "({} lines of the batch log were not batch lines)",
            batches.unreadable
        );
    }
}

fn render_producer(out: &mut String, snapshot: &Snapshot) {
    let figures = match &snapshot.producer {
        Ok(figures) => figures,
        Err(why) => {
            let _ = writeln!(out, "producer    DOWN: {why}");
            return;
        }
    };
    let _ = writeln!(out, "producer    {}", snapshot.places.metrics_url);
    let by_status: Vec<String> = (figures.refused.iter())
        .map(|(status, count)| format!("{count} × {status}"))
        .collect();
    let refused = match figures.refused.values().sum::<u64>() {
        _ if by_status.is_empty() => "0".to_owned(),
        total => format!("{total}: {}", by_status.join(", ")),
    };
    let latency = |l: &prometheus::Latency| {
        let p99 = (l.p99_at_most_seconds).map_or(String::new(), |p99| {
            format!(", p99 ≤ {}", seconds_bound(p99))
        });
        l.mean_seconds().map_or(l.count.to_string(), |mean| {
            format!("{}, mean {}{p99}", l.count, ms_text(mean * 1000.0))
        })
    };
    let table = [
        ["orders accepted (202)", &figures.accepted.to_string()],
        ["orders refused", &refused],
        ["enqueued (SQS confirmed)", &latency(&figures.queued)],
        ["enqueue failed", &latency(&figures.failed)],
        [
            "orders in flight",
            "n/a: the producer's /metrics has no gauge for it",
        ],
    ]
    .map(cells);
    write_table(out, &table, Some("  "));
}

fn cells<const N: usize>(texts: [&str; N]) -> Vec<String> {
    texts.iter().map(|t| (*t).to_owned()).collect()
}

/// The first column left-aligned, the others right-aligned under their headers
/// or, after `indent`, all left-aligned.
fn write_table(out: &mut String, rows: &[Vec<String>], indent: Option<&str>) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            let cells = rows.iter().filter_map(|row| row.get(i));
            cells.map(|cell| cell.chars().count()).max().unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::from(indent.unwrap_or_default());
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            let _ = match (i, indent) {
                (0, None) => write!(line, "{cell:<width$}"),
                (_, None) => write!(line, "  {cell:>width$}"),
                (_, Some(_)) => write!(line, "{cell:<width$}  "),
            };
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

/// An age a person reads at a glance: `850 ms`, `14 s`, `3 min 5 s`, `2 h 10 min`.
fn age_text(seconds: f64) -> String {
    if seconds < 1.0 {
        return format!("{:.0} ms", seconds * 1000.0);
    }
    let whole = seconds as u64;
    match whole {
        0..60 => format!("{seconds:.1} s"),
        60..3600 => format!("{} min {} s", whole / 60, whole % 60),
        _ => format!("{} h {} min", whole / 3600, whole % 3600 / 60),
    }
}

fn ms_text(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// A histogram bucket's bound: `8 ms`, `1.024 s`, `+Inf`.
fn seconds_bound(seconds: f64) -> String {
    if seconds.is_infinite() {
        "+Inf".to_owned()
    } else if seconds < 1.0 {
        format!("{} ms", seconds * 1000.0)
    } else {
        format!("{seconds} s")
    }
}

#[cfg(test)]
mod tests;
