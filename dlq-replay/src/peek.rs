//! `peek`: the DLQ's messages, read without consuming them.
//!
//! SQS has no "look without receiving", so peek receives with a short visibility
//! timeout, keeps what it got hidden while it gathers more (otherwise SQS would
//! hand the same messages back), and makes them all visible again at once.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Write};

use aws_sdk_sqs::Client;
use chrono::{DateTime, Utc};
use order_contract::FailureClass;
use serde::Serialize;
use tracing::debug;

use crate::inspect::{MessageView, excerpt};
use crate::queues::{Held, MAX_BATCH, QueueInfo, SqsError, describe, receive};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeekOptions {
    /// Stop after this many messages.
    pub max: usize,
    /// How long the messages stay hidden at most, should peek die before it
    /// releases them.
    pub visibility_timeout_secs: u32,
}

impl Default for PeekOptions {
    fn default() -> Self {
        Self {
            max: 100,
            visibility_timeout_secs: 10,
        }
    }
}

/// What `peek` saw.
#[derive(Debug, Clone)]
pub struct Peeked {
    /// The DLQ's counts before the look.
    pub queue: QueueInfo,
    pub messages: Vec<MessageView>,
}

/// Gathers up to `options.max` messages, then makes them visible again.
/// Stops early on an empty receive, or on one that brings only messages it has
/// seen (their visibility timeout ran out while it gathered).
pub async fn peek(sqs: &Client, dlq_url: &str, options: PeekOptions) -> Result<Peeked, SqsError> {
    let queue = describe(sqs, dlq_url).await?;
    let mut held = Held::default();
    let result = gather(sqs, dlq_url, options, &mut held).await;
    held.release(sqs, dlq_url).await;
    Ok(Peeked {
        queue,
        messages: result?,
    })
}

async fn gather(
    sqs: &Client,
    dlq_url: &str,
    options: PeekOptions,
    held: &mut Held,
) -> Result<Vec<MessageView>, SqsError> {
    let mut seen = HashSet::new();
    let mut views = Vec::new();
    while views.len() < options.max {
        let want = (options.max - views.len()).min(MAX_BATCH);
        let received = receive(sqs, dlq_url, want, options.visibility_timeout_secs).await?;
        let mut fresh = 0;
        for message in &received {
            let id = message.message_id().unwrap_or_default();
            held.hold(id, message.receipt_handle().unwrap_or_default());
            if seen.insert(id.to_owned()) {
                fresh += 1;
                views.push(MessageView::new(message));
            }
        }
        debug!(received = received.len(), fresh, "peek receive");
        if fresh == 0 {
            break;
        }
    }
    views.truncate(options.max);
    Ok(views)
}

/// An aligned table, one row per message, for people.
pub fn write_table(out: &mut dyn Write, peeked: &Peeked) -> io::Result<()> {
    let headers = [
        "MESSAGE ID",
        "ORDER ID",
        "RECEIVES",
        "FIRST RECEIVED",
        "SENT",
        "BYTES",
        "EXCERPT",
        "CLASS",
        "DETAIL",
    ];
    let rows: Vec<[String; 9]> = peeked
        .messages
        .iter()
        .map(|m| {
            [
                m.message_id.clone(),
                m.order_id.clone().unwrap_or_else(|| "-".to_owned()),
                m.receive_count
                    .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                time(m.first_received_at),
                time(m.sent_at),
                m.size_bytes.to_string(),
                m.excerpt.clone(),
                m.failure_class.to_string(),
                detail_cell(m.failure_detail.as_deref()),
            ]
        })
        .collect();
    write_aligned(out, &headers, &rows, &[2, 5])?;
    let invalid = peeked.messages.iter().filter(|m| !m.is_valid()).count();
    writeln!(
        out,
        "\n{} shown ({} valid, {invalid} invalid) of about {} in {} ({} in flight before this look); they are visible again",
        peeked.messages.len(),
        peeked.messages.len() - invalid,
        peeked.queue.visible,
        peeked.queue.url,
        peeked.queue.in_flight,
    )
}

/// One class of failure among the messages peek saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReasonGroup {
    #[serde(serialize_with = "crate::inspect::class_name")]
    pub class: FailureClass,
    pub count: usize,
    /// The earliest and the latest sent time among them (SentTimestamp).
    pub oldest: Option<DateTime<Utc>>,
    pub newest: Option<DateTime<Utc>>,
    /// The detail of one of them (the oldest that has one).
    pub example_detail: Option<String>,
}

/// The messages grouped by failure class, the largest group first.
pub fn group_by_reason(messages: &[MessageView]) -> Vec<ReasonGroup> {
    let mut groups: BTreeMap<FailureClass, ReasonGroup> = BTreeMap::new();
    let mut by_age: Vec<&MessageView> = messages.iter().collect();
    // Oldest first, so that the example detail is the oldest one's.
    by_age.sort_by_key(|m| m.sent_at);
    for message in by_age {
        let group = groups
            .entry(message.failure_class)
            .or_insert_with(|| ReasonGroup {
                class: message.failure_class,
                count: 0,
                oldest: None,
                newest: None,
                example_detail: None,
            });
        group.count += 1;
        if let Some(sent) = message.sent_at {
            group.oldest = Some(group.oldest.map_or(sent, |t| t.min(sent)));
            group.newest = Some(group.newest.map_or(sent, |t| t.max(sent)));
        }
        if group.example_detail.is_none() {
            group.example_detail.clone_from(&message.failure_detail);
        }
    }
    let mut groups: Vec<ReasonGroup> = groups.into_values().collect();
    // Stable: equal counts stay in the classes' order.
    groups.sort_by_key(|g| std::cmp::Reverse(g.count));
    groups
}

/// `peek --group-by reason`: one row per failure class, for triage.
pub fn write_reasons(out: &mut dyn Write, peeked: &Peeked) -> io::Result<()> {
    let headers = ["CLASS", "COUNT", "OLDEST", "NEWEST", "EXAMPLE DETAIL"];
    let groups = group_by_reason(&peeked.messages);
    let rows: Vec<[String; 5]> = groups
        .iter()
        .map(|g| {
            [
                g.class.to_string(),
                g.count.to_string(),
                time(g.oldest),
                time(g.newest),
                detail_cell(g.example_detail.as_deref()),
            ]
        })
        .collect();
    write_aligned(out, &headers, &rows, &[1])?;
    writeln!(
        out,
        "\n{} shown in {} classes of about {} in {} ({} in flight before this look); they are visible again",
        peeked.messages.len(),
        groups.len(),
        peeked.queue.visible,
        peeked.queue.url,
        peeked.queue.in_flight,
    )
}

/// `peek --group-by reason --json`: the same groups as a JSON array.
pub fn write_reasons_json(out: &mut dyn Write, peeked: &Peeked) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, &group_by_reason(&peeked.messages))?;
    writeln!(out)
}

/// Characters of a detail shown in a table cell (JSON has all of it).
const DETAIL_CHARS: usize = 80;

fn detail_cell(detail: Option<&str>) -> String {
    detail.map_or_else(|| "-".to_owned(), |d| excerpt(d, DETAIL_CHARS))
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".to_owned(),
        |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string(),
    )
}

/// Rows under their headers, columns two blanks apart, the `numeric` ones
/// aligned right, the last one unpadded (no trailing blanks).
fn write_aligned<const N: usize>(
    out: &mut dyn Write,
    headers: &[&str; N],
    rows: &[[String; N]],
    numeric: &[usize],
) -> io::Result<()> {
    let mut widths = headers.map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut text = String::new();
        for (index, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if index + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let pad = " ".repeat(width - cell.chars().count());
                if numeric.contains(&index) {
                    text.push_str(&pad);
                    text.push_str(cell);
                } else {
                    text.push_str(cell);
                    text.push_str(&pad);
                }
                text.push_str("  ");
            }
        }
        text
    };
    writeln!(out, "{}", line(headers))?;
    for row in rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        writeln!(out, "{}", line(&cells))?;
    }
    Ok(())
}

/// A JSON array, one object per message, for scripts.
pub fn write_json(out: &mut dyn Write, peeked: &Peeked) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, &peeked.messages)?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::Verdict;

    fn view(id: &str, body: &str, receives: u32) -> MessageView {
        let verdict = Verdict::of(body);
        let reason = crate::inspect::Reason::of(&Default::default(), body);
        MessageView {
            message_id: id.to_owned(),
            order_id: verdict.order_id,
            receive_count: Some(receives),
            first_received_at: None,
            sent_at: None,
            size_bytes: body.len(),
            excerpt: crate::inspect::excerpt(body, 40),
            invalid_reason: verdict.invalid_reason,
            failure_class: reason.class,
            failure_detail: reason.detail,
            failure_recorded: reason.recorded,
            body: body.to_owned(),
            message_attributes: Default::default(),
        }
    }

    fn sent(view: MessageView, at: &str) -> MessageView {
        MessageView {
            sent_at: Some(at.parse().expect("time")),
            ..view
        }
    }

    fn peeked(messages: Vec<MessageView>) -> Peeked {
        Peeked {
            queue: QueueInfo {
                url: "http://sqs/dlq".into(),
                arn: "arn:aws:sqs:us-east-1:000000000000:dlq".into(),
                fifo: false,
                visible: messages.len() as u64,
                in_flight: 0,
            },
            messages,
        }
    }

    #[test]
    fn the_table_aligns_its_columns_and_says_why_a_message_is_invalid() {
        let mut out = Vec::new();
        let table = peeked(vec![
            view("short", "not json", 6),
            view("a-much-longer-message-id", r#"{"order_id":"x"}"#, 12),
        ]);
        write_table(&mut out, &table).expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        let column = |line: &str, name: &str| line.find(name);
        let order_col = column(lines[0], "ORDER ID").expect("header");
        assert_eq!(lines[1].find('-'), Some(order_col), "{text}");
        assert_eq!(column(lines[2], "x "), Some(order_col), "{text}");
        assert!(lines[1].contains("not valid JSON"), "{text}");
        assert!(
            lines[2].contains("`order_id` UUID parsing failed"),
            "{text}"
        );
        assert!(text.contains("2 shown (0 valid, 2 invalid)"), "{text}");
        assert!(
            text.lines().all(|l| !l.ends_with(' ')),
            "no trailing blanks"
        );
    }

    #[test]
    fn grouping_by_reason_counts_each_class_with_its_oldest_newest_and_an_example() {
        let messages = vec![
            sent(view("a", "not json", 1), "2026-12-01T10:00:00Z"),
            sent(view("b", "{}", 1), "2026-12-01T09:00:00Z"),
            sent(view("c", "still not json", 1), "2026-12-01T08:00:00Z"),
            view("d", "nope", 1),
        ];
        let groups = group_by_reason(&messages);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].class, FailureClass::InvalidJson);
        assert_eq!(groups[0].count, 3);
        assert_eq!(
            groups[0].oldest.map(|t| t.to_rfc3339()).as_deref(),
            Some("2026-12-01T08:00:00+00:00")
        );
        assert_eq!(
            groups[0].newest.map(|t| t.to_rfc3339()).as_deref(),
            Some("2026-12-01T10:00:00+00:00"),
            "a message without a sent time widens nothing"
        );
        assert_eq!(groups[1].class, FailureClass::InvalidOrder);
        assert_eq!(groups[1].count, 1);
        assert!(groups[1].example_detail.is_some());

        let mut out = Vec::new();
        write_reasons(&mut out, &peeked(messages)).expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("CLASS"), "{text}");
        assert!(lines[1].starts_with("invalid_json "), "{text}");
        assert!(lines[1].contains("2026-12-01 08:00:00Z"), "{text}");
        assert!(text.contains("4 shown in 2 classes"), "{text}");
        assert!(text.lines().all(|l| !l.ends_with(' ')), "{text}");
    }

    #[test]
    fn the_json_is_an_array_with_one_object_per_message() {
        let mut out = Vec::new();
        write_json(
            &mut out,
            &peeked(vec![view("m-1", "nope", 1), view("m-2", "{}", 2)]),
        )
        .expect("write");
        let value: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
        let array = value.as_array().expect("an array");
        assert_eq!(array.len(), 2);
        assert_eq!(array[0]["message_id"], "m-1");
        assert_eq!(array[1]["receive_count"], 2);
        assert!(array[0]["invalid_reason"].is_string());
        assert_eq!(array[0]["failure_class"], "invalid_json");
        assert_eq!(array[1]["failure_class"], "invalid_order");
        assert_eq!(array[0]["failure_recorded"], false);
        assert_eq!(array[0]["order_id"], serde_json::Value::Null);
    }
}
