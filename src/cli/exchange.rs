//! The exchange commands' flags and loops: `obrec sim` and `obrec serve`.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::parse;
use crate::exchange::serve::{Pace, Recording, Serve, ServeConfig};
use crate::exchange::sim::{
    Burst, DEFAULT_LISTEN, DEFAULT_OVERSIZED_BYTES, DEFAULT_REJECT_STATUS, DEFAULT_SNAPSHOT_STATUS,
    Faults, MAX_GENERATED, Rate, Schedule, SentFrame, Sim, SimConfig, Violation, generated_symbols,
};
use crate::store::staged::write_atomic;
use crate::util::shutdown::Shutdown;

/// How often the command loops look whether they should stop, and append sent frames to
/// `--sent-log`: short enough that a signal is obeyed at once.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Serve a local Binance look-alike exchange (REST and WebSocket on one port) with fault
/// injection: USD-M futures, or with `--market` COIN-M futures or spot. Prints `listening on
/// ADDR` once ready.
#[derive(Args, Clone, Debug)]
pub struct SimArgs {
    #[command(flatten)]
    pub market_flag: parse::MarketFlag,
    /// Address to listen on; port 0 picks a free port
    #[arg(long, env = "OBREC_LISTEN", value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Symbol to serve; repeatable and comma-separated (ETHUSDT,BTCUSDT), as in `obrec record`
    #[arg(long, env = "OBREC_SYMBOL", value_name = "SYM", value_delimiter = ',', default_value = "ETHUSDT",
          value_parser = parse::symbol_text)]
    pub symbol: Vec<String>,
    /// Also serve N generated USDT symbols (AAAUSDT, AABUSDT, …), for whole-market runs
    #[arg(long, env = "OBREC_SYMBOLS", value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_GENERATED as u64))]
    pub symbols: Option<u64>,
    /// Events per second per symbol (e.g. 10, 0.5), or `max`: as fast as the slowest subscriber reads
    #[arg(long, env = "OBREC_RATE", value_name = "N|max", default_value = "10")]
    pub rate: Rate,
    /// Seed of the simulated books and update ids: the same seed gives the same market
    #[arg(long, env = "OBREC_SEED", value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// Write the port number to this file once listening (for scripts that use port 0)
    #[arg(long, env = "OBREC_PORT_FILE", value_name = "PATH")]
    pub port_file: Option<PathBuf>,
    /// Seconds between the server's pings on each connection (default: the market's, as on
    /// Binance: 180 on futures, 20 on spot)
    #[arg(long, env = "OBREC_SERVER_PING_SEC", value_name = "S", value_parser = parse::seconds)]
    pub server_ping_sec: Option<Duration>,
    /// Append every data frame sent to this file as NDJSON: {"conn":N,"stream":"…","data":{…}}
    #[arg(long, env = "OBREC_SENT_LOG", value_name = "PATH")]
    pub sent_log: Option<PathBuf>,
    /// List SYMBOL (served, PENDING_TRADING in exchangeInfo, silent) SEC seconds after the
    /// start: from then on it trades (comma-separated, repeatable)
    #[arg(long, env = "OBREC_LIST_AFTER", value_name = "SYM:SEC", value_delimiter = ',', value_parser = parse::symbol_after)]
    pub list_after: Vec<(String, Duration)>,
    /// Delist SYMBOL SEC seconds after the start: SETTLING in exchangeInfo, its streams silent
    /// (comma-separated, repeatable)
    #[arg(long, env = "OBREC_DELIST_AFTER", value_name = "SYM:SEC", value_delimiter = ',', value_parser = parse::symbol_after)]
    pub delist_after: Vec<(String, Duration)>,
    #[command(flatten)]
    pub faults: FaultArgs,
}

/// `obrec sim` until `shutdown` triggers: prints `listening on ADDR` (flushed), writes the
/// port to `--port-file`, appends sent frames to `--sent-log`, then shuts down cleanly.
///
/// # Errors
/// The listen address cannot be bound, or a file cannot be written.
pub fn sim(args: &SimArgs, shutdown: &Shutdown) -> anyhow::Result<ExitCode> {
    let config = SimConfig {
        symbols: args
            .symbol
            .iter()
            .cloned()
            .chain(generated_symbols(
                args.symbols
                    .map_or(0, |n| usize::try_from(n).unwrap_or(MAX_GENERATED)),
            ))
            .collect(),
        rate: args.rate,
        seed: args.seed,
        ping_interval: args
            .server_ping_sec
            .unwrap_or(args.market_flag.market.ping().0),
        faults: Faults::from(&args.faults),
        record_sent: args.sent_log.is_some(),
        listings: Schedule {
            list_after: args.list_after.clone(),
            delist_after: args.delist_after.clone(),
        },
        market: args.market_flag.market,
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
        "sim: serving {}{} at {} on {addr}",
        args.symbol.join(","),
        args.symbols
            .map_or(String::new(), |n| format!(" and {n} generated symbols")),
        args.rate
    );
    while !shutdown.wait_timeout(STOP_POLL) {
        if let Some((log, path)) = &mut sent_log {
            append_sent(log, &sim.take_sent(), path)?;
        }
    }
    sim.stop();
    if let Some((log, path)) = &mut sent_log {
        append_sent(log, &sim.take_sent(), path)?;
    }
    log::info!("sim: stopped, {:?}", sim.stats());
    Ok(ExitCode::SUCCESS)
}

/// Prints `listening on ADDR` (flushed) and writes the port to `port_file`: what scripts and
/// tests wait for before connecting.
///
/// # Errors
/// Stdout or the port file cannot be written.
fn announce(addr: SocketAddr, port_file: Option<&Path>) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on {addr}")
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")?;
    drop(stdout);
    if let Some(path) = port_file {
        // Written aside and renamed, so that a script polling for the file never reads half.
        write_atomic(path, format!("{}\n", addr.port()).as_bytes())?;
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

/// The fault flags of `obrec sim`.
#[derive(Args, Clone, Debug, Default)]
#[command(next_help_heading = "Faults")]
pub struct FaultArgs {
    /// Drop every Nth event of each symbol from the depth streams of all connections (a `pu` gap in
    /// the shared sequence)
    #[arg(long, env = "OBREC_GAP_EVERY", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub gap_every: Option<u64>,
    /// Close each connection cleanly (Close frame 1000) after N data frames
    #[arg(long, env = "OBREC_CLOSE_AFTER", value_name = "N")]
    pub close_after: Option<u64>,
    /// Reset each connection (TCP RST) after N data frames
    #[arg(long, env = "OBREC_RESET_AFTER", value_name = "N")]
    pub reset_after: Option<u64>,
    /// Close each connection's socket without a Close frame (EOF) after N data frames
    #[arg(long, env = "OBREC_EOF_AFTER", value_name = "N")]
    pub eof_after: Option<u64>,
    /// Stop sending data on each connection after N data frames, still answering pings
    #[arg(long, env = "OBREC_STALL_AFTER", value_name = "N")]
    pub stall_after: Option<u64>,
    /// How long a stall lasts, in seconds, before data resumes (default: until the connection ends)
    #[arg(long, env = "OBREC_STALL_SEC", value_name = "S", value_parser = parse::seconds, requires = "stall_after")]
    pub stall_sec: Option<Duration>,
    /// Send a text frame that is not JSON after every Nth data frame
    #[arg(long, env = "OBREC_GARBAGE_EVERY", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub garbage_every: Option<u64>,
    /// Send a binary frame after every Nth data frame
    #[arg(long, env = "OBREC_BINARY_EVERY", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub binary_every: Option<u64>,
    /// Send an oversized text frame (--oversized-bytes) after every Nth data frame
    #[arg(long, env = "OBREC_OVERSIZED_EVERY", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub oversized_every: Option<u64>,
    /// Payload size of the oversized frames, in bytes
    #[arg(long, env = "OBREC_OVERSIZED_BYTES", value_name = "B", default_value_t = DEFAULT_OVERSIZED_BYTES)]
    pub oversized_bytes: usize,
    /// Never answer client pings with pongs
    #[arg(long, env = "OBREC_IGNORE_PINGS")]
    pub ignore_pings: bool,
    /// Close connections (Close frame 1001) at this age in seconds, like Binance's 24 h cut
    #[arg(long, env = "OBREC_CONN_LIFETIME", value_name = "SEC", value_parser = parse::seconds)]
    pub conn_lifetime: Option<Duration>,
    /// Acknowledge subscriptions to this symbol but never send its data (comma-separated, repeatable)
    #[arg(long, env = "OBREC_MUTE", value_name = "SYM", value_delimiter = ',', value_parser = parse::symbol_text)]
    pub mute: Vec<String>,
    /// Acknowledge subscriptions to this stream (e.g. ethusdt@trade) but never send it, while the
    /// connection's other streams flow (comma-separated, repeatable)
    #[arg(long, env = "OBREC_MUTE_STREAM", value_name = "STREAM", value_delimiter = ',', value_parser = parse::stream_name)]
    pub mute_stream: Vec<String>,
    /// Drop every Nth trade of each symbol for all connections, on @trade and @aggTrade alike
    /// (trade ids skip)
    #[arg(long, env = "OBREC_TRADE_GAP_EVERY", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub trade_gap_every: Option<u64>,
    /// Keep every Nth aggregate trade of each symbol off @aggTrade for all connections, while
    /// REST /fapi/v1/aggTrades still serves it (aggregate ids skip; a backfill closes the gap)
    #[arg(long, env = "OBREC_AGG_GAP_EVERY", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub agg_gap_every: Option<u64>,
    /// Send each connection a serverShutdown event at this age in seconds, then close it (Close
    /// frame 1001) 2 s later
    #[arg(long, env = "OBREC_SERVER_SHUTDOWN_AFTER", value_name = "SEC", value_parser = parse::seconds)]
    pub server_shutdown_after: Option<Duration>,
    /// Refuse the first N WebSocket upgrade attempts with --reject-status
    #[arg(
        long,
        env = "OBREC_REJECT_UPGRADES",
        value_name = "N",
        default_value_t = 0
    )]
    pub reject_upgrades: u64,
    /// HTTP status of refused upgrades
    #[arg(long, env = "OBREC_REJECT_STATUS", value_name = "CODE", default_value_t = DEFAULT_REJECT_STATUS,
          value_parser = clap::value_parser!(u16).range(200..=599))]
    pub reject_status: u16,
    /// Refuse the first N depth snapshot requests (/fapi/v1/depth) with --snapshot-status
    #[arg(
        long,
        env = "OBREC_REJECT_SNAPSHOTS",
        value_name = "N",
        default_value_t = 0
    )]
    pub reject_snapshots: u64,
    /// HTTP status of refused snapshot requests
    #[arg(long, env = "OBREC_SNAPSHOT_STATUS", value_name = "CODE", default_value_t = DEFAULT_SNAPSHOT_STATUS,
          value_parser = clap::value_parser!(u16).range(200..=599))]
    pub snapshot_status: u16,
    /// Send `Retry-After: S` with refused snapshot requests (with --snapshot-status 429 or 418)
    #[arg(long, env = "OBREC_RETRY_AFTER", value_name = "S")]
    pub retry_after: Option<u64>,
    /// Send `x-mbx-used-weight-1m: N` with every snapshot and aggTrades answer
    #[arg(long, env = "OBREC_USED_WEIGHT", value_name = "N")]
    pub used_weight: Option<u64>,
    /// Pad snapshot bodies with trailing spaces to at least B bytes
    #[arg(long, env = "OBREC_SNAPSHOT_BYTES", value_name = "B")]
    pub snapshot_bytes: Option<usize>,
    /// Send a frame that breaks the WebSocket protocol (--violation) after every Nth data frame
    #[arg(long, env = "OBREC_VIOLATION_EVERY", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub violation_every: Option<u64>,
    /// The rule those frames break: utf8 (text not UTF-8), opcode (reserved), masked, rsv (RSV1 set),
    /// close-code (1005)
    #[arg(
        long,
        env = "OBREC_VIOLATION",
        value_name = "KIND",
        default_value = "utf8"
    )]
    pub violation: Violation,
    /// Send each WebSocket upgrade response one byte every S seconds (a large S withholds it)
    #[arg(long, env = "OBREC_HANDSHAKE_DRIP_SEC", value_name = "S", value_parser = parse::seconds)]
    pub handshake_drip_sec: Option<Duration>,
    /// From START seconds after the sim starts, for SECS seconds, send every symbol's events at
    /// FACTOR times --rate (e.g. 60:60:10); no effect at --rate max
    #[arg(long, env = "OBREC_BURST", value_name = "START:SECS:FACTOR")]
    pub burst: Option<Burst>,
}

impl From<&FaultArgs> for Faults {
    fn from(a: &FaultArgs) -> Faults {
        Faults {
            gap_every: a.gap_every,
            close_after: a.close_after,
            reset_after: a.reset_after,
            eof_after: a.eof_after,
            stall_after: a.stall_after,
            stall_for: a.stall_sec,
            garbage_every: a.garbage_every,
            binary_every: a.binary_every,
            oversized_every: a.oversized_every,
            oversized_bytes: a.oversized_bytes,
            ignore_pings: a.ignore_pings,
            conn_lifetime: a.conn_lifetime,
            mute: a.mute.clone(),
            mute_streams: a.mute_stream.clone(),
            trade_gap_every: a.trade_gap_every,
            agg_gap_every: a.agg_gap_every,
            server_shutdown_after: a.server_shutdown_after,
            reject_upgrades: a.reject_upgrades,
            reject_status: a.reject_status,
            reject_snapshots: a.reject_snapshots,
            snapshot_status: a.snapshot_status,
            retry_after: a.retry_after,
            used_weight: a.used_weight,
            snapshot_bytes: a.snapshot_bytes,
            violation_every: a.violation_every,
            violation: a.violation,
            handshake_drip: a.handshake_drip_sec,
            burst: a.burst,
        }
    }
}

/// Play recordings back as a live Binance-compatible stream: the same paths, SUBSCRIBE handling
/// and REST endpoints as `obrec sim`, each connection playing from the beginning. Prints
/// `listening on ADDR` once ready.
#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    /// Recordings: files, directories (their depth and snapshot files) or glob patterns
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Address to listen on; port 0 picks a free port
    #[arg(long, env = "OBREC_LISTEN", value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Playback pace: 1 as recorded, 10 ten times faster, or `max`: as fast as the client reads
    #[arg(long, env = "OBREC_PACE", value_name = "N|max", default_value = "1")]
    pub pace: Pace,
    /// Write the port number to this file once listening (for scripts that use port 0)
    #[arg(long, env = "OBREC_PORT_FILE", value_name = "PATH")]
    pub port_file: Option<PathBuf>,
    /// Seconds between the server's pings on each connection (default: the market's, as on
    /// Binance: 180 on futures, 20 on spot)
    #[arg(long, env = "OBREC_SERVER_PING_SEC", value_name = "S", value_parser = parse::seconds)]
    pub server_ping_sec: Option<Duration>,
    /// The market the recording is from, whose paths are served
    #[command(flatten)]
    pub market_flag: parse::MarketFlag,
}

/// `obrec serve` until `shutdown` triggers: opens the recording, prints `listening on ADDR`
/// (flushed) and writes the port to `--port-file`.
///
/// # Errors
/// [`crate::Error::Invalid`] for paths without recordings; the listen address cannot be bound;
/// a file cannot be written.
pub fn serve(args: &ServeArgs, shutdown: &Shutdown) -> anyhow::Result<ExitCode> {
    let recording = Recording::open(&args.paths)?;
    let (files, snapshots) = (recording.files(), recording.snapshots());
    let config = ServeConfig {
        pace: args.pace,
        ping_interval: args
            .server_ping_sec
            .unwrap_or(args.market_flag.market.ping().0),
        market: args.market_flag.market,
    };
    let server = Serve::start(&args.listen, recording, config)
        .with_context(|| format!("cannot serve on {}", args.listen))?;
    let addr = server.local_addr();
    announce(addr, args.port_file.as_deref())?;
    log::info!(
        "serve: {files} files ({snapshots} snapshots) at {} on {addr}",
        args.pace
    );
    while !shutdown.wait_timeout(STOP_POLL) {}
    let stats = server.stats();
    server.shutdown();
    log::info!("serve: stopped, {stats:?}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::sim::DEFAULT_PING;
    use crate::market::venue::Market;
    use clap::{CommandFactory, Parser};
    use std::time::Duration;

    #[derive(Parser)]
    struct SimCli {
        #[command(flatten)]
        sim: SimArgs,
    }

    #[derive(Parser)]
    struct ServeCli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> Result<SimArgs, clap::Error> {
        SimCli::try_parse_from(std::iter::once("sim").chain(args.iter().copied())).map(|c| c.sim)
    }

    fn parse_serve(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        ServeCli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .map(|c| c.serve)
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.listen, "127.0.0.1:0");
        assert_eq!(args.symbol, ["ETHUSDT"]);
        assert_eq!(args.rate, Rate::PerSecond(10.0));
        assert_eq!((args.seed, args.server_ping_sec), (1, None));
        assert_eq!(args.market_flag.market, Market::UsdM);
        assert_eq!(args.market_flag.market.ping().0, DEFAULT_PING);
        assert_eq!(Faults::from(&args.faults), Faults::default());
        let config = SimConfig::default();
        assert_eq!(
            (
                config.symbols,
                config.rate,
                config.seed,
                config.ping_interval
            ),
            (args.symbol, args.rate, 1, DEFAULT_PING)
        );
    }

    #[test]
    fn flags_parse() {
        let args = parse(&[
            "--symbol",
            "ethusdt,BTCUSDT",
            "--symbol",
            "solusdt",
            "--rate",
            "max",
            "--seed",
            "7",
            "--server-ping-sec",
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
            "--violation-every",
            "4",
            "--violation",
            "close-code",
            "--handshake-drip-sec",
            "2",
            "--reject-snapshots",
            "1",
            "--retry-after",
            "18446744073709551615",
            "--used-weight",
            "3000",
            "--snapshot-bytes",
            "100",
            "--mute-stream",
            "ethusdt@trade,btcusdt@aggTrade",
            "--trade-gap-every",
            "7",
            "--agg-gap-every",
            "9",
            "--server-shutdown-after",
            "1.5",
        ])
        .unwrap();
        assert_eq!(args.symbol, ["ETHUSDT", "BTCUSDT", "SOLUSDT"]);
        assert_eq!(
            (args.rate, args.seed, args.server_ping_sec),
            (Rate::Max, 7, Some(Duration::from_millis(500)))
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
        assert_eq!(
            (f.violation_every, f.violation, f.handshake_drip),
            (Some(4), Violation::CloseCode, Some(Duration::from_secs(2)))
        );
        assert_eq!(
            (f.retry_after, f.used_weight, f.snapshot_bytes),
            (Some(u64::MAX), Some(3000), Some(100))
        );
        assert_eq!(f.mute_streams, ["ethusdt@trade", "btcusdt@aggTrade"]);
        assert_eq!(
            (f.trade_gap_every, f.server_shutdown_after),
            (Some(7), Some(Duration::from_millis(1500)))
        );
        assert_eq!(f.agg_gap_every, Some(9));
    }

    #[test]
    fn bad_flags_are_refused() {
        for bad in [
            &["--symbol", "ETH-USDT"][..],
            &["--symbol", "X"],
            &["--rate", "0"],
            &["--server-ping-sec", "-1"],
            &["--gap-every", "0"],
            &["--stall-sec", "1"],
            &["--reject-status", "101"],
            &["--violation", "utf-8"],
            &["--violation-every", "0"],
            &["--trade-gap-every", "0"],
            &["--agg-gap-every", "0"],
            &["--mute-stream", "eth usdt@trade"],
            &["--server-shutdown-after", "-1"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_flag_has_help() {
        let cmd = SimCli::command();
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
    fn flags_parse_with_documented_defaults() {
        let args = parse_serve(&["data/order_book"]).unwrap();
        assert_eq!(args.paths, [PathBuf::from("data/order_book")]);
        assert_eq!(
            (args.listen.as_str(), args.pace, args.server_ping_sec),
            ("127.0.0.1:0", Pace::Speed(1.0), None)
        );
        assert_eq!(args.market_flag.market, Market::UsdM);
        let args = parse_serve(&[
            "a.ndjson.gz",
            "dir",
            "--listen",
            "0.0.0.0:9000",
            "--pace",
            "max",
            "--port-file",
            "port",
            "--server-ping-sec",
            "0.5",
        ])
        .unwrap();
        assert_eq!(args.paths.len(), 2);
        assert_eq!(
            (args.listen.as_str(), args.pace, args.server_ping_sec),
            ("0.0.0.0:9000", Pace::Max, Some(Duration::from_millis(500)))
        );
        assert_eq!(args.port_file, Some(PathBuf::from("port")));
        for bad in [
            &[][..],
            &["x", "--pace", "0"],
            &["x", "--server-ping-sec", "0"],
        ] {
            assert!(parse_serve(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_flag_has_help_and_env() {
        let cmd = ServeCli::command();
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
