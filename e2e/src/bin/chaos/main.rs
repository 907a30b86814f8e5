//! `chaos` (run it through `scripts/chaos`): the producer and local-esm
//! binaries, PostgreSQL and the SQS emulator under a seeded schedule of faults,
//! or one timed fault (`--outage-s`, `--bad-release-s`) with the template's time
//! constants, whose `catchup_s` it measures. Exits 0 only if nothing was lost
//! or doubled.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use consumer_lambda::migrations::{DEFAULT_WRITER, Role, connect_and_prepare};
use futures::StreamExt;
use local_esm::Template;
use serde_json::json;
use testkit::{PostgresServer, QueueSettings, TestDatabase, TestQueues, free_port};
use tokio::sync::Mutex;
use uuid::Uuid;

mod clients;
mod dead_letters;
mod faults;
mod service;

use clients::{Ledger, await_catchup, conflicting_twin, place};
use dead_letters::DeadLetters;
use faults::{Fault, Seeded, fault_schedule};
use service::Service;

/// Compressed time constants, set through the settings the code reads in
/// production (queue attributes, the consumer's environment, the function
/// timeout local-esm enforces from the template).
pub(crate) const VISIBILITY_TIMEOUT_SECS: u32 = 3;
const MAX_RECEIVE_COUNT: u32 = 4;
pub(crate) const FUNCTION_TIMEOUT: Duration = Duration::from_secs(7);
const RETRY_BASE_SECONDS: u64 = 1;
const RETRY_MULTIPLIER: u32 = 2;
/// With the compressed constants, the breaker's clock too: its minute-long
/// schedule a second, its ten-minute back-off ten seconds.
const BREAKER_SPEEDUP: u32 = 60;

/// The orders rate's default: 25 per second, or, with `--outage-s` or
/// `--bad-release-s`, the orders spread over the fault and this long before
/// and after it.
const DEFAULT_RATE: f64 = 25.0;
const OUTAGE_MARGIN: Duration = Duration::from_secs(10);
/// How long an outage run waits for the catch-up and the drain: beyond the
/// last return of an order today's backoff gives a 20-minute outage (1 h 17 min),
/// so a slow catch-up is measured, not cut short; the waits end as soon as
/// their condition holds.
pub(crate) const OUTAGE_PATIENCE: Duration = Duration::from_secs(3 * 60 * 60);
#[derive(Debug, Parser)]
#[command(about = "Orders through the whole local system under a seeded schedule of faults")]
struct Args {
    /// Orders the clients place.
    #[arg(long, default_value_t = 1_000)]
    orders: usize,
    /// Poison messages injected straight into the queue, as a percentage of the orders.
    #[arg(long, default_value_t = 2.0)]
    poison_percent: f64,
    /// Seed of the fault schedule (and of which orders get a conflicting twin).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Orders per second the clients place, all together [default: 25; with
    /// --outage-s or --bad-release-s, the orders spread over the fault and
    /// 10 s either side].
    #[arg(long)]
    rate: Option<f64>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Directory with the `producer` and `local-esm` binaries.
    #[arg(long, default_value = "target/debug")]
    bin_dir: String,
    /// The SAM template local-esm reads.
    #[arg(long, default_value = "infra/template.yaml")]
    template: String,
    /// Where the producer's and local-esm's logs go.
    #[arg(long, default_value = ".dev/chaos")]
    log_dir: String,
    /// Instead of the fault schedule: one PostgreSQL outage of this many
    /// seconds, in the middle of the orders, with the template's time constants
    /// and the consumer's own backoff; prints catchup_s.
    #[arg(long)]
    outage_s: Option<u64>,
    /// Instead of the fault schedule: a release of a consumer build whose
    /// batch path fails every record, for this many seconds, then the good
    /// build again, in the middle of the orders, with the template's time
    /// constants and the breaker as it runs in AWS; prints catchup_s.
    #[arg(long, conflicts_with = "outage_s")]
    bad_release_s: Option<u64>,
    /// With --outage-s or --bad-release-s: the schedule's compressed time
    /// constants instead of the template's, and the breaker's clock 60 times
    /// faster, for a quick run.
    #[arg(long)]
    compress: bool,
    /// Fails the run when catchup_s exceeds this.
    #[arg(long)]
    max_catchup_s: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let outage = args.outage_s.map(Duration::from_secs);
    let bad_release = args.bad_release_s.map(Duration::from_secs);
    // The one fault of a timed run, whose catch-up is measured.
    let timed = outage.or(bad_release);
    if timed.is_none() && (args.max_catchup_s.is_some() || args.compress) {
        anyhow::bail!("--max-catchup-s and --compress go with --outage-s or --bad-release-s");
    }
    std::fs::create_dir_all(&args.log_dir)?;
    let mut seeded = Seeded(args.seed);

    // --- the system ---
    let server = PostgresServer::start().await;
    let db = TestDatabase::create_on(&server.admin_url()).await;
    let config = consumer_lambda::DatabaseConfig::from_url(&db.url)?;
    connect_and_prepare(config, &[Role::writer(DEFAULT_WRITER, None)?]).await?;
    // A timed run takes every time constant from the template, as deployed,
    // unless told to compress them; the schedule's runs compress them.
    let real = (timed.is_some() && !args.compress)
        .then(|| Template::from_file(&args.template))
        .transpose()
        .with_context(|| format!("read the time constants of {}", args.template))?;
    // The queue pair as the template declares it (visibility timeout,
    // retentions, redrive policy), as local-esm creates it for `scripts/dev`.
    let compressed = QueueSettings {
        visibility_timeout_secs: VISIBILITY_TIMEOUT_SECS,
        max_receive_count: MAX_RECEIVE_COUNT,
        ..QueueSettings::default()
    };
    let queues = TestQueues::create(real.map_or(compressed, |template| template.queues)).await;
    // The services inherit this environment (AWS_ENDPOINT_URL, the region and
    // credentials), and take their own settings from these.
    let producer_addr = format!("127.0.0.1:{}", free_port());
    let producer_env = vec![
        ("QUEUE_URL", queues.queue_url.clone()),
        ("BIND_ADDR", producer_addr.clone()),
        ("METRICS_ADDR", format!("127.0.0.1:{}", free_port())),
        // Every client here is 127.0.0.1: no per-client limit or cap for this run.
        ("RATE_LIMIT_PER_SECOND", "0".to_owned()),
        ("MAX_IN_FLIGHT_PER_CLIENT", "0".to_owned()),
        ("RUST_LOG", "info".to_owned()),
        ("CATALOGUE_PATH", e2e::CATALOGUE_PATH.to_owned()),
    ];
    let mut producer = Service::start(&args, "producer", Vec::new(), producer_env);
    let mut consumer_args = vec![
        "run".to_owned(),
        format!("--template={}", args.template),
        format!("--queue-url={}", queues.queue_url),
        format!("--dlq-url={}", queues.dlq_url),
        // The consumer runs as the writer role, as in AWS.
        format!("--database-url={}", db.url_as(DEFAULT_WRITER)),
    ];
    let mut consumer_env = vec![("RUST_LOG", "info".to_owned())];
    // A bad release is written to this file, and the breaker reads the
    // batches' figures as it does in AWS.
    let function_file = format!("{}/function", args.log_dir);
    if bad_release.is_some() {
        std::fs::write(&function_file, "running")?;
        consumer_args.extend([
            format!("--function-file={function_file}"),
            format!("--batch-log={}/batches.jsonl", args.log_dir),
        ]);
    }
    if real.is_none() {
        consumer_args.extend([
            "--batch-size=100".to_owned(),
            "--batching-window-ms=300".to_owned(),
            format!("--function-timeout-ms={}", FUNCTION_TIMEOUT.as_millis()),
            format!("--max-receive-count={MAX_RECEIVE_COUNT}"),
        ]);
        if bad_release.is_some() {
            consumer_args.push(format!("--breaker-speedup={BREAKER_SPEEDUP}"));
        }
        consumer_env.extend([
            ("RETRY_BASE_SECONDS", RETRY_BASE_SECONDS.to_string()),
            ("RETRY_MULTIPLIER", RETRY_MULTIPLIER.to_string()),
        ]);
    }
    let mut consumer = Service::start(&args, "local-esm", consumer_args, consumer_env);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let healthz = format!("http://{producer_addr}/healthz");
    testkit::eventually("the producer to listen", Duration::from_secs(30), || {
        http.get(&healthz).send()
    })
    .await;

    // --- the load, the poison, the conflicts ---
    let twins: HashSet<usize> = (0..args.orders).filter(|_| seeded.unit() < 0.01).collect();
    let poison = (args.orders as f64 * args.poison_percent / 100.0).round() as usize;
    let rate = match (args.rate, timed) {
        (Some(rate), _) => rate,
        (None, Some(down)) => args.orders as f64 / (down + 2 * OUTAGE_MARGIN).as_secs_f64(),
        (None, None) => DEFAULT_RATE,
    };
    let expected_run = Duration::from_secs_f64(args.orders as f64 / rate);
    // A timed fault comes alone, in the middle of the orders: some before,
    // most during, some after.
    let schedule = match timed {
        Some(lasts) => {
            let fault = outage.map_or(Fault::BadRelease(lasts), Fault::StopDatabase);
            vec![(expected_run.saturating_sub(lasts) / 2, fault)]
        }
        None => fault_schedule(&mut seeded, expected_run),
    };
    println!(
        "chaos: {} orders at {rate:.2}/s over ~{:.0} s, {poison} poison, {} conflicting twins, seed {}",
        args.orders,
        expected_run.as_secs_f64(),
        twins.len(),
        args.seed
    );
    if let Some(template) = real {
        let (q, e) = (template.queues, template.event_source);
        println!(
            "  {}'s constants: visibility timeout {} s, maxReceiveCount {}, function timeout {} s, \
             batches of {} within {} s, {} at once; the consumer's own backoff",
            args.template,
            q.visibility_timeout_secs,
            q.max_receive_count,
            e.function_timeout.as_secs(),
            e.batch_size,
            e.batching_window.as_secs_f64(),
            e.max_concurrency
        );
    }
    for (at, fault) in &schedule {
        println!("  fault at {:>5.1} s: {fault:?}", at.as_secs_f64());
    }

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let load = {
        let (ledger, http, orders, clients) =
            (ledger.clone(), http.clone(), args.orders, args.clients);
        let url = format!("http://{producer_addr}/orders");
        tokio::spawn(async move {
            futures::stream::iter(0..orders)
                .for_each_concurrent(clients, |n| {
                    let body = e2e::order_request(n, n % 4 + 1);
                    let twin = twins.contains(&n).then(|| conflicting_twin(&body));
                    let (ledger, http, url) = (&ledger, &http, &url);
                    async move {
                        // A steady rate: each order waits for its slot.
                        tokio::time::sleep_until((started + interval * n as u32).into()).await;
                        place(http, url, &body, ledger).await;
                        if let Some(twin) = twin {
                            place(http, url, &twin, ledger).await;
                            ledger.lock().await.conflicts_injected += 1;
                        }
                    }
                })
                .await;
            // The outage run awaits its catch-up first: it must not count as posting time.
            Instant::now()
        })
    };
    let poisoner = {
        let (sqs, url) = (queues.sqs.clone(), queues.queue_url.clone());
        tokio::spawn(async move {
            // When each was sent, in Unix milliseconds, to set beside the
            // consumer's `failure.failed_at`.
            let mut sent_ms: HashMap<String, i64> = HashMap::new();
            for i in 0..poison {
                let at = expected_run.mul_f64(i as f64 / poison.max(1) as f64);
                tokio::time::sleep_until((started + at).into()).await;
                let id = Uuid::new_v4().to_string();
                let body = json!({"poison": id, "schema_version": 1}).to_string();
                let request = sqs.send_message().queue_url(&url).message_body(body);
                let _ = request.send().await;
                sent_ms.insert(id, chrono::Utc::now().timestamp_millis());
            }
            (Instant::now(), sent_ms)
        })
    };

    // --- the faults, one after another ---
    let mut last_fault_end = started;
    // When the last stop or bad release began, when the database or the good
    // build was back, and which: a timed run's only fault.
    let mut last_stop: Option<(Instant, Instant, &str)> = None;
    for (at, fault) in schedule {
        tokio::time::sleep_until((started + at).into()).await;
        let began = Instant::now();
        match fault {
            Fault::KillConsumer => {
                consumer.stop("-KILL", Duration::from_secs(5)).await;
                tokio::time::sleep(Duration::from_millis(500 + seeded.next() % 1500)).await;
                consumer.spawn();
            }
            Fault::StopDatabase(down) => {
                server.stop();
                tokio::time::sleep(down).await;
                server.start_again().await;
                last_stop = Some((began, Instant::now(), "the database was back"));
            }
            Fault::FreezeDatabase(frozen) => {
                server.freeze();
                tokio::time::sleep(frozen).await;
                server.thaw();
            }
            Fault::RestartProducer => {
                producer.stop("-TERM", Duration::from_secs(15)).await;
                producer.spawn();
            }
            Fault::BadRelease(lasts) => {
                std::fs::write(&function_file, "failing-batches")?;
                tokio::time::sleep(lasts).await;
                std::fs::write(&function_file, "running")?;
                last_stop = Some((began, Instant::now(), "the good build was back"));
            }
        }
        last_fault_end = Instant::now();
        let done_s = (last_fault_end - started).as_secs_f64();
        println!("  fault done at {done_s:>5.1} s: {fault:?}");
    }
    // While the last orders are still placed: the catch-up clock runs from the
    // database or the good build being back.
    let catchup = match (timed, last_stop) {
        (Some(_), Some((down_at, back_at, back))) => Some((
            await_catchup(&db, &queues, &ledger, down_at, back_at, back).await?,
            back,
        )),
        _ => None,
    };
    let (poisoned_at, poison_sent_ms) = poisoner.await?;
    let posted_at = load.await?.max(poisoned_at);
    let placed_s = (posted_at - started).as_secs_f64();
    println!("  every order placed at {placed_s:.1} s");

    // --- drain and count ---
    let drain_timeout = match real {
        Some(template) => {
            // The consumer sends poison to the DLQ on its first receive; only
            // one whose every receive ended in a crash waits for the redrive
            // policy: maxReceiveCount receives, a visibility timeout apart.
            println!(
                "  waiting for the poison to reach the DLQ: at most about {} s after its first \
                 receive (maxReceiveCount × visibility timeout)",
                template.queues.max_receive_count * template.queues.visibility_timeout_secs
            );
            OUTAGE_PATIENCE
        }
        None => Duration::from_secs(600),
    };
    testkit::eventually("both queues to drain", drain_timeout, || async {
        match (queues.depth().await, queues.dlq_depth().await) {
            (0, dead) if dead >= poison as u64 => Ok(()),
            depths => Err(depths),
        }
    })
    .await;
    let drain_s = last_fault_end.max(posted_at).elapsed().as_secs_f64();
    producer.stop("-TERM", Duration::from_secs(10)).await;
    consumer.stop("-TERM", Duration::from_secs(10)).await;

    let client = db.connect().await;
    let by_id = "SELECT order_id::text, count(*) FROM orders GROUP BY order_id";
    let stored_count: HashMap<String, i64> = (client.query(by_id, &[]).await?.iter())
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let ledger = ledger.lock().await;
    let accepted = &ledger.accepted_at;
    let is_stored = |id: &&String| stored_count.contains_key(*id);
    let stored = accepted.keys().filter(is_stored).count();
    let missing = accepted.len() - stored;
    let duplicates: i64 = stored_count.values().map(|n| n - 1).sum();
    let was_accepted = |id: &&String| accepted.contains_key(*id);
    let unexpected = stored_count.keys().filter(|id| !was_accepted(id)).count();
    let recorded = "SELECT count(*) FROM order_conflicts";
    let conflicts: i64 = client.query_one(recorded, &[]).await?.get(0);
    let dead = DeadLetters::read(&queues.receive_dlq().await, &poison_sent_ms);
    let (poison_in_dlq, valid_in_dlq) = (dead.poison.len(), dead.others);
    let poison_by_consumer = dead.by_consumer.len();

    let (orders, accepted_n) = (args.orders, accepted.len());
    let (injected, to_dlq_s) = (ledger.conflicts_injected, dead.slowest_ms as f64 / 1000.0);
    let (attempts, most_receives) = (ledger.attempts, dead.most_receives);
    println!("\n| what | count |\n| --- | --- |");
    println!("| orders placed | {orders} |\n| POSTs sent (retries included) | {attempts} |");
    println!("| accepted (202) | {accepted_n} |\n| stored | {stored} |\n| missing | {missing} |");
    println!("| stored twice | {duplicates} |\n| stored but never accepted | {unexpected} |");
    println!("| poison in the DLQ | {poison_in_dlq} of {poison} |");
    println!("| … sent there by the consumer, saying why | {poison_by_consumer} of {poison} |");
    println!("| … slowest, from its send to the consumer's verdict | {to_dlq_s:.1} s |");
    println!("| … most receives before its verdict | {most_receives} |");
    println!("| valid orders in the DLQ | {valid_in_dlq} |");
    println!("| conflicts recorded | {conflicts} of {injected} |");
    println!("| drain time after the last fault | {drain_s:.1} s |");
    if let Some((catchup, back)) = catchup {
        let shown = catchup.map_or("never".to_owned(), |c| format!("{:.1} s", c.as_secs_f64()));
        println!("| catch-up after {back} | {shown} |");
    }
    // Whole seconds in the summary, as printed, so that the line and the
    // verdict agree; "never" when some of the orders were never stored.
    let catchup_s = catchup.map(|(c, _)| c.map(|c| c.as_secs_f64().round() as u64));
    let catchup_text = match catchup_s {
        Some(Some(c)) => format!(" catchup_s={c}"),
        Some(None) => " catchup_s=never".to_owned(),
        None => String::new(),
    };
    println!();
    println!(
        "chaos orders={orders} accepted={accepted_n} stored={stored} missing={missing} duplicates={duplicates} poison_in_dlq={poison_in_dlq}/{poison} valid_in_dlq={valid_in_dlq} conflicts={conflicts}/{injected} drain_s={drain_s:.0} poison_by_consumer={poison_by_consumer}/{poison} poison_to_dlq_s={to_dlq_s:.0}{catchup_text}"
    );
    let caught_up_in_time = match (catchup_s, args.max_catchup_s) {
        (Some(None), _) => false,
        (Some(Some(catchup_s)), Some(max)) if catchup_s > max => {
            eprintln!("chaos: catchup_s={catchup_s} exceeds --max-catchup-s {max}");
            false
        }
        _ => true,
    };
    let ok = missing == 0
        && duplicates == 0
        && unexpected == 0
        && poison_in_dlq == poison
        && poison_by_consumer == poison
        && valid_in_dlq == 0
        && conflicts == injected as i64
        && caught_up_in_time;
    drop(server);
    std::process::exit(if ok { 0 } else { 1 });
}
