//! What `obrec replay` finds in the streams beside the book: per (symbol, kind) series, the same
//! [`Tape`] the live recorder runs, over the series' lines in receipt order, and whether the
//! lines fetched over REST (`"backfill":true`) closed the gaps it found.
//!
//! # Backfill coverage
//!
//! A backfilled line is not in receipt order: the recorder fetches it after the gap shows (at
//! the next live event) and appends it when it comes, possibly in a later file of the series. So
//! backfilled lines never go through the tape (their ids would read as going back); instead each
//! series keeps two sets of id ranges, the gaps the tape found (trade `t`, aggTrade `a`) and the
//! ids backfilled lines hold, merged into ranges as they come, and compares them once the whole
//! series is read. That is order-free (a backfill may sit anywhere in the series) and cheap: a
//! backfill of a gap is one contiguous run of ids, so both sets hold about one range per gap,
//! whatever the number of events. Sorting the series by id instead would hold every event.
//!
//! Ranges are bounded across all series by [`MAX_TRACKED_RANGES`]; past it a gap or backfilled
//! id is counted as `untracked` and its gap reported open, never silently closed.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::market::kind::{Check, Kind, KindIds, Tape};
use crate::store::line::KindLine;

/// Gap and backfill id ranges held for the coverage check, all series together: 16 bytes each,
/// so at most 32 MB, where a real day holds a handful of gaps per series.
pub const MAX_TRACKED_RANGES: usize = 1 << 21;

/// One (symbol, kind) series as replay reports it: the `kinds` entries of `--json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct KindReport {
    /// Upper case, as lines spell it.
    pub symbol: String,
    /// The kind's name: `trade`, `aggTrade`, `bookTicker`, `markPrice`, `forceOrder`.
    pub kind: String,
    /// Events received live (duplicates included, backfilled lines not).
    pub events: u64,
    /// Events another connection had already delivered.
    pub duplicates: u64,
    /// Gaps and steps back on one connection: the exchange or the network lost events.
    pub breaks: u64,
    /// Gaps and steps back across a change of connection.
    pub reconnect_gaps: u64,
    /// Gaps found (breaks and reconnect gaps alike; a step back is no gap).
    pub gaps: u64,
    /// Ids the gaps lacked (trade and aggTrade; 0 for the others).
    pub missing_ids: u64,
    /// Lines fetched over REST to close gaps.
    pub backfilled: u64,
    /// Gaps whose every id a backfilled line holds.
    pub gaps_filled: u64,
    /// Ids still missing once the backfilled lines are counted.
    pub missing_after_backfill: u64,
    /// Breaks not closed by a backfill: what `--strict` fails on.
    pub open_breaks: u64,
    /// Gaps and backfilled ids past [`MAX_TRACKED_RANGES`], not checked: their gaps count open.
    pub untracked: u64,
    /// Receipt of the first and last live events, ns since the Unix epoch (0 without any).
    pub first_ns: u64,
    pub last_ns: u64,
}

/// A gap found in a series: the `kind_gaps` entries of `--json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct KindGap {
    pub file: String,
    /// The line of the event after the gap.
    pub line: u64,
    pub symbol: String,
    pub kind: String,
    /// The missing ids `from..=to` (trade `t`, aggTrade `a`); for mark price the event times
    /// `from` and `to` in ms, between which events are missing.
    pub from: u64,
    pub to: u64,
    /// Across a change of connection, not a break.
    pub reconnect: bool,
    /// Every missing id is held by a backfilled line.
    pub filled: bool,
}

/// A gap in ids, for the coverage check.
struct Hole {
    from: u64,
    to: u64,
    reconnect: bool,
}

/// Ids held by backfilled lines, merged into ranges: start → end, inclusive, disjoint.
#[derive(Default)]
struct Filled(BTreeMap<u64, u64>);

impl Filled {
    /// Adds `id`; false, leaving it out, when that needs a new range and `room` is false.
    fn insert(&mut self, id: u64, room: bool) -> bool {
        let before = self.0.range(..=id).next_back().map(|(&s, &e)| (s, e));
        if before.is_some_and(|(_, end)| end >= id) {
            return true;
        }
        let after = id
            .checked_add(1)
            .and_then(|next| self.0.get(&next).copied());
        match (before, after) {
            (Some((start, end)), Some(last)) if end + 1 == id => {
                self.0.remove(&(id + 1));
                self.0.insert(start, last);
            }
            (Some((start, end)), None) if end + 1 == id => {
                self.0.insert(start, id);
            }
            (_, Some(last)) => {
                self.0.remove(&(id + 1));
                self.0.insert(id, last);
            }
            _ if room => {
                self.0.insert(id, id);
            }
            _ => return false,
        }
        true
    }

    /// How many of the ids `from..=to` are held.
    fn covered(&self, from: u64, to: u64) -> u64 {
        self.0
            .range(..=to)
            .rev()
            .take_while(|&(_, &end)| end >= from)
            .map(|(&start, &end)| end.min(to) - start.max(from) + 1)
            .sum()
    }

    fn closes(&self, from: u64, to: u64) -> bool {
        self.covered(from, to) == to - from + 1
    }
}

/// One series being read.
struct Series {
    report: KindReport,
    kind: Kind,
    tape: Tape,
    holes: Vec<Hole>,
    filled: Filled,
}

/// Every series of a replay, with the gaps listed so far.
pub(crate) struct Kinds {
    series: Vec<Series>,
    index: HashMap<(String, Kind), usize>,
    /// The first `max_listed` gaps, each with its series.
    listed: Vec<(usize, KindGap)>,
    max_listed: usize,
    unlisted: u64,
    /// Ranges held, all series together.
    tracked: usize,
}

/// What [`Kinds::finish`] leaves for the report.
pub(crate) struct KindsFound {
    pub series: Vec<KindReport>,
    pub gaps: Vec<KindGap>,
    pub gaps_unlisted: u64,
}

/// Why a line cannot be taken.
pub(crate) enum Refused {
    /// The line is not one of its file's kind.
    Damage(String),
    /// A new series past the bound.
    TooMany,
}

impl Kinds {
    /// Lists at most `max_listed` gaps, the rest counted.
    pub(crate) fn new(max_listed: usize) -> Kinds {
        Kinds {
            series: Vec::new(),
            index: HashMap::new(),
            listed: Vec::new(),
            max_listed,
            unlisted: 0,
            tracked: 0,
        }
    }

    /// Takes one line of a `kind` file, at `file`:`line_no`; a new series only while fewer than
    /// `max_series` are followed.
    pub(crate) fn line(
        &mut self,
        kind: Kind,
        line: &KindLine,
        file: &str,
        line_no: u64,
        max_series: usize,
    ) -> Result<(), Refused> {
        if !kind.fits(line.ids) {
            return Err(Refused::Damage(format!(
                "not a {kind} line: ids of another kind"
            )));
        }
        let key = (line.symbol.to_string(), kind);
        let id = match self.index.get(&key) {
            Some(&id) => id,
            None if self.series.len() == max_series => return Err(Refused::TooMany),
            None => {
                self.series.push(Series::new(line.symbol, kind));
                self.index.insert(key, self.series.len() - 1);
                self.series.len() - 1
            }
        };
        let room = self.tracked < MAX_TRACKED_RANGES;
        let series = &mut self.series[id];
        if line.backfill {
            series.report.backfilled += 1;
            if let Some(held) = backfill_id(line.ids) {
                let ranges = series.filled.0.len();
                if !series.filled.insert(held, room) {
                    series.report.untracked += 1;
                }
                self.tracked = self.tracked + series.filled.0.len() - ranges;
            }
            return Ok(());
        }
        let report = &mut series.report;
        report.events += 1;
        report.first_ns = match report.events {
            1 => line.recv_ns,
            _ => report.first_ns.min(line.recv_ns),
        };
        report.last_ns = report.last_ns.max(line.recv_ns);
        let check = series.tape.check(line.ids, line.event_ms, line.conn);
        match check {
            Check::Duplicate => report.duplicates += 1,
            _ if check.is_break() => report.breaks += 1,
            _ if check.is_reconnect_gap() => report.reconnect_gaps += 1,
            _ => {}
        }
        // A skip of trade ids inside aggregates that follow is listed, but no backfill of
        // aggregate ids can close it.
        let (from, to, reconnect, fillable) = match check {
            Check::Gap {
                from,
                to,
                reconnect,
            } => (from, to, reconnect, true),
            Check::Skipped {
                from,
                to,
                reconnect,
            } => (from, to, reconnect, false),
            _ => return Ok(()),
        };
        report.gaps += 1;
        let missing = check.missing_ids(kind);
        report.missing_ids += missing;
        if missing > 0 && fillable {
            if room {
                series.holes.push(Hole {
                    from,
                    to,
                    reconnect,
                });
                self.tracked += 1;
            } else {
                report.untracked += 1;
            }
        }
        if self.listed.len() == self.max_listed {
            self.unlisted += 1;
        } else {
            let gap = KindGap {
                file: file.to_string(),
                line: line_no,
                symbol: line.symbol.to_string(),
                kind: kind.name().to_string(),
                from,
                to,
                reconnect,
                filled: false,
            };
            self.listed.push((id, gap));
        }
        Ok(())
    }

    /// Compares each series' gaps with its backfilled ids and hands the figures over, series in
    /// kind then symbol order.
    pub(crate) fn finish(self) -> KindsFound {
        let gaps = self
            .listed
            .into_iter()
            .map(|(id, mut gap)| {
                let series = &self.series[id];
                gap.filled = backfills(series.kind) && series.filled.closes(gap.from, gap.to);
                gap
            })
            .collect();
        let mut series = self.series;
        series.sort_by(|a, b| (a.kind, &a.report.symbol).cmp(&(b.kind, &b.report.symbol)));
        let series = series
            .into_iter()
            .map(|mut s| {
                let report = &mut s.report;
                let mut covered = 0;
                let mut closed_breaks = 0;
                for hole in &s.holes {
                    let held = s.filled.covered(hole.from, hole.to);
                    covered += held;
                    if held == hole.to - hole.from + 1 {
                        report.gaps_filled += 1;
                        closed_breaks += u64::from(!hole.reconnect);
                    }
                }
                report.missing_after_backfill = report.missing_ids - covered;
                report.open_breaks = report.breaks - closed_breaks;
                s.report
            })
            .collect();
        KindsFound {
            series,
            gaps,
            gaps_unlisted: self.unlisted,
        }
    }
}

impl Series {
    fn new(symbol: &str, kind: Kind) -> Series {
        Series {
            report: KindReport {
                symbol: symbol.to_string(),
                kind: kind.name().to_string(),
                events: 0,
                duplicates: 0,
                breaks: 0,
                reconnect_gaps: 0,
                gaps: 0,
                missing_ids: 0,
                backfilled: 0,
                gaps_filled: 0,
                missing_after_backfill: 0,
                open_breaks: 0,
                untracked: 0,
                first_ns: 0,
                last_ns: 0,
            },
            kind,
            tape: Tape::new(kind),
            holes: Vec::new(),
            filled: Filled::default(),
        }
    }
}

/// Whether a kind's gaps are in ids a backfill can hold.
fn backfills(kind: Kind) -> bool {
    matches!(kind, Kind::Trade | Kind::AggTrade)
}

/// The id a backfilled line holds, in the terms of its kind's gaps.
fn backfill_id(ids: KindIds) -> Option<u64> {
    match ids {
        KindIds::Trade { t } => Some(t),
        KindIds::AggTrade { a, .. } => Some(a),
        KindIds::BookTicker { .. } | KindIds::None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trade(t: u64, conn: u64, backfill: bool) -> KindLine<'static> {
        KindLine {
            symbol: "BTCUSDT",
            stream: "btcusdt@trade",
            data: "{}",
            event_ms: 1,
            ids: KindIds::Trade { t },
            pipeline_us: None,
            recv_ns: 10 + t,
            conn,
            backfill,
        }
    }

    fn run(lines: &[KindLine]) -> KindsFound {
        let mut kinds = Kinds::new(10);
        for (n, line) in lines.iter().enumerate() {
            assert!(kinds.line(Kind::Trade, line, "f", n as u64 + 1, 4).is_ok());
        }
        kinds.finish()
    }

    #[test]
    fn a_backfill_anywhere_in_the_series_closes_its_gap() {
        let live: Vec<_> = [1, 2, 3, 7, 8].map(|t| trade(t, 1, false)).into();
        let open = run(&live);
        let s = &open.series[0];
        assert_eq!((s.events, s.breaks, s.gaps, s.missing_ids), (5, 1, 1, 3));
        assert_eq!(
            (s.gaps_filled, s.missing_after_backfill, s.open_breaks),
            (0, 3, 1)
        );
        assert_eq!((open.gaps[0].from, open.gaps[0].to), (4, 6));
        assert!(!open.gaps[0].filled);

        // Backfilled out of order, one before the gap shows, one twice.
        let mut lines = vec![trade(5, 0, true)];
        lines.extend(live);
        lines.extend([6, 4, 6].map(|t| trade(t, 0, true)));
        let closed = run(&lines);
        let s = &closed.series[0];
        assert_eq!((s.events, s.backfilled, s.breaks), (5, 4, 1));
        assert_eq!(
            (s.gaps_filled, s.missing_after_backfill, s.open_breaks),
            (1, 0, 0)
        );
        assert!(closed.gaps[0].filled);

        // A partial backfill leaves the gap open with what it still lacks.
        let mut lines: Vec<_> = [1, 2, 3, 7].map(|t| trade(t, 1, false)).into();
        lines.push(trade(4, 0, true));
        let part = run(&lines);
        assert_eq!(part.series[0].missing_after_backfill, 2);
        assert!(!part.gaps[0].filled);
    }

    #[test]
    fn filled_ids_merge_into_ranges() {
        let mut filled = Filled::default();
        for id in [5, 7, 6, 1, 2, 10] {
            assert!(filled.insert(id, true));
        }
        assert_eq!(
            filled.0.iter().map(|(&s, &e)| (s, e)).collect::<Vec<_>>(),
            [(1, 2), (5, 7), (10, 10)]
        );
        assert_eq!(filled.covered(2, 9), 4);
        assert!(filled.closes(5, 7));
        assert!(!filled.closes(4, 7));
        assert!(!filled.insert(20, false), "no room for a new range");
        assert!(filled.insert(11, false), "an existing range grows");
    }

    #[test]
    fn lines_of_another_kind_are_refused() {
        let mut kinds = Kinds::new(10);
        let line = trade(1, 1, false);
        assert!(matches!(
            kinds.line(Kind::AggTrade, &line, "f", 1, 4),
            Err(Refused::Damage(_))
        ));
        assert!(kinds.line(Kind::Trade, &line, "f", 1, 0).is_err());
    }
}
