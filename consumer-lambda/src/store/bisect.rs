//! Halving a batch until each row PostgreSQL refuses for its data stands
//! alone, so that one bad row cannot hold the valid ones hostage; stopping
//! early when most of the batch is refused alike (a release fault), so that
//! it costs a few statements, not 2·n. Used for orders and conflicts alike.

use std::future::Future;
use std::ops::Range;

/// What bisecting did.
#[derive(Debug)]
pub(super) struct Bisected<T, E> {
    pub(super) done: Vec<T>,
    pub(super) alone: Vec<(usize, E)>,
    /// A part holding more than half of all positions whose two halves were
    /// refused alike: refused as a whole with the first half's error, as a
    /// release fault ([`super::fault`]) that postpones it all.
    pub(super) together: Option<(Range<usize>, E)>,
}

impl<T, E> Bisected<T, E> {
    /// What went through, and the rows refused with each error, as the
    /// positions in `which` that `0..which.len()` stood for.
    pub(super) fn refused_in(self, which: &[usize]) -> (Vec<T>, Vec<(Vec<usize>, E)>) {
        let mut refused: Vec<(Vec<usize>, E)> = self
            .alone
            .into_iter()
            .map(|(i, err)| (vec![which[i]], err))
            .collect();
        refused.extend(self.together.map(|(part, err)| (which[part].to_vec(), err)));
        (self.done, refused)
    }
}

/// A part still to bisect: not attempted yet, or refused already.
enum Part<E> {
    Untried(Range<usize>),
    Refused(Range<usize>, E),
}

/// Runs `attempt` on the positions `0..len`, and on each half of a part
/// refused for a permanent reason (`refusal` is `Some`), until each refused
/// position stands alone. A part of more than half the positions has both
/// halves attempted, and is [`Bisected::together`] when they are refused
/// alike. Any other error ends it. `failed`: the error all of `0..len` was
/// refused with already, if it was. The first half always goes first.
pub(super) async fn bisect<T, E, K, Fut>(
    len: usize,
    failed: Option<E>,
    refusal: impl Fn(&E) -> Option<K>,
    mut attempt: impl FnMut(Range<usize>) -> Fut,
) -> Result<Bisected<T, E>, E>
where
    K: PartialEq,
    Fut: Future<Output = Result<T, E>>,
{
    let mut bisected = Bisected {
        done: Vec::new(),
        alone: Vec::new(),
        together: None,
    };
    // A stack: the last part pushed is the next one bisected.
    let mut parts: Vec<Part<E>> = vec![match failed {
        Some(err) => Part::Refused(0..len, err),
        None => Part::Untried(0..len),
    }];
    while let Some(part) = parts.pop() {
        let (part, err) = match part {
            Part::Untried(part) if part.is_empty() => continue,
            Part::Untried(part) => match attempt(part.clone()).await {
                Ok(done) => {
                    bisected.done.push(done);
                    continue;
                }
                Err(err) if refusal(&err).is_some() => (part, err),
                Err(err) => return Err(err),
            },
            Part::Refused(part, err) => (part, err),
        };
        if part.len() == 1 {
            bisected.alone.push((part.start, err));
            continue;
        }
        let [second, first] = halves(part.clone());
        if part.len() * 2 <= len {
            parts.extend([Part::Untried(second), Part::Untried(first)]);
            continue;
        }
        let mut refused = Vec::with_capacity(2);
        for half in [first, second] {
            match attempt(half.clone()).await {
                Ok(done) => bisected.done.push(done),
                Err(err) if refusal(&err).is_some() => refused.push(Part::Refused(half, err)),
                Err(err) => return Err(err),
            }
        }
        if let [Part::Refused(_, a), Part::Refused(_, b)] = refused.as_slice()
            && refusal(a) == refusal(b)
        {
            let Some(Part::Refused(_, first_error)) = refused.into_iter().next() else {
                unreachable!("matched as two refused halves")
            };
            bisected.together = Some((part, first_error));
            continue;
        }
        // The first half is bisected before the second.
        parts.extend(refused.into_iter().rev());
    }
    Ok(bisected)
}

/// The halves of `part`, the second first: the stack pops the first first.
fn halves(part: Range<usize>) -> [Range<usize>; 2] {
    let middle = part.start + part.len() / 2;
    [middle..part.end, part.start..middle]
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    enum Error {
        /// The part holds a bad row, refused with this kind (the SQLSTATE
        /// and constraint of the part's first bad row).
        Refused(usize),
        Transient,
    }

    /// Each bad row refused its own way.
    fn apart(row: usize) -> usize {
        row
    }

    /// Every bad row refused the same way.
    fn alike(_: usize) -> usize {
        0
    }

    /// Bisects `0..len` where `bad` are refused (row `i` as `kind(i)`) and
    /// the part `transient` fails for another reason: what was done, and
    /// every part attempted, in order.
    async fn run_with(
        len: usize,
        bad: &[usize],
        kind: fn(usize) -> usize,
        transient: Option<Range<usize>>,
        failed: Option<Error>,
    ) -> (
        Result<Bisected<Range<usize>, Error>, Error>,
        Vec<Range<usize>>,
    ) {
        let bad: HashSet<usize> = bad.iter().copied().collect();
        let mut attempted = Vec::new();
        let bisected = bisect(
            len,
            failed,
            |err| match err {
                Error::Refused(kind) => Some(*kind),
                Error::Transient => None,
            },
            |part: Range<usize>| {
                attempted.push(part.clone());
                let result = if transient.as_ref() == Some(&part) {
                    Err(Error::Transient)
                } else if let Some(row) = part.clone().find(|i| bad.contains(i)) {
                    Err(Error::Refused(kind(row)))
                } else {
                    Ok(part)
                };
                std::future::ready(result)
            },
        )
        .await;
        (bisected, attempted)
    }

    async fn run(
        len: usize,
        bad: &[usize],
        transient: Option<Range<usize>>,
        failed: Option<Error>,
    ) -> (
        Result<Bisected<Range<usize>, Error>, Error>,
        Vec<Range<usize>>,
    ) {
        run_with(len, bad, apart, transient, failed).await
    }

    #[tokio::test]
    async fn a_batch_without_a_bad_row_is_attempted_once_as_a_whole() {
        let (bisected, attempted) = run(8, &[], None, None).await;
        let whole = std::iter::once(0..8);
        assert!(
            bisected
                .expect("no transient error")
                .done
                .into_iter()
                .eq(whole.clone())
        );
        assert!(attempted.into_iter().eq(whole));
    }

    #[tokio::test]
    async fn each_bad_row_ends_up_alone_and_every_other_row_goes_through_once() {
        for (len, bad) in [
            (1, vec![0]),
            (2, vec![1]),
            (10, vec![3, 7]),
            (10, vec![0, 9]),
            (7, vec![2, 3]),
            (1_000, vec![617]),
            (5, vec![0, 1, 2, 3, 4]),
        ] {
            let (bisected, attempted) = run(len, &bad, None, None).await;
            let bisected = bisected.expect("no transient error");
            let alone: Vec<usize> = bisected.alone.iter().map(|(i, _)| *i).collect();
            assert_eq!(alone, bad, "{len} rows, bad {bad:?}");
            let mut through: Vec<usize> = bisected.done.into_iter().flatten().collect();
            through.sort_unstable();
            let expected: Vec<usize> = (0..len).filter(|i| !bad.contains(i)).collect();
            assert_eq!(through, expected, "{len} rows, bad {bad:?}");
            if bad.len() == 1 {
                let bound = 1 + 2 * (len as f64).log2().ceil() as usize;
                assert!(attempted.len() <= bound, "{attempted:?}");
            }
        }
    }

    #[tokio::test]
    async fn the_first_half_is_attempted_before_the_second() {
        let (_, attempted) = run(4, &[3], None, None).await;
        assert_eq!(attempted, [0..4, 0..2, 2..4, 2..3, 3..4]);
    }

    #[tokio::test]
    async fn a_transient_error_ends_the_bisection_with_that_error() {
        let (bisected, attempted) = run(8, &[1], Some(4..8), None).await;
        assert_eq!(bisected.expect_err("transient"), Error::Transient);
        assert_eq!(attempted.last(), Some(&(4..8)), "{attempted:?}");
    }

    #[tokio::test]
    async fn rows_already_refused_as_a_whole_are_not_attempted_as_a_whole_again() {
        let (bisected, attempted) = run(4, &[0], None, Some(Error::Refused(0))).await;
        assert_eq!(attempted, [0..2, 2..4, 0..1, 1..2]);
        assert_eq!(bisected.expect("permanent only").alone.len(), 1);
    }

    #[tokio::test]
    async fn one_row_already_refused_is_alone_without_another_attempt() {
        let (bisected, attempted) = run(1, &[0], None, Some(Error::Refused(0))).await;
        assert!(attempted.is_empty());
        assert_eq!(
            bisected.expect("permanent only").alone[0],
            (0, Error::Refused(0))
        );
    }

    #[tokio::test]
    async fn when_every_row_is_refused_alike_the_bisection_stops_at_the_halves() {
        let every: Vec<usize> = (0..10_000).collect();
        let (bisected, attempted) = run_with(10_000, &every, alike, None, None).await;
        assert_eq!(attempted, [0..10_000, 0..5_000, 5_000..10_000]);
        let bisected = bisected.expect("permanent only");
        assert_eq!(bisected.together, Some((0..10_000, Error::Refused(0))));
        assert!(bisected.alone.is_empty() && bisected.done.is_empty());
    }

    #[tokio::test]
    async fn halves_refused_in_different_ways_are_bisected_on() {
        let (bisected, _) = run(4, &[0, 1, 2, 3], None, None).await;
        let bisected = bisected.expect("permanent only");
        assert_eq!(bisected.together, None);
        let alone: Vec<usize> = bisected.alone.iter().map(|(i, _)| *i).collect();
        assert_eq!(alone, [0, 1, 2, 3]);
    }

    #[tokio::test]
    async fn a_minority_refused_alike_is_still_told_apart_row_by_row() {
        // Rows 0 and 1, alike: a quarter of the batch, in its first half.
        let (bisected, _) = run_with(8, &[0, 1], alike, None, None).await;
        let bisected = bisected.expect("permanent only");
        assert_eq!(bisected.together, None);
        let alone: Vec<usize> = bisected.alone.iter().map(|(i, _)| *i).collect();
        assert_eq!(alone, [0, 1]);
    }
}
