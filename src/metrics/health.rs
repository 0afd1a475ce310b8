//! `obrec health`: is a recorder alive and inside the seed's alert thresholds?
//!
//! Reads `metrics.json` and exits 0 when it is fresh and healthy, 1 with a one-line reason
//! otherwise, so systemd, supervisord, cron or a load balancer can act on it. Rates and latency
//! percentiles are judged on the last print interval (a morning's latency spike should not fail
//! the check all afternoon); continuity counters on the whole run, as the seed's table does.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::metrics::Report;

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
    /// Most continuity breaks over the run.
    pub max_breaks: u64,
    /// Most resyncs over the run.
    pub max_resyncs: u64,
    /// Most reconnects over the run.
    pub max_reconnects: u64,
    /// Most queue drops over the run.
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
    Ok(judge(check, &report))
}

fn judge(check: &HealthCheck, r: &Report) -> Option<String> {
    let silence_ms = r.last_message_age_ms.unwrap_or(r.runtime_seconds * 1000.0);
    if silence_ms > check.max_silence * 1000.0 {
        return Some(format!(
            "no data for {:.1} s (max {} s)",
            silence_ms / 1000.0,
            check.max_silence
        ));
    }
    let w = &r.window;
    let checks = [
        (
            w.recv_rate < check.min_rate,
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
        (
            r.continuity.breaks > check.max_breaks,
            format!("{} breaks (max {})", r.continuity.breaks, check.max_breaks),
        ),
        (
            r.continuity.resyncs > check.max_resyncs,
            format!(
                "{} resyncs (max {})",
                r.continuity.resyncs, check.max_resyncs
            ),
        ),
        (
            r.continuity.reconnects > check.max_reconnects,
            format!(
                "{} reconnects (max {})",
                r.continuity.reconnects, check.max_reconnects
            ),
        ),
        (
            r.log_queue.drops > check.max_drops,
            format!("{} drops (max {})", r.log_queue.drops, check.max_drops),
        ),
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
        assert_eq!(judge(&HealthCheck::default(), &report(80, &ok)), None);
        let slow = judge(&HealthCheck::default(), &report(700, &ok)).unwrap();
        assert!(
            slow.starts_with("p50 70") && slow.contains("ms above 500"),
            "{slow}"
        );
        let broken = Counters {
            reconnects: 6,
            ..Counters::default()
        };
        assert_eq!(
            judge(&HealthCheck::default(), &report(80, &broken)).unwrap(),
            "6 reconnects (max 5)"
        );
        assert_eq!(
            judge(
                &HealthCheck {
                    max_reconnects: 10,
                    ..HealthCheck::default()
                },
                &report(80, &broken)
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
