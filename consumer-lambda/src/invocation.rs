//! What the consumer function is invoked with: a batch from the event source
//! mapping, the circuit breaker's probe ([`breaker::PROBE_PAYLOAD`]) or the
//! release hook's, with a poison record ([`breaker::hook::RELEASE_PROBE_PAYLOAD`]),
//! or a lookup of one order (`{"lookup": {"order_id": "…"}}`), which
//! `scripts/deploy`'s canary asks instead of waiting for the consumer's logs.
//!
//! Read in one pass, without buffering the payload first (as an untagged enum
//! would), so a batch of a thousand records costs what the `SqsEvent` alone costs.

use std::fmt;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use serde::Serialize;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

/// One invocation's payload.
#[derive(Debug)]
pub enum Invocation {
    Batch(SqsEvent),
    Probe(ProbeRequest),
    Lookup(Lookup),
}

/// What a probe asks for: the canary order alone (the breaker's), or with a
/// poison record beside it (the release hook's, `"poison": true`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct ProbeRequest {
    #[serde(default)]
    pub poison: bool,
}

/// Is this order stored?
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Lookup {
    pub order_id: uuid::Uuid,
}

/// The lookup's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LookupAnswer {
    pub order_id: uuid::Uuid,
    pub stored: bool,
}

impl<'de> Deserialize<'de> for Invocation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;

        impl<'de> Visitor<'de> for Fields {
            type Value = Invocation;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    r#"an SQS event ({"Records": […]}) or the breaker's probe ({"probe": {}})"#,
                )
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Invocation, A::Error> {
                let mut records: Option<Vec<SqsMessage>> = None;
                let mut probe: Option<ProbeRequest> = None;
                let mut lookup: Option<Lookup> = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "Records" => records = Some(map.next_value()?),
                        "probe" => {
                            probe = Some(
                                map.next_value::<Option<ProbeRequest>>()?
                                    .unwrap_or_default(),
                            )
                        }
                        "lookup" => lookup = Some(map.next_value()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                match (records, probe, lookup) {
                    (Some(records), _, _) => {
                        let mut event = SqsEvent::default();
                        event.records = records;
                        Ok(Invocation::Batch(event))
                    }
                    (None, Some(probe), _) => Ok(Invocation::Probe(probe)),
                    (None, None, Some(lookup)) => Ok(Invocation::Lookup(lookup)),
                    (None, None, None) => Err(serde::de::Error::missing_field("Records")),
                }
            }
        }

        deserializer.deserialize_map(Fields)
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
