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
    /// Something a consumer of `stream` must know about its continuity, as the recorder saw it.
    Notice(Notice),
}

/// The stream on which a tap's clients who opt in get the recorder's [`Notice`]s. Binance
/// names no stream so, so no exchange data is ever mistaken for one.
pub const STATE_STREAM: &str = "obrec@state";

/// A change of a recorded stream's state, sent in band to the clients of [`STATE_STREAM`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// The recorded stream it is about, e.g. `btcusdt@depth@100ms`.
    pub stream: String,
    pub state: StreamState,
    /// Wall clock when the recorder saw it, ms since the Unix epoch.
    pub at_ms: u64,
    /// What exactly, for people: ids, the connection, how long.
    pub detail: String,
}

/// What happened to a stream. For a depth stream every one but `Delivering` means a book built
/// from it must be rebuilt from a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamState {
    /// Events were lost on a live connection: the exchange lost them.
    Break,
    /// Events were lost while the recorder changed connections.
    ReconnectGap,
    /// The recorder took a new snapshot after its book was lost.
    Resync,
    /// Nothing arrives on the stream.
    Silent,
    /// It delivers again after a silence.
    Delivering,
}

impl StreamState {
    pub fn name(self) -> &'static str {
        match self {
            StreamState::Break => "break",
            StreamState::ReconnectGap => "reconnect_gap",
            StreamState::Resync => "resync",
            StreamState::Silent => "silent",
            StreamState::Delivering => "delivering",
        }
    }
}

impl Notice {
    /// The frame a client of [`STATE_STREAM`] gets, its `data` in Binance's event shape:
    /// `{"e":"obrecState","E":…,"stream":"…","state":"break","detail":"…"}`.
    pub fn data(&self) -> String {
        // Written by hand: Binance's keys come `e`, `E` first, which a JSON map would sort away.
        let quoted = |text: &str| serde_json::Value::from(text).to_string();
        format!(
            r#"{{"e":"obrecState","E":{},"stream":{},"state":"{}","detail":{}}}"#,
            self.at_ms,
            quoted(&self.stream),
            self.state.name(),
            quoted(&self.detail)
        )
    }
}

/// A frame the recorder accepted (after duplicate removal), exactly as the exchange sent it.
#[derive(Clone, Debug)]
pub struct TappedFrame {
    /// The stream name the recorder subscribed, e.g. `btcusdt@depth@100ms`: shared, so the
    /// hand-off of a frame allocates nothing.
    pub stream: std::sync::Arc<str>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_is_a_binance_shaped_event() {
        let notice = Notice {
            stream: "btcusdt@depth@100ms".into(),
            state: StreamState::ReconnectGap,
            at_ms: 1_790_046_434_001,
            detail: "last u=5, new pu=9 on conn 2".into(),
        };
        assert_eq!(
            notice.data(),
            r#"{"e":"obrecState","E":1790046434001,"stream":"btcusdt@depth@100ms","state":"reconnect_gap","detail":"last u=5, new pu=9 on conn 2"}"#
        );
    }
}
