//! `GET /orders/{order_id}` through the local path (local-alb playing the
//! template's listener rule, the status function in process, reading as the
//! reader role) against its floor: a primary-key `SELECT` on `orders` over a
//! pool of the same size on the same database (the function also looks in
//! `order_conflicts`). Then what reads cost the write
//! path: the consumer's bulk insert alone, and beside reads at a fixed rate.
//! Rounds are interleaved and the median printed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use consumer_lambda::migrations::{DEFAULT_READER, DEFAULT_WRITER, Role, connect_and_prepare};
use consumer_lambda::{DatabaseConfig, Delivery, OrderStore, PgStore};
use tokio_postgres::types::Type;

use crate::consumer::{median, orders, refs};
use crate::markdown::thousands;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A database the benchmark may fill (it migrates it and creates both roles).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Orders stored before reading; each read asks for one of them.
    #[arg(long, default_value_t = 10_000)]
    orders: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Clients reading at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Reads per second beside the consumer's writes.
    #[arg(long, default_value_t = 50)]
    read_rate: u32,
    /// Orders per batch of the consumer's writes.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Rounds per figure; the median is printed.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// One read: the order's id and its customer's session cookie.
struct Read {
    order_id: String,
    cookie: String,
}

struct Latencies {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let config = DatabaseConfig::from_url(&args.database_url)?;
    let roles = [
        Role::writer(DEFAULT_WRITER, None)?,
        Role::reader(DEFAULT_READER, None)?,
    ];
    connect_and_prepare(config.clone(), &roles)
        .await
        .context("migrating the database")?;
    let as_role = |role: &str| {
        let mut config = config.clone();
        config.pg.user(role);
        config
    };
    let store = PgStore::new(as_role(DEFAULT_WRITER), 1).await?;
    let stored = orders(args.orders);
    for chunk in stored.chunks(1_000) {
        store.insert(&refs(chunk)).await?;
    }

    let template = infra::Document::from_file("infra/template.yaml")
        .context("reading infra/template.yaml (run from the repository's root)")?;
    let listener = local_alb::rules::Listener::from_document(&template)?;
    let key = std::env::temp_dir().join(format!("bench-status-{}.p8", std::process::id()));
    let keys = local_alb::Keys::load_or_create(&key, local_alb::LOCAL_SIGNER)?;
    let _ = std::fs::remove_file(&key);
    let reads: Vec<Read> = stored
        .iter()
        .map(|delivery| {
            let order = &delivery.placed.order;
            Ok(Read {
                order_id: order.order_id().to_string(),
                cookie: local_alb::session_cookie(&keys, &listener, order.customer_id())
                    .context("the template's listener signs customers in")?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    // Nothing but GET /orders* is sent: the producer's target is never reached.
    let mut targets = HashMap::from([(
        "ProducerTargetGroup".to_owned(),
        local_alb::Target::Http("http://127.0.0.1:9".to_owned()),
    )]);
    targets.extend(local_alb::lambda_targets(&template, as_role(DEFAULT_READER)).await?);
    let router = local_alb::router(listener, targets, keys)?;
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let alb = format!("http://{}", tcp.local_addr()?);
    tokio::spawn(local_alb::serve(tcp, router, std::future::pending()));
    let http = reqwest::Client::new();
    let reads = Arc::new(reads);
    let floor_pool = status::pool(as_role(DEFAULT_READER)).await?;

    let seconds = Duration::from_secs(args.seconds);
    let (mut through, mut floor) = (Vec::new(), Vec::new());
    let (mut alone, mut beside) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        through.push(
            read_for(seconds, args.concurrency, &reads, {
                let (http, alb) = (http.clone(), alb.clone());
                move |read| {
                    let request = http
                        .get(format!("{alb}/orders/{}", read.order_id))
                        .header("cookie", &read.cookie);
                    async move {
                        let answer = request.send().await?;
                        anyhow::ensure!(answer.status() == 200, "GET answered {}", answer.status());
                        answer.bytes().await?;
                        Ok(())
                    }
                }
            })
            .await?,
        );
        floor.push(
            read_for(seconds, args.concurrency, &reads, {
                let floor_pool = floor_pool.clone();
                move |read| {
                    let (pool, id) = (floor_pool.clone(), read.order_id.clone());
                    async move {
                        let id = uuid::Uuid::parse_str(&id)?;
                        pool.get()
                            .await
                            .map_err(|err| anyhow::anyhow!("{err}"))?
                            .query_typed(
                                "SELECT * FROM orders WHERE order_id = $1",
                                &[(&id, Type::UUID)],
                            )
                            .await?;
                        Ok(())
                    }
                }
            })
            .await?,
        );
        alone.push(write_for(seconds, &store, args.batch).await?);
        let stop = Arc::new(tokio::sync::Notify::new());
        let reader = tokio::spawn(read_at_rate(
            http.clone(),
            alb.clone(),
            reads.clone(),
            args.read_rate,
            stop.clone(),
        ));
        beside.push(write_for(seconds, &store, args.batch).await?);
        stop.notify_one();
        let done = reader.await??;
        anyhow::ensure!(done > 0, "no read went out beside the writes");
    }

    println!(
        "GET /orders/{{order_id}}, {} clients, median of {} rounds of {} s:\n",
        args.concurrency, args.rounds, args.seconds
    );
    println!("| path | reads/s | p50 ms | p99 ms |");
    println!("| :--- | ---: | ---: | ---: |");
    for (name, runs) in [
        (
            "local-alb → status function → PostgreSQL (reader)",
            &through,
        ),
        (
            "`SELECT … FROM orders` by primary key, same pool size",
            &floor,
        ),
    ] {
        println!(
            "| {name} | {} | {:.2} | {:.2} |",
            thousands(median(runs.iter().map(|r| r.per_second).collect())),
            median(runs.iter().map(|r| r.p50_ms).collect()),
            median(runs.iter().map(|r| r.p99_ms).collect()),
        );
    }
    let (through_rate, floor_rate) = (
        median(through.iter().map(|r| r.per_second).collect()),
        median(floor.iter().map(|r| r.per_second).collect()),
    );
    println!(
        "\nthrough the local path: {:.2} of the floor's reads/s",
        through_rate / floor_rate
    );
    let (alone, beside) = (median(alone), median(beside));
    println!(
        "\nThe consumer's bulk insert ({} orders a batch), orders/s:\n\n| writes alone | beside {} reads/s | fraction |\n| ---: | ---: | ---: |\n| {} | {} | {:.2} |",
        args.batch,
        args.read_rate,
        thousands(alone),
        thousands(beside),
        beside / alone
    );
    Ok(())
}

/// `concurrency` clients each sending `read` one after another for `duration`.
async fn read_for<F, Fut>(
    duration: Duration,
    concurrency: usize,
    reads: &Arc<Vec<Read>>,
    read: F,
) -> anyhow::Result<Latencies>
where
    F: Fn(&Read) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let started = Instant::now();
    let clients: Vec<_> = (0..concurrency)
        .map(|client| {
            let (reads, read) = (reads.clone(), read.clone());
            tokio::spawn(async move {
                let mut took = Vec::new();
                let mut next = client;
                while started.elapsed() < duration {
                    let one = Instant::now();
                    read(&reads[next % reads.len()]).await?;
                    took.push(one.elapsed().as_secs_f64() * 1_000.0);
                    next += concurrency * 7 + 1;
                }
                Ok::<_, anyhow::Error>(took)
            })
        })
        .collect();
    let mut took = Vec::new();
    for client in clients {
        took.extend(client.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    took.sort_by(f64::total_cmp);
    let at = |share: f64| {
        took.get(((took.len() as f64 - 1.0) * share) as usize)
            .copied()
    };
    Ok(Latencies {
        per_second: took.len() as f64 / elapsed,
        p50_ms: at(0.5).unwrap_or(f64::NAN),
        p99_ms: at(0.99).unwrap_or(f64::NAN),
    })
}

/// Orders/s of the consumer's bulk insert of fresh batches, over `duration`
/// spent inserting (making the orders is not timed).
async fn write_for(duration: Duration, store: &PgStore, batch: usize) -> anyhow::Result<f64> {
    let (mut inserting, mut written) = (Duration::ZERO, 0);
    while inserting < duration {
        let deliveries: Vec<Delivery> = orders(batch);
        let started = Instant::now();
        store.insert(&refs(&deliveries)).await?;
        inserting += started.elapsed();
        written += batch;
    }
    Ok(written as f64 / inserting.as_secs_f64())
}

/// `GET /orders/{order_id}` through `alb` at `rate` a second until `stop`; how many went out.
async fn read_at_rate(
    http: reqwest::Client,
    alb: String,
    reads: Arc<Vec<Read>>,
    rate: u32,
    stop: Arc<tokio::sync::Notify>,
) -> anyhow::Result<usize> {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    let mut sent = 0;
    loop {
        tokio::select! {
            _ = stop.notified() => return Ok(sent),
            _ = tick.tick() => {
                let read = &reads[sent % reads.len()];
                let request = http
                    .get(format!("{alb}/orders/{}", read.order_id))
                    .header("cookie", &read.cookie);
                tokio::spawn(async move { request.send().await.map(|_| ()) });
                sent += 1;
            }
        }
    }
}
