use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName};
use order_contract::FailureClass;
use order_contract::dead_letter::{
    FAILURE_ATTRIBUTE_PREFIX, MAX_MESSAGE_ATTRIBUTES, REPLAYED_FROM_ATTRIBUTE,
};
use replay_dlq::{End, Error, Options, Selection, peek, source_queue};

use crate::support::{
    attributes, bodies, dead_letter, depth, drain, failure, order_id, poison_bodies, queues,
    run_replay, send_failed, send_to_dlq, sorted, valid_body,
};

#[tokio::test]
async fn a_replay_moves_every_message_back_with_body_and_attributes_byte_for_byte() {
    let queues = queues().await;
    let mut sent: Vec<String> = (0..23).map(valid_body).collect();
    // Bodies that a careless copy would change: spacing, escapes, non-ASCII, poison.
    sent.push("  {\"order_id\": \"x\",\n\t\"note\": \"\\u00e9 é 😀\"}  ".to_owned());
    sent.extend(poison_bodies());
    send_to_dlq(&queues, &sent, true).await;

    let destination = source_queue(&queues.sqs, &queues.dlq_url)
        .await
        .expect("the source queue from the redrive configuration");
    assert_eq!(destination, queues.queue_url);
    let (report, _) = run_replay(
        &queues.sqs,
        &queues.dlq_url,
        &destination,
        &Options::default(),
    )
    .await
    .expect("replay");

    assert_eq!(report.counts.done, sent.len() as u64);
    assert_eq!((report.counts.skipped, report.counts.failed), (0, 0));
    assert!(matches!(report.end, End::Drained), "{:?}", report.end);
    assert_eq!(report.exit_code(), 0);
    assert_eq!(
        report.summary,
        format!("replay: moved={} skipped=0 failed=0", sent.len())
    );
    assert_eq!(
        depth(&queues.sqs, &queues.dlq_url).await,
        (0, 0),
        "the DLQ is empty"
    );

    let moved = drain(&queues.sqs, &queues.queue_url).await;
    assert_eq!(
        bodies(&moved),
        sorted(&sent),
        "every body, byte for byte, once"
    );
    let original_attributes: HashMap<&str, _> = sent
        .iter()
        .enumerate()
        .map(|(n, body)| (body.as_str(), attributes(n)))
        .collect();
    let mut lineage = HashSet::new();
    for message in &moved {
        let body = message.body().expect("a body");
        let mut attributes = message.message_attributes().expect("attributes").clone();
        let replayed_from = attributes
            .remove(REPLAYED_FROM_ATTRIBUTE)
            .and_then(|v| v.string_value)
            .expect("the DLQ message id it came from");
        lineage.insert(replayed_from);
        assert_eq!(
            &attributes, &original_attributes[body],
            "attributes of {body}"
        );
    }
    assert_eq!(lineage.len(), sent.len(), "each names its own DLQ message");
}

#[tokio::test]
async fn reason_replays_only_that_class_without_its_failure_attributes_and_with_its_lineage() {
    let queues = queues().await;
    let refused: Vec<String> = (0..3).map(|n| valid_body(200 + n)).collect();
    for (n, body) in refused.iter().enumerate() {
        send_failed(
            &queues,
            body,
            attributes(n),
            &failure(FailureClass::RowRefused, "23514: check constraint"),
        )
        .await;
    }
    send_failed(
        &queues,
        "not JSON at all",
        HashMap::new(),
        &failure(FailureClass::InvalidJson, "not valid JSON"),
    )
    .await;
    // Without failure attributes: redriven, one with as many attributes as SQS allows.
    let crowded_body = valid_body(300);
    let full: HashMap<String, MessageAttributeValue> = (0..MAX_MESSAGE_ATTRIBUTES)
        .map(|n| {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(format!("v{n}"))
                .build()
                .expect("attribute");
            (format!("a{n}"), value)
        })
        .collect();
    queues
        .sqs
        .send_message()
        .queue_url(&queues.dlq_url)
        .message_body(&crowded_body)
        .set_message_attributes(Some(full.clone()))
        .send()
        .await
        .expect("send");
    let redriven_body = valid_body(301);
    send_to_dlq(&queues, std::slice::from_ref(&redriven_body), false).await;
    let dlq_ids: HashMap<String, String> = peek(&queues.sqs, &queues.dlq_url, &Options::default())
        .await
        .expect("peek")
        .messages
        .into_iter()
        .map(|m| (m.record.body, m.record.message_id))
        .collect();

    let only = |classes: &[FailureClass]| Options {
        selection: Selection {
            reasons: classes.to_vec(),
            ..Selection::default()
        },
        ..Options::default()
    };
    let (report, _) = run_replay(
        &queues.sqs,
        &queues.dlq_url,
        &queues.queue_url,
        &only(&[FailureClass::RowRefused]),
    )
    .await
    .expect("replay");
    assert_eq!(report.summary, "replay: moved=3 skipped=3 failed=0");
    assert_eq!(report.exit_code(), 0);
    let moved = drain(&queues.sqs, &queues.queue_url).await;
    assert_eq!(bodies(&moved), sorted(&refused));
    for message in &moved {
        let body = message.body().expect("a body");
        let mut attributes = message.message_attributes().expect("attributes").clone();
        assert!(
            attributes
                .keys()
                .all(|name| !name.starts_with(FAILURE_ATTRIBUTE_PREFIX)),
            "no failure attribute goes back: {attributes:?}"
        );
        let from = attributes
            .remove(REPLAYED_FROM_ATTRIBUTE)
            .and_then(|v| v.string_value);
        assert_eq!(from.as_ref(), Some(&dlq_ids[body]), "its DLQ message id");
        let n = refused.iter().position(|b| b == body).expect("one of them");
        assert_eq!(
            attributes,
            crate::support::attributes(n),
            "its own attributes, unchanged"
        );
    }
    assert_eq!(
        depth(&queues.sqs, &queues.dlq_url).await,
        (3, 0),
        "the others stay"
    );

    let (report, notes) = run_replay(
        &queues.sqs,
        &queues.dlq_url,
        &queues.queue_url,
        &only(&[FailureClass::Redriven]),
    )
    .await
    .expect("replay");
    assert_eq!(report.summary, "replay: moved=2 skipped=1 failed=0");
    let moved = drain(&queues.sqs, &queues.queue_url).await;
    let crowded = moved
        .iter()
        .find(|m| m.body() == Some(crowded_body.as_str()))
        .expect("moved");
    assert_eq!(
        crowded.message_attributes(),
        Some(&full),
        "no room for the lineage: its own attributes, unchanged"
    );
    assert!(
        notes.contains(&format!("sent {} ", dlq_ids[&crowded_body]))
            && notes.contains("without replayed_from"),
        "{notes}"
    );
    let other = moved
        .iter()
        .find(|m| m.body() == Some(redriven_body.as_str()))
        .expect("moved");
    assert!(
        other
            .message_attributes()
            .is_some_and(|a| a.contains_key(REPLAYED_FROM_ATTRIBUTE))
    );
    let left = drain(&queues.sqs, &queues.dlq_url).await;
    assert_eq!(bodies(&left), ["not JSON at all"], "invalid_json stays");
}

#[tokio::test]
async fn a_dry_run_lists_what_would_move_and_changes_nothing() {
    let queues = queues().await;
    let valid: Vec<String> = (0..12).map(valid_body).collect();
    let poison = poison_bodies();
    dead_letter(&queues, &[valid.clone(), poison.clone()].concat()).await;

    let options = Options {
        dry_run: true,
        selection: Selection {
            only_valid: true,
            ..Selection::default()
        },
        ..Options::default()
    };
    let (report, notes) = run_replay(&queues.sqs, &queues.dlq_url, &queues.queue_url, &options)
        .await
        .expect("dry run");

    assert_eq!(
        report.summary,
        "replay (dry run): would_move=12 skipped=4 failed=0; nothing was sent or deleted"
    );
    assert_eq!(notes.matches("would move ").count(), 12, "{notes}");
    assert_eq!(notes.matches("skipped ").count(), 4, "{notes}");
    for body in &valid {
        assert!(notes.contains(&order_id(body).expect("an id")), "{notes}");
    }
    // Nothing moved, nothing left hidden.
    assert_eq!(depth(&queues.sqs, &queues.queue_url).await, (0, 0));
    assert_eq!(depth(&queues.sqs, &queues.dlq_url).await, (16, 0));
}

#[tokio::test]
async fn only_valid_moves_exactly_the_valid_ones_and_leaves_the_poison_visible_in_the_dlq() {
    let queues = queues().await;
    let valid: Vec<String> = (0..20).map(valid_body).collect();
    let poison = poison_bodies();
    // Interleaved, so batches mix the two.
    let mut mixed = Vec::new();
    for (n, body) in valid.iter().enumerate() {
        mixed.push(body.clone());
        mixed.extend(poison.get(n).cloned());
    }
    dead_letter(&queues, &mixed).await;

    let options = Options {
        selection: Selection {
            only_valid: true,
            ..Selection::default()
        },
        ..Options::default()
    };
    let (report, notes) = run_replay(&queues.sqs, &queues.dlq_url, &queues.queue_url, &options)
        .await
        .expect("replay");

    assert_eq!(
        (
            report.counts.done,
            report.counts.skipped,
            report.counts.failed
        ),
        (20, 4, 0)
    );
    assert!(notes.contains("invalid: `currency`"), "{notes}");
    assert_eq!(
        depth(&queues.sqs, &queues.dlq_url).await,
        (4, 0),
        "the poison is visible again at once"
    );
    assert_eq!(
        bodies(&drain(&queues.sqs, &queues.queue_url).await),
        sorted(&valid)
    );
    assert_eq!(
        bodies(&drain(&queues.sqs, &queues.dlq_url).await),
        sorted(&poison)
    );
}

#[tokio::test]
async fn order_ids_move_only_the_named_orders() {
    let queues = queues().await;
    let all: Vec<String> = (0..15).map(valid_body).collect();
    send_to_dlq(&queues, &all, false).await;
    let chosen = [all[3].clone(), all[11].clone()];

    let options = Options {
        selection: Selection {
            only_valid: false,
            order_ids: chosen
                .iter()
                .map(|b| order_id(b).expect("id").parse().expect("uuid"))
                .collect(),
            ..Selection::default()
        },
        ..Options::default()
    };
    let (report, _) = run_replay(&queues.sqs, &queues.dlq_url, &queues.queue_url, &options)
        .await
        .expect("replay");

    assert_eq!((report.counts.done, report.counts.skipped), (2, 13));
    assert_eq!(
        bodies(&drain(&queues.sqs, &queues.queue_url).await),
        sorted(&chosen)
    );
    assert_eq!(
        depth(&queues.sqs, &queues.dlq_url).await,
        (13, 0),
        "all visible again at once"
    );
}

#[tokio::test]
async fn max_moves_at_most_that_many_and_a_rate_spaces_the_sends() {
    let queues = queues().await;
    let all: Vec<String> = (0..20).map(valid_body).collect();
    send_to_dlq(&queues, &all, false).await;

    let options = Options {
        max: Some(7),
        rate: Some(4.0),
        ..Options::default()
    };
    let started = Instant::now();
    let (report, _) = run_replay(&queues.sqs, &queues.dlq_url, &queues.queue_url, &options)
        .await
        .expect("replay");

    assert_eq!(report.counts.done, 7);
    assert!(matches!(report.end, End::Limit), "{:?}", report.end);
    assert!(report.summary.ends_with("(--max reached)"));
    // 4 per second: the second batch (3 more) cannot start before a second has passed.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(depth(&queues.sqs, &queues.queue_url).await, (7, 0));
    assert_eq!(depth(&queues.sqs, &queues.dlq_url).await, (13, 0));
}

#[tokio::test]
async fn to_sends_elsewhere_and_a_dlq_without_a_source_asks_for_it() {
    let queues = queues().await;
    let elsewhere = crate::support::queues().await;
    let all: Vec<String> = (0..5).map(valid_body).collect();
    send_to_dlq(&queues, &all, false).await;

    // The source queue is no queue's DLQ: nothing to derive a destination from.
    let err = source_queue(&queues.sqs, &queues.queue_url)
        .await
        .expect_err("no source");
    assert!(matches!(err, Error::NoSource { .. }), "{err}");
    assert!(err.to_string().contains("pass --to URL"), "{err}");

    let (report, _) = run_replay(
        &queues.sqs,
        &queues.dlq_url,
        &elsewhere.queue_url,
        &Options::default(),
    )
    .await
    .expect("replay");
    assert_eq!(report.counts.done, 5);
    assert_eq!(
        bodies(&drain(&queues.sqs, &elsewhere.queue_url).await),
        sorted(&all)
    );
    assert_eq!(depth(&queues.sqs, &queues.queue_url).await, (0, 0));
}

#[tokio::test]
async fn a_fifo_queue_or_the_dlq_itself_is_refused_before_anything_moves() {
    let queues = queues().await;
    let fifo = queues
        .sqs
        .create_queue()
        .queue_name(format!("{}.fifo", testkit::unique_name("dlq")))
        .attributes(QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .expect("a FIFO queue")
        .queue_url
        .expect("its URL");
    let err = run_replay(&queues.sqs, &fifo, &queues.queue_url, &Options::default())
        .await
        .expect_err("FIFO refused");
    assert!(matches!(err, Error::Fifo { .. }), "{err}");
    assert!(err.to_string().contains("start-message-move-task"), "{err}");

    send_to_dlq(&queues, &[valid_body(1)], false).await;
    let err = run_replay(
        &queues.sqs,
        &queues.dlq_url,
        &queues.dlq_url,
        &Options::default(),
    )
    .await
    .expect_err("a DLQ into itself would never end");
    assert!(matches!(err, Error::SameQueue { .. }), "{err}");
    assert_eq!(depth(&queues.sqs, &queues.dlq_url).await, (1, 0));
}

#[tokio::test]
async fn a_message_the_source_refuses_stays_in_the_dlq_and_counts_as_failed() {
    let queues = queues().await;
    let small = queues
        .sqs
        .create_queue()
        .queue_name(testkit::unique_name("small"))
        .attributes(QueueAttributeName::MaximumMessageSize, "1024")
        .send()
        .await
        .expect("a queue for small messages")
        .queue_url
        .expect("its URL");
    let fits: Vec<String> = (0..3).map(valid_body).collect();
    let too_big = format!(r#"{{"padding":"{}"}}"#, "x".repeat(2000));
    send_to_dlq(
        &queues,
        &[fits.clone(), vec![too_big.clone()]].concat(),
        false,
    )
    .await;

    let (report, notes) = run_replay(&queues.sqs, &queues.dlq_url, &small, &Options::default())
        .await
        .expect("replay");

    assert_eq!((report.counts.done, report.counts.failed), (3, 1));
    assert_eq!(
        report.exit_code(),
        1,
        "a failure makes the exit code non-zero"
    );
    assert!(
        notes.contains("failed ") && notes.contains("stays in the DLQ"),
        "{notes}"
    );
    assert_eq!(bodies(&drain(&queues.sqs, &small).await), sorted(&fits));
    assert_eq!(
        depth(&queues.sqs, &queues.dlq_url).await,
        (1, 0),
        "all visible again at once"
    );
    assert_eq!(
        bodies(&drain(&queues.sqs, &queues.dlq_url).await),
        vec![too_big]
    );
}

#[tokio::test]
async fn skipped_messages_that_come_back_during_a_long_run_are_counted_once_and_released() {
    let queues = queues().await;
    let valid: Vec<String> = (0..10).map(valid_body).collect();
    let poison = poison_bodies();
    send_to_dlq(&queues, &[poison.clone(), valid.clone()].concat(), false).await;

    // A 1 s hold and 4 messages a second: the poison, looked at first, comes
    // back several times before the valid ones are all moved.
    let options = Options {
        rate: Some(4.0),
        visibility_timeout_secs: 1,
        selection: Selection {
            only_valid: true,
            ..Selection::default()
        },
        ..Options::default()
    };
    let (report, _) = run_replay(&queues.sqs, &queues.dlq_url, &queues.queue_url, &options)
        .await
        .expect("replay");

    assert_eq!(
        (
            report.counts.done,
            report.counts.skipped,
            report.counts.failed
        ),
        (10, 4, 0)
    );
    assert_eq!(
        bodies(&drain(&queues.sqs, &queues.queue_url).await),
        sorted(&valid)
    );
    assert_eq!(
        bodies(&drain(&queues.sqs, &queues.dlq_url).await),
        sorted(&poison)
    );
}
