//! `peek`: the DLQ's messages, read without consuming them.
//!
//! SQS has no "look without receiving", so peek receives with a short visibility
//! timeout, keeps what it got hidden while it gathers more (otherwise SQS would
//! hand the same messages back), and makes them all visible again at once.

use std::collections::HashSet;
use std::io::{self, Write};

use aws_sdk_sqs::Client;
use tracing::debug;

use crate::inspect::MessageView;
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
        "WHY INVALID",
    ];
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or_else(
            || "-".to_owned(),
            |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string(),
        )
    };
    let rows: Vec<[String; 8]> = peeked
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
                m.invalid_reason.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    let mut widths = headers.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut text = String::new();
        for (index, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if index + 1 == cells.len() {
                // The last column is not padded: no trailing blanks.
                text.push_str(cell);
            } else {
                let pad = width - cell.chars().count();
                let numeric = index == 2 || index == 5;
                if numeric {
                    text.push_str(&" ".repeat(pad));
                    text.push_str(cell);
                } else {
                    text.push_str(cell);
                    text.push_str(&" ".repeat(pad));
                }
                text.push_str("  ");
            }
        }
        text
    };
    writeln!(out, "{}", line(&headers))?;
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        writeln!(out, "{}", line(&cells))?;
    }
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
        MessageView {
            message_id: id.to_owned(),
            order_id: verdict.order_id,
            receive_count: Some(receives),
            first_received_at: None,
            sent_at: None,
            size_bytes: body.len(),
            excerpt: crate::inspect::excerpt(body, 40),
            invalid_reason: verdict.invalid_reason,
            body: body.to_owned(),
            message_attributes: Default::default(),
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
        assert_eq!(array[0]["order_id"], serde_json::Value::Null);
    }
}
