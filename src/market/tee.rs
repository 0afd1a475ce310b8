//! What a recorder hands a live consumer of its stream (the tap of `obrec record --tap`): every
//! frame it accepted, as received, and the REST snapshots its books started from. Plain data, so
//! that the recorder filling it and the exchange front serving it need not know each other.

use std::ops::Range;
use std::time::Instant;

use crate::market::sequence::Ids;

/// One item handed over, in the order the recorder accepted them per stream.
#[derive(Clone, Debug)]
pub enum Tapped {
    Frame(TappedFrame),
    /// A REST depth snapshot taken for the diff stream `stream`, byte-exact.
    Snapshot {
        stream: String,
        last_update_id: u64,
        body: String,
    },
}

/// A frame the recorder accepted (after duplicate removal), exactly as the exchange sent it.
#[derive(Clone, Debug)]
pub struct TappedFrame {
    /// The stream name the recorder subscribed, e.g. `btcusdt@depth@100ms`.
    pub stream: String,
    /// The whole frame: `{"stream":…,"data":…}`.
    pub frame: tungstenite::Utf8Bytes,
    /// Where the `data` payload lies in `frame`.
    pub data: Range<usize>,
    /// Monotonic time of receipt, for the delivery latency.
    pub recv_at: Instant,
    /// Set for a depth event.
    pub depth: Option<DepthPosition>,
}

/// Where a depth event sits in its symbol's sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DepthPosition {
    pub ids: Ids,
    /// `E`, ms.
    pub event_ms: u64,
    /// `T`, ms, when the event has one.
    pub trade_ms: Option<u64>,
    /// The recorder's connection that delivered it: the continuity rules tell a reconnect gap
    /// from a break by it.
    pub conn: u64,
}
