//! Halving a batch until each row PostgreSQL refuses for its data stands
//! alone, so that one bad row cannot hold the valid ones beside it hostage.
//! One bisection for both tables: the orders, and the conflicts kept aside.

use std::future::Future;
use std::ops::Range;

/// What bisecting did: what each part that went through returned, and each
/// position refused on its own, with its error.
#[derive(Debug)]
pub(super) struct Bisected<T, E> {
    pub(super) done: Vec<T>,
    pub(super) alone: Vec<(usize, E)>,
}

/// Runs `attempt` on the positions `0..len`; on a part refused for a
/// permanent reason (`is_permanent`), on each half, until each refused
/// position stands alone (about 2·log₂ n extra attempts per bad row). Any
/// other error ends it at once. `failed` is the permanent error with which
/// all of `0..len` was refused already, if it was: then the whole is not
/// attempted again. The first half is always attempted before the second.
pub(super) async fn bisect<T, E, Fut>(
    len: usize,
    failed: Option<E>,
    is_permanent: impl Fn(&E) -> bool,
    mut attempt: impl FnMut(Range<usize>) -> Fut,
) -> Result<Bisected<T, E>, E>
where
    Fut: Future<Output = Result<T, E>>,
{
    let mut bisected = Bisected {
        done: Vec::new(),
        alone: Vec::new(),
    };
    // A stack of half-open ranges.
    let mut parts: Vec<Range<usize>> = match failed {
        Some(err) if len == 1 => {
            bisected.alone.push((0, err));
            Vec::new()
        }
        Some(_) => halves(0..len).into(),
        None => std::iter::once(0..len).collect(),
    };
    while let Some(part) = parts.pop() {
        if part.is_empty() {
            continue;
        }
        match attempt(part.clone()).await {
            Ok(done) => bisected.done.push(done),
            Err(err) if is_permanent(&err) && part.len() == 1 => {
                bisected.alone.push((part.start, err));
            }
            Err(err) if is_permanent(&err) => parts.extend(halves(part)),
            Err(err) => return Err(err),
        }
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
        /// The part holds a bad row.
        Refused,
        Transient,
    }

    /// Bisects `0..len` where `bad` are refused and the part `transient`
    /// fails for another reason: what was done, and every part attempted, in order.
    async fn run(
        len: usize,
        bad: &[usize],
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
            |err| *err == Error::Refused,
            |part: Range<usize>| {
                attempted.push(part.clone());
                let result = if transient.as_ref() == Some(&part) {
                    Err(Error::Transient)
                } else if part.clone().any(|i| bad.contains(&i)) {
                    Err(Error::Refused)
                } else {
                    Ok(part)
                };
                std::future::ready(result)
            },
        )
        .await;
        (bisected, attempted)
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
        let (bisected, attempted) = run(4, &[0], None, Some(Error::Refused)).await;
        assert_eq!(attempted, [0..2, 0..1, 1..2, 2..4]);
        assert_eq!(bisected.expect("permanent only").alone.len(), 1);
    }

    #[tokio::test]
    async fn one_row_already_refused_is_alone_without_another_attempt() {
        let (bisected, attempted) = run(1, &[0], None, Some(Error::Refused)).await;
        assert!(attempted.is_empty());
        assert_eq!(
            bisected.expect("permanent only").alone[0],
            (0, Error::Refused)
        );
    }
}
