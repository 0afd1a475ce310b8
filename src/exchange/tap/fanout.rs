//! The tap's [`Source`]: one dispatcher thread takes what the recorder accepted and queues each
//! frame to every subscriber of its stream; the books and the REST answers live beside it.
//!
//! Clients that subscribe to [`STATE_STREAM`] also get the recorder's notices in band (breaks,
//! reconnect gaps, resyncs, silences and recoveries of each recorded stream), in order with the
//! frames (a break just before the event that broke the chain), so a consumer knows when a book
//! it builds must be rebuilt.
//!
//! A frame is queued and its depth event applied to the book under one lock, which REST takes
//! too: a `/fapi/v1/depth` answer at `lastUpdateId` L comes after every frame up to L was queued
//! to every subscriber, and before any later one. A client subscribed before it asks therefore
//! holds (or will receive) every event after L, which is all Binance's procedure needs.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, select};

use super::book::LiveBook;
use crate::exchange::sim::conn::Link;
use crate::exchange::sim::generator::Header;
use crate::exchange::sim::http::{self, Reply};
use crate::exchange::sim::lock;
use crate::exchange::sim::server::Shared;
use crate::exchange::sim::source::Source;
use crate::exchange::sim::wire::DataFrame;
use crate::market::stream::{Depth, parse_depth_stream};
use crate::market::tee::{Notice, STATE_STREAM, Tapped, TappedFrame};
use crate::metrics::tap::TapStats;
use crate::util::clock::wall_ms;

/// How often an idle dispatcher copies the front's send counters into [`TapStats`].
const IDLE_TICK: Duration = Duration::from_millis(200);

/// A recorded stream, its subscribers, and its book when it is a diff stream.
struct Stream {
    name: Arc<str>,
    /// Upper case.
    symbol: Arc<str>,
    links: Vec<Arc<Link>>,
    book: Option<LiveBook>,
    /// Diff streams: the latest event, which a new subscriber is sent first (see `subscribe`).
    last: Option<TappedFrame>,
}

#[derive(Default)]
pub(crate) struct State {
    /// By stream name, every stream the recorder records.
    streams: HashMap<String, Stream>,
    /// Connections with at least one recorded stream, by id: their streams, for `/status`.
    clients: BTreeMap<u64, (Arc<Link>, Vec<String>)>,
    /// Subscribers of [`STATE_STREAM`].
    notified: Vec<Arc<Link>>,
}

/// What the tap serves: the recorder's accepted frames, live.
pub(crate) struct Fanout {
    items: Receiver<Tapped>,
    stats: Arc<TapStats>,
    state: Arc<Mutex<State>>,
}

impl Fanout {
    /// Serves `streams` (the recorder's names) from `items`.
    pub(crate) fn new(streams: &[String], items: Receiver<Tapped>, stats: Arc<TapStats>) -> Fanout {
        let mut state = State::default();
        for name in streams {
            let (symbol, diff) = match parse_depth_stream(name) {
                Some((symbol, depth)) => (symbol, depth == Depth::Diff),
                None => (name.split('@').next().unwrap_or(name), false),
            };
            let stream = Stream {
                name: name.as_str().into(),
                symbol: symbol.to_ascii_uppercase().into(),
                links: Vec::new(),
                book: diff.then(LiveBook::default),
                last: None,
            };
            state.streams.insert(name.clone(), stream);
        }
        Fanout {
            items,
            stats,
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// What [`drained`] looks at.
    pub(crate) fn state(&self) -> Arc<Mutex<State>> {
        Arc::clone(&self.state)
    }

    fn take(&self, item: Tapped) {
        let mut state = lock(&self.state);
        match item {
            Tapped::Frame(frame) => {
                if let Some(stream) = state.streams.get_mut(&*frame.stream) {
                    self.dispatch(stream, &frame);
                }
            }
            Tapped::Snapshot {
                stream,
                last_update_id,
                body,
            } => {
                let book = state.streams.get_mut(&stream).and_then(|s| s.book.as_mut());
                if let Some(book) = book {
                    book.snapshot(last_update_id, &body);
                }
            }
            Tapped::Notice(notice) => self.notify(&mut state.notified, &notice),
        }
    }

    /// Queues a notice to every subscriber of [`STATE_STREAM`].
    fn notify(&self, links: &mut Vec<Arc<Link>>, notice: &Notice) {
        let name: Arc<str> = STATE_STREAM.into();
        let symbol: Arc<str> = notice
            .stream
            .split('@')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase()
            .into();
        let data = notice.data();
        let header = Header {
            first: 0,
            last: 0,
            prev: 0,
            event_ms: notice.at_ms,
            trade_ms: notice.at_ms,
        };
        links.retain(|link| {
            let frame = DataFrame::new(&name, link.combined, &symbol, header, data.as_bytes());
            link.offer(Arc::new(frame), &self.stats.cuts)
        });
    }

    /// Applies a depth event to the book, then queues the frame to every subscriber.
    fn dispatch(&self, stream: &mut Stream, frame: &TappedFrame) {
        if let (Some(at), Some(book)) = (frame.depth, &mut stream.book) {
            book.event(at, &frame.frame, frame.data.clone());
            stream.last = Some(frame.clone());
        }
        let mut framed = Framed::new(&stream.name, &stream.symbol, frame);
        stream
            .links
            .retain(|link| link.offer(framed.for_link(link), &self.stats.cuts));
    }

    /// Copies the front's counters of what reached the sockets.
    fn count_sent(&self, shared: &Shared) {
        let copy = |from: &std::sync::atomic::AtomicU64, to: &std::sync::atomic::AtomicU64| {
            to.store(from.load(Ordering::Relaxed), Ordering::Relaxed);
        };
        copy(&shared.frames_sent, &self.stats.frames_sent);
        copy(&shared.bytes_sent, &self.stats.bytes_sent);
    }

    /// `/status`: every client with its streams and queue depth, and the tap's counters.
    fn status(&self) -> Reply {
        let state = lock(&self.state);
        let clients: Vec<serde_json::Value> = state
            .clients
            .iter()
            .map(|(id, (link, streams))| {
                serde_json::json!({"id": id, "streams": streams, "queued": link.queued()})
            })
            .collect();
        let body = serde_json::json!({
            "clients": clients,
            "counters": self.stats.report(),
        });
        (200, body.to_string().into_bytes())
    }

    /// `/fapi/v1/exchangeInfo`, the minimal shape: the recorded symbols, trading.
    fn exchange_info(&self) -> Reply {
        let state = lock(&self.state);
        let mut symbols: Vec<&str> = state.streams.values().map(|s| &*s.symbol).collect();
        symbols.sort_unstable();
        symbols.dedup();
        let symbols: Vec<serde_json::Value> = symbols
            .into_iter()
            .map(|s| serde_json::json!({"symbol": s, "pair": s, "status": "TRADING"}))
            .collect();
        let body = serde_json::json!({
            "timezone": "UTC",
            "serverTime": wall_ms(),
            "symbols": symbols,
        });
        (200, body.to_string().into_bytes())
    }
}

/// A tapped frame as clients are sent it: the original text on `/stream` connections, its
/// `data` alone on `/ws` ones; each built once, when a client first needs it.
struct Framed<'a> {
    name: &'a Arc<str>,
    symbol: &'a Arc<str>,
    frame: &'a TappedFrame,
    whole: Option<Arc<DataFrame>>,
    bare: Option<Arc<DataFrame>>,
}

impl<'a> Framed<'a> {
    fn new(name: &'a Arc<str>, symbol: &'a Arc<str>, frame: &'a TappedFrame) -> Framed<'a> {
        Framed {
            name,
            symbol,
            frame,
            whole: None,
            bare: None,
        }
    }

    fn for_link(&mut self, link: &Link) -> Arc<DataFrame> {
        let Framed {
            name,
            symbol,
            frame,
            ..
        } = *self;
        // The ids ride along for the front's bookkeeping of frames sent; 0 beside the book.
        let header = match frame.depth {
            Some(at) => Header {
                first: at.ids.first,
                last: at.ids.last,
                prev: at.ids.prev,
                event_ms: at.event_ms,
                trade_ms: at.trade_ms.unwrap_or(at.event_ms),
            },
            None => Header {
                first: 0,
                last: 0,
                prev: 0,
                event_ms: 0,
                trade_ms: 0,
            },
        };
        let text = frame.frame.as_bytes();
        let slot = if link.combined {
            &mut self.whole
        } else {
            &mut self.bare
        };
        let framed = slot.get_or_insert_with(|| {
            let mut framed = if link.combined {
                DataFrame::whole(name, symbol, header, text, frame.data.clone())
            } else {
                DataFrame::new(name, false, symbol, header, &text[frame.data.clone()])
            };
            framed.received = Some(frame.recv_at);
            Arc::new(framed)
        });
        Arc::clone(framed)
    }
}

/// Whether every client has taken everything queued to it.
pub(crate) fn drained(state: &Mutex<State>) -> bool {
    lock(state)
        .clients
        .values()
        .all(|(link, _)| link.queued() == 0)
}

impl Source for Fanout {
    /// The dispatcher.
    fn workers(&self) -> usize {
        1
    }

    fn work(&self, _index: usize, shared: &Shared) {
        loop {
            select! {
                recv(self.items) -> item => match item {
                    Ok(item) => self.take(item),
                    // The recording ended: nothing more comes until the tap stops.
                    Err(_) => {
                        let _ = shared.stop.recv();
                        return;
                    }
                },
                recv(shared.stop) -> _ => return,
                default(IDLE_TICK) => {}
            }
            self.count_sent(shared);
        }
    }

    /// Streams the recorder does not record are acknowledged and never sent, as Binance does
    /// with a name it has no data for.
    ///
    /// A diff stream starts with its latest event, already sent to the others. REST answers at
    /// that event's `u`, so a client that asks for a snapshot right after subscribing, even before
    /// any new event, holds the event that bridges it (`U <= lastUpdateId <= u`); without it,
    /// its first event would start after the snapshot and Binance's procedure would refuse it.
    fn subscribe(&self, _shared: &Arc<Shared>, link: &Arc<Link>, streams: &[String]) {
        let mut state = lock(&self.state);
        let state = &mut *state;
        for name in streams {
            if name == STATE_STREAM {
                state.notified.push(Arc::clone(link));
                let client = state
                    .clients
                    .entry(link.id)
                    .or_insert_with(|| (Arc::clone(link), Vec::new()));
                client.1.push(name.clone());
                continue;
            }
            let Some(stream) = state.streams.get_mut(name) else {
                continue;
            };
            if let Some(last) = &stream.last {
                let latest = Framed::new(&stream.name, &stream.symbol, last).for_link(link);
                link.offer(latest, &self.stats.cuts);
            }
            stream.links.push(Arc::clone(link));
            let client = state
                .clients
                .entry(link.id)
                .or_insert_with(|| (Arc::clone(link), Vec::new()));
            client.1.push(name.clone());
        }
        self.stats
            .clients
            .store(state.clients.len() as u64, Ordering::Relaxed);
    }

    fn unsubscribe(&self, conn: u64, name: &str) {
        let mut state = lock(&self.state);
        if let Some(stream) = state.streams.get_mut(name) {
            stream.links.retain(|l| l.id != conn);
        }
        if name == STATE_STREAM {
            state.notified.retain(|l| l.id != conn);
        }
        if let Some(client) = state.clients.get_mut(&conn) {
            client.1.retain(|s| s != name);
        }
    }

    fn leave(&self, conn: u64) {
        let mut state = lock(&self.state);
        for stream in state.streams.values_mut() {
            stream.links.retain(|l| l.id != conn);
        }
        state.notified.retain(|l| l.id != conn);
        state.clients.remove(&conn);
        self.stats
            .clients
            .store(state.clients.len() as u64, Ordering::Relaxed);
    }

    fn depth(&self, symbol: &str, limit: usize, out: &mut Vec<u8>) -> Result<(), Reply> {
        let state = lock(&self.state);
        let mut of_symbol = state.streams.values().filter(|s| &*s.symbol == symbol);
        let Some(first) = of_symbol.next() else {
            return Err(http::error(400, -1121, "Invalid symbol."));
        };
        let book = std::iter::once(first)
            .chain(of_symbol)
            .find_map(|s| s.book.as_ref());
        let unavailable = |msg: &str| http::error(503, -1001, msg);
        let Some(book) = book else {
            return Err(unavailable(
                "no book: the recorder keeps one for diff depth only (--depth 0)",
            ));
        };
        book.depth(limit, out).ok_or_else(|| {
            unavailable("book not synced: waiting for the recorder's snapshot, try again")
        })
    }

    fn rest(&self, path: &str, _query: &str) -> Option<Reply> {
        match path {
            "/status" => Some(self.status()),
            "/fapi/v1/exchangeInfo" => Some(self.exchange_info()),
            _ => None,
        }
    }

    fn time_ms(&self) -> u64 {
        wall_ms()
    }

    fn slow_clients(&self) -> u64 {
        self.stats.cuts.load(Ordering::Relaxed)
    }
}
