//! The `replay-dlq` command: `peek`, `replay`, `export` and `import`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{ArgAction, Args, CommandFactory, Parser, Subcommand};
use order_contract::FailureClass;
use support::StopSignals;
use tokio::sync::watch;
use uuid::Uuid;

use crate::archive::{self, DEFAULT_IMPORT_RATE, ExportOptions, ImportOptions, export, import};
use crate::peek::{PeekOptions, peek, write_json, write_reasons, write_reasons_json, write_table};
use crate::progress::{Bar, Lines, Progress};
use crate::queues::source_queue;
use crate::replay::{End, ReplayOptions, Selection, replay};

const ENVIRONMENT: &str = "\
Where it connects:
  The AWS SDK's usual settings: AWS_PROFILE, AWS_REGION, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
  AWS_ENDPOINT_URL. The DLQ is --dlq URL or DLQ_URL (in AWS: the stack's DLQ URL output).
  scripts/replay-dlq reads the local stack's .dev/env (written by scripts/dev) when it exists and
  none of DLQ_URL, AWS_PROFILE, AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID is set; REPLAY_DLQ_LOCAL=0
  never reads it, REPLAY_DLQ_LOCAL=1 always does.

Exit status:
  0    done; every message looked at was moved (exported, imported), or skipped on purpose
  1    a message could not be moved (exported, imported; or an import line was unreadable),
       or an error
  2    wrong usage
  130  interrupted (Ctrl-C or SIGTERM) after the batch in flight; the summary is printed";

/// Look into the orders dead-letter queue and move its messages back to their
/// source queue, safely: each message is sent before it is deleted, so a crash
/// can at worst duplicate one, and the consumer stores each order_id once.
/// Export them to a file of JSON lines, and import such a file into any queue, as safely.
#[derive(Debug, Parser)]
#[command(name = "replay-dlq", version, after_long_help = ENVIRONMENT)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Dlq {
    /// The dead-letter queue's URL.
    // Optional for clap only, so that a missing one gets a message saying where
    // to find it (checked in `Cli::run` before anything else).
    #[arg(long = "dlq", env = "DLQ_URL", value_name = "URL")]
    url: Option<String>,
}

impl Dlq {
    fn url(&self) -> &str {
        self.url.as_deref().unwrap_or_default()
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the DLQ's messages without consuming them: ids, receive counts,
    /// times, size, an excerpt, and why each is there (failure class and detail).
    ///
    /// The reason is the one the consumer wrote in the message's failure.*
    /// attributes; a message without them is re-parsed: the contract's class
    /// (invalid_json, invalid_order, unsupported_schema_version) for a body it
    /// refuses, `redriven` for a valid order the redrive policy moved.
    /// `--group-by reason` prints one row per class instead: count, oldest and
    /// newest sent time, one example detail.
    ///
    /// The messages are received with a short visibility timeout, kept hidden
    /// while more are gathered, then made visible again at once. Each look
    /// counts as a receive in ApproximateReceiveCount.
    Peek(PeekArgs),
    /// Move DLQ messages back to the source queue (send first, then delete).
    ///
    /// The source queue is the one whose redrive policy names the DLQ
    /// (ListDeadLetterSourceQueues), or --to URL. Message bodies and attributes
    /// are sent byte for byte, but for the failure.* attributes, which are
    /// left out, and `replayed_from`, set to the DLQ message's id (left out, with
    /// a line saying so, when the message already has SQS's 10 attributes).
    /// Prints one line per message skipped as invalid,
    /// not moved, or (with --dry-run) that would move, then a summary:
    /// `replay: moved=N skipped=N failed=N`. Ctrl-C stops after the batch in flight.
    Replay(ReplayArgs),
    /// Write DLQ messages to a file, one JSON object a line: body, message
    /// attributes (binary ones in base64), message id, receive count, sent time.
    ///
    /// Appends to FILE (creating it). The messages stay in the DLQ unless
    /// --delete is given; with --delete, a batch is deleted only once it is
    /// written and flushed to disk (fsync), so a crash at any point leaves every
    /// message in the file, in the DLQ, or in both. Takes the same filters as
    /// `replay`. Prints one line per message skipped as invalid or not deleted,
    /// then a summary: `export: written=N skipped=N failed=N; left in the DLQ`,
    /// or with --delete `export: written=N deleted=N skipped=N failed=N`.
    Export(ExportArgs),
    /// Send the messages of an export file to a queue, body and attributes as exported.
    ///
    /// Resumable: FILE.imported, beside the file, journals each batch SQS
    /// acknowledged (flushed to disk before the next batch), and a re-run with
    /// the same file and --to skips those lines. Only a crash between SQS's
    /// answer and that flush sends one batch (at most 10 messages) again;
    /// the consumer stores each order_id once. Prints a summary:
    /// `import: sent=N already_sent=N failed=N unreadable=N`. To replay an
    /// archive by reason, import it into a DLQ, then `replay --reason`.
    Import(ImportArgs),
}

#[derive(Debug, Args)]
struct PeekArgs {
    #[command(flatten)]
    dlq: Dlq,
    /// Show at most N messages.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    max: u64,
    /// Print a JSON array, one object per message (with its body and attributes), for scripts.
    #[arg(long)]
    json: bool,
    /// One row per failure class (class, count, oldest, newest, an example detail) of the messages seen.
    #[arg(long, value_name = "WHAT", value_enum)]
    group_by: Option<GroupBy>,
    /// Seconds the messages stay hidden at most, should peek be killed before it releases them.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=43_200))]
    visibility_timeout: u32,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum GroupBy {
    /// The failure class.
    Reason,
}

#[derive(Debug, Args)]
struct ReplayArgs {
    #[command(flatten)]
    dlq: Dlq,
    /// Send to this queue instead of the DLQ's source queue.
    #[arg(long, value_name = "URL")]
    to: Option<String>,
    /// Send at most N messages (with --dry-run: list at most N).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max: Option<u64>,
    /// Send at most this many messages per second (fractions allowed).
    #[arg(long, value_name = "PER_SEC", value_parser = parse_rate)]
    rate: Option<f64>,
    /// List what would move; send and delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Move only messages the order contract accepts; leave the others in the DLQ.
    #[arg(long)]
    only_valid: bool,
    /// Move only these orders (repeat the option or list several ids).
    #[arg(long = "order-id", value_name = "ID", num_args = 1.., action = ArgAction::Append)]
    order_ids: Vec<Uuid>,
    /// Move only messages of this failure class (repeatable): invalid_json, invalid_order,
    /// unsupported_schema_version, row_refused, redriven, as `peek` shows them.
    #[arg(long = "reason", value_name = "CLASS", action = ArgAction::Append)]
    reasons: Vec<FailureClass>,
    /// Seconds a received message stays hidden should this process die before
    /// moving or releasing it; must cover one batch's send and delete.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=43_200))]
    visibility_timeout: u32,
}

#[derive(Debug, Args)]
struct ExportArgs {
    #[command(flatten)]
    dlq: Dlq,
    /// The file to append the messages to (JSON lines).
    #[arg(long = "to", value_name = "FILE")]
    file: PathBuf,
    /// Delete from the DLQ what was written and flushed to the file.
    #[arg(long)]
    delete: bool,
    /// Write at most N messages (with --dry-run: list at most N).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max: Option<u64>,
    /// Read at most this many messages per second (fractions allowed).
    #[arg(long, value_name = "PER_SEC", value_parser = parse_rate)]
    rate: Option<f64>,
    /// List what would be written; write and delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Export only messages the order contract accepts.
    #[arg(long)]
    only_valid: bool,
    /// Export only these orders (repeat the option or list several ids).
    #[arg(long = "order-id", value_name = "ID", num_args = 1.., action = ArgAction::Append)]
    order_ids: Vec<Uuid>,
    /// Export only messages of this failure class (repeatable), as `peek` shows them.
    #[arg(long = "reason", value_name = "CLASS", action = ArgAction::Append)]
    reasons: Vec<FailureClass>,
    /// Seconds a received message stays hidden should this process die before
    /// writing and deleting it; must cover one batch's write, fsync and delete.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=43_200))]
    visibility_timeout: u32,
}

#[derive(Debug, Args)]
struct ImportArgs {
    /// The export file to read.
    #[arg(long = "from", value_name = "FILE")]
    file: PathBuf,
    /// The queue to send the messages to (any standard queue: a DLQ elsewhere, or a source queue).
    #[arg(long, value_name = "URL")]
    to: String,
    /// Send at most this many messages per second (fractions allowed).
    #[arg(long, value_name = "PER_SEC", value_parser = parse_rate, default_value_t = DEFAULT_IMPORT_RATE)]
    rate: f64,
    /// List what would be sent; send nothing and write no journal.
    #[arg(long)]
    dry_run: bool,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err("expected a number of messages per second above 0, such as 50 or 0.5".into()),
    }
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let dlq = match &self.command {
            Command::Peek(args) => Some(&args.dlq),
            Command::Replay(args) => Some(&args.dlq),
            Command::Export(args) => Some(&args.dlq),
            // Reads a file, sends to --to: no DLQ involved.
            Command::Import(_) => None,
        };
        if dlq.is_some_and(|dlq| dlq.url.as_deref().is_none_or(str::is_empty)) {
            Cli::command()
                .error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "no dead-letter queue given: pass --dlq URL or set DLQ_URL (in AWS, the stack's \
                     OrdersDeadLetterQueueUrl output; locally, scripts/replay-dlq reads it from .dev/env)",
                )
                .exit();
        }
        let sqs = sqs_client().await?;
        match self.command {
            Command::Peek(args) => peek_command(&sqs, args).await,
            Command::Replay(args) => replay_command(&sqs, args).await,
            Command::Export(args) => export_command(&sqs, args).await,
            Command::Import(args) => import_command(&sqs, args).await,
        }
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

async fn peek_command(sqs: &aws_sdk_sqs::Client, args: PeekArgs) -> anyhow::Result<ExitCode> {
    let options = PeekOptions {
        max: usize::try_from(args.max).unwrap_or(usize::MAX),
        visibility_timeout_secs: args.visibility_timeout,
    };
    let peeked = peek(sqs, args.dlq.url(), options).await?;
    let mut out = std::io::stdout().lock();
    match (args.group_by, args.json) {
        (Some(GroupBy::Reason), true) => write_reasons_json(&mut out, &peeked),
        (Some(GroupBy::Reason), false) => write_reasons(&mut out, &peeked),
        (None, true) => write_json(&mut out, &peeked),
        (None, false) => write_table(&mut out, &peeked),
    }
    .context("could not write to stdout")?;
    out.flush().context("could not write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

async fn replay_command(sqs: &aws_sdk_sqs::Client, args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let destination = match args.to {
        Some(url) => url,
        None => source_queue(sqs, args.dlq.url()).await?,
    };
    let options = ReplayOptions {
        max: args.max,
        rate: args.rate,
        dry_run: args.dry_run,
        selection: Selection {
            only_valid: args.only_valid,
            order_ids: args.order_ids.into_iter().collect(),
            reasons: args.reasons.into_iter().collect(),
        },
        visibility_timeout_secs: args.visibility_timeout,
    };
    let stop = stop_on_signals(
        "stopping after the batch in flight (Ctrl-C again stops at once; messages in flight then reappear in the DLQ after --visibility-timeout)",
    );
    let mut progress = progress_for_terminal("replay", "messages in the DLQ");
    let report = replay(
        sqs,
        args.dlq.url(),
        &destination,
        &options,
        progress.as_mut(),
        stop,
    )
    .await?;
    drop(progress);
    println!("{}", report.summary());
    if let End::Aborted(err) = &report.end {
        eprintln!("error: {err}");
    }
    Ok(ExitCode::from(report.exit_code()))
}

async fn export_command(sqs: &aws_sdk_sqs::Client, args: ExportArgs) -> anyhow::Result<ExitCode> {
    let options = ExportOptions {
        max: args.max,
        rate: args.rate,
        dry_run: args.dry_run,
        delete: args.delete,
        selection: Selection {
            only_valid: args.only_valid,
            order_ids: args.order_ids.into_iter().collect(),
            reasons: args.reasons.into_iter().collect(),
        },
        visibility_timeout_secs: args.visibility_timeout,
    };
    let stop = stop_on_signals(
        "stopping after the batch in flight (Ctrl-C again stops at once; what was not deleted stays in the DLQ)",
    );
    let mut progress = progress_for_terminal("export", "messages in the DLQ");
    let report = export(
        sqs,
        args.dlq.url(),
        &args.file,
        &options,
        progress.as_mut(),
        stop,
    )
    .await?;
    drop(progress);
    println!("{}", report.summary());
    if let archive::End::Aborted(err) = &report.end {
        eprintln!("error: {}", support::sqs::sqs_error_chain(err));
    }
    Ok(ExitCode::from(report.exit_code()))
}

async fn import_command(sqs: &aws_sdk_sqs::Client, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let options = ImportOptions {
        rate: args.rate,
        dry_run: args.dry_run,
    };
    let stop = stop_on_signals(
        "stopping after the batch in flight (Ctrl-C again stops at once; a re-run resumes from the journal)",
    );
    let mut progress = progress_for_terminal("import", "lines in the file");
    let report = import(sqs, &args.file, &args.to, &options, progress.as_mut(), stop).await?;
    drop(progress);
    println!("{}", report.summary());
    if let archive::End::Aborted(err) = &report.end {
        eprintln!("error: {}", support::sqs::sqs_error_chain(err));
    }
    Ok(ExitCode::from(report.exit_code()))
}

/// A bar when a person watches stderr, plain lines when it goes to a log;
/// `what` says what the total counts.
fn progress_for_terminal(label: &'static str, what: &'static str) -> Box<dyn Progress> {
    if std::io::stderr().is_terminal() {
        Box::new(Bar::new(std::io::stdout()))
    } else {
        Box::new(Lines::new(label, std::io::stdout(), std::io::stderr()).counting(what))
    }
}

/// Turns true on the first Ctrl-C or SIGTERM; a second one ends the process at once.
fn stop_on_signals(first: &'static str) -> watch::Receiver<bool> {
    let (stop, stopped) = watch::channel(false);
    let mut signals = StopSignals::listen();
    tokio::spawn(async move {
        signals.recv().await;
        eprintln!("replay-dlq: {first}");
        let _ = stop.send(true);
        signals.recv().await;
        eprintln!("replay-dlq: stopped at once");
        std::process::exit(130);
    });
    stopped
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let Command::Replay(args) = cli.command else {
            panic!("replay expected")
        };
        assert_eq!(args.order_ids.len(), 3);
        let err = parse(&["replay", "--order-id", "not-a-uuid"]).expect_err("invalid");
        assert!(err.to_string().contains("not-a-uuid"), "{err}");
    }

    #[test]
    fn reasons_are_failure_classes_and_an_unknown_one_lists_the_known() {
        let cli =
            parse(&["replay", "--reason", "row_refused", "--reason", "redriven"]).expect("valid");
        let Command::Replay(args) = cli.command else {
            panic!("replay expected")
        };
        assert_eq!(
            args.reasons,
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
