//! Writing a batch's first copies: one write in one transaction, pipelined,
//! ending in the key's uniqueness. Rows are named by their position in the batch.

use std::borrow::Cow;
use std::collections::HashSet;

use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Error};
use uuid::Uuid;

use super::bisect::bisect;
use super::fault::{Fault, judge, refusal};
use super::plan::{StoredHashes, Written};
use super::row::{Columns, Row};
use super::sql::{COPY_ORDERS, COPY_TYPES, INSERT_ORDERS, STORED_HASHES, insert_values};
use super::{Refused, end_of_transaction, is_permanent};

/// Below this many rows a batch is written with one `INSERT … VALUES`, sent
/// with the lookup, `BEGIN` and `COMMIT` as one round trip; from it on, with a
/// binary `COPY`, which costs another round trip but loads rows faster
/// (`scripts/bench consumer` measures both sides).
pub(super) const COPY_FROM_ROWS: usize = 50;

/// Writes the rows at `which` (distinct ids) with a lookup of those stored
/// already in the same round trip: small batches send it with `BEGIN`, an
/// `INSERT … ON CONFLICT DO NOTHING` and `COMMIT`; large ones with `BEGIN`
/// and the `COPY`'s start, then copy only the rows not found. A row neither
/// written nor found was stored meanwhile by someone else: the key catches it.
pub(super) async fn write(
    client: &Client,
    rows: &[Row<'_>],
    which: &[usize],
) -> Result<Written, Error> {
    let ids: Vec<Uuid> = which.iter().map(|&row| rows[row].order_id()).collect();
    let known_and_new = |stored_hashes: &StoredHashes| -> (Vec<usize>, Vec<usize>) {
        which
            .iter()
            .partition(|&&row| stored_hashes.contains_key(&rows[row].order_id()))
    };
    let (stored_hashes, known, written) = if which.len() < COPY_FROM_ROWS {
        let (looked_up, inserted) = tokio::join!(
            stored_hashes(client, &ids),
            insert_in_transaction(client, rows, which)
        );
        let stored_hashes = looked_up?;
        let (known, new) = known_and_new(&stored_hashes);
        let written = match inserted {
            Ok(inserted) => skipped(rows, &new, &inserted),
            // The failed statement held the stored rows too: the refused row is
            // not known to be among the new ones until they are tried alone.
            Err(err) if is_permanent(&err) => write_bisecting(client, rows, &new, None).await?,
            Err(err) => return Err(err),
        };
        (stored_hashes, known, written)
    } else {
        // The rows are encoded while the lookup travels.
        let (looked_up, opened, ()) =
            tokio::join!(stored_hashes(client, &ids), open_copy(client), async {
                which.iter().for_each(|&row| _ = rows[row].encoded())
            });
        let stored_hashes = looked_up?;
        let writer = opened?;
        let (known, new) = known_and_new(&stored_hashes);
        let written = match copy_rows(client, writer, rows, &new).await {
            Ok(written) => written,
            Err(err) if is_permanent(&err) => {
                write_bisecting(client, rows, &new, Some(err)).await?
            }
            Err(err) => return Err(err),
        };
        (stored_hashes, known, written)
    };
    let mut all = Written {
        found_stored: known,
        stored_hashes,
        ..Written::default()
    };
    all.absorb(written);
    Ok(all)
}

/// The stored content hash of each of `ids` that is stored.
pub(super) async fn stored_hashes(client: &Client, ids: &[Uuid]) -> Result<StoredHashes, Error> {
    if ids.is_empty() {
        return Ok(StoredHashes::new());
    }
    let rows = client
        .query_typed(STORED_HASHES, &[(&ids, Type::UUID_ARRAY)])
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let hash: Option<&[u8]> = row.get(1);
            (row.get(0), hash.and_then(|h| h.try_into().ok()))
        })
        .collect())
}

/// Writes `which` when PostgreSQL refuses some for their data: [`bisect`]s
/// them, one [`copy`] a part, and [`judge`]s each refusal. `failed` is the
/// error these rows were refused with as a whole, if they were. A refused
/// row that is stored already is found stored, not refused.
async fn write_bisecting(
    client: &Client,
    rows: &[Row<'_>],
    which: &[usize],
    failed: Option<Error>,
) -> Result<Written, Error> {
    let (done, refused) = bisect(which.len(), failed, refusal, move |part| {
        copy(client, rows, &which[part])
    })
    .await?
    .refused_in(which);
    let mut written = Written::default();
    for part in done {
        written.absorb(part);
    }
    if refused.is_empty() {
        return Ok(written);
    }
    let faults = judge(&refused, which.len());
    let ids: Vec<Uuid> = refused
        .iter()
        .flat_map(|(refused, _)| refused.iter().map(|&row| rows[row].order_id()))
        .collect();
    let stored = stored_hashes(client, &ids).await?;
    for ((refused, err), fault) in refused.into_iter().zip(faults) {
        let (found, not_stored): (Vec<usize>, Vec<usize>) = refused
            .into_iter()
            .partition(|&row| stored.contains_key(&rows[row].order_id()));
        written.found_stored.extend(found);
        log_refused(rows, &not_stored, &err, fault);
        written.refused.extend(
            not_stored
                .into_iter()
                .map(|index| Refused::by(index, &err, fault)),
        );
    }
    written.stored_hashes.extend(stored);
    Ok(written)
}

fn log_refused(rows: &[Row<'_>], refused: &[usize], err: &Error, fault: Fault) {
    let Some(first) = refused.first().map(|&row| &rows[row]) else {
        return;
    };
    tracing::warn!(
        rows = refused.len(),
        message_id = %first.delivery.message_id,
        order_id = %first.order_id(),
        error = %support::error_chain(err),
        ?fault,
        "PostgreSQL refused these orders: the order's fault fails them alone, the release's postpones them"
    );
}

/// One all-or-nothing write of `which` in its own transaction.
async fn copy(client: &Client, rows: &[Row<'_>], which: &[usize]) -> Result<Written, Error> {
    let writer = open_copy(client).await?;
    copy_rows(client, writer, rows, which).await
}

/// `BEGIN` and the start of a binary `COPY`, sent together.
async fn open_copy(client: &Client) -> Result<BinaryCopyInWriter, Error> {
    let (begun, started) = tokio::join!(client.batch_execute("BEGIN"), client.copy_in(COPY_ORDERS));
    begun?;
    Ok(BinaryCopyInWriter::new(started?, &COPY_TYPES))
}

/// Writes `which` into the `COPY` that [`open_copy`] started and commits,
/// the end of the `COPY` and `COMMIT` sent together (after an error,
/// PostgreSQL answers that `COMMIT` by rolling back). When a row is stored
/// already, the rows go again with `INSERT … ON CONFLICT DO NOTHING`.
async fn copy_rows(
    client: &Client,
    writer: BinaryCopyInWriter,
    rows: &[Row<'_>],
    which: &[usize],
) -> Result<Written, Error> {
    let columns = Columns::of(rows, which);
    let copied = async {
        let mut writer = std::pin::pin!(writer);
        for i in 0..columns.len() {
            writer.as_mut().write(&columns.row(i)).await?;
        }
        writer.finish().await
    };
    let (copied, committed) = tokio::join!(copied, client.batch_execute(end_of_transaction()));
    match copied.and_then(|stored| committed.map(|()| stored)) {
        Ok(stored) => Ok(Written {
            stored,
            ..Written::default()
        }),
        Err(err) if err.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            tracing::debug!("an order of the batch is stored already; inserting with ON CONFLICT");
            let inserted = insert_in_transaction(client, rows, which).await?;
            Ok(skipped(rows, which, &inserted))
        }
        Err(err) => Err(err),
    }
}

/// The rows of `which` an insert that wrote `inserted` skipped were found stored.
fn skipped(rows: &[Row<'_>], which: &[usize], inserted: &HashSet<Uuid>) -> Written {
    Written {
        stored: inserted.len() as u64,
        found_stored: which
            .iter()
            .copied()
            .filter(|&row| !inserted.contains(&rows[row].order_id()))
            .collect(),
        ..Written::default()
    }
}

/// `BEGIN`, `INSERT … ON CONFLICT DO NOTHING RETURNING` and `COMMIT`, sent
/// together; the ids written.
async fn insert_in_transaction(
    client: &Client,
    rows: &[Row<'_>],
    which: &[usize],
) -> Result<HashSet<Uuid>, Error> {
    let columns = Columns::of(rows, which);
    let (sql, params) = if which.len() < COPY_FROM_ROWS {
        (Cow::Owned(insert_values(which.len())), columns.by_row())
    } else {
        (Cow::Borrowed(INSERT_ORDERS), columns.as_arrays())
    };
    let (begun, inserted, committed) = tokio::join!(
        client.batch_execute("BEGIN"),
        client.query_typed(&sql, &params),
        client.batch_execute(end_of_transaction()),
    );
    begun?;
    let inserted = inserted?.iter().map(|row| row.get(0)).collect();
    committed?;
    Ok(inserted)
}
