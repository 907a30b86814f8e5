use std::collections::HashSet;

use dlq_replay::peek::{write_json, write_table};
use dlq_replay::{PeekOptions, peek};

use crate::support::{dead_letter, depth, order_id, poison_bodies, queues, valid_body};

#[tokio::test]
async fn peek_shows_valid_and_poison_messages_with_why_and_leaves_them_in_the_dlq() {
    let queues = queues().await;
    let valid: Vec<String> = (0..3).map(valid_body).collect();
    let poison = poison_bodies();
    dead_letter(&queues, &[valid.clone(), poison.clone()].concat()).await;

    let peeked = peek(&queues.sqs, &queues.dlq_url, PeekOptions::default())
        .await
        .expect("peek");

    assert_eq!(peeked.messages.len(), 7);
    assert_eq!(
        peeked
            .messages
            .iter()
            .map(|m| m.message_id.as_str())
            .collect::<HashSet<_>>()
            .len(),
        7,
        "each message once"
    );
    for message in &peeked.messages {
        let is_valid = valid.contains(&message.body);
        assert_eq!(message.is_valid(), is_valid, "{message:?}");
        assert_eq!(message.order_id, order_id(&message.body), "{message:?}");
        assert!(message.receive_count >= Some(1), "{message:?}");
        assert!(message.sent_at.is_some() && message.first_received_at.is_some());
        assert!(message.size_bytes >= message.body.len());
    }
    let reason = |body: &str| {
        peeked
            .messages
            .iter()
            .find(|m| m.body == body)
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
    let again = peek(&queues.sqs, &queues.dlq_url, PeekOptions::default())
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

    let options = PeekOptions {
        max: 12,
        ..PeekOptions::default()
    };
    let peeked = peek(&queues.sqs, &queues.dlq_url, options)
        .await
        .expect("peek");
    assert_eq!(peeked.messages.len(), 12);
    let mut json = Vec::new();
    write_json(&mut json, &peeked).expect("JSON");
    let array: Vec<serde_json::Value> = serde_json::from_slice(&json).expect("a JSON array");
    assert_eq!(array.len(), 12);
    assert!(array.iter().all(|m| m["invalid_reason"].is_null()));
    assert_eq!(
        depth(&queues.sqs, &queues.dlq_url).await,
        (15, 0),
        "all visible again at once"
    );
}
