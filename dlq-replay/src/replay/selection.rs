//! Selection: which of the received messages this run moves, and which it
//! leaves in the DLQ (and why).

use std::collections::{BTreeSet, HashSet};

use aws_sdk_sqs::types::Message;
use order_contract::FailureClass;
use tracing::{Span, debug, info_span};
use uuid::Uuid;

use super::Run;
use crate::inspect::{Reason, Verdict};

/// Which messages to move (or export).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Move only messages the contract accepts; leave the rest in the DLQ.
    pub only_valid: bool,
    /// When not empty, move only the orders with these ids.
    pub order_ids: HashSet<Uuid>,
    /// When not empty, move only messages of these failure classes (`--reason`).
    pub reasons: BTreeSet<FailureClass>,
}

/// Why a message stays in the DLQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    Invalid(String),
    NotSelected,
}

impl Selection {
    /// Whether a message with this verdict and this failure class is chosen.
    pub fn decide(&self, verdict: &Verdict, class: FailureClass) -> Result<(), Skip> {
        if !self.reasons.is_empty() && !self.reasons.contains(&class) {
            return Err(Skip::NotSelected);
        }
        if !self.order_ids.is_empty()
            && !verdict
                .order_uuid()
                .is_some_and(|id| self.order_ids.contains(&id))
        {
            return Err(Skip::NotSelected);
        }
        match &verdict.invalid_reason {
            Some(reason) if self.only_valid => Err(Skip::Invalid(reason.clone())),
            _ => Ok(()),
        }
    }
}

/// A received message on its way, with its ids and its tracing span.
pub(super) struct Candidate {
    pub(super) message: Message,
    pub(super) id: String,
    pub(super) order_id: String,
    pub(super) span: Span,
}

impl Run<'_> {
    /// Looks at a receive: returns how many messages this run had not seen
    /// before, and those of them to move. One seen again had outlived its hold;
    /// the receive has just hidden it again, under a new receipt handle.
    pub(super) fn take_fresh(&mut self, received: Vec<Message>) -> (usize, Vec<Candidate>) {
        let mut fresh = 0;
        let mut selected = Vec::new();
        for message in received {
            let id = message.message_id().unwrap_or_default().to_owned();
            if !self.seen.insert(id.clone()) {
                debug!(message_id = %id, "received again after its hold ran out");
                self.held
                    .hold(&id, message.receipt_handle().unwrap_or_default());
                continue;
            }
            fresh += 1;
            let body = message.body().unwrap_or_default();
            let verdict = Verdict::of(body);
            let reason = Reason::of(
                message.message_attributes().unwrap_or(&Default::default()),
                body,
            );
            let order_id = verdict.order_id.clone().unwrap_or_else(|| "-".to_owned());
            let span = info_span!("message", message_id = %id, order_id = %order_id);
            let candidate = Candidate {
                message,
                id,
                order_id,
                span,
            };
            if let Some(candidate) = self.keep_or_skip(candidate, &verdict, reason.class) {
                selected.push(candidate);
            }
        }
        (fresh, selected)
    }

    fn keep_or_skip(
        &mut self,
        candidate: Candidate,
        verdict: &Verdict,
        class: FailureClass,
    ) -> Option<Candidate> {
        match self.options.selection.decide(verdict, class) {
            Ok(()) => Some(candidate),
            Err(skip) => {
                self.counts.skipped += 1;
                self.hold(&candidate);
                let _entered = candidate.span.enter();
                match skip {
                    Skip::Invalid(reason) => {
                        debug!(%reason, "skipped: invalid");
                        self.progress.note(&format!(
                            "skipped {} (order {}): invalid: {reason}",
                            candidate.id, candidate.order_id
                        ));
                    }
                    // Not worth a line each: with --order-id or --reason, most
                    // of the DLQ may be "not selected".
                    Skip::NotSelected => debug!(%class, "skipped: not selected"),
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(order_id: Option<&str>, invalid: Option<&str>) -> Verdict {
        Verdict {
            order_id: order_id.map(str::to_owned),
            invalid_reason: invalid.map(str::to_owned),
        }
    }

    const ID: &str = "3f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10";
    const ANY: FailureClass = FailureClass::Redriven;

    #[test]
    fn by_default_every_message_is_moved_valid_or_not() {
        let all = Selection::default();
        assert_eq!(
            all.decide(&verdict(None, Some("`currency` bad")), ANY),
            Ok(())
        );
        assert_eq!(all.decide(&verdict(Some(ID), None), ANY), Ok(()));
    }

    #[test]
    fn only_valid_leaves_invalid_messages_with_their_reason() {
        let only_valid = Selection {
            only_valid: true,
            ..Selection::default()
        };
        assert_eq!(
            only_valid.decide(&verdict(Some(ID), Some("`currency` bad")), ANY),
            Err(Skip::Invalid("`currency` bad".into()))
        );
        assert_eq!(only_valid.decide(&verdict(Some(ID), None), ANY), Ok(()));
    }

    #[test]
    fn order_ids_select_by_uuid_and_leave_messages_without_an_id() {
        let selection = Selection {
            order_ids: [ID.parse().expect("uuid")].into_iter().collect(),
            ..Selection::default()
        };
        assert_eq!(
            selection.decide(&verdict(Some(&ID.to_uppercase()), None), ANY),
            Ok(())
        );
        assert_eq!(
            selection.decide(
                &verdict(Some("1f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10"), None),
                ANY
            ),
            Err(Skip::NotSelected)
        );
        assert_eq!(
            selection.decide(&verdict(None, Some("not JSON")), ANY),
            Err(Skip::NotSelected)
        );
    }

    #[test]
    fn reasons_select_by_failure_class_along_with_the_other_filters() {
        let row_refused = Selection {
            reasons: [FailureClass::RowRefused].into_iter().collect(),
            ..Selection::default()
        };
        assert_eq!(
            row_refused.decide(&verdict(Some(ID), None), FailureClass::RowRefused),
            Ok(())
        );
        assert_eq!(
            row_refused.decide(&verdict(Some(ID), None), FailureClass::Redriven),
            Err(Skip::NotSelected)
        );
        let with_order = Selection {
            order_ids: [ID.parse().expect("uuid")].into_iter().collect(),
            ..row_refused
        };
        assert_eq!(
            with_order.decide(
                &verdict(Some("1f0c1b6e-6a3b-4f7e-9d43-1b8d6f2a9c10"), None),
                FailureClass::RowRefused
            ),
            Err(Skip::NotSelected),
            "both filters apply"
        );
    }
}
