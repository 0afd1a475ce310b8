//! What the recorder's writer hands a relay (`obrec record --nats`): each line exactly as it went
//! into a file, with the series it belongs to and what identifies its exchange event. Plain data,
//! so that the recorder filling it and the relay publishing it need not know each other; the
//! archiver reads the same identity back from the lines of its own files.

use std::sync::Arc;

use crate::market::kind::KindIds;
use crate::market::sequence::Ids;
use crate::market::symbol::Symbol;
use crate::store::line::{is_meta, parse_depth, parse_kind, parse_meta, parse_snapshot};
use crate::store::names::FileKind;

/// A file series: one symbol's lines of one kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Series {
    /// In subjects and message ids as payloads spell it, in file names in lower case.
    pub symbol: Symbol,
    /// Which of the symbol's files.
    pub kind: FileKind,
}

/// What makes an event the same event whichever recorder received it: never the receipt time or
/// the connection, which differ between recorders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKey {
    /// An exchange id rising along the series: depth and bookTicker `u`, trade `t`, aggTrade
    /// `a`, a snapshot's `lastUpdateId`.
    Id(u64),
    /// Events without an id of their own (mark prices, liquidations; meta lines, where `ms` is
    /// 0): the event time and a checksum of the payload as received.
    Content { ms: u64, crc: u32 },
}

impl EventKey {
    pub fn of_depth(ids: Ids) -> EventKey {
        EventKey::Id(ids.last)
    }

    pub fn of_snapshot(last_update_id: u64) -> EventKey {
        EventKey::Id(last_update_id)
    }

    pub fn of_kind(ids: KindIds, event_ms: u64, data: &str) -> EventKey {
        match ids {
            KindIds::Trade { t } => EventKey::Id(t),
            KindIds::AggTrade { a, .. } => EventKey::Id(a),
            KindIds::BookTicker { u } => EventKey::Id(u),
            KindIds::None => EventKey::Content {
                ms: event_ms,
                crc: crc32fast::hash(data.as_bytes()),
            },
        }
    }

    pub fn of_meta(data: &str) -> EventKey {
        EventKey::Content {
            ms: 0,
            crc: crc32fast::hash(data.as_bytes()),
        }
    }

    /// The key of a line of `kind`'s file, as the writer gave it when it relayed the line, and
    /// the line's receipt time; `None` for a line that does not parse.
    pub fn of_line(kind: FileKind, line: &[u8]) -> Option<(EventKey, u64)> {
        if is_meta(line) {
            let meta = parse_meta(line).ok()?;
            return Some((EventKey::of_meta(meta.data), meta.recv_ns));
        }
        match kind {
            FileKind::Depth => parse_depth(line)
                .ok()
                .map(|l| (EventKey::of_depth(l.ids), l.recv_ns)),
            FileKind::Snapshot => parse_snapshot(line)
                .ok()
                .map(|l| (EventKey::of_snapshot(l.last_update_id), l.recv_ns)),
            FileKind::Stream(_) => parse_kind(line)
                .ok()
                .map(|l| (EventKey::of_kind(l.ids, l.event_ms, l.data), l.recv_ns)),
        }
    }

    /// Where the event sits in its series, for putting events back in order: the id, or the
    /// event time; 0 for a meta line, which has no place of its own.
    pub fn position(self) -> u64 {
        match self {
            EventKey::Id(id) => id,
            EventKey::Content { ms, .. } => ms,
        }
    }
}

/// One line of a file, handed to the relay.
#[derive(Clone, Debug)]
pub struct Relayed {
    /// The file series it went to, shared by every line of the series.
    pub series: Arc<Series>,
    pub key: EventKey,
    /// Its receipt time, ns since the Unix epoch: which file period it belongs to.
    pub recv_ns: u64,
    /// The line as written, with its newline.
    pub line: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::line::{
        DepthLine, KindLine, MetaLine, encode_depth, encode_kind, encode_meta,
    };

    /// The writer keys a line from its record, the archiver from the line: both agree.
    #[test]
    fn a_line_gives_back_the_key_it_was_relayed_with() {
        let ids = Ids {
            first: 10,
            last: 12,
            prev: 9,
        };
        let data = r#"{"e":"depthUpdate","E":5,"U":10,"u":12,"pu":9}"#;
        let mut out = Vec::new();
        encode_depth(
            &mut out,
            &DepthLine {
                symbol: "BTCUSDT",
                stream: "btcusdt@depth",
                data,
                event_ms: 5,
                trade_ms: None,
                ids,
                pipeline_us: Some(3),
                recv_ns: 7_000_000,
                conn: 1,
            },
        );
        assert_eq!(
            EventKey::of_line(FileKind::Depth, &out),
            Some((EventKey::of_depth(ids), 7_000_000))
        );
        let order = r#"{"e":"forceOrder","E":77,"o":{"s":"BTCUSDT"}}"#;
        out.clear();
        encode_kind(
            &mut out,
            &KindLine {
                symbol: "BTCUSDT",
                stream: "btcusdt@forceOrder",
                data: order,
                event_ms: 77,
                ids: KindIds::None,
                pipeline_us: None,
                recv_ns: 8_000_000,
                conn: 2,
                backfill: false,
            },
        );
        let key = EventKey::of_kind(KindIds::None, 77, order);
        assert_eq!(
            EventKey::of_line(
                FileKind::Stream(crate::market::kind::Kind::ForceOrder),
                &out
            ),
            Some((key, 8_000_000))
        );
        assert_ne!(key, EventKey::of_kind(KindIds::None, 77, "{}"));
        out.clear();
        let notice = r#"{"e":"serverShutdown","E":1}"#;
        encode_meta(
            &mut out,
            &MetaLine {
                meta: "serverShutdown",
                recv_ns: 9,
                conn: 3,
                data: notice,
            },
        );
        assert_eq!(
            EventKey::of_line(FileKind::Depth, &out),
            Some((EventKey::of_meta(notice), 9))
        );
        assert_eq!(EventKey::of_line(FileKind::Depth, b"{not json"), None);
    }
}
