//! The ways a batch's first copies are written, behind one [`Method`]. Each
//! is one write in one transaction, pipelined, and each ends in the key's
//! uniqueness: the method decides only how fast a batch is written, never
//! what is stored. Rows are named by their position in the batch.

use std::borrow::Cow;
use std::collections::HashSet;

use order_contract::RequestId;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Error};
use uuid::Uuid;

use super::bisect::bisect;
use super::fault::{Fault, judge, refusal};
use super::plan::{StoredHashes, Written};
use super::row::{Columns, Jsonb, Row};
use super::sql::{COPY_ORDERS, COPY_TYPES, INSERT_ORDERS, STORED_HASHES, insert_values};
use super::{Delivery, Refused, end_of_transaction, is_permanent};

/// Below this many rows a batch is written with one `INSERT … VALUES`, sent
/// with `BEGIN` and `COMMIT` (and the lookup, if any) as one round trip; from
/// it on, with a binary `COPY`, which costs another round trip but loads rows
/// faster (`scripts/bench consumer` measures both sides).
pub(super) const COPY_FROM_ROWS: usize = 50;

/// How a batch is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Method {
    /// First deliveries, fewer than [`COPY_FROM_ROWS`]: `BEGIN`, `INSERT …
    /// VALUES … ON CONFLICT DO NOTHING RETURNING` and `COMMIT` in one round
    /// trip; a row it skipped is stored already.
    Insert,
    /// First deliveries, from [`COPY_FROM_ROWS`] on: a binary `COPY` in two
    /// round trips (`BEGIN` and the `COPY`'s start; then the rows, the end of
    /// the `COPY` and `COMMIT`). A `COPY` that meets a stored key is redone
    /// with `INSERT … unnest … ON CONFLICT DO NOTHING RETURNING`.
    Copy,
    /// A small batch carrying a redelivery: the lookup of what is stored,
    /// `BEGIN`, the insert of every row and `COMMIT`, in one round trip.
    LookUpWithInsert,
    /// A larger batch carrying a redelivery: the lookup, `BEGIN` and the
    /// `COPY`'s start in one round trip; then only the rows not found.
    LookUpThenCopy,
}

impl Method {
    /// A batch carrying a redelivery is likely stored in part: look first, so
    /// that its `COPY` cannot fail on a stored key. A batch of first
    /// deliveries almost never is: write it at once, and let the key catch a
    /// retried POST.
    pub(super) fn for_batch(rows: usize, carries_a_redelivery: bool) -> Self {
        match (carries_a_redelivery, rows < COPY_FROM_ROWS) {
            (false, true) => Self::Insert,
            (false, false) => Self::Copy,
            (true, true) => Self::LookUpWithInsert,
            (true, false) => Self::LookUpThenCopy,
        }
    }

    /// Writes the rows at `which`, orders with distinct ids; rows
    /// PostgreSQL refuses for their data are bisected out and refused alone.
    pub(super) async fn write(
        self,
        client: &Client,
        rows: &[Row<'_>],
        which: &[usize],
    ) -> Result<Written, Error> {
        let attempt = match self {
            Self::Insert => insert_skipping_stored(client, rows, which).await,
            Self::Copy => copy(client, rows, which).await,
            Self::LookUpWithInsert => return insert_after_lookup(client, rows, which).await,
            Self::LookUpThenCopy => return copy_after_lookup(client, rows, which).await,
        };
        match attempt {
            Err(err) if is_permanent(&err) => write_bisecting(client, rows, which, Some(err)).await,
            attempt => attempt,
        }
    }
}

/// The lookup, `BEGIN`, an `INSERT … ON CONFLICT DO NOTHING` of every row and
/// `COMMIT`, all in one round trip. The lookup sees the table as it was
/// before the insert, so a row neither inserted nor found by it was stored by
/// someone else meanwhile: a race.
async fn insert_after_lookup(
    client: &Client,
    rows: &[Row<'_>],
    which: &[usize],
) -> Result<Written, Error> {
    let ids = order_ids(rows, which);
    let (looked_up, inserted) = tokio::join!(
        stored_hashes(client, &ids),
        insert_in_transaction(client, rows, which)
    );
    let stored_hashes = looked_up?;
    let (known, new) = partition_known(rows, which, &stored_hashes);
    let written = match inserted {
        Ok(inserted) => Written {
            stored: inserted.len() as u64,
            found_stored: new
                .into_iter()
                .filter(|&row| !inserted.contains(&rows[row].order_id()))
                .collect(),
            ..Written::default()
        },
        // The failed statement held the stored rows too: the refused row is
        // not known to be among the new ones until they are tried alone.
        Err(err) if is_permanent(&err) => write_bisecting(client, rows, &new, None).await?,
        Err(err) => return Err(err),
    };
    Ok(known_first(known, stored_hashes, written))
}

/// The lookup, `BEGIN` and the `COPY`'s start in one round trip; then the
/// rows not stored yet, the end of the `COPY` and `COMMIT`.
async fn copy_after_lookup(
    client: &Client,
    rows: &[Row<'_>],
    which: &[usize],
) -> Result<Written, Error> {
    let ids = order_ids(rows, which);
    // The rows are encoded while the lookup travels.
    let (looked_up, opened, ()) =
        tokio::join!(stored_hashes(client, &ids), open_copy(client), async {
            which.iter().for_each(|&row| rows[row].encode())
        });
    let stored_hashes = looked_up?;
    let writer = opened?;
    let (known, new) = partition_known(rows, which, &stored_hashes);
    let written = match copy_rows(client, writer, rows, &new).await {
        Ok(written) => written,
        Err(err) if is_permanent(&err) => write_bisecting(client, rows, &new, Some(err)).await?,
        Err(err) => return Err(err),
    };
    Ok(known_first(known, stored_hashes, written))
}

fn order_ids(rows: &[Row<'_>], which: &[usize]) -> Vec<Uuid> {
    which.iter().map(|&row| rows[row].order_id()).collect()
}

/// The rows the lookup found stored, and the new ones.
fn partition_known(
    rows: &[Row<'_>],
    which: &[usize],
    stored_hashes: &StoredHashes,
) -> (Vec<usize>, Vec<usize>) {
    which
        .iter()
        .partition(|&&row| stored_hashes.contains_key(&rows[row].order_id()))
}

/// What the write found, after what the lookup found.
fn known_first(known: Vec<usize>, stored_hashes: StoredHashes, written: Written) -> Written {
    let mut all = Written {
        found_stored: known,
        stored_hashes,
        ..Written::default()
    };
    all.absorb(written);
    all
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
/// them, one all-or-nothing [`copy`] a part, writes the rest, and judges
/// whose fault each refusal is ([`judge`]). `failed` is the permanent error
/// with which exactly these rows were refused as a whole, if they were. A
/// row refused is refused only if it is not stored: a stored order that a
/// newer constraint would refuse is found stored, like any other.
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

/// Why `refused` were refused, and what becomes of them: one line for a
/// row alone, one for the many refused alike.
fn log_refused(rows: &[Row<'_>], refused: &[usize], err: &Error, fault: Fault) {
    let error = support::error_chain(err);
    match (refused, fault) {
        ([], _) => {}
        ([row], Fault::Order) => tracing::warn!(
            message_id = %rows[*row].delivery.message_id,
            order_id = %rows[*row].order_id(),
            error,
            "PostgreSQL refused this order; it is reported failed on its own"
        ),
        ([row], Fault::Release) => tracing::warn!(
            message_id = %rows[*row].delivery.message_id,
            order_id = %rows[*row].order_id(),
            error,
            "PostgreSQL refused this order for a schema this build did not make (a release fault); it is postponed"
        ),
        (many, _) => tracing::warn!(
            rows = many.len(),
            error,
            "PostgreSQL refused most of the batch alike (a release fault); these orders are postponed"
        ),
    }
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

/// Writes `which` into the `COPY` that [`open_copy`] started and commits, the
/// end of the `COPY` and `COMMIT` sent together. The transaction is over
/// either way: after an error, PostgreSQL answers that `COMMIT` by rolling
/// back, and an error at commit (a deferred constraint) is never read as
/// success. When one of the rows is stored already, the rows are written
/// again with `INSERT … ON CONFLICT DO NOTHING`.
async fn copy_rows(
    client: &Client,
    writer: BinaryCopyInWriter,
    rows: &[Row<'_>],
    which: &[usize],
) -> Result<Written, Error> {
    let copied = async {
        let mut writer = std::pin::pin!(writer);
        for row in which.iter().map(|&row| &rows[row]) {
            let Delivery {
                message_id,
                placed,
                request_id,
                ..
            } = row.delivery;
            let order = &placed.order;
            writer
                .as_mut()
                .write(&[
                    &order.order_id(),
                    &order.customer_id(),
                    &order.currency(),
                    &Jsonb(row.items()),
                    &order.total_cents(),
                    &placed.received_at,
                    &message_id.as_str(),
                    &row.hash().as_slice(),
                    &request_id.as_ref().map(RequestId::as_str),
                    &placed.catalogue_version.as_deref(),
                ])
                .await?;
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
            insert_skipping_stored(client, rows, which).await
        }
        Err(err) => Err(err),
    }
}

/// Inserts what is not stored yet, in one transaction sent as one round trip;
/// the rows it did not write were found stored.
async fn insert_skipping_stored(
    client: &Client,
    rows: &[Row<'_>],
    which: &[usize],
) -> Result<Written, Error> {
    let inserted = insert_in_transaction(client, rows, which).await?;
    Ok(Written {
        stored: inserted.len() as u64,
        found_stored: which
            .iter()
            .copied()
            .filter(|&row| !inserted.contains(&rows[row].order_id()))
            .collect(),
        ..Written::default()
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_looked_up_first_only_when_it_carries_a_redelivery_and_copied_only_when_large() {
        let below = COPY_FROM_ROWS - 1;
        for (rows, redelivery, method) in [
            (1, false, Method::Insert),
            (below, false, Method::Insert),
            (COPY_FROM_ROWS, false, Method::Copy),
            (1, true, Method::LookUpWithInsert),
            (below, true, Method::LookUpWithInsert),
            (COPY_FROM_ROWS, true, Method::LookUpThenCopy),
            (10_000, true, Method::LookUpThenCopy),
        ] {
            assert_eq!(
                Method::for_batch(rows, redelivery),
                method,
                "{rows} rows, a redelivery: {redelivery}"
            );
        }
    }
}
