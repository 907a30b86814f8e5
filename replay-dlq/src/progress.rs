//! A bar on a terminal, plain lines in a log. Notes (a message worth naming)
//! go to the output, progress to stderr: `replay … > moved.txt` keeps the notes.

use std::io::Write;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where `replay`, `export` and `import` report.
pub trait Progress {
    /// Work begins; `total` (of `what`) is an estimate: SQS's counts are approximate.
    fn start(&mut self, total: u64, what: &str);
    /// `done` items so far; `status` is a short summary such as "moved=3 skipped=1 failed=0".
    fn advance(&mut self, done: u64, status: &str);
    /// A line worth keeping: a message skipped, failed or (in a dry run) listed.
    fn note(&mut self, line: &str);
    fn finish(&mut self);
}

/// Plain lines: notes to `out`, a progress line to `log` at most every `every`.
pub struct Lines<O, L> {
    out: O,
    log: L,
    every: Duration,
    last: Option<Instant>,
    total: u64,
    label: &'static str,
}

impl<O: Write, L: Write> Lines<O, L> {
    pub fn new(label: &'static str, out: O, log: L) -> Self {
        Self {
            out,
            log,
            every: Duration::from_secs(2),
            last: None,
            total: 0,
            label,
        }
    }

    /// Gives back the writers, e.g. to read what a test captured.
    pub fn into_inner(self) -> (O, L) {
        (self.out, self.log)
    }
}

impl<O: Write, L: Write> Progress for Lines<O, L> {
    fn start(&mut self, total: u64, what: &str) {
        self.total = total;
        // A failed write to a log is no reason to stop moving messages.
        let _ = writeln!(self.log, "{}: starting, about {total} {what}", self.label);
    }

    fn advance(&mut self, done: u64, status: &str) {
        if self.last.is_none_or(|last| last.elapsed() >= self.every) {
            self.last = Some(Instant::now());
            let total = self.total.max(done);
            let _ = writeln!(self.log, "{}: {done}/{total} {status}", self.label);
        }
    }

    fn note(&mut self, line: &str) {
        let _ = writeln!(self.out, "{line}");
    }

    fn finish(&mut self) {
        let _ = self.out.flush();
        let _ = self.log.flush();
    }
}

/// An indicatif bar on stderr; notes are printed above it without tearing it.
pub struct Bar<O> {
    out: O,
    bar: ProgressBar,
}

impl<O: Write> Bar<O> {
    pub fn new(out: O) -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        Self { out, bar }
    }
}

impl<O: Write> Progress for Bar<O> {
    fn start(&mut self, total: u64, _: &str) {
        let style = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        self.bar.set_style(style);
        self.bar.set_length(total);
        self.bar.enable_steady_tick(Duration::from_millis(200));
    }

    fn advance(&mut self, done: u64, status: &str) {
        // More may have arrived since the estimate.
        if self.bar.length().is_some_and(|total| total < done) {
            self.bar.set_length(done);
        }
        self.bar.set_position(done);
        self.bar.set_message(status.to_owned());
    }

    fn note(&mut self, line: &str) {
        let out = &mut self.out;
        self.bar.suspend(|| {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        });
    }

    fn finish(&mut self) {
        self.bar.finish_and_clear();
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_progress_writes_notes_to_the_output_and_progress_to_the_log() {
        let mut lines = Lines::new("replay", Vec::new(), Vec::new());
        lines.start(4, "messages in the DLQ");
        lines.advance(2, "moved=2 skipped=0 failed=0");
        lines.advance(3, "moved=3 skipped=0 failed=0");
        lines.note("skipped m-1: not an order");
        lines.finish();
        let (out, log) = lines.into_inner();
        assert_eq!(String::from_utf8_lossy(&out), "skipped m-1: not an order\n");
        let log = String::from_utf8_lossy(&log).into_owned();
        assert!(log.contains("replay: 2/4 moved=2"), "{log}");
        assert!(
            !log.contains("3/4"),
            "progress lines are spaced out in time: {log}"
        );
    }
}
