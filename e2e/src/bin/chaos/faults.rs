//! The seeded schedule of faults.

use std::time::Duration;

use crate::{FUNCTION_TIMEOUT, VISIBILITY_TIMEOUT_SECS};

/// SplitMix64: a seeded, repeatable source of numbers (no dependency needed).
pub(crate) struct Seeded(pub(crate) u64);

impl Seeded {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    KillConsumer,
    StopDatabase(Duration),
    FreezeDatabase(Duration),
    RestartProducer,
    /// A consumer build whose batch path fails every record, this long.
    BadRelease(Duration),
}

/// Two consumer kills, two database stops (one longer than the visibility
/// timeout), one freeze longer than the function timeout, one producer restart:
/// at seeded moments, in order, inside the posting window.
pub(crate) fn fault_schedule(seeded: &mut Seeded, run: Duration) -> Vec<(Duration, Fault)> {
    let visibility = Duration::from_secs(u64::from(VISIBILITY_TIMEOUT_SECS));
    let mut faults = vec![
        Fault::KillConsumer,
        Fault::KillConsumer,
        Fault::StopDatabase(visibility * 3),
        Fault::StopDatabase(Duration::from_secs(2)),
        Fault::FreezeDatabase(FUNCTION_TIMEOUT + Duration::from_secs(3)),
        Fault::RestartProducer,
    ];
    // Shuffle with the seed (Fisher–Yates), then place them at sorted moments.
    for i in (1..faults.len()).rev() {
        let j = (seeded.next() % (i as u64 + 1)) as usize;
        faults.swap(i, j);
    }
    let mut moments: Vec<Duration> = faults
        .iter()
        .map(|_| run.mul_f64(0.05 + 0.85 * seeded.unit()))
        .collect();
    moments.sort();
    moments.into_iter().zip(faults).collect()
}
