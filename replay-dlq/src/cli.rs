//! The `replay-dlq` command: `peek`, `replay`, `export` and `import`.
//! docs/operating.md says what each does and guarantees; the help says it briefly.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};
use support::StopSignals;
use support::sqs::sqs_error_chain;
use tokio::sync::watch;

use crate::archive::{DEFAULT_IMPORT_RATE, export, import};
use crate::peek::{group_by_reason, peek, write_json, write_reasons, write_table};
use crate::progress::{Bar, Lines, Progress};
use crate::queue::source_queue;
use crate::replay::replay;
use crate::walk::{End, Options};

const ENVIRONMENT: &str = "\
Where it connects:
  The AWS SDK's usual settings: AWS_PROFILE, AWS_REGION, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
  AWS_ENDPOINT_URL. The DLQ is --dlq URL or DLQ_URL (in AWS: the stack's DLQ URL output).
  scripts/replay-dlq reads the local stack's .dev/env (written by scripts/dev) when it exists and
  none of DLQ_URL, AWS_PROFILE, AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID is set; REPLAY_DLQ_LOCAL=0
  never reads it, REPLAY_DLQ_LOCAL=1 always does.

Exit status:
  0    done; every message looked at was handled, or skipped on purpose
  1    a message could not be moved, exported or imported (or a line was unreadable), or an error
  2    wrong usage
  130  interrupted (Ctrl-C or SIGTERM) after the batch in flight; the summary is printed

More: docs/operating.md.";

/// Look into the orders dead-letter queue and move its messages back to their
/// source queue safely (send first, then delete), or archive them to a file and back.
#[derive(Debug, Parser)]
#[command(name = "replay-dlq", version, after_long_help = ENVIRONMENT)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the DLQ's messages and why each is there, without consuming them
    /// (each look counts as a receive).
    Peek {
        #[command(flatten)]
        dlq: Dlq,
        /// Show at most N messages.
        #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
        max: u64,
        /// A JSON array, one object per message (body and attributes included).
        #[arg(long)]
        json: bool,
        /// One row per failure class: count, oldest, newest, an example detail.
        #[arg(long, value_name = "WHAT", value_enum)]
        group_by: Option<GroupBy>,
        /// Seconds the messages stay hidden at most, should peek be killed before it releases them.
        #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=43_200))]
        visibility_timeout: u32,
    },
    /// Move DLQ messages back to the source queue (send, then delete), without
    /// their failure.* attributes and with replayed_from; prints
    /// `replay: moved=N skipped=N failed=N`.
    Replay {
        #[command(flatten)]
        dlq: Dlq,
        /// Send to this queue instead of the DLQ's source queue (ListDeadLetterSourceQueues).
        #[arg(long, value_name = "URL")]
        to: Option<String>,
        #[command(flatten)]
        walk: Options,
    },
    /// Append DLQ messages to a file, one JSON object a line; with --delete,
    /// delete each batch once it is on disk (fsync).
    Export {
        #[command(flatten)]
        dlq: Dlq,
        /// The file to append the messages to (JSON lines).
        #[arg(long = "to", value_name = "FILE")]
        file: PathBuf,
        /// Delete from the DLQ what was written and flushed to the file.
        #[arg(long)]
        delete: bool,
        #[command(flatten)]
        walk: Options,
    },
    /// Send an export file's messages to a queue; resumable: FILE.imported
    /// journals what SQS acknowledged, and a re-run skips it.
    Import {
        /// The export file to read.
        #[arg(long = "from", value_name = "FILE")]
        file: PathBuf,
        /// The queue to send the messages to (any standard queue).
        #[arg(long, value_name = "URL")]
        to: String,
        /// Send at most this many messages per second (fractions allowed).
        #[arg(long, value_name = "PER_SEC", value_parser = parse_rate, default_value_t = DEFAULT_IMPORT_RATE)]
        rate: f64,
        /// List what would be sent; send nothing and write no journal.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Args)]
struct Dlq {
    /// The dead-letter queue's URL.
    // Optional for clap only, so that a missing one gets a message saying where
    // to find it.
    #[arg(long = "dlq", env = "DLQ_URL", value_name = "URL")]
    url: Option<String>,
}

impl Dlq {
    fn url(&self) -> &str {
        match self.url.as_deref() {
            Some(url) if !url.is_empty() => url,
            _ => Cli::command()
                .error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "no dead-letter queue given: pass --dlq URL or set DLQ_URL (in AWS, the stack's \
                     OrdersDeadLetterQueueUrl output; locally, scripts/replay-dlq reads it from .dev/env)",
                )
                .exit(),
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum GroupBy {
    /// The failure class.
    Reason,
}

pub(crate) fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err("expected a number of messages per second above 0, such as 50 or 0.5".into()),
    }
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let report = match self.command {
            Command::Peek {
                dlq,
                max,
                json,
                group_by,
                visibility_timeout,
            } => {
                let options = Options {
                    max: Some(max),
                    visibility_timeout_secs: visibility_timeout,
                    ..Options::default()
                };
                let peeked = peek(&sqs_client().await?, dlq.url(), &options).await?;
                let mut out = std::io::stdout().lock();
                match (group_by, json) {
                    (Some(GroupBy::Reason), true) => {
                        write_json(&mut out, &group_by_reason(&peeked.messages))
                    }
                    (Some(GroupBy::Reason), false) => write_reasons(&mut out, &peeked),
                    (None, true) => write_json(&mut out, &peeked.messages),
                    (None, false) => write_table(&mut out, &peeked),
                }
                .and_then(|()| out.flush())
                .context("could not write to stdout")?;
                return Ok(ExitCode::SUCCESS);
            }
            Command::Replay { dlq, to, walk } => {
                let (sqs, dlq) = (sqs_client().await?, dlq.url());
                let to = match to {
                    Some(url) => url,
                    None => source_queue(&sqs, dlq).await?,
                };
                let then = "messages in flight then reappear in the DLQ after --visibility-timeout";
                let (mut progress, stop) = reporting("replay", then);
                replay(&sqs, dlq, &to, &walk, progress.as_mut(), stop).await?
            }
            Command::Export {
                dlq,
                file,
                delete,
                walk,
            } => {
                let (sqs, dlq) = (sqs_client().await?, dlq.url());
                let (mut progress, stop) =
                    reporting("export", "what was not deleted stays in the DLQ");
                export(&sqs, dlq, &file, delete, &walk, progress.as_mut(), stop).await?
            }
            Command::Import {
                file,
                to,
                rate,
                dry_run,
            } => {
                let sqs = sqs_client().await?;
                let (mut progress, stop) = reporting("import", "a re-run resumes from the journal");
                import(&sqs, &file, &to, rate, dry_run, progress.as_mut(), stop).await?
            }
        };
        println!("{}", report.summary);
        if let End::Aborted(err) = &report.end {
            eprintln!("error: {}", sqs_error_chain(err));
        }
        Ok(ExitCode::from(report.exit_code()))
    }
}

/// The SQS client from the standard AWS environment (profile, region,
/// credentials, and AWS_ENDPOINT_URL, which the SDK reads itself).
async fn sqs_client() -> anyhow::Result<aws_sdk_sqs::Client> {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    if config.region().is_none() {
        anyhow::bail!(
            "no AWS region: set AWS_REGION (or a region in your AWS profile); locally, scripts/replay-dlq reads it from .dev/env"
        );
    }
    Ok(aws_sdk_sqs::Client::new(&config))
}

/// Where `label`'s run reports (a bar when a person watches stderr, plain
/// lines when it goes to a log), and a stop that turns true on the first
/// Ctrl-C or SIGTERM, saying so and `then`; a second one ends the process at once.
fn reporting(
    label: &'static str,
    then: &'static str,
) -> (Box<dyn Progress>, watch::Receiver<bool>) {
    let progress: Box<dyn Progress> = if std::io::stderr().is_terminal() {
        Box::new(Bar::new(std::io::stdout()))
    } else {
        Box::new(Lines::new(label, std::io::stdout(), std::io::stderr()))
    };
    let (stop, stopped) = watch::channel(false);
    let mut signals = StopSignals::listen();
    tokio::spawn(async move {
        signals.recv().await;
        eprintln!(
            "replay-dlq: stopping after the batch in flight (Ctrl-C again stops at once; {then})"
        );
        let _ = stop.send(true);
        signals.recv().await;
        eprintln!("replay-dlq: stopped at once");
        std::process::exit(130);
    });
    (progress, stopped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use order_contract::FailureClass;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(
            ["replay-dlq"]
                .iter()
                .chain(args)
                .chain(["--dlq", "http://sqs/dlq"].iter()),
        )
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn several_order_ids_can_follow_one_option_or_repeat_it() {
        let a = "3f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10";
        let b = "1f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10";
        let c = "2f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10";
        let cli = parse(&["replay", "--order-id", a, b, "--order-id", c]).expect("valid");
        let Command::Replay { walk: args, .. } = cli.command else {
            panic!("replay expected")
        };
        assert_eq!(args.selection.order_ids.len(), 3);
        let err = parse(&["replay", "--order-id", "not-a-uuid"]).expect_err("invalid");
        assert!(err.to_string().contains("not-a-uuid"), "{err}");
    }

    #[test]
    fn reasons_are_failure_classes_and_an_unknown_one_lists_the_known() {
        let cli =
            parse(&["replay", "--reason", "row_refused", "--reason", "redriven"]).expect("valid");
        let Command::Replay { walk: args, .. } = cli.command else {
            panic!("replay expected")
        };
        assert_eq!(
            args.selection.reasons,
            [FailureClass::RowRefused, FailureClass::Redriven]
        );
        let err = parse(&["replay", "--reason", "gremlins"]).expect_err("unknown");
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert_eq!(err.exit_code(), 2);
        for class in FailureClass::ALL {
            assert!(err.to_string().contains(class.as_str()), "{err}");
        }
    }

    #[test]
    fn a_rate_must_be_positive() {
        assert!(parse(&["replay", "--rate", "0.5"]).is_ok());
        assert!(parse(&["replay", "--rate", "0"]).is_err());
        assert!(parse(&["replay", "--rate", "fast"]).is_err());
    }

    #[test]
    fn the_help_documents_the_environment_and_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains(".dev/env"), "{help}");
        assert!(help.contains("130"), "{help}");
    }
}
