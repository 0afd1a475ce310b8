//! The wall clock and the two ways obrec writes an instant: ISO-8601 with milliseconds (in lines)
//! and compact UTC (in file names).
//!
//! Dates are computed here rather than with a date crate: the two formats are all obrec needs, and
//! both are on the hot path (one ISO timestamp per recorded line).

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall clock, ns since the Unix epoch; 0 for a clock set before 1970.
pub fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Wall clock, ms since the Unix epoch.
pub fn wall_ms() -> u64 {
    wall_ns() / 1_000_000
}

/// Receipt minus event time in µs: network latency plus clock offset, negative when the local
/// clock runs behind the exchange's. Saturates rather than wraps, since an event time read from a
/// file can be any number.
pub fn latency_us(recv_ns: u64, event_ms: u64) -> i64 {
    let us = i128::from(recv_ns / 1_000) - i128::from(event_ms) * 1_000;
    i64::try_from(us).unwrap_or(if us < 0 { i64::MIN } else { i64::MAX })
}

/// `20261120T081523Z`: sorts as time does, and is safe in a file name.
pub fn compact_utc(secs: u64) -> String {
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let sod = secs % 86_400;
    format!(
        "{y:04}{mo:02}{d:02}T{:02}{:02}{:02}Z",
        sod / 3_600,
        sod / 60 % 60,
        sod % 60
    )
}

/// Writes ms since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn push_iso_millis(out: &mut Vec<u8>, ms: u64) {
    let secs = ms / 1_000;
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let sod = secs % 86_400;
    let fields = [
        (month as u64, b'-'),
        (day as u64, b'T'),
        (sod / 3_600, b':'),
        (sod / 60 % 60, b':'),
        (sod % 60, b'.'),
    ];
    out.extend_from_slice(itoa::Buffer::new().format(year).as_bytes());
    out.push(b'-');
    for (value, sep) in fields {
        out.extend_from_slice(&[b'0' + (value / 10) as u8, b'0' + (value % 10) as u8, sep]);
    }
    let milli = ms % 1_000;
    out.extend_from_slice(&[
        b'0' + (milli / 100) as u8,
        b'0' + (milli / 10 % 10) as u8,
        b'0' + (milli % 10) as u8,
        b'Z',
    ]);
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day).
///
/// Counts in 400-year eras starting on March 1st, so leap days fall at the end of a year.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_saturates_on_any_event_time() {
        assert_eq!(latency_us(1_000_000_000, 999), 1_000);
        assert_eq!(latency_us(0, 1), -1_000);
        assert_eq!(latency_us(0, u64::MAX), i64::MIN);
        assert_eq!(latency_us(u64::MAX, 0), (u64::MAX / 1_000) as i64);
    }

    #[test]
    fn iso_dates_match_known_instants() {
        for (ms, want) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_763_627_881_000, "2025-11-20T08:38:01.000Z"),
            (1_723_161_256_184, "2024-08-08T23:54:16.184Z"),
            (4_102_444_799_999, "2099-12-31T23:59:59.999Z"),
        ] {
            let mut out = Vec::new();
            push_iso_millis(&mut out, ms);
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }

    #[test]
    fn compact_utc_formats_and_sorts() {
        assert_eq!(compact_utc(1_763_627_881), "20251120T083801Z");
        assert!(compact_utc(1_763_627_881) < compact_utc(1_763_627_882));
    }
}
