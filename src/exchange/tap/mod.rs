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
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;

use crate::exchange::sim::server::Front;
use crate::exchange::sim::{DEFAULT_PING, Faults, Sim};
use crate::market::tee::Tapped;
use crate::metrics::tap::TapStats;
use fanout::Fanout;

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

/// A running tap. Dropping it shuts it down like [`Tap::shutdown`].
pub struct Tap {
    front: Sim,
}

impl Tap {
    /// Binds `config.listen` and serves what arrives on `items` until shut down.
    ///
    /// # Errors
    /// The bind failing, or a zero queue.
    pub fn start(config: TapConfig, items: Receiver<Tapped>, stats: Arc<TapStats>) -> io::Result<Tap> {
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
        };
        let source = Fanout::new(&config.streams, items, stats);
        Ok(Tap {
            front: Sim::serve(&config.listen, front, Box::new(source))?,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.front.local_addr()
    }

    /// `ws://HOST:PORT`, to which a client appends `/stream?streams=…` or `/ws/…`.
    pub fn ws_url(&self) -> String {
        self.front.ws_url()
    }

    /// Closes every client (Close 1001) and joins the tap's threads.
    pub fn shutdown(self) {
        self.front.shutdown();
    }
}
