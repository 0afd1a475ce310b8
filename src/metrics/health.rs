//! `obrec health`: is a recorder alive and inside the seed's alert thresholds?
//!
//! Reads `metrics.json` and exits 0 when it is fresh and healthy, 1 with a one-line reason
//! otherwise, so systemd, supervisord, cron or a load balancer can act on it. Rates and latency
//! percentiles are judged on the last print interval (a morning's latency spike should not fail
//! the check all afternoon); breaks, resyncs, reconnects and drops over a recent window
//! (`--window`), from the incidents the recorder keeps in metrics.json, so that one early break
//! does not fail the check for the life of the process. The recorder's live `/healthz` judges its
//! latest report with [`judge`] and the default thresholds too, so the two agree.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::metrics::{INCIDENT_SPAN, Report};

/// Default `--window` (the flag spells it `15m`; a cli test holds the two together): a check run
/// every minute or five sees an incident several times, and one early incident does not mark the
/// recorder all day.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(15 * 60);

/// The thresholds default to the seed's "abnormal" column.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthCheck {
    /// The recorder's metrics file.
    pub metrics: PathBuf,
    /// Oldest acceptable metrics.json, in seconds (the recorder rewrites it every print interval).
    pub max_age: f64,
    /// Longest acceptable silence of the feed: age of the newest recorded event, in seconds.
    pub max_silence: f64,
    /// Lowest acceptable receive rate over the last interval, events/s.
    pub min_rate: f64,
    /// Highest acceptable p50 event latency over the last interval, ms.
    pub max_p50: f64,
    /// Highest acceptable p95 event latency, ms.
    pub max_p95: f64,
    /// Highest acceptable p99 event latency, ms.
    pub max_p99: f64,
    /// How far back breaks, resyncs, reconnects and drops count.
    pub window: Duration,
    /// Most continuity breaks within the window.
    pub max_breaks: u64,
    /// Most resyncs within the window.
    pub max_resyncs: u64,
    /// Most reconnects within the window.
    pub max_reconnects: u64,
    /// Most queue drops within the window.
    pub max_drops: u64,
}

impl Default for HealthCheck {
    /// The seed's alert thresholds, on the recorder's default data directory.
    fn default() -> HealthCheck {
        HealthCheck {
            metrics: PathBuf::from("data/order_book/metrics.json"),
            max_age: 60.0,
            max_silence: 30.0,
            min_rate: 0.1,
            max_p50: 500.0,
            max_p95: 1000.0,
            max_p99: 2000.0,
            window: DEFAULT_WINDOW,
            max_breaks: 0,
            max_resyncs: 3,
            max_reconnects: 5,
            max_drops: 0,
        }
    }
}

/// `Ok(None)` when healthy, `Ok(Some(reason))` when not; `Err` only for bad arguments.
pub fn check(check: &HealthCheck, now: SystemTime) -> Result<Option<String>> {
    for (name, v) in [
        ("max-age", check.max_age),
        ("max-silence", check.max_silence),
    ] {
        if !(v.is_finite() && v > 0.0) {
            return Err(Error::Invalid(format!("--{name} must be above zero")));
        }
    }
    if check.window.is_zero() || check.window > INCIDENT_SPAN {
        return Err(Error::Invalid(format!(
            "--window must be above zero and at most {}: the recorder keeps that much",
            humantime::format_duration(INCIDENT_SPAN)
        )));
    }
    let path = check.metrics.display();
    let modified = match std::fs::metadata(&check.metrics).and_then(|m| m.modified()) {
        Ok(t) => t,
        Err(e) => return Ok(Some(format!("cannot read {path}: {e}"))),
    };
    let age = now
        .duration_since(modified)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64();
    if age > check.max_age {
        return Ok(Some(format!(
            "{path} is {age:.0} s old (max {:.0} s): is the recorder running?",
            check.max_age
        )));
    }
    let report: Report = match std::fs::read(&check.metrics)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => return Ok(Some(format!("cannot read {path}: {e}"))),
    };
    let now_ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64;
    Ok(judge(check, &report, now_ms))
}

/// `None` when `r` is inside the thresholds at `now_ms` (ms since the Unix epoch), else why not.
pub fn judge(check: &HealthCheck, r: &Report, now_ms: u64) -> Option<String> {
    let silence_ms = r.last_message_age_ms.unwrap_or(r.runtime_seconds * 1000.0);
    if silence_ms > check.max_silence * 1000.0 {
        return Some(format!(
            "no data for {:.1} s (max {} s)",
            silence_ms / 1000.0,
            check.max_silence
        ));
    }
    let w = &r.window;
    let recent = r.incidents_since(now_ms.saturating_sub(check.window.as_millis() as u64));
    let window = humantime::format_duration(check.window);
    let over = |n: u64, what: &str, max: u64| {
        (
            n > max,
            format!("{n} {what} in the last {window} (max {max})"),
        )
    };
    let checks = [
        // Before the first event the silence check above is the one that applies, with its
        // grace; a rate of nothing would fail every recorder at its start.
        (
            r.last_message_age_ms.is_some() && w.recv_rate < check.min_rate,
            format!("rate {:.2}/s below {}", w.recv_rate, check.min_rate),
        ),
        (
            w.p50 > check.max_p50,
            format!("p50 {:.1} ms above {}", w.p50, check.max_p50),
        ),
        (
            w.p95 > check.max_p95,
            format!("p95 {:.1} ms above {}", w.p95, check.max_p95),
        ),
        (
            w.p99 > check.max_p99,
            format!("p99 {:.1} ms above {}", w.p99, check.max_p99),
        ),
        over(recent.breaks, "breaks", check.max_breaks),
        over(recent.resyncs, "resyncs", check.max_resyncs),
        over(recent.reconnects, "reconnects", check.max_reconnects),
        over(recent.drops, "drops", check.max_drops),
    ];
    let failed: Vec<String> = checks
        .into_iter()
        .filter(|(bad, _)| *bad)
        .map(|(_, why)| why)
        .collect();
    (!failed.is_empty()).then(|| failed.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::sequence::Ids;
    use crate::metrics::{Counters, Metrics, ReportClock};

    /// When the helper's reports are made, ms since the Unix epoch.
    const NOW_MS: u64 = 1_763_627_880_000 + 100;

    fn report(latency_ms: i64, counters: &Counters) -> Report {
        let mut m = Metrics::new(vec!["ETHUSDT".into()]);
        let e = 1_763_627_880_000u64;
        for i in 0..100 {
            let recv_ns = (e + i + latency_ms as u64) * 1_000_000;
            m.observe(
                0,
                recv_ns,
                e + i,
                Ids {
                    first: i * 10 + 1,
                    last: i * 10 + 5,
                    prev: i * 10,
                },
            );
        }
        let clock = ReportClock {
            now: SystemTime::UNIX_EPOCH + Duration::from_millis(e + 100 + latency_ms as u64),
            runtime_secs: 10.0,
            window_secs: 10.0,
        };
        m.report(&clock, counters)
    }

    #[test]
    fn healthy_report_passes_and_each_threshold_fails_alone() {
        let ok = Counters::default();
        assert_eq!(
            judge(&HealthCheck::default(), &report(80, &ok), NOW_MS + 80),
            None
        );
        let slow = judge(&HealthCheck::default(), &report(700, &ok), NOW_MS + 700).unwrap();
        assert!(
            slow.starts_with("p50 70") && slow.contains("ms above 500"),
            "{slow}"
        );
        let broken = Counters {
            reconnects: 6,
            ..Counters::default()
        };
        assert_eq!(
            judge(&HealthCheck::default(), &report(80, &broken), NOW_MS + 80).unwrap(),
            "6 reconnects in the last 15m (max 5)"
        );
        // The same report an hour later: the reconnects have left the window.
        let later = NOW_MS + 80 + 3_600_000;
        let mut quiet = report(80, &broken);
        quiet.last_message_age_ms = Some(1.0);
        assert_eq!(judge(&HealthCheck::default(), &quiet, later), None);
        let day = HealthCheck {
            window: Duration::from_secs(24 * 3600),
            ..HealthCheck::default()
        };
        assert_eq!(
            judge(&day, &quiet, later).unwrap(),
            "6 reconnects in the last 1day (max 5)"
        );
        assert_eq!(
            judge(
                &HealthCheck {
                    max_reconnects: 10,
                    ..HealthCheck::default()
                },
                &report(80, &broken),
                NOW_MS + 80
            ),
            None
        );
    }

    #[test]
    fn missing_or_stale_file_is_unhealthy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.json");
        let a = HealthCheck {
            metrics: path.clone(),
            ..HealthCheck::default()
        };
        assert!(
            check(&a, SystemTime::now())
                .unwrap()
                .unwrap()
                .starts_with("cannot read")
        );
        let body = serde_json::to_vec(&report(80, &Counters::default())).unwrap();
        std::fs::write(&path, body).unwrap();
        let later = SystemTime::now() + Duration::from_secs(120);
        assert!(check(&a, later).unwrap().unwrap().contains("s old"));
    }
}
