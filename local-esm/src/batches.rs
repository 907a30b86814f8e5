//! The consumer's EMF line per batch, which CloudWatch reads in AWS, appended
//! locally to a file for `local-esm status` and the local breaker. Bounded
//! without rewriting: after `keep` lines the file becomes `<file>.1` and a new
//! one begins; a reader takes both and skips a last line still being written.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use consumer_lambda::BatchMetrics;
use consumer_lambda::metrics::{BATCH_LATENCY, OLDEST_ORDER_AGE};
use serde_json::Value;

/// The function name the EMF lines carry, as the consumer names itself outside Lambda.
pub const FUNCTION_NAME: &str = "orders-consumer";

/// Lines kept before the file is rotated: `status` shows a few, and sums these.
pub const DEFAULT_KEEP: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum BatchLogError {
    #[error("cannot write the batch log {path}: check that its directory exists and is writable")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no batch log at {path}: is scripts/dev running? (its local-esm run writes one from its start, at BATCH_LOG)"
    )]
    Missing { path: PathBuf },
    #[error("cannot read the batch log {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Appends one EMF line per handled batch, rotating after `keep` lines.
#[derive(Debug)]
pub struct BatchLog {
    path: PathBuf,
    keep: usize,
    /// The open file and its line count, under one lock for concurrent invocations.
    current: Mutex<(File, usize)>,
}

impl BatchLog {
    /// A log at `path` that starts afresh: an earlier run's lines (and its
    /// rotated file) are removed, since the queues they describe are gone.
    pub fn create(path: impl Into<PathBuf>, keep: usize) -> Result<Self, BatchLogError> {
        let path = path.into();
        let write_error = |source| BatchLogError::Write {
            path: path.clone(),
            source,
        };
        match std::fs::remove_file(rotated(&path)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(write_error(err))?,
            _ => {}
        }
        let file = File::create(&path).map_err(write_error)?;
        Ok(Self {
            path,
            keep: keep.max(1),
            current: Mutex::new((file, 0)),
        })
    }

    /// Appends the batch's EMF line, stamped `at`.
    pub fn append(&self, metrics: &BatchMetrics, at: SystemTime) -> Result<(), BatchLogError> {
        let timestamp_ms = DateTime::<Utc>::from(at).timestamp_millis() as u64;
        let line = metrics.to_emf(FUNCTION_NAME, timestamp_ms) + "\n";
        let write_error = |source| BatchLogError::Write {
            path: self.path.clone(),
            source,
        };
        // A poisoned lock only means another append panicked; the file is still usable.
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.1 >= self.keep {
            std::fs::rename(&self.path, rotated(&self.path)).map_err(write_error)?;
            *current = (File::create(&self.path).map_err(write_error)?, 0);
        }
        // One write of the whole line: a reader sees it whole or skips its tail.
        current.0.write_all(line.as_bytes()).map_err(write_error)?;
        current.1 += 1;
        Ok(())
    }
}

fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// One batch's figures as its EMF line carries them, under the consumer's metric names.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchFigures {
    /// From `_aws.Timestamp`.
    pub at: DateTime<Utc>,
    /// Each count under its metric name, as [`BatchMetrics::counts`] lists them.
    pub counts: [(&'static str, u64); 12],
    pub latency_ms: f64,
    /// Only a batch with a valid order has one.
    pub oldest_order_age_s: Option<f64>,
}

impl BatchFigures {
    /// The figures of one EMF line, `None` when it is not a batch's line.
    pub fn from_emf(line: &str) -> Option<Self> {
        let doc: Value = serde_json::from_str(line).ok()?;
        let mut counts = BatchMetrics::default().counts();
        for (name, count) in &mut counts {
            *count = doc.get(*name)?.as_u64()?;
        }
        Some(Self {
            at: DateTime::from_timestamp_millis(doc.pointer("/_aws/Timestamp")?.as_i64()?)?,
            counts,
            latency_ms: doc.get(BATCH_LATENCY)?.as_f64()?,
            oldest_order_age_s: doc.get(OLDEST_ORDER_AGE).and_then(Value::as_f64),
        })
    }

    /// The count under the metric `name`, 0 for a name the consumer does not count.
    pub fn count(&self, name: &str) -> u64 {
        let found = self.counts.iter().find(|(n, _)| *n == name);
        found.map_or(0, |(_, count)| *count)
    }
}

/// What [`read`] found: the newest batches last, and how many lines were
/// not batch lines (a line being written is not counted).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batches {
    pub batches: Vec<BatchFigures>,
    pub unreadable: usize,
}

/// Every batch the log at `path` keeps (with its rotated file), oldest first.
pub fn read(path: &Path) -> Result<Batches, BatchLogError> {
    let mut found = Batches::default();
    let mut any = false;
    for file in [rotated(path), path.to_owned()] {
        let bytes = match std::fs::read(&file) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(BatchLogError::Read { path: file, source }),
        };
        any = true;
        // A last line without its newline is still being appended.
        for line in String::from_utf8_lossy(&bytes).split_inclusive('\n') {
            match line.strip_suffix('\n').map(BatchFigures::from_emf) {
                Some(Some(figures)) => found.batches.push(figures),
                Some(None) => found.unreadable += 1,
                None => {}
            }
        }
    }
    if !any {
        return Err(BatchLogError::Missing {
            path: path.to_owned(),
        });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use consumer_lambda::metrics::{DUPLICATES, INVALID, RECORDS, STORED};
    use std::fs::OpenOptions;
    use std::time::{Duration, UNIX_EPOCH};

    fn metrics(stored: u64) -> BatchMetrics {
        BatchMetrics {
            records: 4,
            stored,
            duplicates: 1,
            conflicts: 0,
            invalid: 1,
            refused: 0,
            skewed: 0,
            postponed: 0,
            requeued: 0,
            requeue_failed: 0,
            dead_lettered: 1,
            dead_letter_failed: 0,
            latency: Duration::from_micros(12_500),
            oldest_received_at: "2026-12-02T10:00:00Z".parse().ok(),
        }
    }

    fn temp_path(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("local-esm-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join("batches.jsonl")
    }

    fn at(seconds_after_ten: u64) -> SystemTime {
        let ten: DateTime<Utc> = "2026-12-02T10:00:00Z".parse().expect("time");
        UNIX_EPOCH + Duration::from_millis(ten.timestamp_millis() as u64 + seconds_after_ten * 1000)
    }

    #[test]
    fn a_batch_is_read_back_with_every_figure_the_consumer_counted() {
        let path = temp_path("read-back");
        let log = BatchLog::create(&path, 10).expect("log");
        log.append(&metrics(2), at(90)).expect("append");
        let read = read(&path).expect("read");
        assert_eq!(read.unreadable, 0);
        let [batch] = read.batches.as_slice() else {
            panic!("one batch: {read:?}")
        };
        assert_eq!(batch.at.to_rfc3339(), "2026-12-02T10:01:30+00:00");
        assert_eq!(
            [RECORDS, STORED, DUPLICATES, INVALID].map(|name| batch.count(name)),
            [4, 2, 1, 1]
        );
        assert_eq!(batch.latency_ms, 12.5);
        assert_eq!(batch.oldest_order_age_s, Some(90.0));
    }

    #[test]
    fn the_log_keeps_at_most_twice_its_bound_and_reads_the_newest_last() {
        let path = temp_path("bounded");
        let log = BatchLog::create(&path, 3).expect("log");
        for stored in 0..8 {
            log.append(&metrics(stored), at(stored)).expect("append");
        }
        let lines = |p: &Path| std::fs::read_to_string(p).map_or(0, |t| t.lines().count());
        assert_eq!((lines(&rotated(&path)), lines(&path)), (3, 2));
        let read = read(&path).expect("read");
        let stored: Vec<u64> = read.batches.iter().map(|b| b.count(STORED)).collect();
        assert_eq!(stored, [3, 4, 5, 6, 7]);
    }

    #[test]
    fn a_line_still_being_written_is_skipped_and_a_foreign_one_counted() {
        let path = temp_path("torn");
        let log = BatchLog::create(&path, 10).expect("log");
        log.append(&metrics(1), at(1)).expect("append");
        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        file.write_all(b"{\"not\":\"a batch\"}\n{\"_aws\":{\"Timest")
            .expect("write");
        let read = read(&path).expect("read");
        assert_eq!((read.batches.len(), read.unreadable), (1, 1));
    }

    #[test]
    fn a_new_log_forgets_the_batches_of_an_earlier_run() {
        let path = temp_path("fresh");
        let log = BatchLog::create(&path, 1).expect("log");
        log.append(&metrics(1), at(1)).expect("append");
        log.append(&metrics(2), at(2)).expect("append");
        drop(log);
        let _log = BatchLog::create(&path, 1).expect("log again");
        assert_eq!(read(&path).expect("read"), Batches::default());
    }

    #[test]
    fn a_missing_log_says_that_no_batch_was_handled_yet() {
        let path = temp_path("missing").with_file_name("none.jsonl");
        let err = read(&path).expect_err("missing");
        assert!(err.to_string().contains("no batch log"), "{err}");
    }
}
