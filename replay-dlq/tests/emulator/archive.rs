use std::collections::HashMap;

use order_contract::FailureClass;
use order_contract::dead_letter::CLASS_ATTRIBUTE;
use replay_dlq::archive::{DEFAULT_IMPORT_RATE, journal_path};
use replay_dlq::{End, Error, Lines, Options, Selection, export, import};

use crate::support::{
    Scratch, attributes, bodies, depth, drain, mixed_dlq, never_stop, queues, records, send_to_dlq,
    sorted, valid_body,
};

fn captured(label: &'static str) -> Lines<Vec<u8>, Vec<u8>> {
    Lines::new(label, Vec::new(), Vec::new())
}

fn notes(progress: Lines<Vec<u8>, Vec<u8>>) -> String {
    String::from_utf8(progress.into_inner().0).expect("UTF-8 notes")
}

fn only(classes: &[FailureClass]) -> Selection {
    Selection {
        reasons: classes.to_vec(),
        ..Selection::default()
    }
}

#[tokio::test]
async fn export_writes_the_selected_messages_and_leaves_them_in_the_dlq_unless_delete() {
    let queues = queues().await;
    let all = mixed_dlq(&queues).await;
    let scratch = Scratch::new();
    let file = scratch.file("dlq.jsonl");

    let dry = Options {
        dry_run: true,
        ..Options::default()
    };
    let mut progress = captured("export");
    let report = export(
        &queues.sqs,
        &queues.dlq_url,
        &file,
        false,
        &dry,
        &mut progress,
        never_stop(),
    )
    .await
    .expect("dry run");
    assert_eq!(
        report.summary,
        "export (dry run): would_export=6 skipped=0 failed=0; nothing was written or deleted"
    );
    assert!(!file.exists(), "a dry run creates no file");
    assert_eq!(notes(progress).lines().count(), 6, "one line per message");
    assert_eq!(depth(&queues.sqs, &queues.dlq_url).await, (6, 0));

    let refused_only = Options {
        selection: only(&[FailureClass::RowRefused]),
        ..Options::default()
    };
    let report = export(
        &queues.sqs,
        &queues.dlq_url,
        &file,
        false,
        &refused_only,
        &mut captured("export"),
        never_stop(),
    )
    .await
    .expect("export");
    assert_eq!(
        report.summary,
        "export: written=2 skipped=4 failed=0; left in the DLQ"
    );
    assert_eq!(report.exit_code(), 0);
    let written = records(&file);
    assert_eq!(
        written
            .iter()
            .map(|r| r.body.clone())
            .collect::<Vec<_>>()
            .len(),
        2
    );
    assert_eq!(
        sorted(&written.iter().map(|r| r.body.clone()).collect::<Vec<_>>()),
        sorted(&all[..2])
    );
    for record in &written {
        assert_eq!(
            record.message_attributes[CLASS_ATTRIBUTE]
                .string_value
                .as_deref(),
            Some("row_refused"),
            "the reason goes into the file"
        );
        assert!(record.receive_count >= Some(1) && record.sent_at.is_some());
        assert!(!record.message_id.is_empty());
    }
    assert_eq!(
        depth(&queues.sqs, &queues.dlq_url).await,
        (6, 0),
        "without --delete all stay, visible again at once"
    );

    let report = export(
        &queues.sqs,
        &queues.dlq_url,
        &file,
        true,
        &Options::default(),
        &mut captured("export"),
        never_stop(),
    )
    .await
    .expect("export --delete");
    assert_eq!(
        report.summary,
        "export: written=6 deleted=6 skipped=0 failed=0"
    );
    assert!(matches!(report.end, End::Drained), "{:?}", report.end);
    assert_eq!(depth(&queues.sqs, &queues.dlq_url).await, (0, 0));
    let written = records(&file);
    assert_eq!(written.len(), 8, "appended to the earlier export");
    let mut bodies_in_file: Vec<String> = written[2..].iter().map(|r| r.body.clone()).collect();
    bodies_in_file.sort();
    assert_eq!(bodies_in_file, sorted(&all));
}

#[tokio::test]
async fn import_sends_back_what_export_wrote_byte_for_byte_and_a_rerun_sends_nothing_twice() {
    let queues = queues().await;
    let sent: Vec<String> = (0..15).map(valid_body).collect();
    send_to_dlq(&queues, &sent, true).await;
    let scratch = Scratch::new();
    let file = scratch.file("dlq.jsonl");
    let report = export(
        &queues.sqs,
        &queues.dlq_url,
        &file,
        true,
        &Options::default(),
        &mut captured("export"),
        never_stop(),
    )
    .await
    .expect("export");
    assert_eq!(report.counts.deleted, 15);

    let report = import(
        &queues.sqs,
        &file,
        &queues.queue_url,
        DEFAULT_IMPORT_RATE,
        true,
        &mut captured("import"),
        never_stop(),
    )
    .await
    .expect("dry run");
    assert_eq!(
        report.summary,
        "import (dry run): would_send=15 already_sent=0 unreadable=0; nothing was sent"
    );
    assert!(!journal_path(&file).exists(), "a dry run writes no journal");
    assert_eq!(depth(&queues.sqs, &queues.queue_url).await, (0, 0));

    let report = import(
        &queues.sqs,
        &file,
        &queues.queue_url,
        DEFAULT_IMPORT_RATE,
        false,
        &mut captured("import"),
        never_stop(),
    )
    .await
    .expect("import");
    assert_eq!(
        report.summary,
        "import: sent=15 already_sent=0 failed=0 unreadable=0"
    );
    assert_eq!(report.exit_code(), 0);
    let again = import(
        &queues.sqs,
        &file,
        &queues.queue_url,
        DEFAULT_IMPORT_RATE,
        false,
        &mut captured("import"),
        never_stop(),
    )
    .await
    .expect("import again");
    assert_eq!(
        again.summary,
        "import: sent=0 already_sent=15 failed=0 unreadable=0"
    );

    let arrived = drain(&queues.sqs, &queues.queue_url).await;
    assert_eq!(bodies(&arrived), sorted(&sent), "each once, byte for byte");
    let original: HashMap<&str, _> = sent
        .iter()
        .enumerate()
        .map(|(n, body)| (body.as_str(), attributes(n)))
        .collect();
    for message in &arrived {
        let body = message.body().expect("a body");
        assert_eq!(
            message.message_attributes().expect("attributes"),
            &original[body],
            "binary attributes too"
        );
    }

    let elsewhere = import(
        &queues.sqs,
        &file,
        &queues.dlq_url,
        DEFAULT_IMPORT_RATE,
        false,
        &mut captured("import"),
        never_stop(),
    )
    .await
    .expect_err("the journal names another queue");
    assert!(matches!(elsewhere, Error::OtherDestination { .. }));
    assert!(
        elsewhere
            .to_string()
            .contains(&format!("pass --to {}", queues.queue_url)),
        "{elsewhere}"
    );
}

#[tokio::test]
async fn a_line_that_is_not_a_record_is_reported_and_the_others_go() {
    let queues = queues().await;
    send_to_dlq(&queues, &[valid_body(1), valid_body(2)], false).await;
    let scratch = Scratch::new();
    let file = scratch.file("dlq.jsonl");
    export(
        &queues.sqs,
        &queues.dlq_url,
        &file,
        false,
        &Options::default(),
        &mut captured("export"),
        never_stop(),
    )
    .await
    .expect("export");
    // As a crash in mid-write leaves it.
    let mut text = std::fs::read_to_string(&file).expect("read");
    text.push_str("{\"message_id\":\"cut-");
    std::fs::write(&file, text).expect("write");

    let mut progress = captured("import");
    let report = import(
        &queues.sqs,
        &file,
        &queues.queue_url,
        DEFAULT_IMPORT_RATE,
        false,
        &mut progress,
        never_stop(),
    )
    .await
    .expect("import");
    assert_eq!(
        report.summary,
        "import: sent=2 already_sent=0 failed=0 unreadable=1"
    );
    assert_eq!(report.exit_code(), 1, "something was not imported");
    let notes = notes(progress);
    assert!(notes.contains("line 3 of "), "{notes}");
    assert_eq!(depth(&queues.sqs, &queues.queue_url).await, (2, 0));
}

#[tokio::test]
async fn export_to_a_file_it_cannot_open_touches_nothing() {
    let queues = queues().await;
    send_to_dlq(&queues, &[valid_body(1)], false).await;
    let err = export(
        &queues.sqs,
        &queues.dlq_url,
        std::path::Path::new("/nonexistent-replay-dlq-dir/dlq.jsonl"),
        true,
        &Options::default(),
        &mut captured("export"),
        never_stop(),
    )
    .await
    .expect_err("no such directory");
    assert!(err.to_string().contains("could not open"), "{err}");
    assert_eq!(depth(&queues.sqs, &queues.dlq_url).await, (1, 0));
}
