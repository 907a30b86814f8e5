//! The `local-esm` command.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use ::breaker::TripPolicy;
use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use consumer_lambda::probe::BatchProbe;
use consumer_lambda::{
    Backoff, Consumer, DatabaseConfig, MaxReceiveCount, PgStore, RetryPolicy, SqsDeadLetterQueue,
    SqsRetryQueue, migrations,
};

use crate::batches::{self, BatchLog};
use crate::breaker::{self, Intervals, LocalFigures, LocalProbe};
use crate::driver::{Driver, Function, FunctionState};
use crate::handler::InProcess;
use crate::status::{self, Places, Sources};
use crate::template::Template;
use support::queues::create_queues;

/// Local stand-ins for AWS: queues as the SAM template declares them, and Lambda's
/// SQS event source mapping feeding the consumer's handler.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the queue and its DLQ with the template's settings; prints QUEUE_URL=… and DLQ_URL=….
    CreateQueues {
        #[arg(long, default_value = "infra/template.yaml")]
        template: String,
        #[arg(long, default_value = "orders")]
        queue_name: String,
        #[arg(long, default_value = "orders-dlq")]
        dlq_name: String,
    },
    /// Print what the consumer does with a valid order during a database outage,
    /// from the template's MaxReceiveCount and the consumer's backoff.
    RetrySchedule {
        #[arg(long, default_value = "infra/template.yaml")]
        template: String,
        #[command(flatten)]
        backoff: BackoffArgs,
    },
    /// Apply the consumer's database migrations to DATABASE_URL (the tables'
    /// owner), and create and grant the roles the consumer writes and the
    /// status function reads with.
    Migrate {
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
        /// The consumer's database user: it may read and insert orders and
        /// conflicts, nothing else.
        #[arg(long, env = "DB_WRITER_USER", default_value = migrations::DEFAULT_WRITER)]
        writer: String,
        /// The status function's database user: it may only read them.
        #[arg(long, env = "DB_READER_USER", default_value = migrations::DEFAULT_READER)]
        reader: String,
    },
    /// Poll the queue and hand batches to the consumer's handler, as Lambda would.
    Run(Box<Run>),
    /// Print what the CloudWatch dashboard shows, for the local stack: the
    /// queues' depth and oldest age, the consumer's last batches, the producer's
    /// counters. A part that is down says so in its row; the exit status is 1
    /// only when no part could be read.
    Status {
        #[command(flatten)]
        places: Places,
        /// Print again every SECONDS (2 when given alone) until Ctrl-C.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
        watch: Option<f64>,
    },
}

#[derive(Debug, clap::Args)]
pub struct Run {
    #[arg(long, default_value = "infra/template.yaml")]
    template: String,
    #[arg(long, env = "QUEUE_URL")]
    queue_url: String,
    /// Where the consumer sends poison, saying why.
    #[arg(long, env = "DLQ_URL")]
    dlq_url: String,
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Overrides the template's BatchSize.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Overrides the template's MaximumBatchingWindowInSeconds (milliseconds here, for tests).
    #[arg(long)]
    batching_window_ms: Option<u64>,
    /// Overrides the template's ScalingConfig.MaximumConcurrency.
    #[arg(long)]
    max_concurrency: Option<usize>,
    /// Overrides the function's Timeout (milliseconds here, for tests).
    #[arg(long)]
    function_timeout_ms: Option<u64>,
    /// The queue's maxReceiveCount, when the queues were created with another
    /// than the template's (the consumer requeues a record one receive before).
    #[arg(long, env = "MAX_RECEIVE_COUNT")]
    max_receive_count: Option<u32>,
    #[command(flatten)]
    backoff: BackoffArgs,
    /// Run without the circuit breaker (the template deploys one): the
    /// mapping then keeps polling through a database outage, and through
    /// a throttled or failing function, spending receives.
    #[arg(long)]
    no_breaker: bool,
    /// Runs the breaker's clock this many times faster: its schedule, its
    /// probe interval while paused and its back-off after a trip are
    /// divided by it (compressed test runs; AWS runs it at 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    breaker_speedup: u32,
    /// The function's state, read from this file every 200 ms while it
    /// runs: `running`, `throttled`, `failing-init` (a release that cannot
    /// start) or `failing-batches` (a release whose batch path fails every
    /// record). How `scripts/chaos` releases a bad build and the good one.
    #[arg(long)]
    function_file: Option<PathBuf>,
    /// Keep each batch's figures (the consumer's EMF line) in this file, for
    /// `local-esm status`; it starts empty and holds the last few hundred.
    #[arg(long, env = "BATCH_LOG")]
    batch_log: Option<PathBuf>,
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::CreateQueues {
                template,
                queue_name,
                dlq_name,
            } => {
                let template = Template::from_file(&template)?;
                let sqs = sqs_client().await;
                let urls = create_queues(&sqs, &queue_name, &dlq_name, template.queues).await?;
                println!("QUEUE_URL={}", urls.queue_url);
                println!("DLQ_URL={}", urls.dlq_url);
            }
            Command::RetrySchedule { template, backoff } => {
                let template = Template::from_file(&template)?;
                let policy = backoff.policy(template.queues.max_receive_count)?;
                print!("{}", crate::schedule::describe(&policy, 2));
            }
            Command::Migrate {
                database_url,
                writer,
                reader,
            } => {
                let roles = [
                    migrations::Role::writer(&writer, None)?,
                    migrations::Role::reader(&reader, None)?,
                ];
                let config = DatabaseConfig::from_url(&database_url)?;
                let applied = migrations::connect_and_prepare(config, &roles)
                    .await
                    .context("applying the migrations failed")?;
                tracing::info!(
                    ?applied,
                    writer,
                    reader,
                    "the database schema is up to date and the roles granted"
                );
            }
            Command::Run(run) => run.run().await?,
            Command::Status { mut places, watch } => {
                // Shown as given, or relative to here when under it: shorter in the table.
                if let Some(here) = std::env::current_dir().ok()
                    && let Ok(under) = places.batch_log.strip_prefix(here)
                {
                    places.batch_log = under.to_owned();
                }
                let sources = Sources {
                    sqs: sqs_client().await,
                    http: reqwest::Client::builder()
                        .timeout(Duration::from_secs(2))
                        .build()
                        .context("cannot build the HTTP client for the producer's metrics")?,
                    sqs_endpoint: std::env::var("AWS_ENDPOINT_URL")
                        .ok()
                        .filter(|e| !e.trim().is_empty()),
                    places,
                };
                match watch {
                    None => {
                        let snapshot = sources.read().await;
                        print!("{}", status::render(&snapshot));
                        if !snapshot.anything_read() {
                            anyhow::bail!(
                                "no part of the local system answered: is scripts/dev running in this checkout?"
                            );
                        }
                    }
                    Some(seconds) => watch_status(&sources, seconds).await?,
                }
            }
        }
        Ok(())
    }
}

impl Run {
    async fn run(self) -> anyhow::Result<()> {
        let template = Template::from_file(&self.template)?;
        let mut settings = template.event_source;
        let ms = |ms: Option<u64>, or| ms.map_or(or, Duration::from_millis);
        settings.batch_size = self.batch_size.unwrap_or(settings.batch_size);
        settings.batching_window = ms(self.batching_window_ms, settings.batching_window);
        settings.max_concurrency = self.max_concurrency.unwrap_or(settings.max_concurrency);
        settings.function_timeout = ms(self.function_timeout_ms, settings.function_timeout);
        // One connection per concurrent invocation, as one per Lambda environment.
        let config = DatabaseConfig::from_url(&self.database_url)?;
        let store = PgStore::new(config, settings.max_concurrency).await?;
        let sqs = sqs_client().await;
        let max_receive_count = self
            .max_receive_count
            .unwrap_or(template.queues.max_receive_count);
        let policy = self.backoff.policy(max_receive_count)?;
        let probe = BatchProbe::of(&store, policy);
        let figures = LocalFigures::new(self.batch_log.clone());
        let mut trips = TripPolicy::new(policy.max_receive_count.get());
        let intervals = Intervals::sped_up(self.breaker_speedup, &mut trips);
        let consumer = Consumer::new(
            &store,
            SqsRetryQueue::new(sqs.clone(), &self.queue_url),
            SqsDeadLetterQueue::new(sqs.clone(), &self.dlq_url),
            policy,
        );
        let log = self.batch_log.as_ref().map(|path| {
            tracing::info!(path = %path.display(), "keeping each batch's figures for local-esm status");
            BatchLog::create(path, batches::DEFAULT_KEEP)
        });
        let handler = InProcess(consumer, log.transpose()?);
        let driver = Driver::new(sqs, self.queue_url, settings, handler)
            .await
            .context("the queue to poll is not reachable")?;
        if let Some(path) = self.function_file {
            tokio::spawn(follow_function_file(path, driver.function()));
        }
        let polling = driver.run(support::shutdown_signal());
        if self.no_breaker {
            polling.await;
            return Ok(());
        }
        let (switch, probe) = (driver.switch(), LocalProbe::new(driver.function(), &probe));
        // The breaker never ends by itself: polling decides when to stop.
        tokio::select! {
            () = polling => {}
            () = breaker::run(&probe, &switch, &figures, trips, intervals) => {}
        }
        Ok(())
    }
}

/// Prints the status every `seconds` until Ctrl-C or SIGTERM, redrawn in
/// place on a terminal.
async fn watch_status(sources: &Sources, seconds: f64) -> anyhow::Result<()> {
    let every = Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|every| *every >= Duration::from_millis(100))
        .with_context(|| format!("--watch {seconds}: give an interval of at least 0.1 seconds"))?;
    let terminal = std::io::stdout().is_terminal();
    let footer = format!("(every {} s; Ctrl-C stops)", every.as_secs_f64());
    let stop = support::shutdown_signal();
    tokio::pin!(stop);
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = ticks.tick() => {}
        }
        let text = status::render(&sources.read().await);
        let mut out = std::io::stdout().lock();
        if terminal {
            // Home and clear: the table redrawn in place, not scrolled.
            write!(out, "\x1b[H\x1b[2J")?;
        }
        write!(out, "{text}\n{footer}\n")?;
        out.flush()?;
    }
}

/// Sets the function's state from the file's one word whenever it changes;
/// a missing file or an unknown word leaves the state as it is, saying why once.
async fn follow_function_file(path: PathBuf, function: FunctionState) {
    let mut complained = None;
    loop {
        let read = std::fs::read_to_string(&path)
            .map_err(|err| format!("cannot read {}: {err}", path.display()))
            .and_then(|text| {
                let word = text.trim();
                Function::from_str(word, false).map_err(|_| {
                    format!("{word:?} is no function state: write running, throttled, failing-init or failing-batches")
                })
            });
        match read {
            Ok(state) => {
                function.set(state);
                complained = None;
            }
            Err(why) if complained.as_ref() != Some(&why) => {
                tracing::warn!(%why, "the function's state is left as it is");
                complained = Some(why);
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The SQS client from the standard AWS environment (AWS_ENDPOINT_URL, region, credentials).
async fn sqs_client() -> aws_sdk_sqs::Client {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    aws_sdk_sqs::Client::new(&config)
}

/// The consumer's backoff, as its environment sets it in AWS.
#[derive(Debug, clap::Args)]
struct BackoffArgs {
    /// First backoff step, in seconds, for records the database could not take.
    #[arg(long, env = "RETRY_BASE_SECONDS", default_value_t = Backoff::default().base().as_secs())]
    retry_base_seconds: u64,
    /// Growth of the backoff with each receive.
    #[arg(long, env = "RETRY_MULTIPLIER", default_value_t = Backoff::default().multiplier())]
    retry_multiplier: u32,
    /// The longest the backoff hides a record, in seconds: the bound on catch-up.
    #[arg(long, env = "RETRY_CAP_SECONDS", default_value_t = Backoff::default().cap().as_secs())]
    retry_cap_seconds: u64,
}

impl BackoffArgs {
    /// The consumer's retry policy with this backoff and the queue's `max_receive_count`.
    fn policy(&self, max_receive_count: u32) -> anyhow::Result<RetryPolicy> {
        let (base, cap) = (self.retry_base_seconds, self.retry_cap_seconds);
        let backoff = Backoff::new(Duration::from_secs(base), self.retry_multiplier, Duration::from_secs(cap))
            .context("--retry-base-seconds and --retry-cap-seconds must be at least 1, --retry-multiplier at least 1")?;
        let max_receive_count = MaxReceiveCount::new(max_receive_count).with_context(|| {
            format!(
                "maxReceiveCount {max_receive_count} leaves the consumer no retry: use {} to {}",
                MaxReceiveCount::MIN,
                MaxReceiveCount::MAX
            )
        })?;
        Ok(RetryPolicy {
            backoff,
            max_receive_count,
        })
    }
}
