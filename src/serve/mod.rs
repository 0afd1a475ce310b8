//! `obrec serve`: recordings played back as a live Binance-compatible stream.
//!
//! The sim's front (paths, SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS, REST, pings, shutdown)
//! serves a playback instead of the simulated market:
//!
//! * Every connection plays the recording from the beginning, on its own. Its clock starts at its
//!   first depth subscription (the URL's streams count), and each event is due
//!   `(recv_ns − the recording's first recv_ns) / speed` later. With `--speed max` nothing waits:
//!   the client's reading sets the pace.
//! * An event goes to each subscription of the same symbol and kind: diff (`@depth`,
//!   `@depth@100ms`, `@depth@0ms`, …) or partial (`@depth5`, `@depth20@100ms`, …), whatever the
//!   speed or the levels in either name. The frame carries the name the client subscribed and the
//!   recorded payload byte for byte.
//! * After the last event the connection is closed (1000, `end of recording`).
//! * `/fapi/v1/depth` answers the recorded snapshot in force at the playback position of the
//!   connection furthest along (the latest received at or before it, else the first), byte-exact
//!   whatever the `limit`; `/fapi/v1/time` answers that position's time.
//!
//! # Layout
//! - `recording`: reading the files: lanes merged by `recv_ns`, snapshots, damage.
//! - `playback`: the front's source: one player thread per connection.

mod playback;
mod recording;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use std::{fmt, io};

use anyhow::Context;

pub use recording::Recording;

use crate::shutdown::Shutdown;
use crate::sim::server::Front;
use crate::sim::{DEFAULT_LISTEN, DEFAULT_PING, Faults, Sim, SimStats, parse_seconds};
use playback::Playback;

/// How often `run` looks whether it should stop.
const STOP_POLL: Duration = Duration::from_millis(100);
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
}

impl Default for ServeConfig {
    fn default() -> ServeConfig {
        ServeConfig {
            pace: Pace::default(),
            ping_interval: DEFAULT_PING,
        }
    }
}

/// Play recordings back as a live Binance-compatible stream: the same paths, SUBSCRIBE handling
/// and REST endpoints as `obrec sim`, each connection playing from the beginning. Prints
/// `listening on ADDR` once ready.
#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    /// Recordings: files, directories (their depth and snapshot files) or glob patterns
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Address to listen on; port 0 picks a free port
    #[arg(long, env = "OBREC_LISTEN", value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Playback speed: 1 as recorded, 10 ten times faster, or `max`: as fast as the client reads
    #[arg(long, env = "OBREC_SPEED", value_name = "N|max", default_value = "1")]
    pub speed: Pace,
    /// Write the port number to this file once listening (for scripts that use port 0)
    #[arg(long, env = "OBREC_PORT_FILE", value_name = "PATH")]
    pub port_file: Option<PathBuf>,
    /// Seconds between server pings on each connection (Binance: 180)
    #[arg(long, env = "OBREC_PING_SEC", value_name = "S", default_value = "180", value_parser = parse_seconds)]
    pub ping_sec: Duration,
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
        };
        let source = Playback::new(Arc::new(recording), config.pace);
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

/// Runs `obrec serve` until `shutdown` triggers: opens the recording, prints `listening on ADDR`
/// (flushed) and writes the port to `--port-file`.
///
/// # Errors
/// [`crate::Error::Invalid`] for paths without recordings; the listen address cannot be bound;
/// a file cannot be written.
pub fn run(args: &ServeArgs, shutdown: &Shutdown) -> anyhow::Result<()> {
    let recording = Recording::open(&args.paths)?;
    let (files, snapshots) = (recording.files(), recording.snapshots());
    let config = ServeConfig {
        pace: args.speed,
        ping_interval: args.ping_sec,
    };
    let server = Serve::start(&args.listen, recording, config)
        .with_context(|| format!("cannot serve on {}", args.listen))?;
    let addr = server.local_addr();
    crate::sim::announce(addr, args.port_file.as_deref())?;
    log::info!(
        "serve: {files} files ({snapshots} snapshots) at {} on {addr}",
        args.speed
    );
    while !shutdown.wait_timeout(STOP_POLL) {}
    let stats = server.stats();
    server.shutdown();
    log::info!("serve: stopped, {stats:?}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied())).map(|c| c.serve)
    }

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

    #[test]
    fn flags_parse_with_documented_defaults() {
        let args = parse(&["data/order_book"]).unwrap();
        assert_eq!(args.paths, [PathBuf::from("data/order_book")]);
        assert_eq!(
            (args.listen.as_str(), args.speed, args.ping_sec),
            ("127.0.0.1:0", Pace::Speed(1.0), DEFAULT_PING)
        );
        let args = parse(&[
            "a.ndjson.gz",
            "dir",
            "--listen",
            "0.0.0.0:9000",
            "--speed",
            "max",
            "--port-file",
            "port",
            "--ping-sec",
            "0.5",
        ])
        .unwrap();
        assert_eq!(args.paths.len(), 2);
        assert_eq!(
            (args.listen.as_str(), args.speed, args.ping_sec),
            ("0.0.0.0:9000", Pace::Max, Duration::from_millis(500))
        );
        assert_eq!(args.port_file, Some(PathBuf::from("port")));
        for bad in [&[][..], &["x", "--speed", "0"], &["x", "--ping-sec", "0"]] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_flag_has_help_and_env() {
        let cmd = Cli::command();
        for arg in cmd
            .get_arguments()
            .filter(|a| a.get_long().is_some_and(|l| l != "help"))
        {
            let long = arg.get_long().unwrap();
            assert!(
                arg.get_help().is_some_and(|h| h.to_string().len() > 10),
                "--{long} has no help"
            );
            assert_eq!(
                arg.get_env().map(|e| e.to_string_lossy().into_owned()),
                Some(format!("OBREC_{}", long.to_uppercase().replace('-', "_"))),
                "--{long}"
            );
        }
    }
}
