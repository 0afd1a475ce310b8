//! The playback [`Source`]: one player per connection.
//!
//! A connection's first subscription of a recorded stream starts its player, a thread that reads the recording
//! from the beginning and waits until each event is due. Under the player's lock an event is
//! framed for every matching subscription and queued, so a new subscription starts at the next
//! event and no frame of a stream follows its UNSUBSCRIBE acknowledgement, as on the sim. The
//! queue is bounded: when the client reads slowly the player waits, and at `--pace max` that
//! wait is the only pace.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, bounded, select};

use super::Pace;
use super::recording::{RecordedEvent, Recording, StreamKind};
use crate::exchange::sim::conn::{Link, Outbound};
use crate::exchange::sim::http::{self, Reply};
use crate::exchange::sim::lock;
use crate::exchange::sim::server::Shared;
use crate::exchange::sim::source::Source;
use crate::exchange::sim::wire::DataFrame;
use crate::market::venue::Market;

/// The Close reason sent after the last event.
const END_OF_RECORDING: &str = "end of recording";

/// Plays a recording to each connection on its own.
pub(crate) struct Playback {
    recording: Arc<Recording>,
    pace: Pace,
    /// The market the recording is from, whose paths the front serves.
    market: Market,
    /// The running players, by connection id.
    players: Mutex<HashMap<u64, Running>>,
}

struct Running {
    player: Arc<Player>,
    /// Dropped when the connection ends, which wakes the player and ends it.
    _quit: Sender<()>,
}

/// One connection's playback.
struct Player {
    link: Arc<Link>,
    subs: Mutex<Vec<Subscription>>,
    /// Threads other than the player waiting for `subs`. At `--pace max` the player relocks the
    /// moment it unlocks, so it lets them in first; otherwise SUBSCRIBE could starve.
    waiting: AtomicUsize,
    /// `recv_ns` of the latest event played; 0 before the first.
    position_ns: AtomicU64,
}

struct Subscription {
    /// The name the client subscribed: frames carry it.
    stream: Arc<str>,
    /// Upper case, as recorded lines spell it.
    symbol: String,
    kind: StreamKind,
}

impl Playback {
    pub(crate) fn new(recording: Arc<Recording>, pace: Pace, market: Market) -> Playback {
        Playback {
            recording,
            pace,
            market,
            players: Mutex::default(),
        }
    }

    fn player(&self, conn: u64) -> Option<Arc<Player>> {
        lock(&self.players)
            .get(&conn)
            .map(|r| Arc::clone(&r.player))
    }

    /// The playback position REST answers for: the furthest any connection has played, or the
    /// start of the recording when none has.
    fn position_ns(&self) -> u64 {
        let furthest = lock(&self.players)
            .values()
            .map(|r| r.player.position_ns.load(Ordering::Relaxed))
            .max();
        furthest.unwrap_or(0).max(self.recording.start_ns())
    }
}

impl Source for Playback {
    fn market(&self) -> Market {
        self.market
    }

    fn subscribe(&self, shared: &Arc<Shared>, link: &Arc<Link>, streams: &[String]) {
        let subs: Vec<Subscription> = streams
            .iter()
            .filter_map(|stream| {
                let (symbol, kind) = StreamKind::of_subscribed(stream)?;
                let muted = shared.injector.mutes(&symbol);
                (!muted).then(|| Subscription {
                    stream: stream.as_str().into(),
                    symbol,
                    kind,
                })
            })
            .collect();
        if subs.is_empty() {
            return;
        }
        if let Some(player) = self.player(link.id) {
            player.lock().extend(subs);
            return;
        }
        // The first subscriptions are in place before the player starts: all of them see the
        // first event.
        let player = Arc::new(Player {
            link: Arc::clone(link),
            subs: Mutex::new(subs),
            waiting: AtomicUsize::new(0),
            position_ns: AtomicU64::new(0),
        });
        let (quit_tx, quit) = bounded(0);
        let play = {
            let (shared, recording, player) = (
                Arc::clone(shared),
                Arc::clone(&self.recording),
                Arc::clone(&player),
            );
            let pace = self.pace;
            move || player.play(&recording, pace, &quit, &shared.stop)
        };
        match shared.spawn(format!("serve-play-{}", link.id), play) {
            Ok(()) => {
                let running = Running {
                    player,
                    _quit: quit_tx,
                };
                lock(&self.players).insert(link.id, running);
            }
            Err(e) => log::warn!("serve conn {}: cannot start a player: {e}", link.id),
        }
    }

    fn unsubscribe(&self, conn: u64, stream: &str) {
        if let Some(player) = self.player(conn) {
            player.lock().retain(|s| &*s.stream != stream);
        }
    }

    fn leave(&self, conn: u64) {
        lock(&self.players).remove(&conn);
    }

    /// The recorded snapshot in force at the playback position, byte-exact whatever `limit`.
    fn depth(&self, symbol: &str, _limit: usize, out: &mut Vec<u8>) -> Result<(), Reply> {
        self.recording
            .snapshot_at(symbol, self.position_ns(), out)
            .map_err(|msg| http::error(400, -1121, &msg))
    }

    /// A recording is played, not queried by id: a backfill has nothing to ask it for.
    /// The recorded time at the playback position.
    fn time_ms(&self) -> u64 {
        self.position_ns() / 1_000_000
    }
}

impl Player {
    /// Locks the subscriptions for a change from another thread.
    fn lock(&self) -> MutexGuard<'_, Vec<Subscription>> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let guard = lock(&self.subs);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        guard
    }

    /// Plays the recording until its end, the connection's end (`quit`) or the server's (`stop`).
    fn play(&self, recording: &Recording, pace: Pace, quit: &Receiver<()>, stop: &Receiver<()>) {
        let started = Instant::now();
        let mut timeline = recording.timeline();
        let mut symbols: Vec<Arc<str>> = Vec::new();
        while let Some(event) = timeline.next() {
            let on = match pace {
                Pace::Speed(speed) => {
                    let offset = event.recv_ns.saturating_sub(recording.start_ns());
                    let due = Duration::try_from_secs_f64(offset as f64 / 1e9 / speed)
                        .ok()
                        .and_then(|d| started.checked_add(d));
                    wait_until(due, quit, stop)
                }
                Pace::Max => [quit, stop]
                    .iter()
                    .all(|r| r.try_recv() == Err(TryRecvError::Empty)),
            };
            if !on {
                return;
            }
            self.position_ns.store(event.recv_ns, Ordering::Relaxed);
            if !self.deliver(&event, &mut symbols, quit, stop) {
                return;
            }
        }
        log::debug!("serve conn {}: end of recording", self.link.id);
        select! {
            send(self.link.tx, Outbound::End(END_OF_RECORDING)) -> _ => {},
            recv(quit) -> _ => {},
            recv(stop) -> _ => {},
        }
    }

    /// Queues `event` to every subscription it matches. False when the connection or the
    /// server is ending.
    fn deliver(
        &self,
        event: &RecordedEvent,
        symbols: &mut Vec<Arc<str>>,
        quit: &Receiver<()>,
        stop: &Receiver<()>,
    ) -> bool {
        let subs = lock(&self.subs);
        let mut matching = subs
            .iter()
            .filter(|s| s.kind == event.kind && s.symbol == event.symbol())
            .peekable();
        if matching.peek().is_some() {
            let symbol = intern(symbols, event.symbol());
            for sub in matching {
                let frame = DataFrame::new(
                    &sub.stream,
                    self.link.combined,
                    &symbol,
                    event.header,
                    event.payload(),
                );
                let queued = select! {
                    send(self.link.tx, Outbound::Data(Arc::new(frame))) -> sent => sent.is_ok(),
                    recv(quit) -> _ => false,
                    recv(stop) -> _ => false,
                };
                if !queued {
                    return false;
                }
            }
        }
        drop(subs);
        while self.waiting.load(Ordering::SeqCst) > 0 {
            std::thread::yield_now();
        }
        true
    }
}

/// Waits until `due` (`None`: forever). False when `quit` or `stop` ends the wait.
fn wait_until(due: Option<Instant>, quit: &Receiver<()>, stop: &Receiver<()>) -> bool {
    match due {
        Some(due) => select! {
            recv(quit) -> _ => false,
            recv(stop) -> _ => false,
            default(due.saturating_duration_since(Instant::now())) => true,
        },
        None => select! {
            recv(quit) -> _ => false,
            recv(stop) -> _ => false,
        },
    }
}

/// One shared name per symbol, for the frames.
fn intern(symbols: &mut Vec<Arc<str>>, symbol: &str) -> Arc<str> {
    if let Some(known) = symbols.iter().find(|s| &***s == symbol) {
        return Arc::clone(known);
    }
    let new: Arc<str> = symbol.into();
    symbols.push(Arc::clone(&new));
    new
}
