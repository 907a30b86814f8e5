//! What the consumer function is invoked with: a batch, the circuit breaker's
//! probe ([`breaker::PROBE_PAYLOAD`]) or the release hook's
//! ([`breaker::hook::RELEASE_PROBE_PAYLOAD`]), or `scripts/deploy`'s lookup of
//! one order (`{"lookup": {"order_id": "…"}}`).
//!
//! Read in one pass, without buffering the payload first (as an untagged enum
//! would), so a batch of a thousand records costs what the `SqsEvent` alone costs.

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use serde::{Deserialize, Deserializer};

/// One invocation's payload.
#[derive(Debug, Deserialize)]
#[serde(try_from = "Payload")]
pub enum Invocation {
    Batch(SqsEvent),
    Probe(ProbeRequest),
    Lookup(Lookup),
}

/// What a probe asks for: the canary order alone (the breaker's), or with a
/// poison record beside it (the release hook's, `"poison": true`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ProbeRequest {
    #[serde(default)]
    pub poison: bool,
}

/// Is this order stored?
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Lookup {
    pub order_id: uuid::Uuid,
}

/// The fields an invocation is told apart by; any others are skipped.
#[derive(Default, Deserialize)]
#[serde(default)]
#[serde(expecting = r#"an SQS event ({"Records": […]}) or the breaker's probe ({"probe": {}})"#)]
struct Payload {
    #[serde(rename = "Records")]
    records: Option<Vec<SqsMessage>>,
    /// `"probe": null` asks for a probe too.
    #[serde(deserialize_with = "present")]
    probe: Option<Option<ProbeRequest>>,
    lookup: Option<Lookup>,
}

fn present<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<ProbeRequest>>, D::Error> {
    Option::deserialize(deserializer).map(Some)
}

impl TryFrom<Payload> for Invocation {
    type Error = &'static str;

    fn try_from(payload: Payload) -> Result<Self, Self::Error> {
        match (payload.records, payload.probe, payload.lookup) {
            (Some(records), _, _) => {
                let mut event = SqsEvent::default();
                event.records = records;
                Ok(Self::Batch(event))
            }
            (None, Some(probe), _) => Ok(Self::Probe(probe.unwrap_or_default())),
            (None, None, Some(lookup)) => Ok(Self::Lookup(lookup)),
            (None, None, None) => Err(
                r#"missing field `Records`: expected an SQS event ({"Records": […]}) or the breaker's probe ({"probe": {}})"#,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_sqs_event_is_read_as_a_batch() {
        let event = r#"{"Records":[{"messageId":"m-1","body":"{}","attributes":{},"messageAttributes":{}}]}"#;
        match serde_json::from_str::<Invocation>(event).expect("an event") {
            Invocation::Batch(event) => {
                assert_eq!(event.records.len(), 1);
                assert_eq!(event.records[0].message_id.as_deref(), Some("m-1"));
            }
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    #[test]
    fn the_breakers_payload_is_read_as_a_probe() {
        let probe = serde_json::from_str::<Invocation>(breaker::PROBE_PAYLOAD);
        assert!(matches!(probe, Ok(Invocation::Probe(_))), "{probe:?}");
    }

    #[test]
    fn the_release_hooks_payload_asks_for_a_poison_record_and_the_breakers_does_not() {
        let release = serde_json::from_str::<Invocation>(breaker::hook::RELEASE_PROBE_PAYLOAD);
        assert!(
            matches!(
                release,
                Ok(Invocation::Probe(ProbeRequest { poison: true }))
            ),
            "{release:?}"
        );
        let breaker = serde_json::from_str::<Invocation>(breaker::PROBE_PAYLOAD);
        assert!(
            matches!(
                breaker,
                Ok(Invocation::Probe(ProbeRequest { poison: false }))
            ),
            "{breaker:?}"
        );
    }

    #[test]
    fn a_lookup_names_the_order_it_asks_about() {
        let lookup = serde_json::from_str::<Invocation>(
            r#"{"lookup":{"order_id":"3f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10"}}"#,
        );
        match lookup {
            Ok(Invocation::Lookup(Lookup { order_id })) => {
                assert_eq!(order_id.to_string(), "3f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10")
            }
            other => panic!("expected a lookup, got {other:?}"),
        }
        assert!(serde_json::from_str::<Invocation>(r#"{"lookup":{"order_id":"nope"}}"#).is_err());
    }

    #[test]
    fn anything_else_is_refused_naming_what_was_expected() {
        for payload in [r#"{}"#, r#"{"records":[]}"#, r#"[]"#, r#""probe""#] {
            let err = serde_json::from_str::<Invocation>(payload).expect_err(payload);
            let text = err.to_string();
            assert!(
                text.contains("Records") || text.contains("probe"),
                "{payload}: {text}"
            );
        }
    }
}
