//! What the DLQ holds at the end of a run: the run's poison, how it got
//! there, and anything else (valid orders, which must never be there).

use std::collections::{HashMap, HashSet};

use serde_json::Value;

/// What the DLQ holds at the end of a run.
#[derive(Debug, Default)]
pub(crate) struct DeadLetters {
    /// The run's poison messages found there (a copy twice, after a crash
    /// between the consumer's send and its answer, counts once).
    pub(crate) poison: HashSet<String>,
    /// Those among them that carry the consumer's failure attributes.
    pub(crate) by_consumer: HashSet<String>,
    /// The longest time from a poison message's send to the consumer's verdict.
    pub(crate) slowest_ms: i64,
    /// The most receives a poison message took before the verdict.
    pub(crate) most_receives: u32,
    /// Anything else in the DLQ: valid orders, which must never be there.
    pub(crate) others: usize,
}

impl DeadLetters {
    pub(crate) fn read(
        messages: &[aws_sdk_sqs::types::Message],
        sent_ms: &HashMap<String, i64>,
    ) -> Self {
        let mut dead = Self::default();
        for message in messages {
            let poison_id = serde_json::from_str::<Value>(message.body().unwrap_or_default())
                .ok()
                .and_then(|v| v["poison"].as_str().map(str::to_owned))
                .filter(|id| sent_ms.contains_key(id));
            let Some(id) = poison_id else {
                dead.others += 1;
                continue;
            };
            if let Some(failure) = e2e::failure_of(message) {
                if let (Some(at), Some(sent)) = (failure.failed_at, sent_ms.get(&id)) {
                    dead.slowest_ms = dead.slowest_ms.max(at.timestamp_millis() - sent);
                }
                dead.most_receives = dead.most_receives.max(failure.receive_count.unwrap_or(0));
                dead.by_consumer.insert(id.clone());
            }
            dead.poison.insert(id);
        }
        dead
    }
}
