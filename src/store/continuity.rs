//! The continuity of one file series read line by line, as `obrec replay` judges it: depth lines
//! through the same [`Chain`], the streams beside the book through the same [`Tape`], backfilled
//! and meta lines passed over, snapshots under no rule. What a consumer of lines in file order
//! (the archiver) needs to report the breaks replay would find in the files it writes.

use crate::market::kind::{Check, Kind, Tape};
use crate::market::sequence::{Chain, Verdict};
use crate::store::line::{is_meta, parse_depth, parse_kind};
use crate::store::names::FileKind;

/// One series' rule and where it stands.
#[derive(Clone, Debug)]
pub enum SeriesCheck {
    Depth(Chain),
    Stream(Kind, Tape),
    /// Snapshots: no rule says one is missing.
    None,
}

/// What one line says about the series' continuity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finding {
    /// Not an event of the rule: a meta line, a backfilled line, a snapshot, a line that does
    /// not parse as its kind.
    Passed,
    /// An event that follows, starts the series, or another connection already delivered.
    Event,
    /// Events lost on one connection, between the ids `from` and `to` (depth: the `u` expected
    /// as `pu` and the `pu` received; trade and aggTrade: the missing ids; mark price: the
    /// event times around the gap).
    Break { from: u64, to: u64, missing: u64 },
    /// Events lost across a change of connection.
    ReconnectGap { from: u64, to: u64, missing: u64 },
}

impl SeriesCheck {
    pub fn new(kind: FileKind) -> SeriesCheck {
        match kind {
            FileKind::Depth => SeriesCheck::Depth(Chain::new()),
            FileKind::Stream(kind) => SeriesCheck::Stream(kind, Tape::new(kind)),
            FileKind::Snapshot => SeriesCheck::None,
        }
    }

    /// Runs one line of the series, in file order, through the rule.
    pub fn line(&mut self, line: &[u8]) -> Finding {
        if is_meta(line) {
            return Finding::Passed;
        }
        match self {
            SeriesCheck::Depth(chain) => {
                let Ok(depth) = parse_depth(line) else {
                    return Finding::Passed;
                };
                match chain.check(depth.ids, depth.conn) {
                    Verdict::Break {
                        expected_pu,
                        got_pu,
                    } => Finding::Break {
                        from: expected_pu,
                        to: got_pu,
                        missing: 0,
                    },
                    Verdict::Reconnected {
                        expected_pu,
                        got_pu,
                    } => Finding::ReconnectGap {
                        from: expected_pu,
                        to: got_pu,
                        missing: 0,
                    },
                    Verdict::Start | Verdict::Continuous | Verdict::Duplicate => Finding::Event,
                }
            }
            SeriesCheck::Stream(kind, tape) => {
                let Ok(event) = parse_kind(line) else {
                    return Finding::Passed;
                };
                if event.backfill || !kind.fits(event.ids) {
                    return Finding::Passed;
                }
                let check = tape.check(event.ids, event.event_ms, event.conn);
                let missing = check.missing_ids(*kind);
                let (from, to) = match check {
                    Check::Gap { from, to, .. } | Check::Skipped { from, to, .. } => (from, to),
                    Check::Back { last, got, .. } => (last, got),
                    Check::Start | Check::Continuous | Check::Duplicate => (0, 0),
                };
                if check.is_break() {
                    Finding::Break { from, to, missing }
                } else if check.is_reconnect_gap() {
                    Finding::ReconnectGap { from, to, missing }
                } else {
                    Finding::Event
                }
            }
            SeriesCheck::None => Finding::Passed,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::market::kind::KindIds;
    use crate::store::line::{KindLine, encode_kind};

    /// A trade line of BTCUSDT with id `t`, delivered by `conn`.
    pub(crate) fn trade_on(t: u64, conn: u64) -> Vec<u8> {
        let data = format!(r#"{{"e":"trade","s":"BTCUSDT","t":{t}}}"#);
        let mut out = Vec::new();
        encode_kind(
            &mut out,
            &KindLine {
                symbol: "BTCUSDT",
                stream: "btcusdt@trade",
                data: &data,
                event_ms: 1_763_627_881_000 + t,
                ids: KindIds::Trade { t },
                pipeline_us: None,
                recv_ns: 1_763_627_881_000_000_000 + t,
                conn,
                backfill: false,
            },
        );
        out
    }

    /// Lost trades on one connection are a break with their ids, across connections a
    /// reconnect gap; a copy from another connection is no break.
    #[test]
    fn trade_gaps_are_told_apart_by_connection() {
        let mut check = SeriesCheck::new(FileKind::Stream(Kind::Trade));
        assert_eq!(check.line(&trade_on(10, 1)), Finding::Event);
        assert_eq!(check.line(&trade_on(11, 1)), Finding::Event);
        assert_eq!(
            check.line(&trade_on(14, 1)),
            Finding::Break {
                from: 12,
                to: 13,
                missing: 2
            }
        );
        assert_eq!(check.line(&trade_on(14, 2)), Finding::Event);
        assert_eq!(
            check.line(&trade_on(16, 1)),
            Finding::Break {
                from: 15,
                to: 15,
                missing: 1
            }
        );
        assert_eq!(
            check.line(&trade_on(20, 3)),
            Finding::ReconnectGap {
                from: 17,
                to: 19,
                missing: 3
            }
        );
        assert_eq!(check.line(b"not a line\n"), Finding::Passed);
    }
}
