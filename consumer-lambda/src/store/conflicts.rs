//! Keeping conflicting newcomers aside in `order_conflicts`, once per
//! distinct content. Rows are named by their position in the batch.

use std::collections::HashSet;

use order_contract::RequestId;
use tokio_postgres::types::{Json, Type};
use tokio_postgres::{Client, Error};
use uuid::Uuid;

use super::Refused;
use super::bisect::bisect;
use super::fault::{judge, refusal};
use super::plan::Kept;
use super::row::Row;
use super::sql::{KEPT_CONFLICTS, RECORD_CONFLICTS};

/// Keeps the conflicting newcomers at `which`, [`bisect`]ing as orders are
/// written: a newcomer `order_conflicts` refuses fails only its own record
/// (the batch's orders are committed by now), unless it was kept before.
pub(super) async fn keep_conflicts(
    client: &Client,
    rows: &[Row<'_>],
    which: &[usize],
) -> Result<Kept, Error> {
    let (done, refused) = bisect(which.len(), None, refusal, move |part| {
        record_conflicts(client, rows, &which[part])
    })
    .await?
    .refused_in(which);
    let mut kept = Kept {
        kept_now: done.concat(),
        refused: Vec::new(),
    };
    if refused.is_empty() {
        return Ok(kept);
    }
    let faults = judge(&refused, which.len());
    // Each refused row, with the position of its error in `refused`.
    let alone: Vec<(usize, usize)> = refused
        .iter()
        .enumerate()
        .flat_map(|(error, (refused, _))| refused.iter().map(move |&row| (row, error)))
        .collect();
    let ids: Vec<Uuid> = alone.iter().map(|(row, _)| rows[*row].order_id()).collect();
    let hashes: Vec<&[u8]> = alone
        .iter()
        .map(|(row, _)| rows[*row].hash().as_slice())
        .collect();
    let kept_before = conflict_keys(
        &client
            .query_typed(
                KEPT_CONFLICTS,
                &[(&ids, Type::UUID_ARRAY), (&hashes, Type::BYTEA_ARRAY)],
            )
            .await?,
    );
    for (index, error) in alone {
        let row = &rows[index];
        if kept_before.contains(&(row.order_id(), *row.hash())) {
            continue;
        }
        let (err, fault) = (&refused[error].1, faults[error]);
        tracing::warn!(
            message_id = %row.delivery.message_id,
            order_id = %row.order_id(),
            error = %support::error_chain(err),
            ?fault,
            "order_conflicts refused this conflicting order; it is reported failed on its own, as the fault says"
        );
        kept.refused.push(Refused::by(index, err, fault));
    }
    Ok(kept)
}

/// `(order_id, content_sha256)` of each row.
fn conflict_keys(rows: &[tokio_postgres::Row]) -> HashSet<(Uuid, [u8; 32])> {
    rows.iter()
        .filter_map(|row| {
            let hash: &[u8] = row.get(1);
            Some((row.get(0), hash.try_into().ok()?))
        })
        .collect()
}

/// Keeps each newcomer at `which` once per content; the rows kept now.
async fn record_conflicts(
    client: &Client,
    rows: &[Row<'_>],
    which: &[usize],
) -> Result<Vec<usize>, Error> {
    let newcomers = || which.iter().map(|&row| &rows[row]);
    let order_ids: Vec<Uuid> = newcomers().map(Row::order_id).collect();
    let hashes: Vec<&[u8]> = newcomers().map(|row| row.hash().as_slice()).collect();
    let message_ids: Vec<&str> = newcomers()
        .map(|row| row.delivery.message_id.as_str())
        .collect();
    let request_ids: Vec<Option<&str>> = newcomers()
        .map(|row| row.delivery.request_id.as_ref().map(RequestId::as_str))
        .collect();
    let bodies: Vec<Json<serde_json::Value>> = newcomers()
        .map(|row| Json(serde_json::from_str(&row.delivery.placed.to_json()).unwrap_or_default()))
        .collect();
    let returned = client
        .query_typed(
            RECORD_CONFLICTS,
            &[
                (&order_ids, Type::UUID_ARRAY),
                (&hashes, Type::BYTEA_ARRAY),
                (&message_ids, Type::TEXT_ARRAY),
                (&request_ids, Type::TEXT_ARRAY),
                (&bodies, Type::JSONB_ARRAY),
            ],
        )
        .await?;
    // Two copies of one newcomer in a statement are kept once: the first claims it.
    let mut kept = conflict_keys(&returned);
    Ok(which
        .iter()
        .copied()
        .filter(|&row| kept.remove(&(rows[row].order_id(), *rows[row].hash())))
        .collect())
}
