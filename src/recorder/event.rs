//! The records a reader hands the writer: named types on the channel, owning the frame as it
//! came off the socket so the hand-over copies nothing.

use std::ops::Range;
use std::time::Instant;

use crate::market::kind::{Kind, KindIds};
use crate::market::sequence::Ids;
use crate::market::symbol::{Symbol, SymbolId};
use crate::market::tee::{DepthPosition, Tapped, TappedFrame};
use crate::metrics::tap::Tee;
use crate::store::line::{DepthLine, KindLine};

/// A stream beside the book: its index in the run's list of them (`WriterConfig::streams`).
pub type StreamId = usize;

/// One depth event on its way from a reader to the writer.
#[derive(Debug)]
pub struct DepthRecord {
    pub symbol: SymbolId,
    /// The connection that delivered it; numbers rise across the runs into one data dir.
    pub conn: u64,
    /// Wall clock at receipt, ns since the Unix epoch.
    pub recv_ns: u64,
    /// The same instant on the monotonic clock, for the pipeline latency.
    pub recv_at: Instant,
    /// `E`, event time in ms.
    pub event_ms: u64,
    /// `T`, transaction time in ms, when the event has one.
    pub trade_ms: Option<u64>,
    pub ids: Ids,
    /// The whole frame text as received.
    pub frame: tungstenite::Utf8Bytes,
    /// Where the `data` payload lies in `frame`.
    pub data: Range<usize>,
}

impl DepthRecord {
    /// The line this record becomes, with the names the run gave its symbol and stream.
    pub fn line<'a>(&'a self, symbol: &'a str, stream: &'a str, pipeline_us: u64) -> DepthLine<'a> {
        DepthLine {
            symbol,
            stream,
            data: &self.frame.as_str()[self.data.clone()],
            event_ms: self.event_ms,
            trade_ms: self.trade_ms,
            ids: self.ids,
            pipeline_us: Some(pipeline_us),
            recv_ns: self.recv_ns,
            conn: self.conn,
        }
    }
}

/// One event of a stream beside the book, on its way to the writer.
#[derive(Debug)]
pub struct KindRecord {
    pub stream: StreamId,
    /// The connection that delivered it; 0 for a backfilled event.
    pub conn: u64,
    /// Wall clock at receipt, ns since the Unix epoch.
    pub recv_ns: u64,
    /// The same instant on the monotonic clock, for the pipeline latency.
    pub recv_at: Instant,
    /// `E`, event time in ms (a backfilled trade's `T`).
    pub event_ms: u64,
    pub ids: KindIds,
    /// The whole frame (or REST item) as received.
    pub frame: tungstenite::Utf8Bytes,
    /// Where the payload lies in `frame`.
    pub data: Range<usize>,
    /// Fetched over REST to close a gap.
    pub backfill: bool,
}

impl KindRecord {
    /// The line this record becomes, with the names the run gave its symbol and stream.
    pub fn line<'a>(&'a self, symbol: &'a str, stream: &'a str, pipeline_us: u64) -> KindLine<'a> {
        KindLine {
            symbol,
            stream,
            data: &self.frame.as_str()[self.data.clone()],
            event_ms: self.event_ms,
            ids: self.ids,
            pipeline_us: Some(pipeline_us),
            recv_ns: self.recv_ns,
            conn: self.conn,
            backfill: self.backfill,
        }
    }
}

/// A file a meta line goes to: a symbol's depth file, or a stream's beside the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Depth(SymbolId),
    Stream(StreamId),
}

/// A notice about a connection (`serverShutdown`), kept in the files of every stream it carried.
#[derive(Debug)]
pub struct MetaRecord {
    pub targets: Vec<Target>,
    /// The payload's event type.
    pub meta: &'static str,
    pub conn: u64,
    pub recv_ns: u64,
    pub frame: tungstenite::Utf8Bytes,
    pub data: Range<usize>,
}

/// A REST depth snapshot (diff-depth mode), recorded byte-exact.
#[derive(Debug)]
pub struct SnapshotRecord {
    pub symbol: SymbolId,
    pub recv_ns: u64,
    pub last_update_id: u64,
    pub body: String,
}

/// How a symbol's data is laid out on disk.
#[derive(Clone, Debug)]
pub struct SymbolFiles {
    /// As written in each line and, in lower case, in file names.
    pub symbol: Symbol,
    /// The combined-stream name, as written in each line.
    pub stream: String,
}

/// How a stream beside the book is laid out on disk.
#[derive(Clone, Debug)]
pub struct StreamFiles {
    pub symbol: Symbol,
    pub kind: Kind,
    /// The combined-stream name, as written in each line.
    pub stream: String,
}

/// A symbol the exchange listed during a `--symbol all` run: its file series, under the ids
/// the run gave them. Sent before any of its events, so the writer knows where they go.
#[derive(Debug)]
pub struct ListedRecord {
    pub symbol_id: SymbolId,
    pub symbol: SymbolFiles,
    /// The streams beside the book, from `first_stream` on, in stream id order.
    pub first_stream: StreamId,
    pub streams: Vec<StreamFiles>,
}

/// The files a delisted symbol's streams wrote: finished now, after the reader's last event of
/// them.
#[derive(Debug)]
pub struct RetiredRecord {
    pub targets: Vec<Target>,
}

/// What a reader (or, for a listing, the universe watch) hands the writer.
#[derive(Debug)]
pub enum Event {
    Depth(DepthRecord),
    Snapshot(SnapshotRecord),
    Kind(KindRecord),
    Meta(MetaRecord),
    Listed(ListedRecord),
    Retired(RetiredRecord),
}

/// Bytes an event costs in the hand-off beyond its text: the record itself, its slot in the
/// channel and the allocator's rounding of the text, so that a flood of tiny frames is bounded
/// as surely as one of large ones.
const EVENT_OVERHEAD: usize = std::mem::size_of::<Event>() + 64;

impl Event {
    /// What holding this event costs in memory, as the hand-off's byte budget counts it.
    pub fn cost(&self) -> usize {
        let text = match self {
            Event::Depth(r) => r.frame.len(),
            Event::Kind(r) => r.frame.len(),
            Event::Snapshot(r) => r.body.len(),
            Event::Meta(r) => r.frame.len() + std::mem::size_of_val(r.targets.as_slice()),
            Event::Retired(r) => std::mem::size_of_val(r.targets.as_slice()),
            // A listing's files and names: a few hundred bytes, once per listing.
            Event::Listed(_) => 0,
        };
        text + EVENT_OVERHEAD
    }

    /// Hands what the tap serves of this event, accepted on `stream`, to `tee`: a depth or kind
    /// frame (the text is shared, not copied), or a snapshot; notices stay with the files.
    pub fn tee(&self, stream: &std::sync::Arc<str>, tee: &Tee) {
        let item = match self {
            Event::Depth(r) => Tapped::Frame(TappedFrame {
                stream: std::sync::Arc::clone(stream),
                frame: r.frame.clone(),
                data: r.data.clone(),
                recv_at: r.recv_at,
                depth: Some(DepthPosition {
                    ids: r.ids,
                    event_ms: r.event_ms,
                    trade_ms: r.trade_ms,
                    conn: r.conn,
                }),
            }),
            // A backfilled item came over REST: it is in the files, never on a stream.
            Event::Kind(r) if r.backfill => return,
            Event::Kind(r) => Tapped::Frame(TappedFrame {
                stream: std::sync::Arc::clone(stream),
                frame: r.frame.clone(),
                data: r.data.clone(),
                recv_at: r.recv_at,
                depth: None,
            }),
            Event::Snapshot(r) => Tapped::Snapshot {
                stream: stream.to_string(),
                last_update_id: r.last_update_id,
                body: r.body.clone(),
            },
            Event::Meta(_) | Event::Listed(_) | Event::Retired(_) => return,
        };
        tee.offer(item);
    }
}
