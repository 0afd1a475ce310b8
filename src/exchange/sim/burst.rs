//! `--burst START:SECS:FACTOR`: every symbol's pace multiplied for a while, the way a whole
//! market bursts on news, so that a benchmark sees a recorder take one mid-run
//! (`scripts/bench.sh market`).

use std::str::FromStr;
use std::time::Duration;

/// A spell of faster events.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Burst {
    /// When it begins, after the sim started.
    pub start: Duration,
    /// How long it lasts.
    pub length: Duration,
    /// How many times the usual rate events come at meanwhile.
    pub factor: f64,
}

impl Burst {
    /// The interval between a symbol's events at `elapsed` after the sim started, for a usual
    /// interval of `usual`.
    pub fn interval(&self, usual: Duration, elapsed: Duration) -> Duration {
        if elapsed >= self.start && elapsed < self.start + self.length {
            usual.div_f64(self.factor)
        } else {
            usual
        }
    }
}

impl FromStr for Burst {
    type Err = String;

    /// `START:SECS:FACTOR`, e.g. `60:60:10`: from a minute in, for a minute, ten times the rate.
    fn from_str(s: &str) -> Result<Burst, String> {
        let invalid = || format!("invalid burst `{s}`: expected START:SECS:FACTOR, e.g. 60:60:10");
        let parts: Vec<f64> = s
            .split(':')
            .map(|p| p.trim().parse::<f64>().map_err(|_| invalid()))
            .collect::<Result<_, _>>()?;
        let &[start, length, factor] = parts.as_slice() else {
            return Err(invalid());
        };
        let seconds = |x: f64| Duration::try_from_secs_f64(x).map_err(|_| invalid());
        if !(factor.is_finite() && factor > 0.0 && factor <= 1e6) {
            return Err(invalid());
        }
        Ok(Burst {
            start: seconds(start)?,
            length: seconds(length)?,
            factor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_parses_and_speeds_up_only_its_spell() {
        let burst: Burst = "60:30:10".parse().unwrap();
        let usual = Duration::from_millis(100);
        let at = |secs| burst.interval(usual, Duration::from_secs(secs));
        assert_eq!(
            (at(59), at(60), at(89), at(90)),
            (usual, usual / 10, usual / 10, usual)
        );
        for bad in [
            "", "60:30", "60:30:0", "60:-1:10", "a:30:10", "1:2:3:4", "1:2:inf",
        ] {
            let err = bad.parse::<Burst>().unwrap_err();
            assert!(err.starts_with("invalid burst"), "{bad}: {err}");
        }
    }
}
