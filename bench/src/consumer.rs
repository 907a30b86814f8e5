//! The consumer's bulk path against the two figures that frame it: the naive
//! baseline (one autocommitted INSERT per row, one round trip each, as typical
//! sample code does) and the ceiling: the fastest known way to load the same
//! rows (all nine columns, hashes computed beforehand, no idempotency), measured
//! at each batch size in the same run: raw binary COPY, `unnest` arrays with
//! ON CONFLICT, or multi-row VALUES, each in a transaction whose BEGIN and
//! COMMIT travel pipelined with the statements, as the consumer's do.

use std::time::Instant;

use anyhow::Context;
use chrono::Utc;
use consumer_lambda::migrations::{DEFAULT_WRITER, Role, connect_and_prepare};
use consumer_lambda::{DatabaseConfig, Delivery, MessageId, OrderStore, PgStore};
use order_contract::{Order, OrderPlaced, RequestId};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, ToSql, Type};
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

use crate::markdown::thousands;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A database the benchmark may fill and truncate (it creates `orders` if missing).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000,10000")]
    batch_sizes: Vec<usize>,
    /// Rows per measurement of the bulk paths (at least five batches are always run).
    #[arg(long, default_value_t = 20_000)]
    rows: usize,
    /// Rows per measurement of the naive baseline, which is slow by design.
    #[arg(long, default_value_t = 2_000)]
    naive_rows: usize,
    /// Rounds per figure; the median is printed.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

const COLUMNS: &str = "order_id, customer_id, currency, items, total_cents, received_at, \
    sqs_message_id, content_sha256, request_id, catalogue_version";

/// The consumer's own column types, so the ceiling loads exactly its rows.
const TYPES: [Type; 10] = consumer_lambda::store::COPY_TYPES;

/// PostgreSQL takes at most 65,535 parameters per statement: 10 per row.
const VALUES_ROWS_PER_STATEMENT: usize = 6_000;

struct Figures {
    batch: usize,
    consumer: f64,
    naive: f64,
    ceiling: f64,
    duplicate: f64,
    retried_post: f64,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let config = DatabaseConfig::from_url(&args.database_url)?;
    let writer = Role::writer(DEFAULT_WRITER, None)?;
    connect_and_prepare(config.clone(), &[writer])
        .await
        .context("preparing the orders table")?;
    // As the consumer runs: as the writer role (the servers here trust local users).
    let mut writer_config = config.clone();
    writer_config.pg.user(DEFAULT_WRITER);
    let store = PgStore::new(writer_config, 1).await?;
    let (client, connection) = config
        .pg
        .connect(NoTls)
        .await
        .context("connecting to DATABASE_URL")?;
    tokio::spawn(connection);

    println!("Rows/s, median of {} interleaved rounds:\n", args.rounds);
    println!(
        "| batch | consumer | naive | `COPY` | `unnest` | `VALUES` | ceiling | fraction of ceiling | one redelivery | fraction | one retried POST | fraction |"
    );
    println!(
        "| ---: | ---: | ---: | ---: | ---: | ---: | :--- | ---: | ---: | ---: | ---: | ---: |"
    );
    let mut all = Vec::new();
    for &batch in &args.batch_sizes {
        let rows = args.rows.max(batch * 5);
        // Interleaved rounds, median of each: the machine's noise hits all alike.
        let mut consumer = Vec::new();
        let mut naive = Vec::new();
        let mut ceilings: [Vec<f64>; 3] = Default::default();
        let mut duplicate = Vec::new();
        let mut retried_post = Vec::new();
        for _ in 0..args.rounds {
            let fresh = orders(rows);
            reset(&client).await?;
            consumer.push(timed(rows, store_all(&store, fresh.chunks(batch))).await?);
            naive.push(measure_naive(&client, &orders(args.naive_rows)).await?);
            for (method, figures) in Method::ALL.iter().zip(&mut ceilings) {
                let fresh = orders(rows);
                let hashes = hashes(&fresh);
                reset(&client).await?;
                figures.push(timed(rows, method.load(&client, &fresh, &hashes, batch)).await?);
            }
            for (again, figures) in [
                (Again::Redelivered, &mut duplicate),
                (Again::RetriedPost, &mut retried_post),
            ] {
                let batches =
                    with_a_duplicate_per_batch(&client, &store, rows, batch, again).await?;
                figures
                    .push(timed(rows, store_all(&store, batches.iter().map(Vec::as_slice))).await?);
            }
        }
        let ceilings = ceilings.map(median);
        let best = (0..ceilings.len())
            .max_by(|&a, &b| ceilings[a].total_cmp(&ceilings[b]))
            .unwrap_or(0);
        let figures = Figures {
            batch,
            consumer: median(consumer),
            naive: median(naive),
            ceiling: ceilings[best],
            duplicate: median(duplicate),
            retried_post: median(retried_post),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | `{}` | {:.2} | {} | {:.2} | {} | {:.2} |",
            thousands(batch as f64),
            thousands(figures.consumer),
            thousands(figures.naive),
            thousands(ceilings[0]),
            thousands(ceilings[1]),
            thousands(ceilings[2]),
            Method::NAMES[best],
            figures.consumer / figures.ceiling,
            thousands(figures.duplicate),
            figures.duplicate / figures.ceiling,
            thousands(figures.retried_post),
            figures.retried_post / figures.ceiling,
        );
        all.push(figures);
    }
    if let Some(f) = all.iter().find(|f| f.batch == 1000).or(all.last()) {
        println!();
        println!(
            "consumer batch={} rows_per_s={:.0} naive_rows_per_s={:.0} ceiling_rows_per_s={:.0} speedup_vs_naive={:.1} fraction_of_ceiling={:.2} dup_fraction_of_ceiling={:.2} retry_fraction_of_ceiling={:.2}",
            f.batch,
            f.consumer,
            f.naive,
            f.ceiling,
            f.consumer / f.naive,
            f.consumer / f.ceiling,
            f.duplicate / f.ceiling,
            f.retried_post / f.ceiling,
        );
    }
    Ok(())
}

/// The ways to load rows that compete for the ceiling.
#[derive(Debug, Clone, Copy)]
enum Method {
    Copy,
    Unnest,
    Values,
}

impl Method {
    const ALL: [Method; 3] = [Method::Copy, Method::Unnest, Method::Values];
    /// As the table's columns name them.
    const NAMES: [&str; 3] = ["COPY", "unnest", "VALUES"];

    /// Loads `orders` a transaction per `batch`.
    async fn load(
        self,
        client: &Client,
        orders: &[Delivery],
        hashes: &[[u8; 32]],
        batch: usize,
    ) -> anyhow::Result<()> {
        for (orders, hashes) in orders.chunks(batch).zip(hashes.chunks(batch)) {
            match self {
                Method::Copy => copy(client, orders, hashes).await?,
                Method::Unnest => unnest(client, orders, hashes).await?,
                Method::Values => values(client, orders, hashes).await?,
            }
        }
        Ok(())
    }
}

/// Rows/s of `rows` rows written by `write`.
async fn timed(
    rows: usize,
    write: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    write.await?;
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

/// The consumer's bulk insert of each batch.
async fn store_all<'a>(
    store: &PgStore,
    batches: impl Iterator<Item = &'a [Delivery]>,
) -> anyhow::Result<()> {
    for batch in batches {
        store.insert(&refs(batch)).await?;
    }
    Ok(())
}

/// The content hashes, computed ahead of the clock.
fn hashes(orders: &[Delivery]) -> Vec<[u8; 32]> {
    let hash = |o: &Delivery| consumer_lambda::store::content_hash(&o.placed);
    orders.iter().map(hash).collect()
}

/// How the order stored before reaches the batch again. The store writes
/// both alike (the lookup travels with the write, which skips what it
/// found); they differ in the message: the same one, or a new one.
#[derive(Debug, Clone, Copy)]
enum Again {
    /// SQS delivers its message again (receive count above 1).
    Redelivered,
    /// A client retried its POST: a new message for the same order.
    RetriedPost,
}

/// Fresh batches of `rows` orders on an emptied table, each holding one
/// order stored before, as its last row.
async fn with_a_duplicate_per_batch(
    client: &Client,
    store: &PgStore,
    rows: usize,
    batch: usize,
    again: Again,
) -> anyhow::Result<Vec<Vec<Delivery>>> {
    reset(client).await?;
    let mut batches: Vec<Vec<Delivery>> = orders(rows).chunks(batch).map(<[_]>::to_vec).collect();
    for chunk in &mut batches {
        if let Some(last) = chunk.last_mut() {
            store.insert(&[last]).await?;
            if let Again::RetriedPost = again {
                last.message_id = new_message_id();
            }
        }
    }
    Ok(batches)
}

async fn measure_naive(client: &Client, orders: &[Delivery]) -> anyhow::Result<f64> {
    reset(client).await?;
    let statement = client
        .prepare(&format!(
            "INSERT INTO orders ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (order_id) DO NOTHING"
        ))
        .await?;
    timed(orders.len(), async {
        // The naive sample code hashes too: the same rows.
        let hashes = hashes(orders);
        let columns = Columns::of(orders, &hashes);
        for i in 0..orders.len() {
            client.execute(&statement, &columns.row(i)).await?;
        }
        Ok(())
    })
    .await
}

/// Raw binary COPY.
async fn copy(client: &Client, orders: &[Delivery], hashes: &[[u8; 32]]) -> anyhow::Result<()> {
    let copy = format!("COPY orders ({COLUMNS}) FROM STDIN (FORMAT binary)");
    let (begun, sink) = tokio::join!(client.batch_execute("BEGIN"), client.copy_in(&copy));
    begun?;
    let writer = BinaryCopyInWriter::new(sink?, &TYPES);
    futures::pin_mut!(writer);
    let columns = Columns::of(orders, hashes);
    for i in 0..orders.len() {
        writer.as_mut().write(&columns.row(i)).await?;
    }
    let (copied, committed) = tokio::join!(writer.finish(), client.batch_execute("COMMIT"));
    copied?;
    committed?;
    Ok(())
}

/// One array per column, `unnest`ed into rows, with ON CONFLICT.
async fn unnest(client: &Client, orders: &[Delivery], hashes: &[[u8; 32]]) -> anyhow::Result<()> {
    let c = Columns::of(orders, hashes);
    let sql = format!(
        "INSERT INTO orders ({COLUMNS}) SELECT * FROM unnest($1::uuid[], $2::text[], \
                 $3::text[], $4::jsonb[], $5::int8[], $6::timestamptz[], $7::text[], $8::bytea[], \
                 $9::text[], $10::text[]) ON CONFLICT (order_id) DO NOTHING"
    );
    let params: [(&(dyn ToSql + Sync), Type); 10] = [
        (&c.ids, Type::UUID_ARRAY),
        (&c.customers, Type::TEXT_ARRAY),
        (&c.currencies, Type::TEXT_ARRAY),
        (&c.items, Type::JSONB_ARRAY),
        (&c.totals, Type::INT8_ARRAY),
        (&c.received, Type::TIMESTAMPTZ_ARRAY),
        (&c.messages, Type::TEXT_ARRAY),
        (&c.hashes, Type::BYTEA_ARRAY),
        (&c.requests, Type::TEXT_ARRAY),
        (&c.catalogue_versions, Type::TEXT_ARRAY),
    ];
    in_transaction(client, client.execute_typed(&sql, &params)).await
}

/// The rows turned inside out: one vector per column.
struct Columns<'a> {
    ids: Vec<Uuid>,
    customers: Vec<&'a str>,
    currencies: Vec<&'a str>,
    items: Vec<Json<&'a [order_contract::LineItem]>>,
    totals: Vec<i64>,
    received: Vec<chrono::DateTime<Utc>>,
    messages: Vec<&'a str>,
    hashes: Vec<&'a [u8]>,
    requests: Vec<Option<&'a str>>,
    catalogue_versions: Vec<Option<&'a str>>,
}

impl<'a> Columns<'a> {
    fn of(orders: &'a [Delivery], hashes: &'a [[u8; 32]]) -> Self {
        let order = |o: &'a Delivery| &o.placed.order;
        Self {
            ids: orders.iter().map(|o| order(o).order_id()).collect(),
            customers: orders.iter().map(|o| order(o).customer_id()).collect(),
            currencies: orders.iter().map(|o| order(o).currency()).collect(),
            items: orders.iter().map(|o| Json(order(o).items())).collect(),
            totals: orders.iter().map(|o| order(o).total_cents()).collect(),
            received: orders.iter().map(|o| o.placed.received_at).collect(),
            messages: orders.iter().map(|o| o.message_id.as_str()).collect(),
            hashes: hashes.iter().map(|h| h.as_slice()).collect(),
            requests: orders
                .iter()
                .map(|o| o.request_id.as_ref().map(RequestId::as_str))
                .collect(),
            catalogue_versions: orders
                .iter()
                .map(|o| o.placed.catalogue_version.as_deref())
                .collect(),
        }
    }

    /// Row `i`'s ten cells, in `COLUMNS` order.
    fn row(&self, i: usize) -> [&(dyn ToSql + Sync); 10] {
        [
            &self.ids[i],
            &self.customers[i],
            &self.currencies[i],
            &self.items[i],
            &self.totals[i],
            &self.received[i],
            &self.messages[i],
            &self.hashes[i],
            &self.requests[i],
            &self.catalogue_versions[i],
        ]
    }
}

/// Multi-row `VALUES` statements (one per 6,000 rows: the parameter limit).
async fn values(client: &Client, orders: &[Delivery], hashes: &[[u8; 32]]) -> anyhow::Result<()> {
    let columns = Columns::of(orders, hashes);
    let mut statements = Vec::new();
    for start in (0..orders.len()).step_by(VALUES_ROWS_PER_STATEMENT) {
        let end = orders.len().min(start + VALUES_ROWS_PER_STATEMENT);
        let cells: Vec<String> = (1..=(end - start) * TYPES.len())
            .map(|n| format!("${n}"))
            .collect();
        let rows: Vec<String> = cells
            .chunks(TYPES.len())
            .map(|row| format!("({})", row.join(",")))
            .collect();
        let sql = format!("INSERT INTO orders ({COLUMNS}) VALUES {}", rows.join(","));
        let params: Vec<(&(dyn ToSql + Sync), Type)> = (start..end)
            .flat_map(|i| columns.row(i).into_iter().zip(TYPES.iter().cloned()))
            .collect();
        statements.push((sql, params));
    }
    in_transaction(
        client,
        futures::future::try_join_all(
            statements
                .iter()
                .map(|(sql, params)| client.execute_typed(sql, params)),
        ),
    )
    .await
}

/// Runs `statements` in a transaction, `BEGIN` and `COMMIT` sent with them
/// (pipelined: one round trip, as the consumer's own writes are).
async fn in_transaction<T>(
    client: &Client,
    statements: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> anyhow::Result<()> {
    let (begun, done, committed) = tokio::join!(
        client.batch_execute("BEGIN"),
        statements,
        client.batch_execute("COMMIT")
    );
    begun?;
    done?;
    committed?;
    Ok(())
}

pub(crate) fn refs(deliveries: &[Delivery]) -> Vec<&Delivery> {
    deliveries.iter().collect()
}

async fn reset(client: &Client) -> anyhow::Result<()> {
    client.batch_execute("TRUNCATE orders; CHECKPOINT").await?;
    Ok(())
}

/// Realistic orders: one to five line items, fresh ids, as the producer would send.
pub(crate) fn orders(count: usize) -> Vec<Delivery> {
    (0..count)
        .map(|n| {
            let items: Vec<String> = (0..n % 5 + 1)
                .map(|line| {
                    format!(
                        r#"{{"sku":"SKU-{n}-{line}","quantity":{},"unit_price_cents":{}}}"#,
                        line + 1,
                        199 + n % 5000
                    )
                })
                .collect();
            let json = format!(
                r#"{{"order_id":"{}","customer_id":"cust-{}","currency":"EUR","items":[{}]}}"#,
                Uuid::new_v4(),
                n % 10_000,
                items.join(",")
            );
            let order = Order::from_request_json(&json)
                .unwrap_or_else(|err| unreachable!("generated order is valid: {err}"));
            Delivery {
                message_id: new_message_id(),
                placed: OrderPlaced::new(order, Utc::now()),
                request_id: None,
            }
        })
        .collect()
}

/// A message id as SQS would give one: a fresh UUID, never empty.
fn new_message_id() -> MessageId {
    MessageId::new(Uuid::new_v4().to_string())
        .unwrap_or_else(|_| unreachable!("a UUID is never empty"))
}
