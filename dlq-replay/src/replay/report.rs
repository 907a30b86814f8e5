//! The report: what happened to the messages a run looked at, why it ended,
//! the summary line it prints and the exit status it leads to.

use super::walk::Ended;
use crate::queues::SqsError;

/// What happened to the messages this run looked at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Sent to the source queue and deleted from the DLQ.
    pub moved: u64,
    /// Dry run: would have been moved.
    pub would_move: u64,
    /// Left in the DLQ on purpose (`--only-valid`, `--order-id`).
    pub skipped: u64,
    /// Not moved (still in the DLQ), or sent but not deleted (in both queues).
    pub failed: u64,
}

impl Counts {
    pub(super) fn looked_at(&self) -> u64 {
        self.moved + self.would_move + self.skipped + self.failed
    }

    /// What counts against `--max`.
    pub(super) fn attempted(&self) -> u64 {
        self.moved + self.would_move + self.failed
    }

    pub(super) fn status(&self, dry_run: bool) -> String {
        if dry_run {
            format!(
                "would_move={} skipped={} failed={}",
                self.would_move, self.skipped, self.failed
            )
        } else {
            format!(
                "moved={} skipped={} failed={}",
                self.moved, self.skipped, self.failed
            )
        }
    }
}

/// Why the run ended.
#[derive(Debug)]
pub enum End {
    /// No message left that this run has not looked at.
    Drained,
    /// `max` messages were sent (or listed).
    Limit,
    /// Stopped on request (Ctrl-C) after the batch in flight.
    Interrupted,
    /// An SQS call failed as a whole; the run stopped after it.
    Aborted(SqsError),
}

impl From<Ended<SqsError>> for End {
    fn from(ended: Ended<SqsError>) -> Self {
        match ended {
            Ended::Drained => End::Drained,
            Ended::Limit => End::Limit,
            Ended::Interrupted => End::Interrupted,
            Ended::Aborted(err) => End::Aborted(err),
        }
    }
}

#[derive(Debug)]
pub struct Report {
    pub counts: Counts,
    pub end: End,
    pub dry_run: bool,
}

impl Report {
    /// The last line the command prints, e.g. `replay: moved=40 skipped=2 failed=0`.
    pub fn summary(&self) -> String {
        let ending = match self.end {
            End::Drained => "",
            End::Limit => " (--max reached)",
            End::Interrupted => " (interrupted)",
            End::Aborted(_) => " (stopped by an error)",
        };
        if self.dry_run {
            format!(
                "replay (dry run): {}{ending}; nothing was sent or deleted",
                self.counts.status(true)
            )
        } else {
            format!("replay: {}{ending}", self.counts.status(false))
        }
    }

    /// 0 when everything looked at was moved or skipped on purpose, 1 when
    /// anything failed, 130 when interrupted (as a shell reports SIGINT).
    pub fn exit_code(&self) -> u8 {
        if self.counts.failed > 0 || matches!(self.end, End::Aborted(_)) {
            1
        } else if matches!(self.end, End::Interrupted) {
            130
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_the_counts_and_why_the_run_ended() {
        let report = Report {
            counts: Counts {
                moved: 3,
                skipped: 2,
                failed: 1,
                would_move: 0,
            },
            end: End::Interrupted,
            dry_run: false,
        };
        assert_eq!(
            report.summary(),
            "replay: moved=3 skipped=2 failed=1 (interrupted)"
        );
        assert_eq!(report.exit_code(), 1, "a failure outranks the interruption");
        let dry = Report {
            counts: Counts {
                would_move: 5,
                ..Counts::default()
            },
            end: End::Drained,
            dry_run: true,
        };
        assert_eq!(
            dry.summary(),
            "replay (dry run): would_move=5 skipped=0 failed=0; nothing was sent or deleted"
        );
        assert_eq!(dry.exit_code(), 0);
    }
}
