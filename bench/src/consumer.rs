//! The consumer's bulk path against the two figures that frame it: the naive
//! baseline (one autocommitted INSERT per row, one round trip each, as typical
//! sample code does) and the ceiling (raw binary COPY, no idempotency).

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use consumer_lambda::{DatabaseConfig, Delivery, OrderStore, PgStore};
use order_contract::{Order, OrderPlaced};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, Type};
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

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

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

const COLUMNS: &str =
    "order_id, customer_id, currency, items, total_cents, received_at, sqs_message_id";

struct Figures {
    batch: usize,
    consumer: f64,
    naive: f64,
    ceiling: f64,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let config = DatabaseConfig::from_url(&args.database_url)?;
    let store = PgStore::new(config.clone(), 1).await?;
    store
        .migrate()
        .await
        .context("preparing the orders table")?;
    let (client, connection) = config
        .pg
        .connect(NoTls)
        .await
        .context("connecting to DATABASE_URL")?;
    tokio::spawn(connection);

    println!(
        "batch  consumer_rows/s  naive_rows/s  ceiling_rows/s  speedup_vs_naive  fraction_of_ceiling  one_duplicate_rows/s"
    );
    let mut all = Vec::new();
    for &batch in &args.batch_sizes {
        let rows = args.rows.max(batch * 5);
        // Interleaved rounds, median of each: the machine's noise hits all three alike.
        let (mut consumer, mut naive, mut ceiling, mut fallback) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.rounds {
            consumer.push(
                measure(&client, &orders(rows), batch, |chunk| async {
                    store.insert(&refs(chunk)).await?;
                    Ok(())
                })
                .await?,
            );
            naive.push(measure_naive(&client, &orders(args.naive_rows)).await?);
            ceiling
                .push(measure(&client, &orders(rows), batch, |chunk| copy(&client, chunk)).await?);
            fallback.push(
                measure_with_a_duplicate_per_batch(&client, &store, &orders(rows), batch).await?,
            );
        }
        let figures = Figures {
            batch,
            consumer: median(consumer),
            naive: median(naive),
            ceiling: median(ceiling),
        };
        println!(
            "{:>5}  {:>15.0}  {:>12.0}  {:>14.0}  {:>16.1}  {:>19.2}  {:>22.0}",
            batch,
            figures.consumer,
            figures.naive,
            figures.ceiling,
            figures.consumer / figures.naive,
            figures.consumer / figures.ceiling,
            median(fallback),
        );
        all.push(figures);
    }
    if let Some(f) = all.iter().find(|f| f.batch == 1000).or(all.last()) {
        println!(
            "consumer batch={} rows_per_s={:.0} naive_rows_per_s={:.0} ceiling_rows_per_s={:.0} speedup_vs_naive={:.1} fraction_of_ceiling={:.2}",
            f.batch,
            f.consumer,
            f.naive,
            f.ceiling,
            f.consumer / f.naive,
            f.consumer / f.ceiling
        );
    }
    Ok(())
}

/// Rows/s of `insert` over `orders` in chunks of `batch`, on an emptied table.
async fn measure<'a, F, Fut>(
    client: &Client,
    orders: &'a [Delivery],
    batch: usize,
    mut insert: F,
) -> anyhow::Result<f64>
where
    F: FnMut(&'a [Delivery]) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    reset(client).await?;
    let started = Instant::now();
    for chunk in orders.chunks(batch) {
        insert(chunk).await?;
    }
    Ok(rate(orders.len(), started.elapsed()))
}

/// The consumer's path when every batch holds one order stored before (a
/// redelivery): the COPY fails on it and the batch is inserted with ON CONFLICT.
async fn measure_with_a_duplicate_per_batch(
    client: &Client,
    store: &PgStore,
    orders: &[Delivery],
    batch: usize,
) -> anyhow::Result<f64> {
    reset(client).await?;
    for chunk in orders.chunks(batch) {
        if let Some(last) = chunk.last() {
            store.insert(&[last]).await?;
        }
    }
    let started = Instant::now();
    for chunk in orders.chunks(batch) {
        store.insert(&refs(chunk)).await?;
    }
    Ok(rate(orders.len(), started.elapsed()))
}

async fn measure_naive(client: &Client, orders: &[Delivery]) -> anyhow::Result<f64> {
    reset(client).await?;
    let statement = client
        .prepare(&format!(
            "INSERT INTO orders ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (order_id) DO NOTHING"
        ))
        .await?;
    let started = Instant::now();
    for Delivery {
        message_id, placed, ..
    } in orders
    {
        let order = &placed.order;
        client
            .execute(
                &statement,
                &[
                    &order.order_id(),
                    &order.customer_id(),
                    &order.currency(),
                    &Json(order.items()),
                    &order.total_cents(),
                    &placed.received_at,
                    &message_id.as_str(),
                ],
            )
            .await?;
    }
    Ok(rate(orders.len(), started.elapsed()))
}

/// The ceiling: binary COPY straight into the table, one transaction per batch.
async fn copy(client: &Client, orders: &[Delivery]) -> anyhow::Result<()> {
    let sink = client
        .copy_in(&format!(
            "COPY orders ({COLUMNS}) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    let types = [
        Type::UUID,
        Type::TEXT,
        Type::BPCHAR,
        Type::JSONB,
        Type::INT8,
        Type::TIMESTAMPTZ,
        Type::TEXT,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    futures::pin_mut!(writer);
    for Delivery {
        message_id, placed, ..
    } in orders
    {
        let order = &placed.order;
        writer
            .as_mut()
            .write(&[
                &order.order_id(),
                &order.customer_id(),
                &order.currency(),
                &Json(order.items()),
                &order.total_cents(),
                &placed.received_at,
                &message_id.as_str(),
            ])
            .await?;
    }
    writer.finish().await?;
    Ok(())
}

fn refs(deliveries: &[Delivery]) -> Vec<&Delivery> {
    deliveries.iter().collect()
}

async fn reset(client: &Client) -> anyhow::Result<()> {
    client.batch_execute("TRUNCATE orders; CHECKPOINT").await?;
    Ok(())
}

fn rate(rows: usize, elapsed: Duration) -> f64 {
    rows as f64 / elapsed.as_secs_f64()
}

/// Realistic orders: one to five line items, fresh ids, as the producer would send.
fn orders(count: usize) -> Vec<Delivery> {
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
                message_id: Uuid::new_v4().to_string(),
                placed: OrderPlaced::new(order, Utc::now()),
                request_id: None,
            }
        })
        .collect()
}
