//! The binary's tasks, one module each, chosen by `TASK`: [`consume`] (the
//! default), [`migrate`] and [`provision`]; and the invocation's clock they share.

pub mod consume;
pub mod migrate;
pub mod provision;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The invocation's deadline on the monotonic clock the handler's timers use.
pub(crate) fn deadline(deadline_ms: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + time_left(deadline_ms, epoch_millis())
}

/// 2020-01-01 in milliseconds since the epoch: no real deadline is earlier.
const PLAUSIBLE_EPOCH_MS: u64 = 1_577_836_800_000;

/// Lambda's Runtime API gives the deadline in milliseconds since the epoch.
/// cargo-lambda's emulator gives the timeout itself (600000 for ten minutes):
/// a value that small is a duration, not a moment in 1970, and reading it as a
/// moment would leave no time at all.
fn time_left(deadline_ms: u64, now_ms: u64) -> Duration {
    if deadline_ms < PLAUSIBLE_EPOCH_MS {
        Duration::from_millis(deadline_ms)
    } else {
        Duration::from_millis(deadline_ms.saturating_sub(now_ms))
    }
}

pub(crate) fn epoch_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_802_192_033;

    #[test]
    fn a_deadline_since_the_epoch_leaves_the_time_until_it() {
        assert_eq!(time_left(NOW + 29_500, NOW), Duration::from_millis(29_500));
        assert_eq!(time_left(NOW - 1, NOW), Duration::ZERO);
    }

    #[test]
    fn an_emulators_bare_timeout_is_read_as_the_time_left() {
        assert_eq!(time_left(600_000, NOW), Duration::from_secs(600));
    }
}
