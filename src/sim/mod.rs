//! `obrec sim`: a local Binance USD-M look-alike exchange on one port, with fault injection.
//!
//! It serves what a depth recorder uses: partial (`<sym>@depth<N>[@speed]`) and diff
//! (`<sym>@depth[@speed]`) streams on `/stream?streams=…` and `/ws/…` (also under `/public` and
//! `/market`), live SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS, server pings, and REST
//! `/fapi/v1/depth` and `/fapi/v1/time`. Each symbol has one update-id sequence shared by every
//! connection and stream, with ids that skip like the real ones, and the REST snapshot is exactly
//! the book after the latest event, so Binance's local-book procedure works against it. Users test
//! pipelines offline with it; every recorder test runs against it.
//!
//! Pacing is the sim's own: each symbol produces `--rate` events per second and every stream of
//! the symbol shows every event, whatever its speed suffix (`@100ms`, `@500ms`, `@0ms`).
//!
//! The front (everything but `market` and `hub`) also serves recordings: `obrec serve` puts a
//! playback behind it through the `Source` trait (see [`crate::serve`]).
//!
//! # Layout
//! - `source`: the seam between the front and what it serves (the `Source` trait).
//! - `feed`: one symbol's simulated events (the `Feed` trait), and stream names.
//! - `market`: the random-walk book and id sequence, the sim's feed.
//! - `hub`: the sim's source: symbols, subscriptions, pacing; encodes each event once and
//!   queues it.
//! - `conn`: one WebSocket connection: handshake, control messages, the writer.
//! - `control`: control message parsing and replies.
//! - `http`: request heads, WebSocket routing, REST endpoints.
//! - `frame`: WebSocket frames as wire bytes.
//! - `faults`: every injected fault, decided and counted in one place.
//! - `server`: [`Sim`]: listener, threads, shutdown.

// The front's parts that `serve` puts in front of a recording are visible to the crate.
pub(crate) mod conn;
mod control;
mod faults;
pub(crate) mod feed;
pub(crate) mod frame;
mod http;
mod hub;
mod market;
pub(crate) mod server;
pub(crate) mod source;

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;

pub use faults::{DEFAULT_OVERSIZED_BYTES, DEFAULT_REJECT_STATUS, Fault, FaultArgs, Faults};
pub use server::Sim;

use crate::shutdown::Shutdown;

/// Default `--listen`: loopback, any free port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:0";
/// Default `--rate`: events per second per symbol, the pace of a `@100ms` stream.
pub const DEFAULT_RATE: f64 = 10.0;
/// Default `--ping-sec`: Binance USD-M pings every 3 minutes.
pub const DEFAULT_PING: Duration = Duration::from_secs(180);
/// How often `run` appends recorded frames to `--sent-log`.
const SENT_LOG_EVERY: Duration = Duration::from_millis(100);

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
        }
    }
}

impl SimConfig {
    /// Upper-cases symbols and rejects what the sim cannot serve.
    fn validated(mut self) -> io::Result<SimConfig> {
        let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
        for symbol in self.symbols.iter_mut().chain(self.faults.mute.iter_mut()) {
            *symbol = parse_symbol(symbol).map_err(invalid)?;
        }
        let mut unique: Vec<String> = Vec::with_capacity(self.symbols.len());
        for symbol in self.symbols.drain(..) {
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
    pub u: u64,
    pub pu: u64,
    /// The exchange payload exactly as sent (the `data` of a combined frame).
    pub payload: String,
    /// Wall clock when it was handed to the socket, ns since the Unix epoch.
    pub sent_ns: u64,
}

/// Serve a local Binance USD-M look-alike exchange (REST and WebSocket on one port) with fault
/// injection. Prints `listening on ADDR` once ready.
#[derive(clap::Args, Clone, Debug)]
pub struct SimArgs {
    /// Address to listen on; port 0 picks a free port
    #[arg(long, env = "OBREC_LISTEN", value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Symbols to serve (comma-separated, repeatable)
    #[arg(long, env = "OBREC_SYMBOLS", value_name = "SYM", value_delimiter = ',', default_value = "ETHUSDT",
          value_parser = parse_symbol)]
    pub symbols: Vec<String>,
    /// Events per second per symbol (e.g. 10, 0.5), or `max`: as fast as the slowest subscriber reads
    #[arg(long, env = "OBREC_RATE", value_name = "N|max", default_value = "10")]
    pub rate: Rate,
    /// Seed of the simulated books and update ids: the same seed gives the same market
    #[arg(long, env = "OBREC_SEED", value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// Write the port number to this file once listening (for scripts that use port 0)
    #[arg(long, env = "OBREC_PORT_FILE", value_name = "PATH")]
    pub port_file: Option<PathBuf>,
    /// Seconds between server pings on each connection (Binance: 180)
    #[arg(long, env = "OBREC_PING_SEC", value_name = "S", default_value = "180", value_parser = parse_seconds)]
    pub ping_sec: Duration,
    /// Append every data frame sent to this file as NDJSON: {"conn":N,"stream":"…","data":{…}}
    #[arg(long, env = "OBREC_SENT_LOG", value_name = "PATH")]
    pub sent_log: Option<PathBuf>,
    #[command(flatten)]
    pub faults: FaultArgs,
}

/// Runs `obrec sim` until `shutdown` triggers: prints `listening on ADDR` (flushed), writes the
/// port to `--port-file`, appends sent frames to `--sent-log`, then shuts down cleanly.
///
/// # Errors
/// The listen address cannot be bound, or a file cannot be written.
pub fn run(args: &SimArgs, shutdown: &Shutdown) -> anyhow::Result<()> {
    let config = SimConfig {
        symbols: args.symbols.clone(),
        rate: args.rate,
        seed: args.seed,
        ping_interval: args.ping_sec,
        faults: Faults::from(&args.faults),
        record_sent: args.sent_log.is_some(),
    };
    let mut sent_log = match &args.sent_log {
        Some(path) => {
            let file = OpenOptions::new().create(true).append(true).open(path);
            Some((
                BufWriter::new(file.with_context(|| format!("{}: cannot open", path.display()))?),
                path.as_path(),
            ))
        }
        None => None,
    };
    let mut sim = Sim::start(&args.listen, config)
        .with_context(|| format!("cannot serve on {}", args.listen))?;
    let addr = sim.local_addr();
    announce(addr, args.port_file.as_deref())?;
    log::info!(
        "sim: serving {} at {} on {addr}",
        args.symbols.join(","),
        args.rate
    );
    while !shutdown.wait_timeout(SENT_LOG_EVERY) {
        if let Some((log, path)) = &mut sent_log {
            append_sent(log, &sim.take_sent(), path)?;
        }
    }
    sim.stop();
    if let Some((log, path)) = &mut sent_log {
        append_sent(log, &sim.take_sent(), path)?;
    }
    log::info!("sim: stopped, {:?}", sim.stats());
    Ok(())
}

/// Prints `listening on ADDR` (flushed) and writes the port to `port_file`: what scripts and
/// tests wait for before connecting.
///
/// # Errors
/// Stdout or the port file cannot be written.
pub(crate) fn announce(addr: SocketAddr, port_file: Option<&Path>) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on {addr}")
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")?;
    drop(stdout);
    if let Some(path) = port_file {
        // Written aside and renamed, so that a script polling for the file never reads half.
        let mut aside = path.as_os_str().to_owned();
        aside.push(".tmp");
        std::fs::write(&aside, format!("{}\n", addr.port()))
            .and_then(|()| std::fs::rename(&aside, path))
            .with_context(|| format!("{}: cannot write", path.display()))?;
    }
    Ok(())
}

/// Appends `{"conn":N,"stream":"…","data":<payload>}` lines.
fn append_sent(log: &mut BufWriter<File>, frames: &[SentFrame], path: &Path) -> anyhow::Result<()> {
    let mut write = || -> io::Result<()> {
        for f in frames {
            let stream = serde_json::Value::from(f.stream.as_str());
            writeln!(
                log,
                r#"{{"conn":{},"stream":{stream},"data":{}}}"#,
                f.conn, f.payload
            )?;
        }
        log.flush()
    };
    write().with_context(|| format!("{}: cannot write", path.display()))
}

/// Parses a symbol flag value: upper-cased, 2–20 letters and digits.
fn parse_symbol(s: &str) -> Result<String, String> {
    let symbol = s.trim().to_ascii_uppercase();
    let valid =
        (2..=20).contains(&symbol.len()) && symbol.bytes().all(|b| b.is_ascii_alphanumeric());
    if valid {
        Ok(symbol)
    } else {
        Err(format!(
            "invalid symbol `{s}`: expected 2-20 letters and digits"
        ))
    }
}

/// Parses a positive number of seconds, decimals allowed.
pub(crate) fn parse_seconds(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs < 1e9 => {
            Ok(Duration::from_secs_f64(secs))
        }
        _ => Err(format!(
            "invalid duration `{s}`: expected a positive number of seconds"
        )),
    }
}

/// Locks a mutex, carrying on if a panicking thread poisoned it: the sim's state stays usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn now_ms() -> u64 {
    now_ns() / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    fn parse(args: &[&str]) -> Result<SimArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("sim").chain(args.iter().copied())).map(|c| c.sim)
    }

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
    fn defaults_match_the_documented_ones() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.listen, "127.0.0.1:0");
        assert_eq!(args.symbols, ["ETHUSDT"]);
        assert_eq!(args.rate, Rate::PerSecond(10.0));
        assert_eq!((args.seed, args.ping_sec), (1, DEFAULT_PING));
        assert_eq!(Faults::from(&args.faults), Faults::default());
        let config = SimConfig::default();
        assert_eq!(
            (
                config.symbols,
                config.rate,
                config.seed,
                config.ping_interval
            ),
            (args.symbols, args.rate, 1, DEFAULT_PING)
        );
    }

    #[test]
    fn flags_parse() {
        let args = parse(&[
            "--symbols",
            "ethusdt,BTCUSDT",
            "--symbols",
            "solusdt",
            "--rate",
            "max",
            "--seed",
            "7",
            "--ping-sec",
            "0.5",
            "--gap-every",
            "10",
            "--stall-after",
            "3",
            "--stall-sec",
            "1.5",
            "--mute",
            "btcusdt",
            "--ignore-pings",
            "--reject-upgrades",
            "2",
            "--reject-status",
            "429",
            "--conn-lifetime",
            "2",
            "--oversized-every",
            "5",
            "--oversized-bytes",
            "1000",
        ])
        .unwrap();
        assert_eq!(args.symbols, ["ETHUSDT", "BTCUSDT", "SOLUSDT"]);
        assert_eq!(
            (args.rate, args.seed, args.ping_sec),
            (Rate::Max, 7, Duration::from_millis(500))
        );
        let f = Faults::from(&args.faults);
        assert_eq!(
            (f.gap_every, f.stall_after, f.stall_for),
            (Some(10), Some(3), Some(Duration::from_millis(1500)))
        );
        assert_eq!(
            (f.mute, f.ignore_pings),
            (vec!["BTCUSDT".to_string()], true)
        );
        assert_eq!(
            (f.reject_upgrades, f.reject_status, f.conn_lifetime),
            (2, 429, Some(Duration::from_secs(2)))
        );
        assert_eq!((f.oversized_every, f.oversized_bytes), (Some(5), 1000));
    }

    #[test]
    fn bad_flags_are_refused() {
        for bad in [
            &["--symbols", "ETH-USDT"][..],
            &["--symbols", "X"],
            &["--rate", "0"],
            &["--ping-sec", "-1"],
            &["--gap-every", "0"],
            &["--stall-sec", "1"],
            &["--reject-status", "101"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_flag_has_help() {
        let cmd = Cli::command();
        for arg in cmd
            .get_arguments()
            .filter(|a| a.get_long().is_some_and(|l| l != "help"))
        {
            assert!(
                arg.get_help().is_some_and(|h| h.to_string().len() > 10),
                "--{} has no help",
                arg.get_long().unwrap()
            );
            assert!(
                arg.get_env().is_some(),
                "--{} has no env",
                arg.get_long().unwrap()
            );
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
