//! `obrec serve`: recordings played back as a live Binance-compatible stream.
//!
//! The sim's front (paths, SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS, REST, pings, shutdown)
//! serves a playback instead of the simulated market:
//!
//! * Every connection plays the recording from the beginning, on its own. Its clock starts at its
//!   first subscription of a recorded stream (the URL's streams count), and each event is due
//!   `(recv_ns − the recording's first recv_ns) / pace` later. With `--pace max` nothing waits:
//!   the client's reading sets the pace.
//! * An event goes to each subscription of the same symbol and kind: diff (`@depth`,
//!   `@depth@100ms`, `@depth@0ms`, …) or partial (`@depth5`, `@depth20@100ms`, …), whatever the
//!   speed or the levels in either name. The streams beside the book (`@trade`, `@aggTrade`,
//!   `@bookTicker`, `@markPrice@1s`, `@forceOrder`) play from their own files, each on its own
//!   stream name, merged with depth in receipt order. The frame carries the name the client
//!   subscribed and the recorded payload byte for byte: `{"stream":"<stream>","data":<data>}`.
//!   Meta lines (`serverShutdown`) and backfilled lines are not played (see `recording`). Which
//!   route (`/public`, `/market`) delivers a stream is the front's affair.
//! * After the last event the connection is closed (1000, `end of recording`).
//! * `/fapi/v1/depth` answers the recorded snapshot in force at the playback position of the
//!   connection furthest along (the latest received at or before it, else the first), byte-exact
//!   whatever the `limit`; `/fapi/v1/time` answers that position's time. `/fapi/v1/aggTrades` is
//!   not available (404): a recording is played in order, not looked up by id.
//! * [`ServeConfig::market`] (`serve --market`) names the market the recording is from: its
//!   paths replace `/fapi/v1/…` (`/dapi/v1/…` for COIN-M, `/api/v3/…` for spot), and on the
//!   markets without routes every stream plays on any path.
//!
//! # Layout
//! - `recording`: reading the files: lanes (one per symbol and kind) merged by `recv_ns`,
//!   snapshots, damage.
//! - `playback`: the front's source: one player thread per connection.

mod playback;
mod recording;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use std::{fmt, io};

pub use recording::Recording;

use crate::exchange::sim::server::Front;
use crate::exchange::sim::{DEFAULT_PING, Faults, Sim, SimStats};
use crate::market::venue::Market;
use playback::Playback;

/// Fastest `--speed` factor: beyond it every recording plays in an instant anyway; the bound keeps
/// due times far from `Duration`'s limits.
const MAX_FACTOR: f64 = 1e6;

/// How fast recorded time passes in playback.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// Recorded time divided by this factor: 1 as recorded, 10 ten times faster.
    Speed(f64),
    /// No waiting: as fast as the client reads.
    Max,
}

impl Default for Pace {
    fn default() -> Pace {
        Pace::Speed(1.0)
    }
}

impl FromStr for Pace {
    type Err = String;

    /// `"1"`, `"10"`, `"0.5"` or `"max"`.
    fn from_str(s: &str) -> Result<Pace, String> {
        if s.trim().eq_ignore_ascii_case("max") {
            return Ok(Pace::Max);
        }
        match s.trim().parse::<f64>() {
            Ok(f) if f.is_finite() && f > 0.0 && f <= MAX_FACTOR => Ok(Pace::Speed(f)),
            _ => Err(format!(
                "invalid speed `{s}`: expected a factor above 0 (1 = as recorded, 10, 0.5) or `max`"
            )),
        }
    }
}

impl fmt::Display for Pace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pace::Speed(factor) => write!(f, "speed {factor}"),
            Pace::Max => f.write_str("max speed"),
        }
    }
}

/// How a playback is served. `Default`: as recorded, pings every 180 s.
#[derive(Clone, Debug, PartialEq)]
pub struct ServeConfig {
    pub pace: Pace,
    /// Interval of the server's pings on each connection.
    pub ping_interval: Duration,
    /// The market the recording is from: the paths, routes and REST endpoints served.
    pub market: Market,
}

impl Default for ServeConfig {
    fn default() -> ServeConfig {
        ServeConfig {
            pace: Pace::default(),
            ping_interval: DEFAULT_PING,
            market: Market::UsdM,
        }
    }
}

/// A running playback server. Dropping it shuts it down like [`Serve::shutdown`].
pub struct Serve {
    sim: Sim,
}

impl Serve {
    /// Binds `listen` (e.g. `127.0.0.1:0`), starts serving `recording` and returns at once.
    ///
    /// # Errors
    /// An invalid configuration (`InvalidInput`), or the bind failing.
    pub fn start(listen: &str, recording: Recording, config: ServeConfig) -> io::Result<Serve> {
        let invalid = |msg: &str| io::Error::new(io::ErrorKind::InvalidInput, msg);
        if let Pace::Speed(f) = config.pace
            && !(f.is_finite() && f > 0.0 && f <= MAX_FACTOR)
        {
            return Err(invalid("speed must be a factor above 0"));
        }
        if config.ping_interval.is_zero() {
            return Err(invalid("ping interval must be positive"));
        }
        let front = Front {
            ping_interval: config.ping_interval,
            faults: Faults::default(),
            record_sent: false,
            queue: crate::exchange::sim::conn::OUTBOUND_CAPACITY,
            delivery: None,
            limits: None,
        };
        let source = Playback::new(Arc::new(recording), config.pace, config.market);
        let sim = Sim::serve(listen, front, Box::new(source))?;
        Ok(Serve { sim })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.sim.local_addr()
    }

    /// `ws://HOST:PORT`, to which a client appends `/stream?streams=…` or `/ws/…`.
    pub fn ws_url(&self) -> String {
        self.sim.ws_url()
    }

    /// `http://HOST:PORT`, to which a client appends `/fapi/v1/depth?…`.
    pub fn rest_url(&self) -> String {
        self.sim.rest_url()
    }

    pub fn stats(&self) -> SimStats {
        self.sim.stats()
    }

    /// Stops accepting, closes every connection (Close 1001 where it can) and joins all threads.
    pub fn shutdown(self) {
        self.sim.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speeds_parse() {
        assert_eq!("1".parse(), Ok(Pace::Speed(1.0)));
        assert_eq!("10".parse(), Ok(Pace::Speed(10.0)));
        assert_eq!("0.5".parse(), Ok(Pace::Speed(0.5)));
        assert_eq!("max".parse(), Ok(Pace::Max));
        assert_eq!("MAX".parse(), Ok(Pace::Max));
        for bad in ["0", "-1", "abc", "inf", "NaN", "", "1e7"] {
            assert!(bad.parse::<Pace>().is_err(), "{bad}");
        }
    }
}
