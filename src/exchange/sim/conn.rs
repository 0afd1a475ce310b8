//! One WebSocket connection: the handshake, a reader thread that applies control messages, and a
//! writer thread that owns everything sent.
//!
//! The writer is the only code that writes to the socket after the handshake. Data frames,
//! control replies, pongs and pings all reach it through one queue, so their order is the order
//! they were decided in (an ACK before the first frame of a new stream), and every frame passes
//! the connection's faults. That is also why tungstenite's automatic pong and close replies on
//! the reading side are swallowed: the reader forwards client pings and closes to the writer,
//! which answers them (or, with `--ignore-pings`, does not).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown as Direction, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded, select};
use log::{debug, warn};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Bytes, Message, WebSocket};

use super::control::{self, Request};
use super::faults::{ConnFaults, Ending, Expiry, FrameFate, shutdown_notice};
use super::http::{self, Route};
use super::server::Shared;
use super::wire::{self, DataFrame};
use super::{SentFrame, lock};
use crate::market::venue::Market;
use crate::util::clock::{wall_ms, wall_ns};

/// Frames a connection of the sim or serve may have queued (the tap sets its own bound,
/// `--tap-queue`). At a fixed rate a client this far behind is dropped
/// (~20 MB of depth frames: hours of data at normal rates, and still 130 ms at 250,000 frames/s,
/// so a benchmark's client is not cut for a scheduling hiccup on a shared core); at `--rate max`
/// it is the back-pressure window.
pub(crate) const OUTBOUND_CAPACITY: usize = 32_768;
/// A client that takes no bytes for this long is dropped, as a real exchange drops dead peers.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest message a client may send: control requests are well under 1 KiB.
const MAX_CLIENT_MESSAGE: usize = 64 << 10;
/// The writer sends once this much is buffered, or when its queue is empty.
const FLUSH_BYTES: usize = 64 << 10;
/// After a server-initiated Close, how long to wait for the client's Close before cutting TCP.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Binance's limits on what a client sends, for a front that enforces them (the tap; the sim
/// and serve accept anything, so tests can push them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ClientLimits {
    /// Messages a client may send in any one second (text, ping, pong, binary); one more
    /// closes the connection.
    pub messages_per_sec: usize,
    /// Streams one connection may subscribe; a SUBSCRIBE past it is refused.
    pub streams: usize,
}

/// Streams Binance lets one connection subscribe, on every market.
const STREAMS_PER_CONNECTION: usize = 1024;

impl ClientLimits {
    /// USD-M futures: 10 incoming messages per second, 1024 streams per connection.
    pub(crate) const BINANCE: ClientLimits = ClientLimits::of(Market::UsdM);

    /// `market`'s limits: its messages a second (spot: 5, pings and pongs included).
    pub(crate) const fn of(market: Market) -> ClientLimits {
        ClientLimits {
            messages_per_sec: market.inbound_messages_per_sec(),
            streams: STREAMS_PER_CONNECTION,
        }
    }
}

/// The Close reason for a client past [`ClientLimits::messages_per_sec`].
const TOO_MANY_MESSAGES: &str = "too many messages";

/// What the hub and the reader hold of a connection.
pub(crate) struct Link {
    pub id: u64,
    /// Whether frames carry the `{"stream":…,"data":…}` envelope (`/stream` paths).
    pub combined: bool,
    pub tx: Sender<Outbound>,
    /// The socket, to cut a client too slow for a paced pump; weak, so that only the
    /// connection's own threads decide when the socket closes (an RST needs the last close).
    pub tcp: Weak<TcpStream>,
    /// Set once the connection was cut for being too slow.
    pub too_slow: AtomicBool,
}

impl Link {
    /// Queues a data frame without waiting. A full queue means the client cannot keep up with a
    /// source that does not wait for it: the connection is cut (once, counted in `slow`), the way
    /// Binance drops consumers that fall behind. False when the connection is gone or cut.
    pub(crate) fn offer(&self, frame: Arc<DataFrame>, slow: &AtomicU64) -> bool {
        match self.tx.try_send(Outbound::Data(frame)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                // Cutting the socket fails the writer's blocked write and wakes the reader: the
                // connection ends now, not when a write times out.
                if !self.too_slow.swap(true, Ordering::Relaxed) {
                    warn!("sim conn {}: client too slow, dropping it", self.id);
                    slow.fetch_add(1, Ordering::Relaxed);
                    if let Some(tcp) = self.tcp.upgrade() {
                        let _ = tcp.shutdown(Direction::Both);
                    }
                }
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Items queued to the writer and not yet taken.
    pub(crate) fn queued(&self) -> usize {
        self.tx.len()
    }
}

/// Everything the writer sends or reacts to, in decision order.
pub(crate) enum Outbound {
    Data(Arc<DataFrame>),
    /// A control reply (text frame).
    Reply(String),
    /// A client ping, to be answered with this payload.
    Ping(Bytes),
    /// The client sent a Close frame.
    PeerClosed,
    /// The client's side ended without a Close frame.
    PeerGone,
    /// The source has nothing more for this connection: close it (1000) with this reason.
    End(&'static str),
}

/// The socket as the reading side's WebSocket sees it: writes reach the socket only during the
/// handshake; afterwards tungstenite's automatic replies are dropped (the writer answers).
struct Inbound {
    tcp: Arc<TcpStream>,
    writes: bool,
    /// `--handshake-drip-sec`: each byte of the handshake waits this long, or until the sim stops
    /// (the sim's stop channel, which disconnects then).
    drip: Option<(Duration, Receiver<()>)>,
}

impl Read for Inbound {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.tcp).read(buf)
    }
}

impl Write for Inbound {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.writes {
            return Ok(buf.len());
        }
        match &self.drip {
            Some((every, stop)) => {
                if stop
                    .recv_timeout(*every)
                    .is_err_and(|e| e.is_disconnected())
                {
                    return Err(io::Error::other("sim stopping"));
                }
                (&*self.tcp).write(&buf[..buf.len().min(1)])
            }
            None => (&*self.tcp).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Completes the upgrade on a socket whose request head routed to `route`, then serves the
/// connection until it ends. Runs on the accepting thread, which becomes the reader.
pub(crate) fn serve(shared: &Arc<Shared>, tcp: Arc<TcpStream>, route: Route) {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_CLIENT_MESSAGE))
        .max_frame_size(Some(MAX_CLIENT_MESSAGE));
    let inbound = Inbound {
        tcp: Arc::clone(&tcp),
        writes: true,
        drip: shared
            .injector
            .drips_handshake()
            .map(|every| (every, shared.stop.clone())),
    };
    let mut ws = match tungstenite::accept_with_config(inbound, Some(config)) {
        Ok(ws) => ws,
        Err(e) => {
            debug!("sim: upgrade failed: {e}");
            return;
        }
    };
    ws.get_mut().writes = false;
    if let Err(e) = tcp
        .set_read_timeout(None)
        .and_then(|()| tcp.set_write_timeout(Some(WRITE_TIMEOUT)))
    {
        warn!("sim: cannot set socket timeouts: {e}");
        return;
    }
    let (tx, rx) = bounded(shared.front.queue);
    let id = shared.new_connection();
    let link = Arc::new(Link {
        id,
        combined: route.combined,
        tx,
        tcp: Arc::downgrade(&tcp),
        too_slow: AtomicBool::new(false),
    });
    let writer = {
        let (shared, link, tcp) = (Arc::clone(shared), Arc::clone(&link), Arc::clone(&tcp));
        move || FrameWriter::new(&shared, &link, &tcp).run(&rx)
    };
    if let Err(e) = shared.spawn(format!("sim-write-{id}"), writer) {
        warn!("sim: cannot start a writer: {e}");
        return;
    }
    debug!("sim conn {id}: open, streams {:?}", route.streams);
    let mut session = Session {
        shared,
        link: &link,
        endpoint: route.endpoint,
        streams: Vec::new(),
        recent: VecDeque::new(),
    };
    session.subscribe(route.streams);
    session.read(&mut ws);
    shared.source.leave(id);
    debug!("sim conn {id}: closed");
}

/// The reading side: the connection's subscriptions and its control messages.
struct Session<'a> {
    shared: &'a Arc<Shared>,
    link: &'a Arc<Link>,
    /// The routed endpoint of the connection's path: which streams it is sent.
    endpoint: crate::market::kind::Route,
    /// Every stream subscribed, known or not, in subscription order (for LIST_SUBSCRIPTIONS).
    streams: Vec<String>,
    /// Arrival of the client's latest messages, within the last second (with limits only).
    recent: VecDeque<Instant>,
}

impl Session<'_> {
    fn read(&mut self, ws: &mut WebSocket<Inbound>) {
        loop {
            let msg = ws.read();
            if msg.is_ok() && self.flooding(Instant::now()) {
                debug!("sim conn {}: {TOO_MANY_MESSAGES}", self.link.id);
                self.send(Outbound::End(TOO_MANY_MESSAGES));
                return;
            }
            let sent = match msg {
                Ok(Message::Text(text)) => self.apply(text.as_str()),
                Ok(Message::Ping(payload)) => self.send(Outbound::Ping(payload)),
                Ok(Message::Close(_)) => {
                    self.send(Outbound::PeerClosed);
                    return;
                }
                // Binance ignores binary frames and pongs; raw frames never surface on read.
                Ok(_) => true,
                Err(e) => {
                    debug!("sim conn {}: read ended: {e}", self.link.id);
                    self.send(Outbound::PeerGone);
                    return;
                }
            };
            if !sent {
                return;
            }
        }
    }

    /// Whether a message arriving `now` is one more than the limits allow in a second.
    fn flooding(&mut self, now: Instant) -> bool {
        let Some(limits) = self.shared.front.limits else {
            return false;
        };
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= limits.messages_per_sec {
            return true;
        }
        self.recent.push_back(now);
        false
    }

    /// Applies one control message. False when the writer is gone.
    fn apply(&mut self, text: &str) -> bool {
        match control::parse(text) {
            Err(reply) => self.send(Outbound::Reply(reply)),
            // Acknowledge first: data of a new stream must not arrive before its ACK.
            Ok(Request::Subscribe(streams, id)) if self.over_limit(&streams) => {
                let max = self.shared.front.limits.map_or(0, |l| l.streams);
                self.send(Outbound::Reply(control::refusal(
                    &format!("too many streams: at most {max} per connection"),
                    id,
                )))
            }
            Ok(Request::Subscribe(streams, id)) => {
                let acked = self.send(Outbound::Reply(control::ack(id)));
                if acked {
                    self.subscribe(streams);
                }
                acked
            }
            // Acknowledge last: nothing of a dropped stream may arrive after its ACK.
            Ok(Request::Unsubscribe(streams, id)) => {
                for stream in streams {
                    self.shared.source.unsubscribe(self.link.id, &stream);
                    self.streams.retain(|s| *s != stream);
                }
                self.send(Outbound::Reply(control::ack(id)))
            }
            Ok(Request::List(id)) => self.send(Outbound::Reply(control::list(&self.streams, id))),
        }
    }

    /// Whether subscribing `streams` too would pass the limit of streams per connection.
    fn over_limit(&self, streams: &[String]) -> bool {
        let Some(limits) = self.shared.front.limits else {
            return false;
        };
        let new = streams.iter().filter(|s| !self.streams.contains(s));
        self.streams.len() + new.count() > limits.streams
    }

    fn subscribe(&mut self, streams: Vec<String>) {
        let mut new: Vec<String> = Vec::with_capacity(streams.len());
        for stream in streams {
            if !self.streams.contains(&stream) && !new.contains(&stream) {
                new.push(stream);
            }
        }
        // Streams of another route and muted ones stay subscribed and listed, and are never
        // fed: the source does not see them.
        let fed: Vec<String> = new
            .iter()
            .filter(|s| {
                http::delivers(self.shared.source.market(), self.endpoint, s)
                    && !self.shared.injector.mutes_stream(s)
            })
            .cloned()
            .collect();
        if !fed.is_empty() {
            self.shared.source.subscribe(self.shared, self.link, &fed);
        }
        self.streams.extend(new);
    }

    fn send(&self, out: Outbound) -> bool {
        self.link.tx.send(out).is_ok()
    }
}

/// Why a writer stops.
enum End {
    Fault(Ending),
    PeerClosed,
    PeerGone,
    Finished(&'static str),
    Shutdown,
    Broken(io::Error),
}

/// The sending side of one connection.
struct FrameWriter<'a> {
    shared: &'a Shared,
    link: &'a Link,
    tcp: &'a TcpStream,
    faults: ConnFaults<'a>,
    /// Frames encoded but not yet written.
    buf: Vec<u8>,
    /// Receipt times of the frames in `buf` that carry one, for the delivery latency.
    received: Vec<Instant>,
    next_ping: Instant,
}

impl<'a> FrameWriter<'a> {
    fn new(shared: &'a Shared, link: &'a Link, tcp: &'a TcpStream) -> FrameWriter<'a> {
        let now = Instant::now();
        FrameWriter {
            shared,
            link,
            tcp,
            faults: shared.injector.for_connection(now),
            buf: Vec::with_capacity(2 * FLUSH_BYTES),
            received: Vec::new(),
            next_ping: now + shared.front.ping_interval,
        }
    }

    fn run(mut self, rx: &Receiver<Outbound>) {
        let end = self.serve(rx);
        self.finish(end, rx);
    }

    fn serve(&mut self, rx: &Receiver<Outbound>) -> End {
        loop {
            let wake = self
                .faults
                .deadline()
                .map_or(self.next_ping, |d| d.min(self.next_ping));
            let first = select! {
                recv(rx) -> out => out.ok(),
                recv(self.shared.stop) -> _ => return End::Shutdown,
                default(wake.saturating_duration_since(Instant::now())) => None,
            };
            if let Some(out) = first {
                if let Some(end) = self.handle(out) {
                    return end;
                }
                while self.buf.len() < FLUSH_BYTES {
                    let Ok(out) = rx.try_recv() else { break };
                    if let Some(end) = self.handle(out) {
                        return end;
                    }
                }
            }
            let now = Instant::now();
            if self.faults.deadline().is_some_and(|d| now >= d) {
                match self.faults.expire(now) {
                    Expiry::Notice => {
                        let notice = shutdown_notice(self.link.combined, wall_ms());
                        wire::push_text(&mut self.buf, &notice);
                    }
                    Expiry::End(ending) => return End::Fault(ending),
                }
            }
            if now >= self.next_ping {
                wire::push_ping(&mut self.buf, wall_ms().to_string().as_bytes());
                self.next_ping = now + self.shared.front.ping_interval;
            }
            if let Err(e) = self.flush() {
                return End::Broken(e);
            }
        }
    }

    /// Encodes one queued item; `Some` when it ends the connection.
    fn handle(&mut self, out: Outbound) -> Option<End> {
        match out {
            Outbound::Data(frame) => match self.faults.next_frame(Instant::now()) {
                FrameFate::Send(extras) => {
                    self.buf.extend_from_slice(&frame.wire);
                    self.record(&frame);
                    self.received.extend(frame.received);
                    for junk in self.shared.injector.junk(&extras) {
                        self.buf.extend_from_slice(junk);
                    }
                }
                FrameFate::Withhold => {}
                FrameFate::End(ending) => return Some(End::Fault(ending)),
            },
            Outbound::Reply(text) => wire::push_text(&mut self.buf, &text),
            Outbound::Ping(payload) => {
                if self.faults.answers_ping() {
                    wire::push_pong(&mut self.buf, &payload);
                }
            }
            Outbound::PeerClosed => return Some(End::PeerClosed),
            Outbound::PeerGone => return Some(End::PeerGone),
            Outbound::End(reason) => return Some(End::Finished(reason)),
        }
        None
    }

    fn record(&self, frame: &DataFrame) {
        self.shared.frames_sent.fetch_add(1, Ordering::Relaxed);
        self.shared
            .bytes_sent
            .fetch_add(frame.wire.len() as u64, Ordering::Relaxed);
        if self.shared.front.record_sent {
            let sent = SentFrame {
                conn: self.link.id,
                stream: frame.stream.to_string(),
                symbol: frame.symbol.to_string(),
                u: frame.header.last,
                pu: frame.header.prev,
                payload: String::from_utf8_lossy(frame.payload()).into_owned(),
                sent_ns: wall_ns(),
            };
            lock(&self.shared.sent).push(sent);
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let result = self.tcp.write_all(&self.buf);
        self.buf.clear();
        if let Some(stats) = &self.shared.front.delivery
            && result.is_ok()
            && !self.received.is_empty()
        {
            stats.delivered(self.received.iter().copied());
        }
        self.received.clear();
        result
    }

    /// Ends the connection the way `end` asks, after sending what is already encoded.
    fn finish(mut self, end: End, rx: &Receiver<Outbound>) {
        let id = self.link.id;
        let result = match end {
            End::Fault(Ending::Close) => self.close(CloseCode::Normal, "close-after", Some(rx)),
            End::Fault(Ending::Lifetime) => {
                self.close(CloseCode::Away, "connection lifetime reached", Some(rx))
            }
            End::Fault(Ending::ServerShutdown) => {
                self.close(CloseCode::Away, "server shutdown", Some(rx))
            }
            End::Fault(Ending::Reset) => return self.reset(),
            End::Fault(Ending::Eof) => self.flush(),
            End::Finished(reason) => self.close(CloseCode::Normal, reason, Some(rx)),
            End::Shutdown => self.close(CloseCode::Away, "server shutdown", None),
            End::PeerClosed => self.close(CloseCode::Normal, "", None),
            End::PeerGone => Ok(()),
            End::Broken(e) => Err(e),
        };
        if let Err(e) = result {
            debug!("sim conn {id}: {e}");
        }
        // FIN both ways: the client sees EOF, the reader wakes up and leaves.
        let _ = self.tcp.shutdown(Direction::Both);
    }

    /// Sends a Close frame and, for a close the server starts, waits briefly for the client's.
    fn close(
        &mut self,
        code: CloseCode,
        reason: &'static str,
        reply: Option<&Receiver<Outbound>>,
    ) -> io::Result<()> {
        wire::push_close(&mut self.buf, code, reason);
        self.flush()?;
        if let Some(rx) = reply {
            let deadline = Instant::now() + CLOSE_GRACE;
            while let Ok(out) = rx.recv_deadline(deadline) {
                if matches!(out, Outbound::PeerClosed | Outbound::PeerGone) {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Resets the connection. The last holder of the socket closes it, and with linger 0 that
    /// close sends an RST; shutting down the read side (which sends nothing) wakes the reader so
    /// it lets go.
    fn reset(mut self) {
        let result = self
            .flush()
            .and_then(|()| socket2::SockRef::from(self.tcp).set_linger(Some(Duration::ZERO)))
            .and_then(|()| self.tcp.shutdown(Direction::Read));
        if let Err(e) = result {
            debug!("sim conn {}: reset: {e}", self.link.id);
        }
    }
}
