//! What the workspace's functions share about Lambda: invoking a function
//! (<https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html>) and the
//! invocation's clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_lambda::Client;
use aws_sdk_lambda::error::SdkError;
use aws_sdk_lambda::operation::invoke::InvokeError;
use aws_sdk_lambda::primitives::Blob;

/// A function's answer: its payload, and the function error Lambda reports
/// when it failed (`Unhandled`: the runtime could not start, crashed or timed out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    pub function_error: Option<String>,
    pub payload: Vec<u8>,
}

/// Invokes `function` (a name or an ARN, qualified or not) with `payload`
/// and waits for its answer.
pub async fn invoke(
    client: &Client,
    function: &str,
    payload: impl Into<Vec<u8>>,
) -> Result<Answer, SdkError<InvokeError>> {
    // Boxed: the SDK's future nests deep enough to overflow the compiler's
    // query depth in the callers' already deep futures.
    let output = Box::pin(
        client
            .invoke()
            .function_name(function)
            .payload(Blob::new(payload))
            .send(),
    )
    .await?;
    Ok(Answer {
        function_error: output.function_error,
        payload: output.payload.map(Blob::into_inner).unwrap_or_default(),
    })
}

/// Milliseconds since the epoch, as EMF timestamps and deadlines count.
pub fn epoch_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// 2020-01-01 in milliseconds since the epoch: no real deadline is earlier.
const PLAUSIBLE_EPOCH_MS: u64 = 1_577_836_800_000;

/// The time left until an invocation's deadline, in milliseconds since the
/// epoch; cargo-lambda's emulator gives the timeout itself (600000 for ten
/// minutes), which read as a moment in 1970 would leave no time at all.
pub fn time_left(deadline_ms: u64) -> Duration {
    time_left_at(deadline_ms, epoch_millis())
}

fn time_left_at(deadline_ms: u64, now_ms: u64) -> Duration {
    if deadline_ms < PLAUSIBLE_EPOCH_MS {
        Duration::from_millis(deadline_ms)
    } else {
        Duration::from_millis(deadline_ms.saturating_sub(now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_802_192_033;

    #[test]
    fn a_deadline_since_the_epoch_leaves_the_time_until_it() {
        assert_eq!(
            time_left_at(NOW + 29_500, NOW),
            Duration::from_millis(29_500)
        );
        assert_eq!(time_left_at(NOW - 1, NOW), Duration::ZERO);
    }

    #[test]
    fn an_emulators_bare_timeout_is_read_as_the_time_left() {
        assert_eq!(time_left_at(600_000, NOW), Duration::from_secs(600));
    }
}
