//! The real `replay-dlq` binary, as an operator runs it.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::time::Duration;

use testkit::{TestQueues, eventually};
use tokio::process::Command;

use crate::support::{
    Scratch, bodies, depth, drain, poison_bodies, queues, records, send_to_dlq, valid_body,
};

/// The binary with the environment an operator has after `source .dev/env`.
fn replay_dlq(endpoint: &str, dlq_url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_replay-dlq"));
    command
        .args(args)
        .env("DLQ_URL", dlq_url)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("AWS_PROFILE")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

fn on(queues: &TestQueues, args: &[&str]) -> Command {
    replay_dlq(&testkit::sqs_endpoint(), &queues.dlq_url, args)
}

async fn run(mut command: Command) -> (i32, String, String) {
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("replay-dlq ends within two minutes")
        .expect("replay-dlq runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_replay_killed_midway_and_run_again_loses_nothing_and_duplicates_at_most_the_batch_in_flight()
 {
    let queues = queues().await;
    let all: Vec<String> = (0..40).map(valid_body).collect();
    send_to_dlq(&queues, &all, false).await;

    // 4 messages a second, so the kill lands midway; a 2 s visibility timeout,
    // so what the killed run held comes back soon.
    let mut first = on(
        &queues,
        &["replay", "--rate", "4", "--visibility-timeout", "2"],
    )
    .spawn()
    .expect("replay-dlq starts");
    eventually(
        "some but not all messages moved",
        Duration::from_secs(60),
        || async {
            match depth(&queues.sqs, &queues.queue_url).await {
                (moved, _) if (8..40).contains(&moved) => Ok(()),
                state => Err(state),
            }
        },
    )
    .await;
    first.start_kill().expect("SIGKILL");
    let status = first.wait().await.expect("reaped");
    assert_eq!(status.code(), None, "killed by a signal, not finished");

    // The batch the killed run held reappears in the DLQ after its visibility timeout.
    eventually(
        "the killed run's messages visible again",
        Duration::from_secs(30),
        || async {
            match depth(&queues.sqs, &queues.dlq_url).await {
                (_, 0) => Ok(()),
                state => Err(state),
            }
        },
    )
    .await;
    let (code, stdout, stderr) = run(on(&queues, &["replay"])).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("replay: moved="), "{stdout}");

    let in_source = drain(&queues.sqs, &queues.queue_url).await;
    let in_dlq = drain(&queues.sqs, &queues.dlq_url).await;
    assert!(in_dlq.is_empty(), "the second run moved the rest");
    let mut copies: HashMap<String, usize> = HashMap::new();
    for body in bodies(&in_source).into_iter().chain(bodies(&in_dlq)) {
        *copies.entry(body).or_default() += 1;
    }
    for body in &all {
        assert!(copies.contains_key(body), "lost: {body}");
    }
    assert_eq!(copies.len(), all.len(), "nothing that was not sent");
    let extra: usize = copies.values().map(|n| n - 1).sum();
    assert!(
        extra <= 4 && copies.values().all(|&n| n <= 2),
        "at most the one batch in flight (4 at --rate 4) duplicated, once: {extra} extra copies"
    );
}

#[tokio::test]
async fn ctrl_c_stops_after_the_batch_in_flight_prints_the_summary_and_exits_130() {
    let queues = queues().await;
    let all: Vec<String> = (0..30).map(valid_body).collect();
    send_to_dlq(&queues, &all, false).await;

    let child = on(&queues, &["replay", "--rate", "2"])
        .spawn()
        .expect("replay-dlq starts");
    eventually("a first batch moved", Duration::from_secs(30), || async {
        match depth(&queues.sqs, &queues.queue_url).await {
            (moved, _) if moved >= 2 => Ok(()),
            state => Err(state),
        }
    })
    .await;
    let pid = child.id().expect("running").to_string();
    let sent = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .expect("kill -INT");
    assert!(sent.success());
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("it stops promptly")
        .expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert_eq!(output.status.code(), Some(130), "{stdout}{stderr}");
    assert!(
        stderr.contains("stopping after the batch in flight"),
        "{stderr}"
    );
    let summary = stdout.lines().last().expect("a summary");
    assert!(summary.starts_with("replay: moved="), "{stdout}");
    assert!(summary.ends_with("(interrupted)"), "{summary}");
    assert!(
        stderr.contains("replay finished") && stderr.contains("moved="),
        "the replay is logged with its counts: {stderr}"
    );
    let moved: u64 = summary
        .trim_start_matches("replay: moved=")
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a count");
    assert!(moved > 0 && moved < 30, "{summary}");
    // A clean stop: no duplicate, nothing left hidden.
    assert_eq!(depth(&queues.sqs, &queues.queue_url).await, (moved, 0));
    assert_eq!(depth(&queues.sqs, &queues.dlq_url).await, (30 - moved, 0));
}

#[tokio::test]
async fn peek_prints_a_table_or_json_and_leaves_the_messages() {
    let queues = queues().await;
    let all = [vec![valid_body(1), valid_body(2)], poison_bodies()].concat();
    send_to_dlq(&queues, &all, true).await;

    let (code, table, stderr) = run(on(&queues, &["peek"])).await;
    assert_eq!(code, 0, "{stderr}");
    let header = table.lines().next().expect("a header");
    for column in [
        "MESSAGE ID",
        "ORDER ID",
        "RECEIVES",
        "FIRST RECEIVED",
        "SENT",
        "BYTES",
        "EXCERPT",
        "CLASS",
        "DETAIL",
    ] {
        assert!(header.contains(column), "{header}");
    }
    assert!(table.contains("6 shown (2 valid, 4 invalid)"), "{table}");

    let (code, json, stderr) = run(on(&queues, &["peek", "--json", "--max", "3"])).await;
    assert_eq!(code, 0, "{stderr}");
    let array: Vec<serde_json::Value> = serde_json::from_str(&json).expect("a JSON array");
    assert_eq!(array.len(), 3);
    assert!(
        array
            .iter()
            .all(|m| m["message_attributes"]["trace"]["data_type"] == "Binary")
    );
    assert_eq!(
        depth(&queues.sqs, &queues.dlq_url).await,
        (6, 0),
        "all visible again at once"
    );
}

#[tokio::test]
async fn wrong_usage_and_a_dlq_without_a_source_say_what_to_do() {
    let queues = queues().await;
    let (code, _, stderr) = run(on(&queues, &["replay", "--reason", "gremlins"])).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(
            "use one of: invalid_json, invalid_order, unsupported_schema_version, row_refused, redriven"
        ),
        "{stderr}"
    );

    // No DLQ named at all: where to find its URL.
    let mut without_dlq = replay_dlq(&testkit::sqs_endpoint(), "", &["peek"]);
    without_dlq.env_remove("DLQ_URL");
    let (code, _, stderr) = run(without_dlq).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("pass --dlq URL or set DLQ_URL"), "{stderr}");

    // The source queue is nobody's DLQ.
    let (code, _, stderr) = run(replay_dlq(
        &testkit::sqs_endpoint(),
        &queues.queue_url,
        &["replay"],
    ))
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("pass --to URL"), "{stderr}");

    let (code, _, stderr) = run(replay_dlq(
        &testkit::sqs_endpoint(),
        &format!("{}-missing", queues.dlq_url),
        &["peek"],
    ))
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("hint: no such queue"), "{stderr}");
}

/// Kills a running replay-dlq once `ready` holds, and checks it died of the signal.
async fn kill_when<F, Fut>(mut child: tokio::process::Child, what: &str, ready: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    eventually(what, Duration::from_secs(60), ready).await;
    child.start_kill().expect("SIGKILL");
    let status = child.wait().await.expect("reaped");
    assert_eq!(status.code(), None, "killed by a signal, not finished");
}

#[tokio::test]
async fn an_export_delete_killed_midway_loses_nothing_and_a_rerun_finishes_it() {
    let queues = queues().await;
    let all: Vec<String> = (0..40).map(valid_body).collect();
    send_to_dlq(&queues, &all, true).await;
    let scratch = Scratch::new();
    let file = scratch.file("dlq.jsonl");
    let path = file.to_str().expect("a UTF-8 path");

    // 4 messages a second, so the kill lands midway; a 2 s visibility timeout,
    // so what the killed run held comes back soon.
    let child = on(
        &queues,
        &[
            "export",
            "--to",
            path,
            "--delete",
            "--rate",
            "4",
            "--visibility-timeout",
            "2",
        ],
    )
    .spawn()
    .expect("replay-dlq starts");
    kill_when(child, "some but not all messages exported", || async {
        match records(&file).len() {
            n if (8..40).contains(&n) => Ok(()),
            n => Err(format!("{n} in the file")),
        }
    })
    .await;
    eventually(
        "the killed run's messages visible again",
        Duration::from_secs(30),
        || async {
            match depth(&queues.sqs, &queues.dlq_url).await {
                (_, 0) => Ok(()),
                state => Err(state),
            }
        },
    )
    .await;

    let in_file: Vec<String> = records(&file).into_iter().map(|r| r.body).collect();
    let held = drain(&queues.sqs, &queues.dlq_url).await;
    let in_dlq = bodies(&held);
    for body in &all {
        assert!(
            in_file.contains(body) || in_dlq.contains(body),
            "lost: neither in the file nor in the DLQ: {body}"
        );
    }
    assert!(
        in_file.len() >= 8 && in_dlq.len() < 40,
        "the kill came midway"
    );
    // The drain hid them for a minute: visible again for the re-run.
    for message in &held {
        queues
            .sqs
            .change_message_visibility()
            .queue_url(&queues.dlq_url)
            .receipt_handle(message.receipt_handle().expect("a receipt handle"))
            .visibility_timeout(0)
            .send()
            .await
            .expect("make it visible");
    }

    let (code, stdout, stderr) = run(on(&queues, &["export", "--to", path, "--delete"])).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let summary = stdout.lines().last().expect("a summary");
    assert!(summary.starts_with("export: written="), "{stdout}");
    assert!(summary.ends_with("failed=0"), "{summary}");
    assert_eq!(depth(&queues.sqs, &queues.dlq_url).await, (0, 0));
    let in_file: Vec<String> = records(&file).into_iter().map(|r| r.body).collect();
    for body in &all {
        assert!(in_file.contains(body), "every message in the file: {body}");
    }
}

/// The journal's promise (`archive/import.rs`, docs/operating.md): a re-run sends
/// nothing the journal lists; what it may send again is the one batch SQS had
/// acknowledged when the kill came and whose journal line was not yet on disk.
/// The kill follows SQS's answer by design, so that window is hit now and then
/// (more often while the disk is busy, as fsync then takes longer).
#[tokio::test]
async fn an_import_killed_midway_and_run_again_sends_every_message_and_nothing_journaled_twice() {
    let queues = queues().await;
    let all: Vec<String> = (0..40).map(valid_body).collect();
    send_to_dlq(&queues, &all, true).await;
    let scratch = Scratch::new();
    let file = scratch.file("dlq.jsonl");
    let path = file.to_str().expect("a UTF-8 path");
    let (code, stdout, stderr) = run(on(&queues, &["export", "--to", path, "--delete"])).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        stdout.lines().last(),
        Some("export: written=40 deleted=40 skipped=0 failed=0"),
        "{stdout}"
    );

    let child = on(
        &queues,
        &[
            "import",
            "--from",
            path,
            "--to",
            &queues.queue_url,
            "--rate",
            "4",
        ],
    )
    .spawn()
    .expect("replay-dlq starts");
    kill_when(child, "some but not all messages imported", || async {
        match depth(&queues.sqs, &queues.queue_url).await {
            (sent, _) if (8..40).contains(&sent) => Ok(()),
            state => Err(format!("{state:?}")),
        }
    })
    .await;
    let journal = std::fs::read_to_string(replay_dlq::archive::journal_path(&file))
        .expect("the journal beside the file");
    assert!(
        journal.lines().count() >= 2,
        "a header and a batch: {journal}"
    );

    let (code, stdout, stderr) = run(on(
        &queues,
        &["import", "--from", path, "--to", &queues.queue_url],
    ))
    .await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let summary = stdout.lines().last().expect("a summary");
    assert!(summary.starts_with("import: sent="), "{stdout}");
    assert!(
        !summary.contains("already_sent=0 "),
        "it resumed: {summary}"
    );
    assert!(summary.ends_with("failed=0 unreadable=0"), "{summary}");

    let arrived = drain(&queues.sqs, &queues.queue_url).await;
    let mut copies: HashMap<String, usize> = HashMap::new();
    for body in bodies(&arrived) {
        *copies.entry(body).or_default() += 1;
    }
    for body in &all {
        assert!(copies.contains_key(body), "every message arrives: {body}");
    }
    assert_eq!(copies.len(), all.len());

    // The journal as the kill left it (a line cut short counts as not written).
    let journaled: HashSet<u64> = journal
        .lines()
        .skip(1)
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|entry| entry["lines"].as_array().cloned())
        .flatten()
        .filter_map(|number| number.as_u64())
        .collect();
    let line_of: HashMap<String, u64> = records(&file)
        .into_iter()
        .zip(1..)
        .map(|(record, number)| (record.body, number))
        .collect();
    let mut again: Vec<u64> = copies
        .iter()
        .filter(|&(_, &count)| count > 1)
        .map(|(body, &count)| {
            assert_eq!(count, 2, "sent more than twice: {body}");
            line_of[body]
        })
        .collect();
    again.sort_unstable();
    assert!(
        again.iter().all(|number| !journaled.contains(number)),
        "a line the journal lists was sent again: {again:?}"
    );
    // SendMessageBatch takes at most 10 entries: one batch, consecutive lines.
    assert!(
        again.len() <= 10,
        "more than one batch sent again: {again:?}"
    );
    if let (Some(first), Some(last)) = (again.first(), again.last()) {
        assert_eq!(last - first + 1, again.len() as u64, "one batch: {again:?}");
    }
}

#[tokio::test]
async fn the_help_names_every_command() {
    let queues = queues().await;
    let (code, help, stderr) = run(on(&queues, &["--help"])).await;
    assert_eq!(code, 0, "{stderr}");
    for command in ["peek", "replay", "export", "import"] {
        assert!(help.contains(&format!("  {command} ")), "{command}: {help}");
    }
}

/// Sends SIGINT to a running replay-dlq once `ready` holds; returns its exit
/// code and what it printed.
async fn interrupt_when<F, Fut>(
    child: tokio::process::Child,
    what: &str,
    ready: F,
) -> (Option<i32>, String, String)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    eventually(what, Duration::from_secs(60), ready).await;
    let pid = child.id().expect("running").to_string();
    let sent = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .expect("kill -INT");
    assert!(sent.success());
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("it stops promptly")
        .expect("output");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn ctrl_c_stops_export_and_import_after_the_batch_in_flight_with_the_summary_and_130() {
    let queues = queues().await;
    let all: Vec<String> = (0..30).map(valid_body).collect();
    send_to_dlq(&queues, &all, false).await;
    let scratch = Scratch::new();
    let file = scratch.file("dlq.jsonl");
    let path = file.to_str().expect("a UTF-8 path");

    let child = on(
        &queues,
        &["export", "--to", path, "--delete", "--rate", "2"],
    )
    .spawn()
    .expect("replay-dlq starts");
    let (code, stdout, stderr) = interrupt_when(child, "a first batch exported", || async {
        match records(&file).len() {
            n if n >= 2 => Ok(()),
            n => Err(format!("{n} in the file")),
        }
    })
    .await;
    assert_eq!(code, Some(130), "{stdout}{stderr}");
    let summary = stdout.lines().last().expect("a summary");
    assert!(summary.starts_with("export: written="), "{stdout}");
    assert!(summary.ends_with("failed=0 (interrupted)"), "{summary}");
    let written = records(&file).len() as u64;
    assert!(written < 30, "{summary}");
    assert!(
        summary.contains(&format!("written={written} deleted={written} ")),
        "{summary}"
    );
    // A clean stop: what was written is gone from the DLQ, the rest visible.
    assert_eq!(depth(&queues.sqs, &queues.dlq_url).await, (30 - written, 0));

    let child = on(
        &queues,
        &[
            "import",
            "--from",
            path,
            "--to",
            &queues.queue_url,
            "--rate",
            "1",
        ],
    )
    .spawn()
    .expect("replay-dlq starts");
    let (code, stdout, stderr) = interrupt_when(child, "a first batch imported", || async {
        match depth(&queues.sqs, &queues.queue_url).await {
            (n, _) if n >= 1 => Ok(()),
            state => Err(format!("{state:?}")),
        }
    })
    .await;
    assert_eq!(code, Some(130), "{stdout}{stderr}");
    let summary = stdout.lines().last().expect("a summary");
    assert!(summary.starts_with("import: sent="), "{stdout}");
    assert!(summary.ends_with("(interrupted)"), "{summary}");
    let (sent, _) = depth(&queues.sqs, &queues.queue_url).await;
    assert!(summary.contains(&format!("sent={sent} ")), "{summary}");
    assert!(sent < written, "stopped before the end: {summary}");
}
