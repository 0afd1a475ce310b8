//! The reader side: WebSocket connections to the exchange, one blocking thread per group of up
//! to [`MAX_STREAMS_PER_CONNECTION`] streams.
//!
//! A group thread owns its connection(s), the continuity [`Chain`] of each of its symbols and a
//! sender to the writer. When the writer falls behind by the whole byte budget of the hand-off
//! ([`super::budget`]), the group waits for room instead of dropping: its socket goes unread and
//! TCP holds the exchange's frames back, so a burst is recorded late rather than lost.
//!
//! The socket has a short read timeout, so the loop wakes regularly to notice shutdown, send
//! client pings, flush queued pongs and detect a connection that went silent. Before the
//! exchange's 24 h cut the group opens a second connection and switches over once it delivers;
//! while both are open, events are de-duplicated by `u`.
//!
//! Opening a connection works the same way: name lookup, TCP, TLS and the HTTP upgrade share one
//! deadline, waited out in short slices that look at the shutdown token, so a server that drips
//! or withholds its answer costs a connect failure, never a reader that cannot stop.
//!
//! A stream that delivers nothing (an unknown or delisted symbol, a stream asked for on the wrong
//! route) is the exchange's answer to a subscription, not a failure of the connection, so it
//! never costs the other streams a reconnect: it is named, marked silent and subscribed again on
//! the same connection, with a window that doubles each time. Each stream is judged on its own
//! clock: its kind's patience (a thin symbol's trades may pause a minute, liquidations hours)
//! and, once it delivers, its own observed pace. Only a connection on which nothing delivers (a
//! dead server, every stream on the wrong route) is replaced.
//!
//! A `serverShutdown` notice starts the make-before-break replacement at once, and is kept as a
//! meta line in the files of every stream the connection carried.
//!
//! The REST fetcher's answers come back to the group that asked, between reads: snapshots feed
//! the book syncs of diff depth; aggTrade gaps are backfilled ([`super::backfill`]), their
//! records sent to the writer like events. A stopping group waits briefly for the backfills it
//! asked for, so that a gap found in its last frames is closed too.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use tungstenite::client::IntoClientRequest;
use tungstenite::error::ProtocolError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Connector, HandshakeError, Message, WebSocket};

use crate::error::{Error, FeedError, Result};
use crate::market::frame::{DepthHeader, Frame, KindHeader, parse_frame};
use crate::market::kind::{Check, Kind, KindIds, Tape};
use crate::market::sequence::{BookSync, Chain, Continuity, Ids, SnapshotStep, Step, Verdict};
use crate::market::symbol::{Symbol, SymbolId};
use crate::market::tee::{Notice, StreamState, Tapped};
use crate::market::venue::Market;
use crate::metrics::tap::Tee;
use crate::metrics::{BookState, FeedHealth, FeedState, Link, Stats};
use crate::recorder::backfill::{BackfillRequest, Backfilled, Backfills};
use crate::recorder::budget::{Closed, Inlet};
use crate::recorder::event::{
    DepthRecord, Event, KindRecord, MetaRecord, RetiredRecord, SnapshotRecord, StreamId, Target,
};
use crate::recorder::snapshot::{FINISH_GRACE, SnapshotRequest};
use crate::store::conn_numbers::ConnNumbers;
use crate::util::backoff::Backoff;
use crate::util::clock::wall_ns;
use crate::util::shutdown::Shutdown;

/// Binance allows more, but 200 streams per connection is the documented conservative limit.
pub const MAX_STREAMS_PER_CONNECTION: usize = 200;

/// How often a blocked read wakes up to check timers and the shutdown token.
const READ_TICK: Duration = Duration::from_millis(100);
/// The read tick while two connections overlap: each read may wait this long before the other
/// connection gets its turn.
const OVERLAP_TICK: Duration = Duration::from_millis(2);
/// The whole connect (name lookup, TCP, TLS, HTTP upgrade) must be done within this. Binance
/// completes it in well under a second from anywhere, a slow link in two or three; past ten
/// seconds the server is not going to answer usefully, and the group is better off retrying with
/// backoff (and logging why) than waiting on it.
const CONNECT_DEADLINE: Duration = Duration::from_secs(10);
/// A write (ping, pong, close) that cannot complete in this time means a dead peer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame accepted. Binance depth frames are at most tens of KB; anything far larger is
/// garbage and must not make the recorder allocate without bound.
pub const MAX_FRAME_BYTES: usize = 1 << 20;
/// Bad frames are logged at most once per this interval (all are counted).
const BAD_FRAME_LOG_EVERY: Duration = Duration::from_secs(10);

/// Logs and errors list streams in full up to this many; past it, the first ones and a count
/// (a full group is 200 names long).
const STREAMS_SHOWN: usize = 3;

/// What a group needs to know about the run.
#[derive(Clone, Debug)]
pub struct FeedConfig {
    /// Base endpoint of the group's route; the stream URL is `<endpoint>/stream?streams=…`.
    pub endpoint: String,
    /// The market's depth rule: how snapshots are bridged, and which depth payloads belong.
    pub continuity: Continuity,
    /// No data for this long replaces a connection of depth streams; streams beside the book
    /// get their kind's patience times this (see [`Kind::patience`]).
    pub stale_after: Duration,
    /// Client ping interval; a pong must come back before the next one is due.
    pub ping_every: Duration,
    /// Replace a connection older than this, opening the new one first.
    pub max_conn_age: Duration,
    /// Numbers connections above every number used before in the data dir.
    pub numbers: Arc<ConnNumbers>,
    /// Least time between two change requests: the market's message limit allows no less
    /// ([`change_gap`]).
    pub change_gap: Duration,
}

/// One subscribed stream of a group.
#[derive(Clone, Debug)]
pub struct Subscription {
    /// Its symbol: what a snapshot is asked for.
    pub symbol: Symbol,
    /// Where its events go: a symbol's depth, or a stream beside the book.
    pub target: Target,
    /// `None` for depth.
    pub kind: Option<Kind>,
    pub stream: String,
}

impl Subscription {
    /// How many depth windows the stream gets to show it delivers.
    fn patience(&self) -> u32 {
        self.kind.map_or(1, Kind::patience)
    }

    fn tracker(&self) -> Tracker {
        match self.kind {
            None => Tracker::Depth(Chain::new()),
            Some(kind) => Tracker::Kind(Tape::new(kind)),
        }
    }
}

/// A change of a group's streams while it runs, from the universe watch (`--symbol all`).
#[derive(Debug)]
pub enum Change {
    /// The streams of a symbol the exchange listed: subscribed on the live connection, the
    /// others' untouched.
    Subscribe(Vec<Subscription>),
    /// The streams of a symbol the exchange stopped trading, by name: unsubscribed, no longer
    /// judged for silence, their files finished.
    Unsubscribe(Vec<String>),
}

/// A SUBSCRIBE or UNSUBSCRIBE of a [`Change`], waiting for its turn.
struct Request {
    method: &'static str,
    streams: Vec<String>,
}

/// The share of a connection's message limit ([`Market::inbound_messages_per_sec`]) a group's
/// SUBSCRIBE and UNSUBSCRIBE changes may use, as (messages, of every): two of every five; the
/// rest stays free for pongs and pings (which count on spot) and the silence watch's
/// re-subscriptions.
const CHANGE_SHARE: (u32, u32) = (2, 5);

/// Least time between two requests of a group's changes on `market`: the second divided among
/// [`CHANGE_SHARE`] of its message limit. USD-M's and COIN-M's 10 messages a second make 250 ms,
/// spot's 5 (pings and pongs included) 500 ms.
pub fn change_gap(market: Market) -> Duration {
    let (share, of) = CHANGE_SHARE;
    let limit = u32::try_from(market.inbound_messages_per_sec()).unwrap_or(u32::MAX);
    Duration::from_secs(1) * of / share.saturating_mul(limit).max(1)
}

/// The continuity check of one subscribed stream.
enum Tracker {
    Depth(Chain),
    Kind(Tape),
}

/// A stream silent for this many of its own average gaps between events is judged silent even
/// when its kind's patience has not run out: a busy stream that stops is news long before a thin
/// one would be.
const SILENT_GAPS: u32 = 50;
/// Weight of the newest gap in a stream's running average (an exponential moving average over
/// about the last 32 events).
const GAP_WEIGHT: f64 = 1.0 / 32.0;

/// A reader thread's state: its streams, their chains, its connections.
pub struct Group {
    /// This group's slot in `Stats::groups`.
    index: usize,
    config: FeedConfig,
    url: String,
    /// `url` as logs and errors show it.
    shown_url: String,
    /// Stream name → index into `subs` and `trackers`.
    routes: HashMap<String, usize>,
    subs: Vec<Subscription>,
    trackers: Vec<Tracker>,
    /// A connection with no data for this long is replaced: `stale_after` times the smallest
    /// patience among the group's streams.
    stale_after: Duration,
    tx: Inlet,
    stats: Arc<Stats>,
    shutdown: Shutdown,
    backoff: Backoff,
    last_bad_frame_log: Option<Instant>,
    /// Per stream, re-subscriptions after it delivered nothing: each one doubles the window it
    /// gets next, so a merely quiet symbol is not re-subscribed over and over.
    strikes: Vec<u32>,
    /// Each stream's latest event, wall clock ns; 0 before the first.
    last_event_ns: Vec<u64>,
    /// Each stream's latest event on the monotonic clock, and its average gap between events.
    pace: Vec<Pace>,
    /// Why the latest connection attempt failed, to say so if none ever succeeds.
    last_failure: Option<String>,
    /// Diff-depth only: the snapshot procedure of each stream.
    books: Option<BookSyncs>,
    /// aggTrade only: where gaps are backfilled from.
    backfills: Option<Backfills>,
    /// `--tap`: where accepted frames and snapshots are also handed, without waiting.
    tee: Option<Tee>,
    /// `--tap`: each stream's name, shared with every frame handed over.
    tap_names: Vec<Arc<str>>,
    /// `--symbol all`: where the streams of listings and delistings come from.
    changes: Option<Receiver<Change>>,
    /// Per stream, whether its symbol was delisted: the slot stays (ids index it), but the
    /// stream is neither recorded nor judged, and a new connection leaves it out.
    retired: Vec<bool>,
    /// Requests of changes not sent yet: one goes every [`FeedConfig::change_gap`].
    requests: VecDeque<Request>,
    /// When the next request may go.
    next_request_at: Instant,
    /// Delisted streams whose files the writer has not been told to finish yet (its queue was
    /// full): told again each turn, after every event of them.
    retiring: Vec<Target>,
}

/// The snapshot side of diff-depth recording for one group.
struct BookSyncs {
    requests: Sender<SnapshotRequest>,
    reply_tx: Sender<SnapshotRecord>,
    replies: crossbeam_channel::Receiver<SnapshotRecord>,
    /// The market's snapshot bridge rule, for the book syncs of symbols listed later too.
    continuity: Continuity,
    syncs: Vec<BookSync<()>>,
    /// A request is out for this slot.
    requested: Vec<bool>,
    /// Snapshots applied per slot: every one after the first is a resync.
    taken: Vec<u64>,
    /// Where each symbol's sync state is shown.
    stats: Arc<Stats>,
    slot_of: HashMap<SymbolId, usize>,
    /// Each slot's symbol, for the fetcher.
    names: Vec<Symbol>,
}

/// A frame's event, before it is known to be one the group subscribed to.
enum Parsed<'a> {
    Depth(DepthHeader<'a>),
    Kind(KindHeader<'a>),
}

impl Parsed<'_> {
    /// `None` for depth, as in [`Subscription::kind`].
    fn kind(&self) -> Option<Kind> {
        match self {
            Parsed::Depth(_) => None,
            Parsed::Kind(h) => Some(h.kind),
        }
    }
}

/// The meta line's name for a server's shutdown notice.
const SERVER_SHUTDOWN: &str = "serverShutdown";
/// How often a connection's streams are judged for silence: often against the shortest window
/// (a second in tests), rarely against the read loop.
const JUDGE_EVERY: Duration = Duration::from_millis(100);

/// A stream's recent pace.
#[derive(Clone, Copy, Debug, Default)]
struct Pace {
    /// When its latest event arrived.
    last: Option<Instant>,
    /// Its average gap between events.
    gap: Duration,
}

impl Pace {
    /// How long the stream may be silent once it delivered: its window, or [`SILENT_GAPS`] of
    /// its own average gaps when that is longer, never past [`MAX_WINDOW`].
    fn silence_limit(&self, window: Duration) -> Duration {
        window
            .max(self.gap.saturating_mul(SILENT_GAPS))
            .min(MAX_WINDOW)
    }

    fn observe(&mut self, at: Instant) {
        if let Some(last) = self.last {
            let gap = at.duration_since(last).as_secs_f64();
            let average = self.gap.as_secs_f64();
            let next = if average == 0.0 {
                gap
            } else {
                average + GAP_WEIGHT * (gap - average)
            };
            self.gap = Duration::from_secs_f64(next);
        }
        self.last = Some(at);
    }
}

/// How a connection's turn ended.
#[derive(PartialEq, Eq)]
enum Turn {
    /// A message or a quiet tick; carry on.
    Continue,
    /// The writer is gone: the run is over.
    WriterGone,
}

impl Group {
    pub fn new(
        index: usize,
        config: FeedConfig,
        subs: Vec<Subscription>,
        tx: Inlet,
        stats: Arc<Stats>,
        shutdown: Shutdown,
    ) -> Group {
        let mut group = Group {
            index,
            stale_after: config.stale_after,
            config,
            url: String::new(),
            shown_url: String::new(),
            routes: HashMap::new(),
            subs: Vec::new(),
            trackers: Vec::new(),
            tx,
            stats,
            shutdown,
            backoff: Backoff::new(),
            last_bad_frame_log: None,
            strikes: Vec::new(),
            last_event_ns: Vec::new(),
            pace: Vec::new(),
            last_failure: None,
            books: None,
            backfills: None,
            tee: None,
            tap_names: Vec::new(),
            changes: None,
            retired: Vec::new(),
            requests: VecDeque::new(),
            next_request_at: Instant::now(),
            retiring: Vec::new(),
        };
        for sub in subs {
            group.push_slot(sub, &mut []);
        }
        group.streams_changed();
        group
    }

    /// `--symbol all`: takes listings and delistings from `changes` while it runs.
    pub fn with_changes(mut self, changes: Receiver<Change>) -> Group {
        self.changes = Some(changes);
        self
    }

    /// Adds a stream in a new slot, on every open connection too (not subscribed there yet).
    fn push_slot(&mut self, sub: Subscription, conns: &mut [Conn]) {
        let slot = self.subs.len();
        self.routes.insert(sub.stream.clone(), slot);
        self.trackers.push(sub.tracker());
        self.strikes.push(0);
        self.last_event_ns.push(0);
        self.pace.push(Pace::default());
        self.retired.push(false);
        if self.tee.is_some() {
            self.tap_names.push(sub.stream.as_str().into());
        }
        if let Some(books) = &mut self.books {
            books.add(slot, &sub);
        }
        self.subs.push(sub);
        let window = self.window(slot);
        for conn in conns {
            conn.streams_seen.push(false);
            conn.streams_missing += 1;
            conn.judge_at.push(Instant::now() + window);
        }
    }

    /// The streams not delisted, by slot.
    fn live_slots(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.subs.len()).filter(|&slot| !self.retired[slot])
    }

    /// After the group's streams changed: the URL a new connection opens, and how long a
    /// connection may go without data (`stale_after` times the smallest patience among them).
    fn streams_changed(&mut self) {
        let streams: Vec<&str> = self
            .live_slots()
            .map(|slot| self.subs[slot].stream.as_str())
            .collect();
        let base = format!(
            "{}/stream?streams=",
            self.config.endpoint.trim_end_matches('/')
        );
        let url = format!("{base}{}", streams.join("/"));
        let shown_url = format!("{base}{}", abbreviate(&streams, "/"));
        let patience = self
            .live_slots()
            .map(|slot| self.subs[slot].patience())
            .min();
        self.url = url;
        self.shown_url = shown_url;
        // A group whose every symbol was delisted has nothing to miss: it waits for a listing,
        // neither replaced for its silence nor called unhealthy.
        self.stale_after =
            patience.map_or(Duration::MAX, |p| self.config.stale_after.saturating_mul(p));
        let quiet_ms = u64::try_from(self.stale_after.as_millis()).unwrap_or(u64::MAX);
        self.stats.groups[self.index]
            .quiet_limit_ms
            .store(quiet_ms, Ordering::Relaxed);
    }

    /// aggTrade: backfill gaps by asking `requests`.
    pub fn with_backfills(mut self, requests: Sender<BackfillRequest>) -> Group {
        self.backfills = Some(Backfills::new(requests));
        self
    }

    /// `--tap`: also hands every accepted frame and snapshot to `tee`.
    pub fn with_tee(mut self, tee: Tee) -> Group {
        self.tee = Some(tee);
        self.tap_names = self.subs.iter().map(|s| s.stream.as_str().into()).collect();
        self
    }

    /// Diff-depth mode: keep each stream's book syncable by asking `requests` for snapshots.
    pub fn with_snapshots(mut self, requests: Sender<SnapshotRequest>) -> Group {
        let (reply_tx, replies) = crossbeam_channel::unbounded();
        let mut books = BookSyncs {
            requests,
            reply_tx,
            replies,
            continuity: self.config.continuity,
            syncs: Vec::new(),
            requested: Vec::new(),
            taken: Vec::new(),
            stats: Arc::clone(&self.stats),
            slot_of: HashMap::new(),
            names: Vec::new(),
        };
        for (slot, sub) in self.subs.iter().enumerate() {
            books.add(slot, sub);
        }
        self.books = Some(books);
        self
    }

    /// Reads until shutdown, reconnecting forever on any failure.
    ///
    /// # Errors
    /// [`Error::NeverConnected`] when no connection attempt succeeded before shutdown.
    pub fn run(mut self) -> Result<()> {
        let mut conns: Vec<Conn> = Vec::new();
        let mut first = true;
        'outer: while !self.shutdown.is_triggered() {
            if conns.is_empty() {
                match self.open(first) {
                    Ok(Some(conn)) => {
                        first = false;
                        self.stats.groups[self.index].link.set(Link::Up);
                        conns.push(conn);
                    }
                    Ok(None) => {
                        self.last_failure
                            .get_or_insert_with(|| "stopped while connecting".into());
                        break;
                    }
                    Err(e) => {
                        self.stats.groups[self.index].link.set(Link::Down);
                        let wait = self.backoff.next_delay();
                        log::warn!("{}: {e}; retrying in {wait:?}", self.shown_url);
                        self.last_failure = Some(e.to_string());
                        self.shutdown.wait_timeout(wait);
                        continue;
                    }
                }
            }
            let mut failed: Option<(usize, FeedError)> = None;
            for i in 0..conns.len() {
                match self.turn(&mut conns, i) {
                    Ok(Turn::Continue) => {}
                    Ok(Turn::WriterGone) => break 'outer,
                    Err(e) => {
                        failed = Some((i, e));
                        break;
                    }
                }
            }
            if let Some((i, e)) = failed {
                self.drop_failed(&mut conns, i, e);
            }
            if self.take_snapshots() == Turn::WriterGone
                || self.take_backfills() == Turn::WriterGone
                || self.take_changes(&mut conns) == Turn::WriterGone
            {
                break;
            }
            self.maybe_roll_over(&mut conns);
        }
        for mut conn in conns.drain(..) {
            self.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
            self.retire(&mut conn);
        }
        self.finish_backfills();
        // `link` keeps its value: the final SUMMARY tells how the run ended, not that
        // the connections were closed for the stop.
        match self.last_failure.take() {
            Some(cause) if first => Err(Error::NeverConnected {
                url: self.shown_url,
                cause,
            }),
            _ => Ok(()),
        }
    }

    /// Opens a connection of this group, counts it, and says so on stderr: the user sees the
    /// recorder work before its first SUMMARY. `None`: shutdown came first.
    fn open(&mut self, first: bool) -> Result<Option<Conn>, FeedError> {
        let opened = Conn::open(
            &self.url,
            &self.config.numbers,
            self.subs.len(),
            &self.shutdown,
        )
        .inspect_err(|_| Stats::bump(&self.stats.connect_failures))?;
        let Some(mut conn) = opened else {
            return Ok(None);
        };
        conn.judge_at = (0..self.subs.len())
            .map(|slot| conn.opened + self.window(slot))
            .collect();
        Stats::bump(&self.stats.connections_open);
        let what = if first { "connected" } else { "reconnected" };
        let n = self.subs.len();
        let streams = if n == 1 { "stream" } else { "streams" };
        let line = format!(
            "conn {} {what} to {} ({n} {streams})",
            conn.id, self.shown_url
        );
        log::info!("{line}, compression: {}", conn.compression);
        // Console output never stops a recording: a closed stderr is ignored.
        let _ = writeln!(io::stderr().lock(), "{line}");
        Ok(Some(conn))
    }

    /// Closes a connection, first recording what it had already sent: tungstenite still hands
    /// over data frames until the peer acknowledges the close, and those are events the exchange
    /// delivered.
    fn retire(&mut self, conn: &mut Conn) {
        /// Longest wait for the peer's acknowledgement; a dead peer never sends one.
        const DRAIN: Duration = Duration::from_millis(250);
        let _ = conn.ws.close(None);
        let _ = conn.ws.flush();
        if conn.unreadable {
            return;
        }
        conn.set_read_timeout(OVERLAP_TICK);
        let deadline = Instant::now() + DRAIN;
        while Instant::now() < deadline {
            match conn.ws.read() {
                Ok(Message::Text(text)) => {
                    if self.on_text(conn, text, Instant::now()) == Turn::WriterGone {
                        return;
                    }
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {}
                Err(_) => return,
            }
        }
    }

    /// Reads one message (or one quiet tick) from connection `i` and checks its timers.
    fn turn(&mut self, conns: &mut [Conn], i: usize) -> Result<Turn, FeedError> {
        let conn = &mut conns[i];
        let read = conn.ws.read();
        // The receipt instant of a frame, and the clock for this turn's timers.
        let now = Instant::now();
        let turn = match read {
            Ok(Message::Text(text)) => self.on_text(conn, text, now),
            Ok(Message::Binary(_)) => {
                self.bad_frame(conn.id, "binary frame");
                Turn::Continue
            }
            Ok(Message::Ping(_)) => {
                // tungstenite has queued the pong; send it now even if no data follows.
                conn.ws.flush().map_err(FeedError::Read)?;
                Turn::Continue
            }
            Ok(Message::Pong(payload)) => {
                if conn.ping_sent.is_some() && payload.as_ref() == conn.ping_payload.to_be_bytes() {
                    conn.ping_sent = None;
                }
                Turn::Continue
            }
            Ok(Message::Close(frame)) => {
                if frame.as_ref().is_some_and(is_replaced_close) {
                    self.bad_frame(conn.id, "close frame with a code that must not be sent");
                }
                return Err(FeedError::Closed(
                    frame.map(|f| format!("{} {}", u16::from(f.code), f.reason)),
                ));
            }
            Ok(Message::Frame(_)) => Turn::Continue,
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => Turn::Continue,
            Err(e) if let Some(what) = bad_frame_kind(&e) => {
                // A frame the socket could not take whole, or one that breaks the protocol: the
                // stream cannot be resynchronised after it (RFC 6455 has the client fail the
                // connection), so it costs a reconnect.
                conn.unreadable = true;
                self.bad_frame(conn.id, &format!("{what}: {e}"));
                return Err(FeedError::Read(e));
            }
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                return Err(FeedError::Closed(None));
            }
            Err(e) => return Err(FeedError::Read(e)),
        };
        self.check_streams(conn, now)?;
        let stale_after = self.stale_after_for(conn);
        conn.check_timers(&self.config, stale_after, now)?;
        Ok(turn)
    }

    /// How long `conn` may go without data. Once it delivered, the group's own limit. While
    /// nothing ever delivered on it, the server answers pings but sends none of the streams (a
    /// wrong route, unknown symbols): the limit grows with the streams' doubling windows, so
    /// such a connection is retried ever more rarely rather than every few seconds.
    fn stale_after_for(&self, conn: &Conn) -> Duration {
        if conn.delivered() {
            return self.stale_after;
        }
        let shortest = self.live_slots().map(|slot| self.window(slot)).min();
        shortest.map_or(self.stale_after, |w| w.max(self.stale_after))
    }

    /// Where a stream's delivery is shown.
    fn feed(&self, slot: usize) -> &FeedHealth {
        match self.subs[slot].target {
            Target::Depth(symbol) => &self.stats.symbols[symbol].feed,
            Target::Stream(stream) => &self.stats.streams[stream].feed,
        }
    }

    /// Judges each stream on its own clock. One that delivered nothing on `conn` within its
    /// window is marked silent, named in a warning and subscribed again on the same connection,
    /// and its window doubles (up to [`MAX_WINDOW`]), so the warning comes once and then rarely;
    /// the streams that deliver keep their connection and lose nothing. A connection on which
    /// nothing delivers is left to go stale and be replaced: that is what a dead server calls for.
    /// One that delivered and then fell quiet for far longer than its own pace is marked silent
    /// too: the exchange answers a SUBSCRIBE of a listed stream with nothing new, so only the
    /// metrics and the log can say it.
    fn check_streams(&mut self, conn: &mut Conn, now: Instant) -> Result<(), FeedError> {
        if now < conn.next_judgement {
            return Ok(());
        }
        conn.next_judgement = now + JUDGE_EVERY;
        let silent: Vec<usize> = self
            .live_slots()
            .filter(|&slot| !conn.streams_seen[slot] && now >= conn.judge_at[slot])
            .collect();
        self.check_paces(now);
        if silent.is_empty() {
            return Ok(());
        }
        for &slot in &silent {
            let feed = self.feed(slot);
            let judged = feed.get();
            if judged.state != FeedState::Silent {
                // Silent since its last event, or since the run started.
                let since = match self.last_event_ns[slot] {
                    0 => judged.since_ns,
                    last => last,
                };
                feed.set(FeedState::Silent, since);
                let waited = self.window(slot);
                self.notify(slot, StreamState::Silent, format!("nothing in {waited:?}"));
            }
        }
        let names: Vec<&str> = silent
            .iter()
            .map(|&slot| self.subs[slot].stream.as_str())
            .collect();
        let shown = abbreviate(&names, ", ");
        let waited = self.window(silent[0]);
        for &slot in &silent {
            self.strikes[slot] = self.strikes[slot].saturating_add(1);
            conn.judge_at[slot] = now + self.window(slot);
        }
        if !conn.delivered() {
            let group = &self.stats.groups[self.index];
            group
                .all_silent
                .store(silent.len() == self.live_slots().count(), Ordering::Relaxed);
            log::warn!(
                "conn {}: no stream delivered in {waited:?}: {shown} (wrong route, or unknown \
                 symbols?)",
                conn.id
            );
            return Ok(());
        }
        log::warn!(
            "conn {}: {shown} delivered nothing in {waited:?} (wrong route, unknown or delisted \
             symbol?); the other streams go on; subscribing again, next check in {:?}",
            conn.id,
            self.window(silent[0])
        );
        conn.resubscribe(&names)
    }

    /// Marks silent the streams that delivered and then stopped for far longer than their pace.
    fn check_paces(&self, now: Instant) {
        for slot in self.live_slots() {
            let Some(last) = self.pace[slot].last else {
                continue;
            };
            let limit = self.pace[slot].silence_limit(self.window(slot));
            let feed = self.feed(slot);
            if now.duration_since(last) >= limit && feed.state() == FeedState::Delivering {
                let quiet = format!(
                    "nothing for {:?}, {SILENT_GAPS} times its usual gap",
                    now.duration_since(last)
                );
                log::warn!("{} went silent: {quiet}", self.subs[slot].stream);
                feed.set(FeedState::Silent, self.last_event_ns[slot]);
                self.notify(slot, StreamState::Silent, quiet);
            }
        }
    }

    /// The time stream `slot` gets to deliver a first event on a new connection, or after it was
    /// subscribed again: its kind's patience, doubled for each time it stayed silent.
    fn window(&self, slot: usize) -> Duration {
        self.config
            .stale_after
            .saturating_mul(self.subs[slot].patience())
            .saturating_mul(1 << self.strikes[slot].min(12))
            .min(MAX_WINDOW)
    }

    fn on_text(&mut self, conn: &mut Conn, text: tungstenite::Utf8Bytes, recv_at: Instant) -> Turn {
        let recv_ns = wall_ns();
        let (stream, event) = match parse_frame(text.as_str()) {
            Ok(Frame::Depth(h)) => (h.stream.clone(), Parsed::Depth(h)),
            Ok(Frame::Kind(h)) => (h.stream.clone(), Parsed::Kind(h)),
            Ok(Frame::ServerShutdown(data)) => {
                return self.on_server_shutdown(conn, &text, data, recv_ns);
            }
            Ok(Frame::Reply) => return Turn::Continue,
            Ok(Frame::Other { .. }) => {
                conn.last_data = recv_at;
                return Turn::Continue;
            }
            Err(e) => {
                self.bad_frame(conn.id, &e.to_string());
                return Turn::Continue;
            }
        };
        let slot = match self.routes.get(&*stream) {
            Some(&slot) if event.kind() == self.subs[slot].kind => slot,
            _ => {
                let what = format!("unexpected stream {stream}");
                self.bad_frame(conn.id, &what);
                return Turn::Continue;
            }
        };
        if self.retired[slot] {
            // In flight when the UNSUBSCRIBE went: the exchange no longer trades the symbol, and
            // its files are finished.
            return Turn::Continue;
        }
        self.delivered(conn, slot, recv_ns, recv_at);
        let event = match event {
            Parsed::Depth(h) => {
                if h.continuity != self.config.continuity {
                    // Chained by the wrong rule, every event would read as a break.
                    self.bad_frame(conn.id, "depth event of another market (pu present or not)");
                    return Turn::Continue;
                }
                let event_ms = h.event_ms_or_receipt(recv_ns);
                let (trade_ms, data) = (h.trade_ms, h.data);
                let Some((symbol, ids)) = self.depth_event(conn, slot, h.ids, recv_ns) else {
                    return Turn::Continue;
                };
                Event::Depth(DepthRecord {
                    symbol,
                    conn: conn.id,
                    recv_ns,
                    recv_at,
                    event_ms,
                    trade_ms,
                    ids,
                    frame: text,
                    data,
                })
            }
            Parsed::Kind(h) => {
                let event_ms = h.event_ms_or_receipt(recv_ns);
                let Some(stream) = self.kind_event(conn, slot, &h, event_ms) else {
                    return Turn::Continue;
                };
                let (ids, data) = (h.ids, h.data);
                Event::Kind(KindRecord {
                    stream,
                    conn: conn.id,
                    recv_ns,
                    recv_at,
                    event_ms,
                    ids,
                    frame: text,
                    data,
                    backfill: false,
                })
            }
        };
        self.send(event, slot)
    }

    /// Notes that stream `slot` delivered: on the connection, in its feed state and its pace.
    fn delivered(&mut self, conn: &mut Conn, slot: usize, recv_ns: u64, recv_at: Instant) {
        conn.last_data = recv_at;
        self.stats.groups[self.index]
            .last_data_ns
            .store(recv_ns, Ordering::Relaxed);
        if !conn.streams_seen[slot] {
            conn.streams_seen[slot] = true;
            conn.streams_missing -= 1;
            self.stats.groups[self.index]
                .all_silent
                .store(false, Ordering::Relaxed);
        }
        let feed = self.feed(slot);
        match feed.state() {
            FeedState::Delivering => {}
            judged => {
                feed.set(FeedState::Delivering, recv_ns);
                if judged == FeedState::Silent {
                    log::warn!("{} delivers again", self.subs[slot].stream);
                    let again = format!("delivers again on conn {}", conn.id);
                    self.notify(slot, StreamState::Delivering, again);
                }
            }
        }
        self.last_event_ns[slot] = recv_ns;
        self.pace[slot].observe(recv_at);
    }

    /// Checks a depth event's continuity and follows its book; `None` for a duplicate to skip.
    /// The ids returned are the ones checked, which the line keeps: spot's partial book gets the
    /// previous event's id as its `pu` ([`Continuity::chained`]).
    fn depth_event(
        &mut self,
        conn: &Conn,
        slot: usize,
        ids: Ids,
        recv_ns: u64,
    ) -> Option<(SymbolId, Ids)> {
        let (Target::Depth(symbol), Tracker::Depth(chain)) =
            (self.subs[slot].target, &mut self.trackers[slot])
        else {
            return None;
        };
        let ids = self.config.continuity.chained(ids, chain.last_u());
        let counters = &self.stats.symbols[symbol];
        let verdict = chain.check(ids, conn.id);
        let stream = &self.subs[slot].stream;
        match verdict {
            Verdict::Duplicate => {
                Stats::bump(&counters.duplicates);
                return None;
            }
            Verdict::Break {
                expected_pu,
                got_pu,
            } => {
                Stats::bump(&counters.breaks);
                let lost = format!(
                    "expected pu={expected_pu}, got pu={got_pu} (u={}) on conn {}",
                    ids.last, conn.id
                );
                log::warn!("continuity break on {stream}: {lost}");
                self.notify(slot, StreamState::Break, lost);
            }
            Verdict::Reconnected {
                expected_pu,
                got_pu,
            } => {
                Stats::bump(&counters.reconnect_gaps);
                let lost = format!("last u={expected_pu}, new pu={got_pu} on conn {}", conn.id);
                self.notify(slot, StreamState::ReconnectGap, lost);
                if verdict.went_back() {
                    log::warn!(
                        "{stream} ids went back on conn {}: last u={expected_pu}, new pu={got_pu}; \
                         the exchange restarted its sequence or sent a bogus id, a new chain starts",
                        conn.id
                    );
                } else {
                    log::info!(
                        "{stream} resumes on conn {} after a gap: last u={expected_pu}, new pu={got_pu}",
                        conn.id
                    );
                }
            }
            Verdict::Start | Verdict::Continuous => {}
        }
        log::debug!("{stream} u={} conn {}", ids.last, conn.id);
        if let Some(books) = &mut self.books {
            books.event(slot, symbol, ids, verdict, stream, recv_ns);
        }
        Some((symbol, ids))
    }

    /// Checks an event beside the book against its tape; `None` for a duplicate to skip.
    fn kind_event(
        &mut self,
        conn: &Conn,
        slot: usize,
        h: &KindHeader,
        event_ms: u64,
    ) -> Option<StreamId> {
        let (Target::Stream(id), Tracker::Kind(tape)) =
            (self.subs[slot].target, &mut self.trackers[slot])
        else {
            return None;
        };
        let check = tape.check(h.ids, event_ms, conn.id);
        self.stats.streams[id].count(check);
        let stream = &self.subs[slot].stream;
        match check {
            Check::Duplicate => return None,
            Check::Gap {
                from,
                to,
                reconnect,
            } => {
                let across = if reconnect {
                    "across a reconnect"
                } else {
                    "on a live connection"
                };
                let lost = match h.kind {
                    Kind::MarkPrice => format!("no event between E={from} and E={to}"),
                    // Binance's trade history by id (historicalTrades) needs an API key.
                    Kind::Trade => format!(
                        "ids {from}..={to} missing, not backfilled: REST trade history needs an API key"
                    ),
                    _ => format!("ids {from}..={to} missing"),
                };
                log::warn!("{stream} gap {across} (conn {}): {lost}", conn.id);
                if let (Some(backfills), KindIds::AggTrade { a, .. }) = (&mut self.backfills, h.ids)
                {
                    backfills.ask(id, stream, from, to, a);
                }
            }
            Check::Skipped { from, to, .. } => {
                log::warn!(
                    "{stream} on conn {}: aggregates follow but trade ids {from}..={to} are \
                     missing: trades the exchange lost",
                    conn.id
                );
            }
            Check::Back { last, got, .. } => {
                log::warn!(
                    "{stream} went back on conn {}: last {last}, now {got}; a new chain starts",
                    conn.id
                );
            }
            Check::Start | Check::Continuous => {}
        }
        if check.is_break() {
            self.notify(
                slot,
                StreamState::Break,
                format!("{check} on conn {}", conn.id),
            );
        } else if check.is_reconnect_gap() {
            self.notify(
                slot,
                StreamState::ReconnectGap,
                format!("{check} on conn {}", conn.id),
            );
        }
        Some(id)
    }

    /// `--tap`: tells the clients of the state stream that stream `slot` changed.
    fn notify(&self, slot: usize, state: StreamState, detail: String) {
        notify(self.tee.as_ref(), &self.subs[slot].stream, state, detail);
    }

    /// Hands an event to the writer, waiting while the hand-off's budget is spent.
    fn send(&mut self, event: Event, slot: usize) -> Turn {
        if let Some(tee) = &self.tee {
            event.tee(&self.tap_names[slot], tee);
        }
        hand_over(&self.tx, event)
    }

    /// The server will close `conn`: open its replacement now rather than at the age limit, and
    /// keep the notice in the files of every stream it carried.
    fn on_server_shutdown(
        &mut self,
        conn: &mut Conn,
        text: &tungstenite::Utf8Bytes,
        data: std::ops::Range<usize>,
        recv_ns: u64,
    ) -> Turn {
        Stats::bump(&self.stats.server_shutdowns);
        log::warn!(
            "conn {}: the server announced its shutdown; opening a replacement now",
            conn.id
        );
        conn.shutdown_announced = true;
        let meta = MetaRecord {
            targets: self.subs.iter().map(|s| s.target).collect(),
            meta: SERVER_SHUTDOWN,
            conn: conn.id,
            recv_ns,
            frame: text.clone(),
            data,
        };
        hand_over(&self.tx, Event::Meta(meta))
    }

    /// `--symbol all`: takes the listings and delistings handed over, sends their requests at
    /// their pace, and tells the writer which files to finish.
    fn take_changes(&mut self, conns: &mut [Conn]) -> Turn {
        while let Some(change) = self.changes.as_ref().and_then(|c| c.try_recv().ok()) {
            match change {
                Change::Subscribe(subs) => self.subscribe(subs, conns),
                Change::Unsubscribe(streams) => self.unsubscribe(&streams),
            }
        }
        let now = Instant::now();
        if now >= self.next_request_at
            && let Some(request) = self.requests.pop_front()
        {
            self.next_request_at = now + self.config.change_gap;
            // A connection opened since has the change in its URL already; on Binance a repeated
            // SUBSCRIBE or an UNSUBSCRIBE of an unknown stream changes nothing.
            for conn in conns.iter_mut() {
                if let Err(e) = conn.request(request.method, &request.streams) {
                    // The next read fails too and replaces the connection, whose URL has it.
                    log::warn!("conn {}: {} failed: {e}", conn.id, request.method);
                }
            }
        }
        self.tell_retired()
    }

    /// Subscribes the streams of a listing on every open connection (at the requests' pace)
    /// and in the URL of the next one.
    fn subscribe(&mut self, subs: Vec<Subscription>, conns: &mut [Conn]) {
        let streams: Vec<String> = subs.iter().map(|s| s.stream.clone()).collect();
        for sub in subs {
            self.push_slot(sub, conns);
        }
        self.streams_changed();
        log::info!(
            "subscribing {} live on group {}",
            abbreviate(
                &streams.iter().map(String::as_str).collect::<Vec<_>>(),
                ", "
            ),
            self.index + 1
        );
        self.queue_request("SUBSCRIBE", streams);
    }

    /// Unsubscribes the streams of a delisting: no longer recorded nor judged; their files are
    /// finished once the writer has every event of them.
    fn unsubscribe(&mut self, streams: &[String]) {
        let mut gone = Vec::new();
        for stream in streams {
            let Some(&slot) = self.routes.get(stream) else {
                continue;
            };
            if std::mem::replace(&mut self.retired[slot], true) {
                continue;
            }
            self.feed(slot).set(FeedState::Delisted, wall_ns());
            self.retiring.push(self.subs[slot].target);
            gone.push(stream.clone());
        }
        if gone.is_empty() {
            return;
        }
        self.streams_changed();
        log::info!(
            "unsubscribing {} on group {}",
            abbreviate(&gone.iter().map(String::as_str).collect::<Vec<_>>(), ", "),
            self.index + 1
        );
        self.queue_request("UNSUBSCRIBE", gone);
    }

    /// Queues a request; one of the same method still waiting takes the streams too, so that
    /// many listings at once cost few requests (a group never has more than 200 streams).
    fn queue_request(&mut self, method: &'static str, streams: Vec<String>) {
        match self.requests.back_mut() {
            Some(last) if last.method == method => last.streams.extend(streams),
            _ => self.requests.push_back(Request { method, streams }),
        }
    }

    /// Hands the writer the delisted streams whose files it is to finish.
    fn tell_retired(&mut self) -> Turn {
        if self.retiring.is_empty() {
            return Turn::Continue;
        }
        let targets = std::mem::take(&mut self.retiring);
        hand_over(&self.tx, Event::Retired(RetiredRecord { targets }))
    }

    /// Records the snapshots that arrived and feeds them to their book sync.
    fn take_snapshots(&mut self) -> Turn {
        let Some(books) = &mut self.books else {
            return Turn::Continue;
        };
        while let Ok(snap) = books.replies.try_recv() {
            let Some(&slot) = books.slot_of.get(&snap.symbol) else {
                continue;
            };
            if self.retired[slot] {
                continue;
            }
            books.requested[slot] = false;
            let stream = &self.subs[slot].stream;
            match books.syncs[slot].snapshot(snap.last_update_id) {
                SnapshotStep::Bridged(_) | SnapshotStep::Pending => {
                    if books.taken[slot] > 0 {
                        Stats::bump(&self.stats.symbols[snap.symbol].resyncs);
                        let taken = format!("snapshot lastUpdateId={}", snap.last_update_id);
                        notify(self.tee.as_ref(), stream, StreamState::Resync, taken);
                    }
                    books.taken[slot] += 1;
                }
                SnapshotStep::TooOld => {
                    log::info!(
                        "{stream}: snapshot {} older than the buffered events, fetching another",
                        snap.last_update_id
                    );
                }
            }
            books.show(slot, snap.symbol, snap.recv_ns);
            let symbol = snap.symbol;
            let snap = Event::Snapshot(snap);
            if let Some(tee) = &self.tee {
                snap.tee(&self.tap_names[slot], tee);
            }
            if hand_over(&self.tx, snap) == Turn::WriterGone {
                return Turn::WriterGone;
            }
            books.request_if_wanted(slot, symbol);
        }
        Turn::Continue
    }

    /// Sends the backfilled records that arrived to the writer.
    fn take_backfills(&mut self) -> Turn {
        while let Some(done) = self.backfills.as_mut().and_then(Backfills::take) {
            if self.forward_backfill(done) == Turn::WriterGone {
                return Turn::WriterGone;
            }
        }
        Turn::Continue
    }

    /// Waits, at most [`FINISH_GRACE`] in all, for the backfills still due, and sends them on.
    fn finish_backfills(&mut self) {
        let deadline = Instant::now() + FINISH_GRACE;
        while let Some(done) = self.backfills.as_mut().and_then(|b| b.wait(deadline)) {
            if self.forward_backfill(done) == Turn::WriterGone {
                return;
            }
        }
    }

    fn forward_backfill(&mut self, done: Backfilled) -> Turn {
        done.log();
        for record in done.records {
            if hand_over(&self.tx, Event::Kind(record)) == Turn::WriterGone {
                return Turn::WriterGone;
            }
        }
        Turn::Continue
    }

    fn bad_frame(&mut self, conn: u64, what: &str) {
        Stats::bump(&self.stats.bad_frames);
        let now = Instant::now();
        if self
            .last_bad_frame_log
            .is_none_or(|t| now.duration_since(t) >= BAD_FRAME_LOG_EVERY)
        {
            self.last_bad_frame_log = Some(now);
            let total = self.stats.bad_frames.load(Ordering::Relaxed);
            log::warn!("bad frame on conn {conn}: {what} ({total} so far)");
        }
    }

    /// Handles a failed connection: a failing successor is simply abandoned; a failing primary is
    /// replaced (by the successor if there is one), counted as a reconnect, after a backoff.
    fn drop_failed(&mut self, conns: &mut Vec<Conn>, i: usize, e: FeedError) {
        let mut conn = conns.remove(i);
        self.retire(&mut conn);
        self.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
        if i > 0 {
            log::warn!("replacement conn {} failed ({}): {e}", conn.id, e.cause());
            conns[0].retry_successor_after = Some(Instant::now() + self.backoff.next_delay());
            conns[0].set_read_timeout(READ_TICK);
            return;
        }
        Stats::bump(&self.stats.reconnects);
        if matches!(e, FeedError::Stale(_)) {
            Stats::bump(&self.stats.stale_reconnects);
        }
        if conn.opened.elapsed() >= HEALTHY_AFTER {
            self.backoff.reset();
        }
        if let Some(next) = conns.first_mut() {
            log::warn!(
                "conn {} lost ({}): {e}; conn {} takes over",
                conn.id,
                e.cause(),
                next.id
            );
            next.set_read_timeout(READ_TICK);
            return;
        }
        self.stats.groups[self.index].link.set(Link::Down);
        let wait = self.backoff.next_delay();
        log::warn!(
            "conn {} lost ({}): {e}; reconnecting in {wait:?}",
            conn.id,
            e.cause()
        );
        self.shutdown.wait_timeout(wait);
    }

    /// Make-before-break: past the age limit open a successor; once it delivers, retire the old.
    fn maybe_roll_over(&mut self, conns: &mut Vec<Conn>) {
        match conns.len() {
            1 if (conns[0].shutdown_announced
                || conns[0].opened.elapsed() >= self.config.max_conn_age)
                && conns[0]
                    .retry_successor_after
                    .is_none_or(|t| Instant::now() >= t) =>
            {
                if !conns[0].shutdown_announced {
                    log::info!(
                        "conn {} reached {:?}: opening its replacement",
                        conns[0].id,
                        self.config.max_conn_age
                    );
                }
                match self.open(false) {
                    Ok(None) => {}
                    Ok(Some(next)) => {
                        for c in conns.iter_mut() {
                            c.set_read_timeout(OVERLAP_TICK);
                        }
                        let mut next = next;
                        next.set_read_timeout(OVERLAP_TICK);
                        conns.push(next);
                    }
                    Err(e) => {
                        log::warn!(
                            "replacement for conn {}: {}: {e}",
                            conns[0].id,
                            self.shown_url
                        );
                        conns[0].retry_successor_after =
                            Some(Instant::now() + self.backoff.next_delay());
                    }
                }
            }
            2 if conns[1].delivered() => {
                let mut old = conns.remove(0);
                self.retire(&mut old);
                self.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
                Stats::bump(&self.stats.rollovers);
                conns[0].set_read_timeout(READ_TICK);
                log::info!("conn {} replaced by conn {}", old.id, conns[0].id);
            }
            _ => {}
        }
    }
}

impl BookSyncs {
    /// Follows the book of the stream in `slot`, if it is a depth stream.
    fn add(&mut self, slot: usize, sub: &Subscription) {
        self.syncs.push(BookSync::with(self.continuity));
        self.requested.push(false);
        self.taken.push(0);
        self.names.push(sub.symbol.clone());
        if let Target::Depth(symbol) = sub.target {
            let start = BookState {
                synced: false,
                since_ms: wall_ns() / 1_000_000,
            };
            self.stats.symbols[symbol].book.set(start);
            self.slot_of.insert(symbol, slot);
        }
    }

    fn event(
        &mut self,
        slot: usize,
        symbol: SymbolId,
        ids: Ids,
        verdict: Verdict,
        stream: &str,
        recv_ns: u64,
    ) {
        if let Step::Lost = self.syncs[slot].event(ids, verdict, ()) {
            log::warn!(
                "{stream}: book lost at u={}, resyncing from a new snapshot",
                ids.last
            );
        }
        self.show(slot, symbol, recv_ns);
        self.request_if_wanted(slot, symbol);
    }

    /// Shows a change of `slot`'s sync state in the metrics, dated by the receipt that made it.
    fn show(&self, slot: usize, symbol: SymbolId, recv_ns: u64) {
        let synced = self.syncs[slot].is_live();
        let book = &self.stats.symbols[symbol].book;
        if book.get().map(|b| b.synced) != Some(synced) {
            book.set(BookState {
                synced,
                since_ms: recv_ns / 1_000_000,
            });
        }
    }

    fn request_if_wanted(&mut self, slot: usize, symbol: SymbolId) {
        if self.requested[slot] || !self.syncs[slot].wants_snapshot() {
            return;
        }
        let request = SnapshotRequest {
            symbol,
            name: self.names[slot].clone(),
            reply: self.reply_tx.clone(),
        };
        self.requested[slot] = self.requests.send(request).is_ok();
    }
}

/// A connection that lived this long was healthy: its failure restarts the backoff schedule.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);
/// Longest wait for a stream's first event, however often it stayed silent: an hour keeps a
/// symbol listed during the run from waiting long, at one warning an hour for a typo.
const MAX_WINDOW: Duration = Duration::from_secs(3600);

/// One WebSocket connection and its timers.
struct Conn {
    id: u64,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    opened: Instant,
    /// When the last stream event arrived (control replies and pings do not count: Binance
    /// answers those on a connection whose streams have gone silent).
    last_data: Instant,
    last_ping: Instant,
    /// When the unanswered client ping was sent.
    ping_sent: Option<Instant>,
    ping_payload: u64,
    /// Which of the group's streams delivered on this connection, and how many have not yet.
    streams_seen: Vec<bool>,
    streams_missing: usize,
    /// When each stream not seen yet is judged silent: its window after it was (last)
    /// subscribed.
    judge_at: Vec<Instant>,
    /// When the streams are next looked at.
    next_judgement: Instant,
    /// The server sent `serverShutdown`: replace the connection now.
    shutdown_announced: bool,
    /// A frame could not be taken whole: nothing after it can be read (the reader's buffer is
    /// past the frame's start), so a retiring connection is closed without draining it.
    unreadable: bool,
    /// The id of the next control request (SUBSCRIBE, UNSUBSCRIBE).
    next_request: u64,
    /// The `Sec-WebSocket-Extensions` the server agreed to.
    compression: String,
    /// After a failed replacement attempt, when to try again.
    retry_successor_after: Option<Instant>,
}

impl Conn {
    /// Connects within [`CONNECT_DEADLINE`]; `None` when `shutdown` triggers first.
    fn open(
        url: &str,
        numbers: &ConnNumbers,
        streams: usize,
        shutdown: &Shutdown,
    ) -> Result<Option<Conn>, FeedError> {
        let deadline = Instant::now() + CONNECT_DEADLINE;
        let request = url
            .into_client_request()
            .map_err(|e| FeedError::Handshake(e.to_string()))?;
        let uri = request.uri();
        let host = uri
            .host()
            .ok_or_else(|| FeedError::Handshake("no host in url".into()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let tls = uri.scheme_str() == Some("wss");
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let Some(tcp) = connect_tcp(host, port, deadline, shutdown)? else {
            return Ok(None);
        };
        // Short timeouts turn every wait of the handshake into a slice that ends in `Interrupted`,
        // where the deadline and the token are looked at.
        tcp.set_nodelay(true)
            .and_then(|()| tcp.set_read_timeout(Some(READ_TICK)))
            .and_then(|()| tcp.set_write_timeout(Some(READ_TICK)))
            .map_err(FeedError::Connect)?;
        let connector = if tls {
            Connector::Rustls(tls_config())
        } else {
            Connector::Plain
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_FRAME_BYTES))
            .max_frame_size(Some(MAX_FRAME_BYTES));
        let mut attempt =
            tungstenite::client_tls_with_config(request, tcp, Some(config), Some(connector));
        let (ws, response) = loop {
            match attempt {
                Ok(done) => break done,
                Err(HandshakeError::Interrupted(_)) if shutdown.is_triggered() => return Ok(None),
                Err(HandshakeError::Interrupted(_)) if Instant::now() >= deadline => {
                    return Err(FeedError::Handshake(no_answer()));
                }
                Err(HandshakeError::Interrupted(mid)) => attempt = mid.handshake(),
                Err(HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
                    return Err(FeedError::Handshake(format!(
                        "http status {}",
                        resp.status()
                    )));
                }
                Err(HandshakeError::Failure(e)) => return Err(FeedError::Handshake(e.to_string())),
            }
        };
        let id = numbers.take();
        let compression = response
            .headers()
            .get("sec-websocket-extensions")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_string();
        let now = Instant::now();
        let mut conn = Conn {
            id,
            ws,
            opened: now,
            last_data: now,
            last_ping: now,
            ping_sent: None,
            ping_payload: 0,
            streams_seen: vec![false; streams],
            streams_missing: streams,
            judge_at: Vec::new(),
            next_judgement: now,
            shutdown_announced: false,
            unreadable: false,
            next_request: 1,
            compression,
            retry_successor_after: None,
        };
        conn.set_read_timeout(READ_TICK);
        if let Some(tcp) = conn.tcp() {
            tcp.set_write_timeout(Some(WRITE_TIMEOUT))
                .map_err(FeedError::Connect)?;
        }
        Ok(Some(conn))
    }

    fn tcp(&self) -> Option<&TcpStream> {
        match self.ws.get_ref() {
            MaybeTlsStream::Plain(s) => Some(s),
            MaybeTlsStream::Rustls(s) => Some(s.get_ref()),
            _ => None,
        }
    }

    /// Whether any subscribed stream delivered an event on this connection.
    fn delivered(&self) -> bool {
        self.streams_missing < self.streams_seen.len()
    }

    fn set_read_timeout(&mut self, timeout: Duration) {
        if let Some(Err(e)) = self.tcp().map(|tcp| tcp.set_read_timeout(Some(timeout))) {
            log::warn!("conn {}: cannot set read timeout: {e}", self.id);
        }
    }

    /// Subscribes `streams` afresh: Binance answers a SUBSCRIBE of a stream it already lists
    /// without changing anything, so each is unsubscribed first. They delivered nothing on this
    /// connection, so nothing can be lost between the two requests.
    fn resubscribe(&mut self, streams: &[&str]) -> Result<(), FeedError> {
        for method in ["UNSUBSCRIBE", "SUBSCRIBE"] {
            self.request(method, streams)?;
        }
        Ok(())
    }

    /// Sends one control request (`SUBSCRIBE`, `UNSUBSCRIBE`) for `streams`.
    fn request(&mut self, method: &str, streams: &[impl AsRef<str>]) -> Result<(), FeedError> {
        let streams: Vec<&str> = streams.iter().map(AsRef::as_ref).collect();
        let request = serde_json::json!({
            "method": method,
            "params": streams,
            "id": self.next_request,
        });
        self.next_request += 1;
        self.ws
            .send(Message::text(request.to_string()))
            .map_err(FeedError::Read)
    }

    /// Staleness (no data for `stale_after`) and the client ping/pong watchdog.
    fn check_timers(
        &mut self,
        config: &FeedConfig,
        stale_after: Duration,
        now: Instant,
    ) -> Result<(), FeedError> {
        if now.duration_since(self.last_data) >= stale_after {
            return Err(FeedError::Stale(stale_after));
        }
        if let Some(sent) = self.ping_sent
            && now.duration_since(sent) >= config.ping_every
        {
            return Err(FeedError::PongTimeout(config.ping_every));
        }
        if now.duration_since(self.last_ping) >= config.ping_every {
            self.ping_payload += 1;
            let payload = self.ping_payload.to_be_bytes().to_vec();
            self.ws
                .send(Message::Ping(payload.into()))
                .map_err(FeedError::Read)?;
            self.last_ping = now;
            self.ping_sent.get_or_insert(now);
        }
        Ok(())
    }
}

/// `--tap`: hands the clients of the state stream a change of `stream`. Notices are rare
/// (breaks, gaps, resyncs, silences), so their text is made even without a tap.
fn notify(tee: Option<&Tee>, stream: &str, state: StreamState, detail: String) {
    if let Some(tee) = tee {
        tee.offer(Tapped::Notice(Notice {
            stream: stream.to_owned(),
            state,
            at_ms: wall_ns() / 1_000_000,
            detail,
        }));
    }
}

/// `a/b/c/… (200 streams)`: `names` joined by `sep`, cut after [`STREAMS_SHOWN`].
fn abbreviate(names: &[&str], sep: &str) -> String {
    if names.len() <= STREAMS_SHOWN {
        return names.join(sep);
    }
    let first = names[..STREAMS_SHOWN].join(sep);
    format!("{first}{sep}… ({} streams)", names.len())
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// What a connect that missed [`CONNECT_DEADLINE`] failed with.
fn no_answer() -> String {
    format!("no answer within {CONNECT_DEADLINE:?}")
}

/// Looks `host` up and connects to one of its addresses before `deadline`. Neither a lookup nor
/// a connect can be interrupted, so they run on a helper thread while this one looks at the
/// shutdown token every [`READ_TICK`]; a helper left behind ends by itself, at the deadline or
/// when the lookup gives up. `None` when `shutdown` triggers first.
fn connect_tcp(
    host: &str,
    port: u16,
    deadline: Instant,
    shutdown: &Shutdown,
) -> Result<Option<TcpStream>, FeedError> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let host = host.to_owned();
    std::thread::Builder::new()
        .name("connect".into())
        // The reader may have stopped waiting: then nobody wants the result.
        .spawn(move || drop(tx.send(dial(&host, port, deadline))))
        .map_err(FeedError::Connect)?;
    loop {
        if shutdown.is_triggered() {
            return Ok(None);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let cause = io::Error::new(io::ErrorKind::TimedOut, no_answer());
            return Err(FeedError::Connect(cause));
        }
        match rx.recv_timeout(left.min(READ_TICK)) {
            Ok(dialed) => return dialed.map(Some).map_err(FeedError::Connect),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(FeedError::Connect(io::Error::other(
                    "the connect thread failed",
                )));
            }
        }
    }
}

/// Connects to the first of `host`'s addresses that answers, each given an equal share of the
/// time left before `deadline`.
fn dial(host: &str, port: u16, deadline: Instant) -> io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address"));
    for (i, addr) in addrs.iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        // Inside the loop `addrs.len() - i` is at least 1: never a division by zero.
        let share = left / u32::try_from(addrs.len() - i).unwrap_or(u32::MAX);
        if share.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, no_answer()));
        }
        match TcpStream::connect_timeout(addr, share) {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// What kind of bad frame a read error is, if it is one: a frame that could not be taken whole
/// or that breaks the WebSocket protocol, as opposed to a connection that ended.
fn bad_frame_kind(e: &tungstenite::Error) -> Option<&'static str> {
    use ProtocolError as P;
    match e {
        tungstenite::Error::Capacity(_) => Some("oversized frame"),
        tungstenite::Error::Utf8(_) => Some("text frame not UTF-8"),
        tungstenite::Error::Protocol(
            P::NonZeroReservedBits
            | P::MaskedFrameFromServer
            | P::FragmentedControlFrame
            | P::ControlFrameTooBig
            | P::UnknownControlFrameType(_)
            | P::UnknownDataFrameType(_)
            | P::UnexpectedContinueFrame
            | P::ExpectedFragment(_)
            | P::InvalidOpcode(_)
            | P::InvalidCloseSequence
            | P::ReceivedAfterClosing,
        ) => Some("protocol violation"),
        _ => None,
    }
}

/// Whether a Close is one whose code may not be sent (1005, 1006, 1015, unassigned ones):
/// tungstenite hands such a frame over as 1002 with this reason in place of what was sent.
fn is_replaced_close(frame: &CloseFrame) -> bool {
    frame.code == CloseCode::Protocol && frame.reason.as_str() == "Protocol violation"
}

/// The rustls client configuration: webpki roots, ring provider chosen explicitly (no
/// process-wide default needed), built once.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots =
                rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// Hands an event to the writer, waiting while the hand-off's budget is spent; a field of the
/// group's rather than a method, so a group can send while it holds its book syncs.
fn hand_over(tx: &Inlet, event: Event) -> Turn {
    match tx.send(event) {
        Ok(()) => Turn::Continue,
        Err(Closed) => Turn::WriterGone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Changes use two fifths of each market's limit: futures' 250 ms, spot's 500 ms, whose
    /// limit counts pings and pongs; what remains a second is at least three messages.
    #[test]
    fn change_requests_are_paced_by_the_market_limit() {
        let gaps = Market::ALL.map(change_gap);
        assert_eq!(
            gaps,
            [250, 250, 500].map(Duration::from_millis),
            "usdm, coinm, spot"
        );
        for market in Market::ALL {
            let per_sec = Duration::from_secs(1).as_millis() / change_gap(market).as_millis();
            let left = market.inbound_messages_per_sec() as u128 - per_sec;
            assert!(left >= 3, "{market}: {left} a second left");
        }
    }

    #[test]
    fn a_stream_is_silent_after_its_window_or_fifty_of_its_own_gaps() {
        let start = Instant::now();
        let mut pace = Pace::default();
        let window = Duration::from_secs(10);
        assert_eq!(pace.silence_limit(window), window, "no event yet");
        // A busy stream: every 100 ms; its own pace is shorter than the window.
        for i in 0..100 {
            pace.observe(start + Duration::from_millis(100 * i));
        }
        assert_eq!(pace.gap, Duration::from_millis(100));
        assert_eq!(pace.silence_limit(window), window);
        // A thin one: a trade a minute is silent after 50 minutes, not 10 s.
        let mut thin = Pace::default();
        for i in 0..5 {
            thin.observe(start + Duration::from_secs(60 * i));
        }
        assert_eq!(thin.silence_limit(window), Duration::from_secs(50 * 60));
        // The average follows the pace slowly: one long pause does not double it.
        thin.observe(start + Duration::from_secs(4 * 60 + 600));
        assert!(thin.gap < Duration::from_secs(80), "{:?}", thin.gap);
        let rare = Pace {
            gap: Duration::from_secs(3 * 3600),
            ..Pace::default()
        };
        assert_eq!(rare.silence_limit(window), MAX_WINDOW);
    }

    #[test]
    fn long_stream_lists_are_cut_with_a_count() {
        assert_eq!(abbreviate(&["a", "b"], "/"), "a/b");
        assert_eq!(
            abbreviate(&["a", "b", "c", "d"], ", "),
            "a, b, c, … (4 streams)"
        );
    }
}
