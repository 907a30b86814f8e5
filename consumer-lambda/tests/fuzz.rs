//! Property-based fuzzing of the consumer's input (proptest; cargo-fuzz needs a
//! nightly toolchain, which this project does not install). Batches mix valid
//! orders with hostile bodies (unusual Unicode, huge and negative numbers, deep
//! nesting, duplicate keys, NUL bytes, 1 MiB bodies, wrong and future schema
//! versions) and records with missing attributes, and go through the whole
//! handler with a fake store. The handler must never panic, must report every
//! bad record failed by its own message id, and must store every good one.
//!
//! The committed corpus (`tests/corpus/`) runs every time; `PROPTEST_CASES`
//! bounds the generated batches (scripts/test sets it).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use consumer_lambda::{
    Backoff, Consumer, Delivery, MaxReceiveCount, NoDeadLetterQueue, NoRetryQueue, OrderStore,
    RetryPolicy, StoreError, StoreOutcome,
};
use order_contract::OrderPlaced;
use proptest::prelude::*;
use serde_json::{Value, json};

/// Stores everything it is given; remembers the message ids.
#[derive(Default)]
struct Memory(Mutex<Vec<String>>);

impl OrderStore for &Memory {
    async fn insert(&self, deliveries: &[&Delivery]) -> Result<StoreOutcome, StoreError> {
        let mut stored = self.0.lock().expect("lock");
        stored.extend(deliveries.iter().map(|d| d.message_id.to_string()));
        Ok(StoreOutcome {
            stored: deliveries.len() as u64,
            ..StoreOutcome::default()
        })
    }
}

/// Runs one batch; returns (failed ids, stored ids).
fn handle(records: Vec<SqsMessage>) -> (HashSet<String>, HashSet<String>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let memory = Memory::default();
    let policy = RetryPolicy {
        backoff: Backoff::default(),
        max_receive_count: MaxReceiveCount::new(6).expect("2 to 1,000"),
    };
    let consumer = Consumer::new(&memory, NoRetryQueue, NoDeadLetterQueue, policy);
    let mut event = SqsEvent::default();
    event.records = records;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let handled = runtime
        .block_on(consumer.handle(event, deadline))
        .expect("every record in these batches has a message id");
    let failed = handled
        .response
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect();
    let stored = memory.0.lock().expect("lock").iter().cloned().collect();
    (failed, stored)
}

fn valid_order() -> impl Strategy<Value = Value> {
    (
        "[A-Za-z0-9_-]{1,64}",
        prop::sample::select(vec!["EUR", "USD", "SEK", "JPY"]),
        prop::collection::vec(
            ("[ -~]{1,64}".prop_filter("not blank", |s| !s.trim().is_empty()), 1..=10_000u32, 0..=1_000_000_000u32),
            1..=5,
        ),
    )
        .prop_map(|(customer, currency, items)| {
            json!({
                "schema_version": 1,
                "order_id": uuid::Uuid::new_v4(),
                "customer_id": customer,
                "currency": currency,
                "items": items.into_iter().map(|(sku, quantity, price)| json!({"sku": sku, "quantity": quantity, "unit_price_cents": price})).collect::<Vec<_>>(),
                "received_at": "2026-11-24T18:27:15.123Z",
            })
        })
}

/// Any JSON value, with hostile strings and numbers, a few levels deep.
fn hostile_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        Just(json!(u64::MAX)),
        Just(json!(-1)),
        Just(json!(0)),
        ".*".prop_map(Value::from),
        "\\PC*".prop_map(Value::from),
        Just(Value::from("nul\u{0}byte")),
        Just(Value::from("\u{202e}\u{0301}\u{1F4A5}")),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::hash_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A body that may or may not be a valid order.
fn body() -> impl Strategy<Value = String> {
    let fields = prop::sample::select(vec![
        "schema_version",
        "order_id",
        "customer_id",
        "currency",
        "items",
        "received_at",
        "unexpected",
    ]);
    prop_oneof![
        4 => valid_order().prop_map(|v| v.to_string()),
        // One field replaced by (or added as) a hostile value.
        4 => (valid_order(), fields.clone(), hostile_value()).prop_map(|(mut v, field, value)| {
            v[field] = value;
            v.to_string()
        }),
        // One field removed.
        1 => (valid_order(), fields.clone()).prop_map(|(mut v, field)| {
            if let Some(object) = v.as_object_mut() {
                object.remove(field);
            }
            v.to_string()
        }),
        // Wrong, future and oddly typed schema versions.
        1 => (valid_order(), prop::sample::select(vec![json!(0), json!(2), json!(99), json!(-1), json!("1"), json!(1.5), json!(null)]))
            .prop_map(|(mut v, version)| { v["schema_version"] = version; v.to_string() }),
        // A key given twice: the text, not the value, repeats it.
        1 => (valid_order(), fields, hostile_value()).prop_map(|(v, field, value)| {
            let text = v.to_string();
            format!("{},\"{field}\":{value}}}", &text[..text.len() - 1])
        }),
        // Deep nesting, past serde_json's recursion limit.
        1 => (1usize..5_000).prop_map(|depth| format!("{}{}", "[".repeat(depth), "]".repeat(depth))),
        // Arbitrary text, NUL bytes included.
        1 => prop::collection::vec(any::<u8>(), 0..256).prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
    ]
}

/// A record with this body; attributes present or not, as hand-made messages vary.
fn record(id: usize, body: Option<String>, with_attributes: bool) -> SqsMessage {
    let mut record = SqsMessage::default();
    record.message_id = Some(format!("m-{id}"));
    record.body = body;
    if with_attributes {
        record.receipt_handle = Some(format!("h-{id}"));
        record
            .attributes
            .insert("ApproximateReceiveCount".into(), "1".into());
    }
    record
}

/// The handler's verdict must match the contract's, record by record.
fn check(records: Vec<SqsMessage>) {
    let expected_good: HashSet<String> = records
        .iter()
        .filter(|r| {
            r.body
                .as_deref()
                .is_some_and(|b| OrderPlaced::from_json(b).is_ok())
        })
        .filter_map(|r| r.message_id.clone())
        .collect();
    let all: HashSet<String> = records
        .iter()
        .filter_map(|r| r.message_id.clone())
        .collect();
    let (failed, stored) = handle(records);
    assert_eq!(stored, expected_good, "every good record is stored");
    let expected_failed: HashSet<String> = all.difference(&expected_good).cloned().collect();
    assert_eq!(
        failed, expected_failed,
        "every bad record is failed by its own id"
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_batch_fails_exactly_its_bad_records_and_stores_the_rest(
        bodies in prop::collection::vec((prop::option::weighted(0.95, body()), any::<bool>()), 1..40)
    ) {
        let records = bodies
            .into_iter()
            .enumerate()
            .map(|(id, (body, attributes))| record(id, body, attributes))
            .collect();
        check(records);
    }

    #[test]
    fn a_generated_valid_order_is_always_stored(order in valid_order()) {
        let (failed, stored) = handle(vec![record(0, Some(order.to_string()), true)]);
        prop_assert!(failed.is_empty(), "{order}");
        prop_assert_eq!(stored.len(), 1);
    }
}

#[test]
fn the_committed_corpus_and_a_one_mebibyte_body_are_handled_record_by_record() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus");
    let mut bodies: Vec<String> = std::fs::read_dir(dir)
        .expect("the corpus")
        .map(|entry| std::fs::read_to_string(entry.expect("an entry").path()).expect("UTF-8"))
        .collect();
    assert!(bodies.len() >= 15, "the corpus is there");
    let mut huge: Value = serde_json::from_str(&bodies[0]).unwrap_or_else(|_| json!({}));
    huge["customer_id"] = Value::from("c".repeat(1024 * 1024));
    bodies.push(huge.to_string());
    let records = bodies
        .into_iter()
        .enumerate()
        .map(|(id, body)| record(id, Some(body), id % 2 == 0))
        .collect();
    check(records);
}

#[test]
fn the_corpus_holds_one_valid_order_among_the_hostile_ones() {
    let valid = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/corpus/valid.json"
    ))
    .expect("valid.json");
    let (failed, stored) = handle(vec![record(0, Some(valid), true)]);
    assert!(failed.is_empty());
    assert_eq!(stored.len(), 1, "the oracle is not trivially empty");
}
