//! `obrec record --tap ADDR`: the recorder as a local Binance for other processes.
//!
//! The tap serves, live, every frame the recorder accepted (after duplicate removal), byte for
//! byte as the exchange sent it, in order per stream, behind the same front as `obrec sim` and
//! `obrec serve`: `/stream?streams=…` and `/ws/…` under `/public` and `/market` (routed as on
//! Binance), SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS, server pings. Its REST side answers
//! `/fapi/v1/depth` from a book it keeps per diff-depth symbol (`--depth 0`), consistent with the
//! frames already queued, so a client running Binance's own procedure against the tap ends with a
//! correct book and costs the exchange no REST weight; `/fapi/v1/exchangeInfo` lists the recorded
//! symbols; `/status` lists clients, their streams, queue depths and the counters.
//!
//! Clients meet Binance's own limits ([`ClientLimits::BINANCE`]): the eleventh message within
//! a second closes the connection; a SUBSCRIBE past 1024 streams is refused (code 2), a URL
//! naming more is refused at the upgrade (400).
//!
//! Nothing here can slow the recording: the readers hand frames over a bounded queue without
//! waiting (full: dropped for the tap, counted in `drops`), and each client has a bounded queue
//! of its own (full: that client is cut, counted in `cuts`).
//!
//! # Layout
//! - `fanout`: the [`Source`](crate::exchange::sim::source::Source): the dispatcher, the
//!   subscribers, `/status`, `/fapi/v1/exchangeInfo`.
//! - `book`: one symbol's live book for `/fapi/v1/depth`.

mod book;
mod fanout;

use std::io;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::exchange::sim::conn::ClientLimits;
use crate::exchange::sim::server::Front;
use crate::exchange::sim::{DEFAULT_PING, Faults, Sim};
use crate::market::tee::Tapped;
use crate::metrics::tap::TapStats;
use fanout::{Fanout, State, drained};

/// Default `--tap-queue`: frames a client may fall behind before it is cut. About 25 s of a
/// symbol's depth, trades and best prices at a busy pace (~300 frames/s), and ~40 MB at worst of
/// full-depth frames: a consumer that pauses for a garbage collection survives, a stalled one is
/// cut long before it costs the recorder's host its memory.
pub const DEFAULT_TAP_QUEUE: usize = 8192;
/// Items the recorder may have handed over that the dispatcher has not taken yet; past this the
/// tap loses them (counted), the files never do. As the writer's queue: seconds of a whole
/// market for a starved dispatcher to catch up in.
pub const HAND_OFF_CAPACITY: usize = 65_536;

/// How a tap is set up.
#[derive(Clone, Debug)]
pub struct TapConfig {
    /// e.g. `127.0.0.1:0`.
    pub listen: String,
    /// The streams the recorder records, by the names it subscribed.
    pub streams: Vec<String>,
    /// Frames each client may have queued.
    pub queue: usize,
    /// Interval of the server's pings on each connection.
    pub ping_interval: Duration,
}

impl TapConfig {
    pub fn new(listen: String, streams: Vec<String>) -> TapConfig {
        TapConfig {
            listen,
            streams,
            queue: DEFAULT_TAP_QUEUE,
            ping_interval: DEFAULT_PING,
        }
    }
}

/// At the end of a recording, how long clients get to take what is queued for them before the
/// tap closes: a live client needs milliseconds, a stalled one must not hold up the exit.
const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// How often the drain looks again.
const DRAIN_POLL: Duration = Duration::from_millis(5);

/// A running tap. Dropping it closes it at once; [`Tap::shutdown`] lets clients drain first.
pub struct Tap {
    front: Sim,
    /// The hand-off, to see it emptied.
    items: Receiver<Tapped>,
    state: Arc<Mutex<State>>,
}

impl Tap {
    /// Binds `config.listen` and serves what arrives on `items` until shut down.
    ///
    /// # Errors
    /// The bind failing, or a zero queue.
    pub fn start(
        config: TapConfig,
        items: Receiver<Tapped>,
        stats: Arc<TapStats>,
    ) -> io::Result<Tap> {
        if config.queue == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "tap queue must hold at least one frame",
            ));
        }
        let front = Front {
            ping_interval: config.ping_interval,
            faults: Faults::default(),
            record_sent: false,
            queue: config.queue,
            delivery: Some(Arc::clone(&stats)),
            limits: Some(ClientLimits::BINANCE),
        };
        let source = Fanout::new(&config.streams, items.clone(), stats);
        let state = source.state();
        Ok(Tap {
            front: Sim::serve(&config.listen, front, Box::new(source))?,
            items,
            state,
        })
    }

    /// `ws://HOST:PORT`, to which a client appends `/stream?streams=…` or `/ws/…`.
    pub fn ws_url(&self) -> String {
        self.front.ws_url()
    }

    /// Once the recorder has stopped handing frames over: lets clients take what is queued for
    /// them (up to [`DRAIN_GRACE`]), so a client that kept up has every frame recorded, then
    /// closes every client (Close 1001) and joins the tap's threads.
    pub fn shutdown(self) {
        let deadline = Instant::now() + DRAIN_GRACE;
        // Twice in a row: the dispatcher may hold the last item it took, not yet queued.
        let mut idle = 0;
        while idle < 2 && Instant::now() < deadline {
            thread::sleep(DRAIN_POLL);
            idle = if self.items.is_empty() && drained(&self.state) {
                idle + 1
            } else {
                0
            };
        }
        self.front.shutdown();
    }
}
