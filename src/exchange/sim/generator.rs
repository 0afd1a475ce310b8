//! One symbol's simulated events.
//!
//! The sim's hub only needs, per symbol: the next event's ids, that event's payloads as each
//! stream shows it (one depth event; none, one or several of each kind beside the book), a
//! REST snapshot consistent with the latest event, and the recent aggregate trades REST serves. The random-walk market provides that. (A recording's playback is not a `Feed`: each of its connections plays from
//! the beginning at its own pace, so it is a `Source` of its own.)

use std::ops::Range;

use crate::market::kind::Kind;
use crate::market::stream::{Depth, parse_depth_stream};

/// What a subscribed stream shows of a symbol's events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Depth(Depth),
    Kind(Kind),
}

impl View {
    /// Splits a stream name into its lowercase symbol and view; `None` for a stream the sim does
    /// not publish, such as the 3 s `@markPrice` (only `@markPrice@1s` is simulated).
    pub fn parse(stream: &str) -> Option<(&str, View)> {
        if let Some((symbol, depth)) = parse_depth_stream(stream) {
            return Some((symbol, View::Depth(depth)));
        }
        let (symbol, kind) = Kind::parse_stream(stream)?;
        let published = kind != Kind::MarkPrice || stream.ends_with("@1s");
        published.then_some((symbol, View::Kind(kind)))
    }
}

/// The ids and times of one event, shared by every stream of its symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// `U`: first update id in the event.
    pub first: u64,
    /// `u`: final update id in the event.
    pub last: u64,
    /// `pu`: the previous event's `u`.
    pub prev: u64,
    /// `E`: event time, wall-clock ms.
    pub event_ms: u64,
    /// `T`: transaction time, ms, a little before `E`.
    pub trade_ms: u64,
}

/// Which of a symbol's trades and aggregate trades faults keep off the streams, each numbered
/// from 1 per symbol.
pub struct Withhold<'a> {
    /// Trades lost inside the exchange: made, then never shown, by trade and aggregate streams
    /// and REST alike (their aggregates are cut around them).
    pub trade: &'a dyn Fn(u64) -> bool,
    /// Aggregate trades lost on the way to clients: never on the `@aggTrade` stream, still in
    /// REST `/fapi/v1/aggTrades`.
    pub aggregate: &'a dyn Fn(u64) -> bool,
}

#[cfg(test)]
impl Withhold<'_> {
    /// No fault: everything is shown.
    pub const NONE: Withhold<'static> = Withhold {
        trade: &|_| false,
        aggregate: &|_| false,
    };
}

/// One symbol's source of events.
pub trait Feed: Send {
    /// The symbol in upper case, as payloads spell it.
    fn symbol(&self) -> &str;

    /// Moves to the next event and returns its header; `now_ms` is the wall clock. Trades and
    /// aggregates `withhold` names are made and kept from the streams (see [`Withhold`]).
    fn advance(&mut self, now_ms: u64, withhold: &Withhold) -> Header;

    /// Appends the latest event's payloads as `view` shows them (the exchange's `data` JSON), and
    /// the range of each in `out`.
    fn render(&self, view: View, out: &mut Vec<u8>, events: &mut Vec<Range<usize>>);

    /// Appends a REST depth snapshot body of at most `limit` levels a side: the exact state
    /// after the latest event, with that event's `u` as `lastUpdateId`.
    fn snapshot(&self, limit: usize, now_ms: u64, out: &mut Vec<u8>);

    /// Appends a REST `/fapi/v1/aggTrades` body: up to `limit` of the latest aggregate trades
    /// from id `from_id` on, withheld ones included.
    fn agg_trades(&self, from_id: u64, limit: usize, out: &mut Vec<u8>);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_parse_into_views() {
        for (stream, view) in [
            ("ethusdt@depth@100ms", Some(View::Depth(Depth::Diff))),
            ("ethusdt@depth5", Some(View::Depth(Depth::Partial(5)))),
            ("ethusdt@trade", Some(View::Kind(Kind::Trade))),
            ("ethusdt@aggTrade", Some(View::Kind(Kind::AggTrade))),
            ("ethusdt@bookTicker", Some(View::Kind(Kind::BookTicker))),
            ("ethusdt@markPrice@1s", Some(View::Kind(Kind::MarkPrice))),
            ("ethusdt@forceOrder", Some(View::Kind(Kind::ForceOrder))),
            ("ethusdt@markPrice", None),
            ("ethusdt@kline_1m", None),
            ("ETHUSDT@trade", None),
        ] {
            assert_eq!(View::parse(stream).map(|(_, v)| v), view, "{stream}");
        }
    }
}
