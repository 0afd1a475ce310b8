//! aggTrade gaps backfilled from REST aggTrades (`/fapi/v1/aggTrades`, or the market's own path,
//! [`Market::agg_trades_path`](crate::market::venue::Market::agg_trades_path)): which ids to ask for, page by page,
//! and how an answer becomes records.
//!
//! A group whose aggTrade tape reports a gap (on a live connection or across a reconnect) asks
//! the REST fetcher ([`super::snapshot`]) for the missing ids; the fetcher pages through them
//! within the shared weight budget and hands the records back to the group, which sends them to
//! the writer like any event, marked `backfill` (`conn` 0, `E` = the trade time `T`, `data` = the
//! REST item byte for byte). Ids outside the gap are never written, so the files hold each `a`
//! once. Trade (`@trade`) gaps are not backfilled: Binance's trade history by id
//! (`historicalTrades`) needs an API key, which a recorder does not hold.
//!
//! Everything here is pure; the HTTP is the fetcher's, the sending the group's.

use std::ops::RangeInclusive;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::market::kind::KindIds;
use crate::recorder::event::{KindRecord, StreamId};

/// Most aggregate trades one answer holds: Binance's largest `limit`.
pub const PAGE_LIMIT: u64 = 1000;
/// Most pages one gap is backfilled with: 10,000 aggregates are minutes of a busy symbol's
/// trading, and 200 of the 1200 weight a minute the process allows itself, so even a long
/// outage's backfill leaves snapshots their room. Past that a gap is reported, not fetched.
pub const MAX_PAGES: u64 = 10;
/// Failed attempts at a page before its backfill is given up (the gap then stays open): with the
/// fetcher's backoff (0.25 s, 0.5 s, 1 s, 2 s between them) at most four seconds of trying,
/// enough for a passing error, short enough that later gaps are not held up long.
pub const MAX_ATTEMPTS: u32 = 5;
/// Largest answer read: a page of 1000 items is about 120 KB; far more is not an answer.
pub const MAX_PAGE_BYTES: u64 = 4 << 20;

/// A group's request to backfill one gap of one stream.
#[derive(Debug)]
pub struct BackfillRequest {
    pub stream: StreamId,
    /// Its combined-stream name, e.g. `btcusdt@aggTrade`: for logs, and the symbol REST is asked.
    pub name: String,
    /// The aggregate ids to fetch.
    pub ids: RangeInclusive<u64>,
    /// Where the answer goes.
    pub reply: Sender<Backfilled>,
}

/// What a backfill brought back.
#[derive(Debug)]
pub struct Backfilled {
    pub name: String,
    /// The ids it asked for.
    pub ids: RangeInclusive<u64>,
    /// One per id found, in id order.
    pub records: Vec<KindRecord>,
}

impl Backfilled {
    /// Says what the backfill brought: all it asked for, or how many ids stay missing.
    pub fn log(&self) {
        let (from, to) = (*self.ids.start(), *self.ids.end());
        let (got, asked) = (self.records.len() as u64, to - from + 1);
        if got == asked {
            log::info!(
                "{}: backfilled ids {from}..={to} ({got}) from REST",
                self.name
            );
        } else {
            log::warn!(
                "{}: backfilled {got} of ids {from}..={to} from REST; {} stay missing",
                self.name,
                asked - got
            );
        }
    }
}

/// The ids a gap `from..=to` reported by event `a` lacks that REST can give: those before `a`.
/// `None` when there are none: a gap in trade ids only (`f` skipping while `a` follows) is a loss
/// inside the exchange, which REST shows the same way.
pub fn wanted(from: u64, to: u64, a: u64) -> Option<RangeInclusive<u64>> {
    let to = to.min(a.checked_sub(1)?);
    (from <= to).then_some(from..=to)
}

/// The part of `ids` one backfill fetches, at most [`MAX_PAGES`] pages, and what is left past it.
pub fn bounded(ids: RangeInclusive<u64>) -> (RangeInclusive<u64>, Option<RangeInclusive<u64>>) {
    let (from, to) = ids.into_inner();
    let last = from.saturating_add(MAX_PAGES * PAGE_LIMIT - 1);
    if to <= last {
        (from..=to, None)
    } else {
        (from..=last, Some(last + 1..=to))
    }
}

/// A group's side of backfilling: where its requests go and its answers come back.
pub struct Backfills {
    requests: Sender<BackfillRequest>,
    reply_tx: Sender<Backfilled>,
    replies: Receiver<Backfilled>,
    /// Requests not answered yet.
    outstanding: usize,
}

impl Backfills {
    pub fn new(requests: Sender<BackfillRequest>) -> Backfills {
        let (reply_tx, replies) = crossbeam_channel::unbounded();
        Backfills {
            requests,
            reply_tx,
            replies,
            outstanding: 0,
        }
    }

    /// Asks for what the gap `from..=to`, reported by event `a` of `stream`, lacks (nothing for
    /// a gap in trade ids only); says what is past the bound.
    pub fn ask(&mut self, stream: StreamId, name: &str, from: u64, to: u64, a: u64) {
        let Some(ids) = wanted(from, to, a) else {
            return;
        };
        let (ids, rest) = bounded(ids);
        if let Some(rest) = rest {
            log::warn!(
                "{name}: gap wider than {MAX_PAGES} pages of REST: ids {}..={} stay missing",
                rest.start(),
                rest.end()
            );
        }
        let request = BackfillRequest {
            stream,
            name: name.to_owned(),
            ids,
            reply: self.reply_tx.clone(),
        };
        if self.requests.send(request).is_ok() {
            self.outstanding += 1;
        }
    }

    /// An answer that has come, if any.
    pub fn take(&mut self) -> Option<Backfilled> {
        let done = self.replies.try_recv().ok()?;
        self.outstanding -= 1;
        Some(done)
    }

    /// Waits until `deadline` for an answer, while any is due.
    pub fn wait(&mut self, deadline: Instant) -> Option<Backfilled> {
        if self.outstanding == 0 {
            return None;
        }
        let done = self.replies.recv_deadline(deadline).ok()?;
        self.outstanding -= 1;
        Some(done)
    }
}

/// The ids of one REST item, read to place it; the item itself is kept as received.
#[derive(Deserialize)]
struct ItemIds {
    a: u64,
    f: u64,
    l: u64,
    #[serde(rename = "T")]
    trade_ms: u64,
}

/// One backfill in progress in the fetcher: the ids still wanted and the records so far.
#[derive(Debug)]
pub struct Backfill {
    request: BackfillRequest,
    /// The next id to ask for.
    next: u64,
    records: Vec<KindRecord>,
    /// Failed attempts at the current page.
    pub attempts: u32,
}

impl Backfill {
    pub fn new(request: BackfillRequest) -> Backfill {
        Backfill {
            next: *request.ids.start(),
            request,
            records: Vec::new(),
            attempts: 0,
        }
    }

    pub fn name(&self) -> &str {
        &self.request.name
    }

    /// The ids not fetched yet.
    fn left(&self) -> RangeInclusive<u64> {
        self.next..=*self.request.ids.end()
    }

    /// Stops short, saying which ids stay missing and `why`, and hands back what was fetched.
    pub fn give_up(self, why: &str) {
        let left = self.left();
        log::warn!(
            "{}: backfill of ids {}..={} given up: {why}; the gap stays open",
            self.name(),
            left.start(),
            left.end()
        );
        self.finish();
    }

    /// The next page's query string: `symbol=…&fromId=…&limit=…`.
    pub fn query(&self) -> String {
        let symbol = self.request.name.split('@').next().unwrap_or_default();
        format!(
            "symbol={}&fromId={}&limit={}",
            symbol.to_ascii_uppercase(),
            self.next,
            self.limit()
        )
    }

    /// Items asked for in the next page: no more than the gap still lacks.
    fn limit(&self) -> u64 {
        (self.request.ids.end() - self.next + 1).min(PAGE_LIMIT)
    }

    /// Takes one page, received at `recv_ns` / `recv_at`: keeps the items still wanted, each as
    /// a record whose data is the item exactly as received. `Ok(true)` once the backfill is
    /// done: every id fetched, or REST has no more (a short or empty page, or one that does not
    /// move on).
    ///
    /// # Errors
    /// A body that is not an array of aggregate trades; nothing of it is kept.
    pub fn take_page(
        &mut self,
        body: String,
        recv_ns: u64,
        recv_at: Instant,
    ) -> Result<bool, String> {
        let asked = self.limit();
        let frame = tungstenite::Utf8Bytes::from(body);
        let text = frame.as_str();
        let items: Vec<&RawValue> =
            serde_json::from_str(text).map_err(|e| format!("bad aggTrades body: {e}"))?;
        let mut page = Vec::new();
        let mut next = self.next;
        for item in &items {
            let raw = item.get();
            let ids: ItemIds =
                serde_json::from_str(raw).map_err(|e| format!("bad aggTrades item: {e}"))?;
            if ids.a < next || ids.a > *self.request.ids.end() {
                continue;
            }
            // `raw` lies inside `text`: its offset there is where the item was received.
            let start = raw.as_ptr() as usize - text.as_ptr() as usize;
            page.push(KindRecord {
                stream: self.request.stream,
                conn: 0,
                recv_ns,
                recv_at,
                event_ms: ids.trade_ms,
                ids: KindIds::AggTrade {
                    a: ids.a,
                    f: ids.f,
                    l: ids.l,
                },
                frame: frame.clone(),
                data: start..start + raw.len(),
                backfill: true,
            });
            next = ids.a + 1;
        }
        let moved = next > self.next;
        self.next = next;
        self.records.append(&mut page);
        self.attempts = 0;
        Ok(!moved || (items.len() as u64) < asked || self.next > *self.request.ids.end())
    }

    /// Hands what was fetched back to the group that asked; a group that has gone needs nothing.
    pub fn finish(self) {
        let done = Backfilled {
            name: self.request.name,
            ids: self.request.ids,
            records: self.records,
        };
        let _ = self.request.reply.send(done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ids_before_the_reporting_event_are_wanted() {
        // `a` skipped 101..=103: event 104 reported it.
        assert_eq!(wanted(101, 103, 104), Some(101..=103));
        // `f` skipped while `a` followed: the tape names the event itself, which arrived.
        assert_eq!(wanted(104, 104, 104), None);
        assert_eq!(wanted(0, 0, 0), None);
    }

    #[test]
    fn wide_gaps_are_cut_at_the_page_bound() {
        assert_eq!(bounded(5..=5), (5..=5, None));
        let most = MAX_PAGES * PAGE_LIMIT;
        assert_eq!(bounded(1..=most), (1..=most, None));
        assert_eq!(bounded(1..=most + 7), (1..=most, Some(most + 1..=most + 7)));
        assert_eq!(
            bounded(u64::MAX - 1..=u64::MAX),
            (u64::MAX - 1..=u64::MAX, None)
        );
    }

    fn item(a: u64) -> String {
        format!(
            r#"{{"a":{a},"p":"61800.30","q":"1.500","f":{},"l":{},"T":{},"m":true}}"#,
            10 * a,
            10 * a + 1,
            1_000 + a
        )
    }

    fn page(ids: impl Iterator<Item = u64>) -> String {
        let items: Vec<String> = ids.map(item).collect();
        format!("[{}]", items.join(", "))
    }

    fn backfill(ids: RangeInclusive<u64>) -> (Backfill, Receiver<Backfilled>) {
        let (reply, replies) = crossbeam_channel::unbounded();
        let request = BackfillRequest {
            stream: 3,
            name: "btcusdt@aggTrade".into(),
            ids,
            reply,
        };
        (Backfill::new(request), replies)
    }

    #[test]
    fn pages_are_asked_until_the_gap_is_covered_and_items_kept_as_received() {
        let (mut b, replies) = backfill(101..=2_600);
        assert_eq!(b.query(), "symbol=BTCUSDT&fromId=101&limit=1000");
        let now = Instant::now();
        // An item before the gap (REST answered from an older id) is not written.
        assert_eq!(b.take_page(page(100..1_100), 7, now), Ok(false));
        assert_eq!(b.query(), "symbol=BTCUSDT&fromId=1100&limit=1000");
        assert_eq!(b.take_page(page(1_100..2_100), 8, now), Ok(false));
        assert_eq!(b.query(), "symbol=BTCUSDT&fromId=2100&limit=501");
        // Items past the gap are not written either.
        assert_eq!(b.take_page(page(2_100..2_700), 9, now), Ok(true));
        b.finish();
        let done = replies.try_recv().unwrap();
        assert_eq!(done.ids, 101..=2_600);
        let ids: Vec<u64> = done
            .records
            .iter()
            .map(|r| match r.ids {
                KindIds::AggTrade { a, .. } => a,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(ids, (101..=2_600).collect::<Vec<_>>());
        let first = &done.records[0];
        assert_eq!(&first.frame[first.data.clone()], item(101));
        assert_eq!((first.conn, first.event_ms, first.recv_ns), (0, 1_101, 7));
        assert!(first.backfill && first.stream == 3);
        assert_eq!(
            first.ids,
            KindIds::AggTrade {
                a: 101,
                f: 1_010,
                l: 1_011
            }
        );
    }

    #[test]
    fn a_short_or_stuck_page_ends_the_backfill_with_what_came() {
        let now = Instant::now();
        let (mut b, _) = backfill(10..=20);
        assert_eq!(
            b.take_page(page(10..15), 1, now),
            Ok(true),
            "REST has no more"
        );
        assert_eq!(b.left(), 15..=20);
        let (mut b, _) = backfill(10..=20);
        assert_eq!(b.take_page("[]".into(), 1, now), Ok(true));
        let (mut b, _) = backfill(10..=12);
        assert_eq!(b.take_page(page(1..4), 1, now), Ok(true), "nothing new");
        let (mut b, _) = backfill(10..=20);
        for bad in [
            r#"{"code":-1121,"msg":"Invalid symbol."}"#,
            "[{\"a\":1}]",
            "[1,",
        ] {
            assert!(b.take_page(bad.into(), 1, now).is_err(), "{bad}");
        }
        assert_eq!(b.left(), 10..=20);
    }
}
