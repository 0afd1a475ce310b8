//! Retry pacing for anything that talks to the exchange: connections and REST snapshots.

use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::SmallRng};

use crate::util::clock::wall_ns;

/// Capped exponential backoff with jitter: 0.25 s, 0.5 s, 1 s … 30 s, each drawn from the upper
/// half of its step so that many recorders restarting together spread out.
pub struct Backoff {
    attempt: u32,
    rng: SmallRng,
}

/// The first retry's ceiling: fast, because most disconnects are one-off.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Never wait longer than this between attempts: an outage should not hide a recovery for long.
const BACKOFF_CAP: Duration = Duration::from_secs(30);

impl Backoff {
    pub fn new() -> Backoff {
        Backoff {
            attempt: 0,
            rng: SmallRng::seed_from_u64(wall_ns()),
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let ceiling = BACKOFF_BASE
            .saturating_mul(1 << self.attempt.min(16))
            .min(BACKOFF_CAP);
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(self.rng.random_range(0.5..=1.0))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new();
        let delays: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= BACKOFF_BASE / 2 && delays[0] <= BACKOFF_BASE);
        assert!(delays[3] >= Duration::from_secs(1) && delays[3] <= Duration::from_secs(2));
        assert!(delays.iter().all(|d| *d <= BACKOFF_CAP));
        assert!(delays[11] >= BACKOFF_CAP / 2);
        b.reset();
        assert!(b.next_delay() <= BACKOFF_BASE);
    }
}
