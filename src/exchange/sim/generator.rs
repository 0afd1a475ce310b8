//! One symbol's simulated events.
//!
//! The sim's hub only needs, per symbol: the next event's ids, that event's payload as each depth
//! stream shows it, and a REST snapshot consistent with the latest event. The random-walk market
//! provides that. (A recording's playback is not a `Feed`: each of its connections plays from
//! the beginning at its own pace, so it is a `Source` of its own.)

use crate::market::stream::Depth;

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

/// One symbol's source of depth events.
pub trait Feed: Send {
    /// The symbol in upper case, as payloads spell it.
    fn symbol(&self) -> &str;

    /// Moves to the next event and returns its header; `now_ms` is the wall clock.
    fn advance(&mut self, now_ms: u64) -> Header;

    /// Appends the latest event's payload as the `depth` stream shows it (the exchange's `data` JSON).
    fn render(&self, depth: Depth, out: &mut Vec<u8>);

    /// Appends a REST depth snapshot body of at most `limit` levels a side: the exact state
    /// after the latest event, with that event's `u` as `lastUpdateId`.
    fn snapshot(&self, limit: usize, now_ms: u64, out: &mut Vec<u8>);
}
