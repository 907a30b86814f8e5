use std::collections::HashSet;

use order_contract::FailureClass;
use replay_dlq::peek::{write_json, write_reasons, write_table};
use replay_dlq::{Options, peek};

use crate::support::{dead_letter, depth, mixed_dlq, order_id, poison_bodies, queues, valid_body};

#[tokio::test]
async fn peek_shows_valid_and_poison_messages_with_why_and_leaves_them_in_the_dlq() {
    let queues = queues().await;
    let valid: Vec<String> = (0..3).map(valid_body).collect();
    let poison = poison_bodies();
    dead_letter(&queues, &[valid.clone(), poison.clone()].concat()).await;

    let peeked = peek(&queues.sqs, &queues.dlq_url, &Options::default())
        .await
        .expect("peek");

    assert_eq!(peeked.messages.len(), 7);
    assert_eq!(
        peeked
            .messages
            .iter()
            .map(|m| m.record.message_id.as_str())
            .collect::<HashSet<_>>()
            .len(),
        7,
        "each message once"
    );
    for message in &peeked.messages {
        let is_valid = valid.contains(&message.record.body);
        assert_eq!(message.is_valid(), is_valid, "{message:?}");
        assert_eq!(
            message.order_id,
            order_id(&message.record.body),
            "{message:?}"
        );
        assert!(message.record.receive_count >= Some(1), "{message:?}");
        assert!(message.record.sent_at.is_some() && message.first_received_at.is_some());
        assert!(message.size_bytes >= message.record.body.len());
    }
    let reason = |body: &str| {
        peeked
            .messages
            .iter()
            .find(|m| m.record.body == body)
            .and_then(|m| m.invalid_reason.clone())
            .expect("a reason")
    };
    assert!(reason(&poison[0]).contains("not valid JSON"));
    assert!(reason(&poison[2]).contains("`currency`"));
    assert!(reason(&poison[3]).contains("`items[0].quantity`"));

    let mut table = Vec::new();
    write_table(&mut table, &peeked).expect("table");
    let table = String::from_utf8(table).expect("UTF-8");
    assert_eq!(table.lines().count(), 1 + 7 + 2, "{table}");
    assert!(table.contains("7 shown (3 valid, 4 invalid)"), "{table}");

    // Nothing consumed, and visible again at once, not after the visibility timeout.
    assert_eq!(
        depth(&queues.sqs, &queues.dlq_url).await,
        (7, 0),
        "all visible again at once"
    );
    let again = peek(&queues.sqs, &queues.dlq_url, &Options::default())
        .await
        .expect("peek again");
    assert_eq!(
        again.messages.len(),
        7,
        "a second look sees the same messages"
    );
}

#[tokio::test]
async fn peek_shows_at_most_max_and_its_json_is_one_object_per_message() {
    let queues = queues().await;
    let bodies: Vec<String> = (0..15).map(valid_body).collect();
    dead_letter(&queues, &bodies).await;

    let options = Options {
        max: Some(12),
        ..Options::default()
    };
    let peeked = peek(&queues.sqs, &queues.dlq_url, &options)
        .await
        .expect("peek");
    assert_eq!(peeked.messages.len(), 12);
    let mut json = Vec::new();
    write_json(&mut json, &peeked.messages).expect("JSON");
    let array: Vec<serde_json::Value> = serde_json::from_slice(&json).expect("a JSON array");
    assert_eq!(array.len(), 12);
    assert!(array.iter().all(|m| m["invalid_reason"].is_null()));
    assert_eq!(
        depth(&queues.sqs, &queues.dlq_url).await,
        (15, 0),
        "all visible again at once"
    );
}

#[tokio::test]
async fn peek_reads_the_reason_from_the_failure_attributes_or_else_from_the_body() {
    let queues = queues().await;
    let bodies = mixed_dlq(&queues).await;

    let peeked = peek(&queues.sqs, &queues.dlq_url, &Options::default())
        .await
        .expect("peek");
    assert_eq!(peeked.messages.len(), 6);
    let of = |body: &str| {
        peeked
            .messages
            .iter()
            .find(|m| m.record.body == body)
            .expect("peeked")
    };
    let refused = of(&bodies[0]);
    assert_eq!(refused.failure_class, FailureClass::RowRefused);
    assert!(refused.failure_recorded);
    assert!(
        refused.is_valid(),
        "the contract accepts it; PostgreSQL refused it"
    );
    assert_eq!(
        refused.failure_detail.as_deref(),
        Some("23514: new row violates check constraint")
    );
    let not_json = of(&bodies[2]);
    assert_eq!(not_json.failure_class, FailureClass::InvalidJson);
    assert!(not_json.failure_recorded);
    let unrecorded_invalid = of(&bodies[3]);
    assert_eq!(unrecorded_invalid.failure_class, FailureClass::InvalidOrder);
    assert!(!unrecorded_invalid.failure_recorded);
    assert!(
        unrecorded_invalid
            .failure_detail
            .as_deref()
            .is_some_and(|d| d.contains("`items[0].quantity`")),
        "{unrecorded_invalid:?}"
    );
    let redriven = of(&bodies[4]);
    assert_eq!(redriven.failure_class, FailureClass::Redriven);
    assert_eq!(redriven.failure_detail, None);

    let mut json = Vec::new();
    write_json(&mut json, &peeked.messages).expect("JSON");
    let array: Vec<serde_json::Value> = serde_json::from_slice(&json).expect("a JSON array");
    let classes: Vec<&str> = array
        .iter()
        .filter_map(|m| m["failure_class"].as_str())
        .collect();
    assert_eq!(classes.len(), 6, "every message has its class in the JSON");

    let mut table = Vec::new();
    write_reasons(&mut table, &peeked).expect("table");
    let table = String::from_utf8(table).expect("UTF-8");
    let row = |class: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{class} ")))
            .unwrap_or_else(|| panic!("a row for {class}: {table}"))
    };
    assert!(row("row_refused").contains(" 2 "), "{table}");
    assert!(row("row_refused").ends_with("23514: new row violates check constraint"));
    assert!(row("redriven").contains(" 2 "), "{table}");
    assert!(row("redriven").ends_with('-'), "no detail: {table}");
    assert!(row("invalid_json").contains(" 1 "), "{table}");
    assert!(row("invalid_order").contains(" 1 "), "{table}");
    assert!(table.contains("6 shown in 4 classes"), "{table}");
    assert_eq!(
        depth(&queues.sqs, &queues.dlq_url).await,
        (6, 0),
        "all visible again at once"
    );
}
