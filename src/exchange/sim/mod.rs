//! `obrec sim`: a local Binance USD-M look-alike exchange on one port, with fault injection.
//!
//! It serves what a recorder uses: partial (`<sym>@depth<N>[@speed]`) and diff
//! (`<sym>@depth[@speed]`) depth streams and, beside them, `<sym>@trade`, `<sym>@aggTrade`,
//! `<sym>@bookTicker`, `<sym>@markPrice@1s` and `<sym>@forceOrder`, on `/stream?streams=…` and
//! `/ws/…` under `/public` and `/market`; live SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS, server
//! pings, and REST `/fapi/v1/depth`, `/fapi/v1/aggTrades`, `/fapi/v1/time` and
//! `/fapi/v1/exchangeInfo` (with symbols listed and delisted during the run). Each symbol has one
//! update-id sequence shared by every connection and stream, with ids that skip like the real
//! ones, and the REST snapshot is exactly the book after the latest event, so Binance's
//! local-book procedure works against it. REST aggregate trades come from a bounded history of
//! each symbol's latest ones, with the stream's values, those `--agg-gap-every` kept off the
//! stream included, so a recorder can backfill what it missed. Trades are taken from that book at
//! the touch, so trades, aggregate trades and best prices agree with the depth streams. Users test
//! pipelines offline with it; every recorder test runs against it.
//!
//! Streams are routed as on Binance since 2026: `/public` (and a path without a route) sends
//! depth, bookTicker and trade; `/market` sends aggTrade, mark price and liquidations. A stream
//! subscribed on the other route, or one the sim does not publish, is acknowledged, listed, and
//! never sent. Payloads carry the 2026 fields: `ps` after the symbol, `"st":1` last.
//!
//! Pacing is the sim's own: each symbol produces `--rate` events per second and every depth stream
//! of the symbol shows every event, whatever its speed suffix (`@100ms`, `@500ms`, `@0ms`). An
//! event brings no trade, or a burst of them; a bookTicker when it moved the best bid or ask; a
//! mark price at the first event of each second; a liquidation a few times a minute at most.
//!
//! The front (everything but `walk`, `kinds` and `hub`) also serves recordings: `obrec serve`
//! puts a playback behind it through the `Source` trait (see [`crate::exchange::serve`]), and
//! `obrec record --tap` the recorder's live frames (see [`crate::exchange::tap`]). Routes
//! and per-stream mutes are decided in the front, so a playback is routed the same way.
//!
//! # Layout
//! - `source`: the seam between the front and what it serves (the `Source` trait).
//! - `generator`: one symbol's simulated events (the `Feed` trait).
//! - `walk`: the random-walk book and id sequence, the trades taken from it, mark prices and
//!   liquidations: the sim's feed.
//! - `kinds`: what an event adds beside the book (trades, their aggregates, best prices, mark
//!   price, liquidation), every payload's text, and the aggregate trade history REST serves.
//! - `hub`: the sim's source: symbols, subscriptions, pacing; encodes each event once and
//!   queues it.
//! - `conn`: one WebSocket connection: handshake, control messages, the writer.
//! - `control`: control message parsing and replies.
//! - `http`: request heads, WebSocket paths and which route delivers which stream, REST
//!   endpoints (depth, aggTrades, time) and their Binance-shaped errors.
//! - `wire`: WebSocket frames as wire bytes.
//! - `faults`: every injected fault, decided and counted in one place.
//! - `listing`: `exchangeInfo`, and symbols listed and delisted during a run.
//! - `burst`: `--burst`, a spell of every symbol's events at a multiple of the rate.
//! - `server`: [`Sim`]: listener, threads, shutdown.

// The front's parts that `serve` puts in front of a recording are visible to the crate.
mod burst;
pub(crate) mod conn;
mod control;
mod faults;
pub(crate) mod generator;
pub(crate) mod http;
mod hub;
mod kinds;
mod listing;
pub(crate) mod server;
pub(crate) mod source;
mod walk;
pub(crate) mod wire;

use std::io;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub use burst::Burst;
pub use faults::{
    DEFAULT_OVERSIZED_BYTES, DEFAULT_REJECT_STATUS, DEFAULT_SNAPSHOT_STATUS, Fault, Faults,
    Violation,
};
pub use listing::{MAX_GENERATED, Schedule, generated_symbols};
pub use server::Sim;

use crate::market::stream::is_well_formed;
use crate::market::symbol::Symbol;
use crate::market::venue::Market;

/// Default `--listen`: loopback, any free port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:0";
/// Default `--rate`: events per second per symbol, the pace of a `@100ms` stream.
pub const DEFAULT_RATE: f64 = 10.0;
/// Default `--server-ping-sec`: Binance USD-M pings every 3 minutes.
pub const DEFAULT_PING: Duration = Duration::from_secs(180);

/// How a sim is set up. `Default`: ETHUSDT at 10 events/s, seed 1, pings every 180 s, no faults.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Symbols served, e.g. `ETHUSDT` (upper-cased on start).
    pub symbols: Vec<String>,
    pub rate: Rate,
    /// Seed of the books and ids: the same seed gives the same market.
    pub seed: u64,
    /// Interval of the server's pings on each connection.
    pub ping_interval: Duration,
    pub faults: Faults,
    /// Keep every data frame sent, for [`Sim::sent`].
    pub record_sent: bool,
    /// Symbols that start or stop trading during the run; one listed later is served too.
    pub listings: Schedule,
    /// The market played: its paths, routes, REST endpoints and payload shapes.
    pub market: Market,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            symbols: vec!["ETHUSDT".into()],
            rate: Rate::default(),
            seed: 1,
            ping_interval: DEFAULT_PING,
            faults: Faults::default(),
            record_sent: false,
            listings: Schedule::default(),
            market: Market::UsdM,
        }
    }
}

impl SimConfig {
    /// Upper-cases symbols and rejects what the sim cannot serve.
    fn validated(mut self) -> io::Result<SimConfig> {
        let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
        let scheduled = self
            .listings
            .list_after
            .iter_mut()
            .chain(self.listings.delist_after.iter_mut())
            .map(|(symbol, _)| symbol);
        for symbol in self
            .symbols
            .iter_mut()
            .chain(self.faults.mute.iter_mut())
            .chain(scheduled)
        {
            *symbol = Symbol::new(symbol)
                .map_err(|e| invalid(e.to_string()))?
                .to_string();
        }
        let mut unique: Vec<String> = Vec::with_capacity(self.symbols.len());
        let listed = self.listings.list_after.iter().map(|(s, _)| s.clone());
        let symbols: Vec<String> = self.symbols.drain(..).chain(listed).collect();
        for symbol in symbols {
            if !unique.contains(&symbol) {
                unique.push(symbol);
            }
        }
        self.symbols = unique;
        if self.symbols.is_empty() {
            return Err(invalid("no symbols to serve".into()));
        }
        if let Rate::PerSecond(r) = self.rate
            && !(r.is_finite() && r > 0.0)
        {
            return Err(invalid(format!(
                "invalid rate {r}: events per second must be positive"
            )));
        }
        if let Some(bad) = self.faults.mute_streams.iter().find(|s| !is_well_formed(s)) {
            return Err(invalid(format!("invalid stream name `{bad}`")));
        }
        if self.ping_interval.is_zero() {
            return Err(invalid("ping interval must be positive".into()));
        }
        Ok(self)
    }
}

/// Events per second per symbol.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    PerSecond(f64),
    /// As fast as the slowest subscriber takes them; nothing is generated without subscribers.
    Max,
}

impl Default for Rate {
    fn default() -> Rate {
        Rate::PerSecond(DEFAULT_RATE)
    }
}

impl Rate {
    /// Time between events; `None` for `Max`.
    fn interval(self) -> Option<Duration> {
        match self {
            Rate::PerSecond(r) => Some(Duration::from_secs_f64(1.0 / r)),
            Rate::Max => None,
        }
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rate::PerSecond(r) => write!(f, "{r} events/s"),
            Rate::Max => f.write_str("max rate"),
        }
    }
}

impl FromStr for Rate {
    type Err = String;

    /// `"10"`, `"0.5"` or `"max"`.
    fn from_str(s: &str) -> Result<Rate, String> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Rate::Max);
        }
        match s.parse::<f64>() {
            // The upper bound keeps the interval above Duration's resolution.
            Ok(r) if r.is_finite() && r > 0.0 && r <= 1e9 => Ok(Rate::PerSecond(r)),
            _ => Err(format!(
                "invalid rate `{s}`: expected events per second (e.g. 10, 0.5) or `max`"
            )),
        }
    }
}

/// Counters of a running sim.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// WebSocket connections accepted (completed upgrades).
    pub connections: u64,
    /// REST requests answered.
    pub rest_requests: u64,
    /// Data frames sent, all connections together.
    pub frames_sent: u64,
    /// Connections cut because they fell more than a queue behind a fixed rate (at `max` the
    /// slowest client sets the pace instead).
    pub slow_clients: u64,
    faults: [u64; Fault::COUNT],
}

impl SimStats {
    /// How many times `fault` was injected.
    pub fn injected(&self, fault: Fault) -> u64 {
        self.faults[fault as usize]
    }
}

/// One data frame as sent to one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentFrame {
    /// The connection (1, 2, … in accept order).
    pub conn: u64,
    /// The stream name as subscribed, e.g. `ethusdt@depth@100ms`.
    pub stream: String,
    /// Upper case, e.g. `ETHUSDT`.
    pub symbol: String,
    /// `u` and `pu` of the depth event the frame belongs to, whatever its stream's kind.
    pub u: u64,
    pub pu: u64,
    /// The exchange payload exactly as sent (the `data` of a combined frame).
    pub payload: String,
    /// Wall clock when it was handed to the socket, ns since the Unix epoch.
    pub sent_ns: u64,
}

/// Locks a mutex, carrying on if a panicking thread poisoned it: the sim's state stays usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!("10".parse(), Ok(Rate::PerSecond(10.0)));
        assert_eq!("0.5".parse(), Ok(Rate::PerSecond(0.5)));
        assert_eq!("max".parse(), Ok(Rate::Max));
        assert_eq!("MAX".parse(), Ok(Rate::Max));
        for bad in ["0", "-1", "abc", "inf", "NaN", "", "1e10"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn configs_are_validated() {
        let start = |config| Sim::start("127.0.0.1:0", config).map(drop);
        let invalid = |config| start(config).unwrap_err().kind() == io::ErrorKind::InvalidInput;
        assert!(invalid(SimConfig {
            symbols: vec![],
            ..SimConfig::default()
        }));
        assert!(invalid(SimConfig {
            symbols: vec!["ETH/USDT".into()],
            ..SimConfig::default()
        }));
        assert!(invalid(SimConfig {
            rate: Rate::PerSecond(0.0),
            ..SimConfig::default()
        }));
        assert!(invalid(SimConfig {
            faults: Faults {
                mute_streams: vec!["eth usdt@trade".into()],
                ..Faults::default()
            },
            ..SimConfig::default()
        }));
        assert!(invalid(SimConfig {
            ping_interval: Duration::ZERO,
            ..SimConfig::default()
        }));
        assert!(
            start(SimConfig {
                symbols: vec!["ethusdt".into()],
                ..SimConfig::default()
            })
            .is_ok()
        );
    }
}
