//! `peek`: the DLQ's messages, read without consuming them.
//!
//! SQS has no "look without receiving": peek walks the DLQ like a dry run,
//! holding what it got while it gathers more, and releases them all at the end.

use std::collections::BTreeMap;
use std::io::{self, Write};

use aws_sdk_sqs::Client;
use chrono::{DateTime, Utc};
use order_contract::FailureClass;
use serde::Serialize;

use crate::Error;
use crate::message::{MessageView, excerpt};
use crate::progress::Lines;
use crate::queue::{QueueInfo, describe};
use crate::walk::{End, Options, Walk};

/// What `peek` saw.
#[derive(Debug, Clone)]
pub struct Peeked {
    /// The DLQ's counts before the look.
    pub queue: QueueInfo,
    pub messages: Vec<MessageView>,
}

/// Gathers up to `options.max` messages; only `max` and
/// `visibility_timeout_secs` of the options apply.
pub async fn peek(sqs: &Client, dlq_url: &str, options: &Options) -> Result<Peeked, Error> {
    let queue = describe(sqs, dlq_url).await?;
    let options = Options {
        max: options.max,
        visibility_timeout_secs: options.visibility_timeout_secs,
        ..Options::default()
    };
    let mut quiet = Lines::new("peek", io::sink(), io::sink());
    // A stop signal that never fires: a look is short.
    let never = tokio::sync::watch::channel(false).1;
    let mut walk = Walk::new(sqs, dlq_url, queue.visible, &options, &mut quiet, never);
    let mut messages = Vec::new();
    let end = loop {
        match walk.next().await {
            Ok(batch) => {
                for candidate in batch {
                    walk.counts.done += 1;
                    walk.hold(&candidate);
                    messages.push(candidate.view);
                }
            }
            Err(end) => break end,
        }
    };
    walk.release().await;
    match end {
        End::Aborted(err) => Err(err),
        _ => Ok(Peeked { queue, messages }),
    }
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
                m.record.message_id.clone(),
                m.order_id.clone().unwrap_or_else(|| "-".to_owned()),
                m.record
                    .receive_count
                    .map_or("-".to_owned(), |n| n.to_string()),
                time(m.first_received_at),
                time(m.record.sent_at),
                m.size_bytes.to_string(),
                m.excerpt.clone(),
                m.failure_class.to_string(),
                detail_cell(m.failure_detail.as_deref()),
            ]
        })
        .collect();
    write_aligned(out, &headers, &rows, &[2, 5])?;
    let (shown, about) = (rows.len(), of_about(peeked));
    let invalid = peeked.messages.iter().filter(|m| !m.is_valid()).count();
    let valid = shown - invalid;
    writeln!(
        out,
        "\n{shown} shown ({valid} valid, {invalid} invalid){about}"
    )
}

/// One class of failure among the messages peek saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReasonGroup {
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
    // Oldest first (no sent time before all): the first seen is the oldest.
    by_age.sort_by_key(|m| m.record.sent_at);
    for m in by_age {
        let group = groups.entry(m.failure_class).or_insert(ReasonGroup {
            class: m.failure_class,
            count: 0,
            oldest: None,
            newest: None,
            example_detail: None,
        });
        group.count += 1;
        group.oldest = group.oldest.or(m.record.sent_at);
        group.newest = m.record.sent_at.or(group.newest);
        group.example_detail = group.example_detail.take().or(m.failure_detail.clone());
    }
    let mut groups: Vec<ReasonGroup> = groups.into_values().collect();
    // Stable: equal counts stay in the classes' order.
    groups.sort_by_key(|g| std::cmp::Reverse(g.count));
    groups
}

/// `peek --group-by reason`: one row per failure class, for triage.
pub fn write_reasons(out: &mut dyn Write, peeked: &Peeked) -> io::Result<()> {
    let headers = ["CLASS", "COUNT", "OLDEST", "NEWEST", "EXAMPLE DETAIL"];
    let rows: Vec<[String; 5]> = group_by_reason(&peeked.messages)
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
    let (shown, classes, about) = (peeked.messages.len(), rows.len(), of_about(peeked));
    writeln!(out, "\n{shown} shown in {classes} classes{about}")
}

fn of_about(peeked: &Peeked) -> String {
    let queue = &peeked.queue;
    format!(
        " of about {} in {} ({} in flight before this look); they are visible again",
        queue.visible, queue.url, queue.in_flight
    )
}

/// Characters of a detail shown in a table cell (JSON has all of it).
const DETAIL_CHARS: usize = 80;

fn detail_cell(detail: Option<&str>) -> String {
    detail.map_or_else(|| "-".to_owned(), |d| excerpt(d, DETAIL_CHARS))
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or("-".to_owned(), |t| {
        t.format("%Y-%m-%d %H:%M:%SZ").to_string()
    })
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
    let headers = headers.map(str::to_owned);
    for row in std::iter::once(&headers).chain(rows) {
        for (index, (cell, width)) in row.iter().zip(widths).enumerate() {
            if index + 1 == N {
                writeln!(out, "{cell}")?;
            } else if numeric.contains(&index) {
                write!(out, "{cell:>width$}  ")?;
            } else {
                write!(out, "{cell:<width$}  ")?;
            }
        }
    }
    Ok(())
}

/// A JSON array, pretty-printed: the messages (`--json`) or the groups.
pub fn write_json(out: &mut dyn Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};

    fn view(id: &str, body: &str, receives: u32) -> MessageView {
        let message = Message::builder().message_id(id).body(body).attributes(
            MessageSystemAttributeName::ApproximateReceiveCount,
            receives.to_string(),
        );
        MessageView::new(&message.build())
    }

    fn sent(mut view: MessageView, at: &str) -> MessageView {
        view.record.sent_at = Some(at.parse().expect("time"));
        view
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
            &vec![view("m-1", "nope", 1), view("m-2", "{}", 2)],
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
