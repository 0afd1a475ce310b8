//! One symbol's live book as the tap keeps it: the recorder's diff events and REST snapshots run
//! through Binance's procedure ([`BookSync`]) into a [`Book`], with the time fields of the last
//! event applied, for `/fapi/v1/depth`.

use std::ops::Range;

use crate::market::book::Book;
use crate::market::sequence::{BookSync, Chain, SnapshotStep, Step, Verdict};
use crate::market::tee::DepthPosition;

/// A diff event waiting for the snapshot that starts the book.
struct Pending {
    frame: tungstenite::Utf8Bytes,
    data: Range<usize>,
    event_ms: u64,
    trade_ms: Option<u64>,
}

/// The book of one diff-depth stream.
#[derive(Default)]
pub(crate) struct LiveBook {
    /// The tap's own continuity check: an item the hand-off dropped shows as a break, and the
    /// book waits for the recorder's next snapshot instead of going wrong.
    chain: Chain,
    sync: BookSync<Pending>,
    book: Book,
    /// `E` and `T` of the last event applied.
    event_ms: u64,
    trade_ms: Option<u64>,
}

impl LiveBook {
    /// Follows one diff event (`data` of `frame`); an event the book cannot take (malformed)
    /// loses the book until the next snapshot.
    pub(crate) fn event(
        &mut self,
        at: DepthPosition,
        frame: &tungstenite::Utf8Bytes,
        data: Range<usize>,
    ) {
        let verdict = self.chain.check(at.ids, at.conn);
        if verdict == Verdict::Duplicate {
            return;
        }
        let pending = Pending {
            frame: frame.clone(),
            data,
            event_ms: at.event_ms,
            trade_ms: at.trade_ms,
        };
        match self.sync.event(at.ids, verdict, pending) {
            Step::Apply(events) => self.apply(events),
            Step::Lost => self.book.clear(),
            Step::Buffered | Step::Covered => {}
        }
    }

    /// Starts the book again from a REST snapshot the recorder took.
    pub(crate) fn snapshot(&mut self, last_update_id: u64, body: &str) {
        let events = match self.sync.snapshot(last_update_id) {
            SnapshotStep::Bridged(events) => events,
            SnapshotStep::Pending => Vec::new(),
            SnapshotStep::TooOld => return,
        };
        match self.book.reset_from_snapshot(body) {
            Ok(_) => self.apply(events),
            Err(e) => {
                log::warn!("tap: snapshot {last_update_id} unusable: {e}");
                self.lose();
            }
        }
    }

    fn apply(&mut self, events: Vec<Pending>) {
        for event in events {
            if let Err(e) = self.book.apply_diff(&event.frame.as_str()[event.data]) {
                log::warn!("tap: diff event unusable: {e}");
                return self.lose();
            }
            (self.event_ms, self.trade_ms) = (event.event_ms, event.trade_ms);
        }
    }

    /// Forgets the book: the next snapshot starts it again.
    fn lose(&mut self) {
        self.book.clear();
        self.sync = BookSync::new();
    }

    /// Appends the `/fapi/v1/depth` body, `limit` levels a side, when the book follows the
    /// stream: `lastUpdateId` is the `u` of the last event applied, whose frame is already queued
    /// to every subscriber. `None` while the book waits for a snapshot or its bridge.
    pub(crate) fn depth(&self, limit: usize, out: &mut Vec<u8>) -> Option<()> {
        if !self.sync.is_live() {
            return None;
        }
        let u = self.book.update_id()?;
        let mut num = itoa::Buffer::new();
        out.extend_from_slice(b"{\"lastUpdateId\":");
        out.extend_from_slice(num.format(u).as_bytes());
        out.extend_from_slice(b",\"E\":");
        out.extend_from_slice(num.format(self.event_ms).as_bytes());
        out.extend_from_slice(b",\"T\":");
        out.extend_from_slice(
            num.format(self.trade_ms.unwrap_or(self.event_ms))
                .as_bytes(),
        );
        out.push(b',');
        self.book.write_top_json(limit, out);
        out.push(b'}');
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::sequence::Ids;

    fn diff(book: &mut LiveBook, first: u64, last: u64, prev: u64, bid: &str) {
        let text = format!(
            r#"{{"stream":"btcusdt@depth","data":{{"e":"depthUpdate","E":{last}0,"T":{last}9,"s":"BTCUSDT","U":{first},"u":{last},"pu":{prev},"b":[["{bid}","1"]],"a":[]}}}}"#
        );
        let start = text.find("\"data\":").unwrap() + 7;
        let data = start..text.len() - 1;
        let at = DepthPosition {
            ids: Ids { first, last, prev },
            event_ms: last * 10,
            trade_ms: Some(last * 10 + 9),
            conn: 1,
        };
        book.event(at, &text.into(), data);
    }

    fn depth(book: &LiveBook) -> Option<serde_json::Value> {
        let mut out = Vec::new();
        book.depth(5, &mut out)?;
        Some(serde_json::from_slice(&out).unwrap())
    }

    const SNAPSHOT: &str =
        r#"{"lastUpdateId":12,"E":1,"T":1,"bids":[["10","5"]],"asks":[["11","5"]]}"#;

    #[test]
    fn answers_once_a_snapshot_is_bridged_at_the_last_event_applied() {
        let mut book = LiveBook::default();
        diff(&mut book, 5, 10, 4, "9");
        assert_eq!(depth(&book), None, "no snapshot yet");
        diff(&mut book, 11, 13, 10, "8");
        book.snapshot(12, SNAPSHOT);
        let body = depth(&book).unwrap();
        assert_eq!(body["lastUpdateId"], 13);
        assert_eq!(
            (body["E"].as_u64(), body["T"].as_u64()),
            (Some(130), Some(139))
        );
        assert_eq!(body["bids"], serde_json::json!([["10", "5"], ["8", "1"]]));
        diff(&mut book, 14, 15, 13, "7");
        assert_eq!(depth(&book).unwrap()["lastUpdateId"], 15);
    }

    #[test]
    fn a_break_waits_for_the_next_snapshot() {
        let mut book = LiveBook::default();
        diff(&mut book, 11, 13, 10, "8");
        book.snapshot(12, SNAPSHOT);
        assert!(depth(&book).is_some());
        diff(&mut book, 20, 21, 19, "7");
        assert_eq!(depth(&book), None, "pu 19 after u 13");
        book.snapshot(20, SNAPSHOT.replace("12", "20").as_str());
        assert_eq!(depth(&book).unwrap()["lastUpdateId"], 21);
    }

    #[test]
    fn a_pending_snapshot_answers_only_after_its_bridge() {
        let mut book = LiveBook::default();
        diff(&mut book, 5, 10, 4, "9");
        book.snapshot(12, SNAPSHOT);
        assert_eq!(depth(&book), None, "bridge still to come");
        diff(&mut book, 11, 13, 10, "8");
        assert_eq!(depth(&book).unwrap()["lastUpdateId"], 13);
    }
}
