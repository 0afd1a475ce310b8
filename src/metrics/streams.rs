//! Completeness of the streams beside the book (trades, aggTrades, bookTicker, mark price,
//! liquidations): what their readers count, and how it reads in `metrics.json`, SUMMARY and
//! Prometheus.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::market::kind::{Check, Kind};
use crate::metrics::{FeedHealth, FeedReport, FeedState, iso_ms};

/// One stream's counters, bumped by the reader that owns it.
#[derive(Debug)]
pub struct StreamStats {
    /// The combined-stream name, e.g. `btcusdt@trade`: the key in reports.
    pub stream: String,
    /// Upper case, as payloads spell it.
    pub symbol: String,
    pub kind: Kind,
    /// Events accepted (duplicates not counted).
    pub events: AtomicU64,
    /// Gaps and id resets on a healthy connection: the exchange lost something.
    pub breaks: AtomicU64,
    /// Gaps across a change of connection.
    pub reconnect_gaps: AtomicU64,
    /// Ids lacking in those gaps (trade and aggTrade; 0 for the others).
    pub missing: AtomicU64,
    /// Events delivered twice by overlapping connections, skipped.
    pub duplicates: AtomicU64,
    /// Events lost to a full queue.
    pub drops: AtomicU64,
    /// Events fetched over REST to close gaps.
    pub backfilled: AtomicU64,
    /// Whether the stream delivers.
    pub feed: FeedHealth,
}

impl StreamStats {
    pub fn new(stream: String, symbol: String, kind: Kind, started_ns: u64) -> StreamStats {
        let stats = StreamStats {
            stream,
            symbol,
            kind,
            events: AtomicU64::new(0),
            breaks: AtomicU64::new(0),
            reconnect_gaps: AtomicU64::new(0),
            missing: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            drops: AtomicU64::new(0),
            backfilled: AtomicU64::new(0),
            feed: FeedHealth::default(),
        };
        stats.feed.set(FeedState::Waiting, started_ns);
        stats
    }

    /// Counts what the tape said of an event.
    pub fn count(&self, check: Check) {
        let bump = |c: &AtomicU64| c.fetch_add(1, Ordering::Relaxed);
        match check {
            Check::Duplicate => {
                bump(&self.duplicates);
                return;
            }
            c if c.is_break() => bump(&self.breaks),
            c if c.is_reconnect_gap() => bump(&self.reconnect_gaps),
            _ => 0,
        };
        self.missing
            .fetch_add(check.missing_ids(self.kind), Ordering::Relaxed);
        bump(&self.events);
    }

    pub fn counters(&self) -> StreamCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StreamCounters {
            stream: self.stream.clone(),
            symbol: self.symbol.clone(),
            kind: self.kind,
            events: get(&self.events),
            breaks: get(&self.breaks),
            reconnect_gaps: get(&self.reconnect_gaps),
            missing: get(&self.missing),
            duplicates: get(&self.duplicates),
            drops: get(&self.drops),
            backfilled: get(&self.backfilled),
            feed: Some(self.feed.get()),
        }
    }
}

/// A stream's counter values at one report.
#[derive(Clone, Debug)]
pub struct StreamCounters {
    pub stream: String,
    pub symbol: String,
    pub kind: Kind,
    pub events: u64,
    pub breaks: u64,
    pub reconnect_gaps: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub drops: u64,
    pub backfilled: u64,
    /// Live runs only.
    pub feed: Option<crate::metrics::FeedStatus>,
}

/// One stream beside the book in `metrics.json`, under `streams."btcusdt@trade"`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StreamReport {
    pub symbol: String,
    pub kind: String,
    pub messages: u64,
    pub recv_rate: f64,
    pub breaks: u64,
    pub reconnect_gaps: u64,
    /// Ids the gaps lacked (trade `t`, aggTrade `a`).
    pub missing_ids: u64,
    pub duplicates: u64,
    pub drops: u64,
    pub backfilled: u64,
    /// Live runs only: whether the stream delivers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed: Option<FeedReport>,
}

/// The report entries of every stream, by stream name.
pub fn reports(streams: &[StreamCounters], runtime_secs: f64) -> BTreeMap<String, StreamReport> {
    streams
        .iter()
        .map(|c| {
            let report = StreamReport {
                symbol: c.symbol.clone(),
                kind: c.kind.name().to_string(),
                messages: c.events,
                recv_rate: crate::metrics::rate(c.events, runtime_secs),
                breaks: c.breaks,
                reconnect_gaps: c.reconnect_gaps,
                missing_ids: c.missing,
                duplicates: c.duplicates,
                drops: c.drops,
                backfilled: c.backfilled,
                feed: c.feed.map(|f| FeedReport {
                    state: f.state,
                    since: iso_ms(f.since_ns / 1_000_000),
                }),
            };
            (c.stream.clone(), report)
        })
        .collect()
}

/// SUMMARY's fields after the seed's, one group per kind over its symbols:
/// ` | trade=21313 breaks=0 missing=0 | forceOrder=2`.
pub fn summary_fields(line: &mut String, streams: &BTreeMap<String, StreamReport>) {
    for kind in Kind::ALL {
        let of_kind: Vec<&StreamReport> =
            streams.values().filter(|s| s.kind == kind.name()).collect();
        if of_kind.is_empty() {
            continue;
        }
        let sum = |f: fn(&StreamReport) -> u64| of_kind.iter().map(|s| f(s)).sum::<u64>();
        let _ = write!(line, " | {kind}={}", sum(|s| s.messages));
        if kind.has_gaps() {
            let _ = write!(line, " breaks={}", sum(|s| s.breaks));
        }
        if matches!(kind, Kind::Trade | Kind::AggTrade) {
            let _ = write!(line, " missing={}", sum(|s| s.missing_ids));
        }
    }
}

/// Reads one counter of a stream's report.
type StreamFigure = fn(&StreamReport) -> u64;

/// The Prometheus series of the streams beside the book, labelled by symbol and kind.
pub fn render(out: &mut String, streams: &BTreeMap<String, StreamReport>) {
    if streams.is_empty() {
        return;
    }
    let counters: [(&str, &str, StreamFigure); 7] = [
        (
            "obrec_stream_messages_total",
            "Events recorded per stream beside the book.",
            |s| s.messages,
        ),
        (
            "obrec_stream_breaks_total",
            "Gaps and id resets on a live connection: the exchange lost events.",
            |s| s.breaks,
        ),
        (
            "obrec_stream_reconnect_gaps_total",
            "Gaps across a change of connection.",
            |s| s.reconnect_gaps,
        ),
        (
            "obrec_stream_missing_ids_total",
            "Trade or aggregate ids the gaps lacked.",
            |s| s.missing_ids,
        ),
        (
            "obrec_stream_duplicates_total",
            "Events delivered twice and recorded once.",
            |s| s.duplicates,
        ),
        (
            "obrec_stream_drops_total",
            "Events dropped on a full queue.",
            |s| s.drops,
        ),
        (
            "obrec_stream_backfilled_total",
            "Events fetched over REST to close gaps.",
            |s| s.backfilled,
        ),
    ];
    for (name, help, get) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for s in streams.values() {
            let _ = writeln!(out, "{name}{{{}}} {}", labels(s), get(s));
        }
    }
    let name = "obrec_stream_delivering";
    let _ = writeln!(
        out,
        "# HELP {name} 1 while the stream delivers, 0 while waiting for it or silent.\n# TYPE {name} gauge"
    );
    for s in streams.values() {
        let on = s
            .feed
            .as_ref()
            .is_some_and(|f| f.state == FeedState::Delivering);
        let _ = writeln!(out, "{name}{{{}}} {}", labels(s), u8::from(on));
    }
}

fn labels(s: &StreamReport) -> String {
    format!("symbol=\"{}\",kind=\"{}\"", s.symbol, s.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_are_counted_where_they_belong() {
        let stats = StreamStats::new("btcusdt@trade".into(), "BTCUSDT".into(), Kind::Trade, 0);
        for check in [
            Check::Start,
            Check::Continuous,
            Check::Duplicate,
            Check::Gap {
                from: 5,
                to: 7,
                reconnect: false,
            },
            Check::Gap {
                from: 9,
                to: 9,
                reconnect: true,
            },
        ] {
            stats.count(check);
        }
        let c = stats.counters();
        assert_eq!(
            (
                c.events,
                c.duplicates,
                c.breaks,
                c.reconnect_gaps,
                c.missing
            ),
            (4, 1, 1, 1, 4)
        );
        let reports = reports(&[c], 2.0);
        let r = &reports["btcusdt@trade"];
        assert_eq!(
            (r.messages, r.recv_rate, r.kind.as_str()),
            (4, 2.0, "trade")
        );
        let mut line = String::from("SUMMARY");
        summary_fields(&mut line, &reports);
        assert_eq!(line, "SUMMARY | trade=4 breaks=1 missing=4");
        let mut text = String::new();
        render(&mut text, &reports);
        assert!(
            text.contains("obrec_stream_missing_ids_total{symbol=\"BTCUSDT\",kind=\"trade\"} 4"),
            "{text}"
        );
        assert!(text.contains("obrec_stream_delivering{symbol=\"BTCUSDT\",kind=\"trade\"} 0"));
    }
}
