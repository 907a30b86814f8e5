//! The plan of a batch, with no database: which copy of each order is
//! written, and, once the write and the lookups said what is stored, what
//! became of each delivery. Rows are named by their position in the batch.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use uuid::Uuid;

use super::{Fault, Outcome, Refused, StoreOutcome};

/// The content hash stored under each order id looked up (`None` for rows
/// from before hashes were kept).
pub(super) type StoredHashes = HashMap<Uuid, Option<[u8; 32]>>;

/// The batch with its repeats set aside: the first copy of each order is
/// written, later copies are compared with it.
#[derive(Debug)]
pub(super) struct Deduped {
    pub(super) first_copies: Vec<usize>,
    pub(super) repeats: Vec<usize>,
    first_copy_of: HashMap<Uuid, usize>,
}

impl Deduped {
    pub(super) fn new(order_ids: &[Uuid]) -> Self {
        let mut first_copy_of = HashMap::with_capacity(order_ids.len());
        let mut first_copies = Vec::with_capacity(order_ids.len());
        let mut repeats = Vec::new();
        for (row, &id) in order_ids.iter().enumerate() {
            match first_copy_of.entry(id) {
                Entry::Vacant(slot) => {
                    slot.insert(row);
                    first_copies.push(row);
                }
                Entry::Occupied(_) => repeats.push(row),
            }
        }
        Self {
            first_copies,
            repeats,
            first_copy_of,
        }
    }
}

/// What writing the first copies found out.
#[derive(Debug, Default)]
pub(super) struct Written {
    pub(super) stored: u64,
    /// First copies found stored, by the lookup or by the write.
    pub(super) found_stored: Vec<usize>,
    pub(super) stored_hashes: StoredHashes,
    pub(super) refused: Vec<Refused>,
}

impl Written {
    pub(super) fn absorb(&mut self, part: Written) {
        self.stored += part.stored;
        self.found_stored.extend(part.found_stored);
        self.stored_hashes.extend(part.stored_hashes);
        self.refused.extend(part.refused);
    }
}

/// What keeping the conflicting newcomers aside did.
#[derive(Debug, Default)]
pub(super) struct Kept {
    /// Those newly kept in `order_conflicts` (the others were kept before).
    pub(super) kept_now: Vec<usize>,
    /// Those `order_conflicts` refused for their data.
    pub(super) refused: Vec<Refused>,
}

/// The batch classified before the conflicts are kept aside.
#[derive(Debug)]
pub(super) struct Classified {
    outcome: StoreOutcome,
    /// The conflicting newcomers to keep aside, each counted as kept before
    /// until [`Classified::with_kept`] says otherwise.
    pub(super) conflicts: Vec<usize>,
}

/// Why a repeat of a refused order is refused with it.
pub(super) const FIRST_COPY_REFUSED: &str =
    "an earlier message of this batch with the same order_id was refused";

/// What became of each delivery: a first copy is stored unless found stored
/// or refused; a copy found stored, and every repeat, is a duplicate when its
/// content is the stored one's (else its first copy's), a conflict when it
/// differs, and refused when its first copy was. `hash` gives a row's content
/// hash, worked out only for the rows compared.
pub(super) fn classify(
    order_ids: &[Uuid],
    batch: &Deduped,
    written: Written,
    hash: impl Fn(usize) -> [u8; 32],
) -> Classified {
    let mut outcome = StoreOutcome {
        by_delivery: vec![Outcome::Stored; order_ids.len()],
        stored: written.stored,
        refused: written.refused,
        ..StoreOutcome::default()
    };
    for refused in &outcome.refused {
        outcome.by_delivery[refused.index] = Outcome::Refused;
    }
    let refused_ids: HashMap<Uuid, Fault> = outcome
        .refused
        .iter()
        .map(|r| (order_ids[r.index], r.fault))
        .collect();
    let mut conflicts = Vec::new();
    for row in written
        .found_stored
        .into_iter()
        .chain(batch.repeats.iter().copied())
    {
        let id = order_ids[row];
        if let Some(&fault) = refused_ids.get(&id) {
            // Its first copy was refused; this one is not known to be better.
            outcome.by_delivery[row] = Outcome::Refused;
            outcome.refused.push(Refused {
                index: row,
                reason: FIRST_COPY_REFUSED.into(),
                fault,
            });
            continue;
        }
        let stored_hash = written
            .stored_hashes
            .get(&id)
            .copied()
            .flatten()
            .unwrap_or_else(|| hash(batch.first_copy_of[&id]));
        if stored_hash == hash(row) {
            outcome.by_delivery[row] = Outcome::Duplicate;
            outcome.duplicates += 1;
        } else {
            outcome.by_delivery[row] = Outcome::Conflict { kept_now: false };
            conflicts.push(row);
        }
    }
    Classified { outcome, conflicts }
}

impl Classified {
    /// The outcome once the conflicts were kept aside: those kept before
    /// count as duplicates.
    pub(super) fn with_kept(self, kept: Kept) -> StoreOutcome {
        let Classified {
            mut outcome,
            conflicts,
        } = self;
        for &row in &kept.kept_now {
            outcome.by_delivery[row] = Outcome::Conflict { kept_now: true };
        }
        for refused in &kept.refused {
            outcome.by_delivery[refused.index] = Outcome::Refused;
        }
        outcome.conflicts = kept.kept_now.len() as u64;
        outcome.duplicates += (conflicts.len() - kept.kept_now.len() - kept.refused.len()) as u64;
        outcome.refused.extend(kept.refused);
        // Rows left `Stored` are exactly those written: checked by every test.
        debug_assert_eq!(
            outcome
                .by_delivery
                .iter()
                .filter(|o| **o == Outcome::Stored)
                .count() as u64,
            outcome.stored
        );
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row as the tables write it: an order and its content, `"a1"` being
    /// order `a` with content `1`; stored as `"a-"`, from before hashes were kept.
    fn order_id(row: &str) -> Uuid {
        Uuid::from_u128(u128::from(row.as_bytes()[0]))
    }

    fn hash(row: &str) -> Option<[u8; 32]> {
        match row.as_bytes()[1] {
            b'-' => None,
            content => Some([content; 32]),
        }
    }

    /// A batch written with `stored` in the table beforehand and `refused`
    /// (positions) refused by PostgreSQL: the outcome of each row, the
    /// conflicts to keep aside, and the duplicates counted.
    fn classified(
        batch: &[&str],
        stored: &[&str],
        refused: &[usize],
    ) -> (Vec<Outcome>, Vec<usize>, u64) {
        let order_ids: Vec<Uuid> = batch.iter().map(|row| order_id(row)).collect();
        let deduped = Deduped::new(&order_ids);
        let stored_hashes: StoredHashes = stored
            .iter()
            .map(|row| (order_id(row), hash(row)))
            .collect();
        let found_stored: Vec<usize> = deduped
            .first_copies
            .iter()
            .copied()
            .filter(|&row| stored_hashes.contains_key(&order_ids[row]))
            .collect();
        let written = Written {
            stored: (deduped.first_copies.len() - found_stored.len() - refused.len()) as u64,
            found_stored,
            stored_hashes,
            refused: refused
                .iter()
                .map(|&index| Refused {
                    index,
                    reason: "value out of range".into(),
                    fault: Fault::Order,
                })
                .collect(),
        };
        let classified = classify(&order_ids, &deduped, written, |row| {
            hash(batch[row]).expect("every delivery has a hash")
        });
        let conflicts = classified.conflicts.clone();
        let duplicates = classified.outcome.duplicates;
        (classified.outcome.by_delivery, conflicts, duplicates)
    }

    const CONFLICT: Outcome = Outcome::Conflict { kept_now: false };
    use Outcome::{Duplicate, Refused as Refuse, Stored as Store};

    #[test]
    fn the_first_copy_of_each_order_is_written_and_later_copies_set_aside() {
        let ids: Vec<Uuid> = ["a1", "b1", "a1", "c1", "b2", "a3"]
            .iter()
            .map(|row| order_id(row))
            .collect();
        let deduped = Deduped::new(&ids);
        assert_eq!(deduped.first_copies, [0, 1, 3]);
        assert_eq!(deduped.repeats, [2, 4, 5]);
    }

    /// One row of a table: a batch, what the table held before, the first
    /// copies PostgreSQL refused; what became of each delivery, the
    /// conflicts to keep aside and the duplicates counted.
    struct Case {
        says: &'static str,
        batch: &'static [&'static str],
        stored: &'static [&'static str],
        refused: &'static [usize],
        outcomes: &'static [Outcome],
        conflicts: &'static [usize],
        duplicates: u64,
    }

    #[rustfmt::skip]
    const CASES: [Case; 10] = [
        Case {
            says: "new orders are stored",
            batch: &["a1", "b1"], stored: &[], refused: &[],
            outcomes: &[Store, Store], conflicts: &[], duplicates: 0,
        },
        Case {
            says: "a later copy with the same content is a duplicate of the first",
            batch: &["a1", "a1"], stored: &[], refused: &[],
            outcomes: &[Store, Duplicate], conflicts: &[], duplicates: 1,
        },
        Case {
            says: "a later copy with other content conflicts with the first",
            batch: &["a1", "a2"], stored: &[], refused: &[],
            outcomes: &[Store, CONFLICT], conflicts: &[1], duplicates: 0,
        },
        Case {
            says: "an order found stored with the same content is a duplicate",
            batch: &["a1", "b1"], stored: &["a1"], refused: &[],
            outcomes: &[Duplicate, Store], conflicts: &[], duplicates: 1,
        },
        Case {
            says: "an order found stored with other content conflicts",
            batch: &["a2"], stored: &["a1"], refused: &[],
            outcomes: &[CONFLICT], conflicts: &[0], duplicates: 0,
        },
        Case {
            says: "an order stored before hashes were kept is a duplicate",
            batch: &["a1"], stored: &["a-"], refused: &[],
            outcomes: &[Duplicate], conflicts: &[], duplicates: 1,
        },
        Case {
            says: "a later copy of a stored order is compared with the stored content",
            batch: &["a2", "a1"], stored: &["a1"], refused: &[],
            outcomes: &[CONFLICT, Duplicate], conflicts: &[0], duplicates: 1,
        },
        Case {
            says: "a later copy of an order stored without a hash is compared with the first",
            batch: &["a1", "a2"], stored: &["a-"], refused: &[],
            outcomes: &[Duplicate, CONFLICT], conflicts: &[1], duplicates: 1,
        },
        Case {
            says: "a refused order is refused, and so is every later copy of it",
            batch: &["a1", "b1", "a1", "a2"], stored: &[], refused: &[0],
            outcomes: &[Refuse, Store, Refuse, Refuse], conflicts: &[], duplicates: 0,
        },
        Case {
            says: "a refused order leaves the others as they are",
            batch: &["a1", "b2", "b1"], stored: &["b1"], refused: &[0],
            outcomes: &[Refuse, CONFLICT, Duplicate], conflicts: &[1], duplicates: 1,
        },
    ];

    #[test]
    fn each_delivery_is_classified_from_what_was_written_and_found_stored() {
        for case in CASES {
            assert_eq!(
                classified(case.batch, case.stored, case.refused),
                (
                    case.outcomes.to_vec(),
                    case.conflicts.to_vec(),
                    case.duplicates
                ),
                "{}",
                case.says
            );
        }
    }

    #[test]
    fn a_later_copy_of_a_refused_order_says_why_it_is_refused_too() {
        let ids = [order_id("a1"), order_id("a1")];
        let batch = Deduped::new(&ids);
        let written = Written {
            refused: vec![Refused {
                index: 0,
                reason: "value out of range".into(),
                fault: Fault::Release,
            }],
            ..Written::default()
        };
        let outcome = classify(&ids, &batch, written, |_| [1; 32]).with_kept(Kept::default());
        assert_eq!(outcome.refused[1].index, 1);
        assert_eq!(outcome.refused[1].reason, FIRST_COPY_REFUSED);
        assert_eq!(outcome.refused[1].fault, Fault::Release, "the first copy's");
    }

    /// Two conflicting newcomers (rows 1 and 2), kept aside thus.
    struct Keeping {
        says: &'static str,
        kept_now: &'static [usize],
        refused: &'static [usize],
        outcomes: &'static [Outcome],
        conflicts: u64,
        duplicates: u64,
    }

    const KEPT_NOW: Outcome = Outcome::Conflict { kept_now: true };

    #[rustfmt::skip]
    const KEEPINGS: [Keeping; 3] = [
        Keeping {
            says: "both kept now",
            kept_now: &[1, 2], refused: &[],
            outcomes: &[Store, KEPT_NOW, KEPT_NOW], conflicts: 2, duplicates: 0,
        },
        Keeping {
            says: "both kept before",
            kept_now: &[], refused: &[],
            outcomes: &[Store, CONFLICT, CONFLICT], conflicts: 0, duplicates: 2,
        },
        Keeping {
            says: "one kept now, one refused by order_conflicts",
            kept_now: &[1], refused: &[2],
            outcomes: &[Store, KEPT_NOW, Refuse], conflicts: 1, duplicates: 0,
        },
    ];

    #[test]
    fn conflicts_kept_now_count_as_conflicts_and_those_kept_before_as_duplicates() {
        for case in KEEPINGS {
            let ids = [order_id("a1"), order_id("a2"), order_id("a3")];
            let written = Written {
                stored: 1,
                ..Written::default()
            };
            let classified = classify(&ids, &Deduped::new(&ids), written, |row| [row as u8; 32]);
            assert_eq!(classified.conflicts, [1, 2], "{}", case.says);
            let kept = Kept {
                kept_now: case.kept_now.to_vec(),
                refused: case
                    .refused
                    .iter()
                    .map(|&index| Refused {
                        index,
                        reason: "check constraint".into(),
                        fault: Fault::Order,
                    })
                    .collect(),
            };
            let outcome = classified.with_kept(kept);
            assert_eq!(outcome.by_delivery, case.outcomes, "{}", case.says);
            assert_eq!(
                (outcome.conflicts, outcome.duplicates, outcome.refused.len()),
                (case.conflicts, case.duplicates, case.refused.len()),
                "{}",
                case.says
            );
        }
    }
}
