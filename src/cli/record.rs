//! `obrec record`: its flags, and the run they configure.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};

use super::parse;
use crate::error::Error;
use crate::exchange::tap::{DEFAULT_TAP_QUEUE, HAND_OFF_CAPACITY, Tap, TapConfig};
use crate::market::kind::Selection;
use crate::market::stream::{Depth, Speed};
use crate::market::symbol::Symbol;
use crate::metrics::nats::{NatsStats, Relay};
use crate::metrics::tap::{TapStats, Tee};
use crate::recorder::{self, DEFAULT_ENDPOINT, DEFAULT_REST_ENDPOINT, RecordConfig};
use crate::relay::publish::{PublishConfig, Publisher};
use crate::store::lock::DirLock;
use crate::util::logging::{self, LogOptions, Rotate};
use crate::util::shutdown::Shutdown;

#[derive(Debug, Clone, Args)]
pub struct RecordArgs {
    /// Symbol to record; repeatable and comma-separated (ETHUSDT,BTCUSDT).
    #[arg(long, env = "OBREC_SYMBOL", value_delimiter = ',', default_value = "ETHUSDT", value_parser = parse::symbol)]
    pub symbol: Vec<Symbol>,
    /// Book levels: 5, 10 or 20 for the partial stream; 0 for the diff stream with REST snapshots.
    #[arg(long, env = "OBREC_DEPTH", default_value = "5", value_parser = parse::depth)]
    pub depth: Depth,
    /// Update speed of the stream; 0ms (unthrottled) is the diff stream's only (--depth 0).
    #[arg(long, env = "OBREC_SPEED", default_value = "100ms",
          value_parser = PossibleValuesParser::new(["0ms", "100ms", "250ms", "500ms"]).try_map(|s| s.parse::<Speed>()))]
    pub speed: Speed,
    /// Streams to record, comma-separated: depth (as --depth and --speed say), trade, aggTrade,
    /// bookTicker, markPrice (the 1 s stream), forceOrder. Each is read from the route Binance
    /// serves it on.
    #[arg(long, env = "OBREC_STREAMS", default_value = "depth", value_parser = parse::streams)]
    pub streams: Selection,
    /// Stop after this many minutes (decimals allowed: 0.1 = 6 s); runs forever when absent.
    #[arg(long, env = "OBREC_RUN_MINUTES", value_parser = parse::minutes_or_zero)]
    pub run_minutes: Option<Duration>,
    /// WebSocket endpoint of the public route (depth, bookTicker, trade); streams are read from
    /// <endpoint>/stream?streams=…. One URL that serves every stream works too.
    #[arg(long, env = "OBREC_ENDPOINT", default_value = DEFAULT_ENDPOINT, value_parser = parse::ws_url)]
    pub endpoint: String,
    /// WebSocket endpoint of the market route (aggTrade, markPrice, forceOrder); by default
    /// --endpoint with /public swapped for /market, or with /market added when it has no path,
    /// else --endpoint itself.
    #[arg(long, env = "OBREC_MARKET_ENDPOINT", value_parser = parse::ws_url)]
    pub market_endpoint: Option<String>,
    /// REST endpoint for depth snapshots (--depth 0).
    #[arg(long, env = "OBREC_REST_ENDPOINT", default_value = DEFAULT_REST_ENDPOINT, value_parser = parse::http_url)]
    pub rest_endpoint: String,
    /// Data directory: files and metrics.json go to <data-dir>/order_book/.
    #[arg(long, env = "OBREC_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Log directory.
    #[arg(long, env = "OBREC_LOG_DIR", default_value = "logs")]
    pub log_dir: PathBuf,
    /// Log rotation: a new file every --rotate-sec (interval) or past --max-bytes (size).
    #[arg(long, env = "OBREC_ROTATE", default_value = "interval",
          value_parser = PossibleValuesParser::new(["interval", "size"])
              .map(|s| if s == "size" { Rotate::Size } else { Rotate::Interval }))]
    pub rotate: Rotate,
    /// Seconds between log rotations with --rotate interval.
    #[arg(long, env = "OBREC_ROTATE_SEC", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub rotate_sec: u64,
    /// Largest log file with --rotate size.
    #[arg(long, env = "OBREC_MAX_BYTES", default_value_t = 5_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_bytes: u64,
    /// Rotated log files to keep.
    #[arg(long, env = "OBREC_BACKUPS", default_value_t = 7)]
    pub backups: usize,
    /// Seconds between SUMMARY lines and metrics.json refreshes.
    #[arg(long, env = "OBREC_PRINT_INTERVAL", default_value = "10", value_parser = parse::seconds)]
    pub print_interval: Duration,
    /// Replace a connection that delivered no data for this many seconds.
    #[arg(long, env = "OBREC_STALE_SEC", default_value = "10", value_parser = parse::seconds)]
    pub stale_sec: Duration,
    /// Seconds between client pings; a missing pong replaces the connection.
    #[arg(long, env = "OBREC_PING_SEC", default_value = "20", value_parser = parse::seconds)]
    pub ping_sec: Duration,
    /// Replace a connection this old (before Binance's 24 h cut), opening the new one first.
    #[arg(long, env = "OBREC_MAX_CONN_AGE", default_value = "23h30m", value_parser = parse::duration)]
    pub max_conn_age: Duration,
    /// Minutes per data file; files start on UTC-aligned boundaries.
    #[arg(long, env = "OBREC_FILE_MINUTES", default_value = "60", value_parser = parse::minutes)]
    pub file_minutes: Duration,
    /// Most milliseconds received data may sit only in memory before it is written.
    #[arg(long, env = "OBREC_FLUSH_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub flush_ms: u64,
    /// Capacity of the queue between readers and the writer, in events.
    #[arg(long, env = "OBREC_QUEUE", default_value_t = 65536, value_parser = clap::value_parser!(u64).range(1..))]
    pub queue: u64,
    /// gzip level: 1 is fastest, 9 smallest.
    #[arg(long, env = "OBREC_GZIP_LEVEL", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub gzip_level: u32,
    /// Serve Prometheus metrics on http://ADDR/metrics and a health check on /healthz
    /// (e.g. 127.0.0.1:9464; port 0 picks a free port, printed at start).
    #[arg(long, env = "OBREC_METRICS_ADDR", value_name = "ADDR", value_parser = parse::socket_addr)]
    pub metrics_addr: Option<String>,
    /// Serve every recorded stream live to local clients, as Binance would (WebSocket streams,
    /// REST depth from the live book with --depth 0, /status), on ws://ADDR (e.g.
    /// 127.0.0.1:9443; port 0 picks a free port, printed at start). Keep it on loopback.
    #[arg(long, env = "OBREC_TAP", value_name = "ADDR", value_parser = parse::socket_addr)]
    pub tap: Option<String>,
    /// Frames a tap client may fall behind before it is cut.
    #[arg(long, env = "OBREC_TAP_QUEUE", default_value_t = DEFAULT_TAP_QUEUE as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub tap_queue: u64,
    /// Also publish every recorded line to the NATS JetStream stream OBREC (created when
    /// missing), on these servers (nats://host:port, comma-separated); the stream stores an event
    /// once however many recorders publish it. Publishing never holds up the files.
    #[arg(long, env = "OBREC_NATS", value_name = "URL", value_delimiter = ',', value_parser = parse::nats_url)]
    pub nats: Vec<String>,
    /// Lines that may wait for the NATS publisher (a server failing over, a slow link) before
    /// further ones are dropped for NATS (the files keep them).
    #[arg(long, env = "OBREC_NATS_QUEUE", default_value_t = NATS_HAND_OFF as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub nats_queue: u64,
    /// Log filter: error, warn, info, debug (per message), trace; or a RUST_LOG-style spec.
    #[arg(long, env = "OBREC_LOG_LEVEL", default_value = "info", value_parser = parse::log_level)]
    pub log_level: String,
}

/// Lines the writer may hand the NATS publisher ahead of it: about 20 s of a whole market, the
/// same slack the writer's own queue gives a slow disk, for a server failing over.
const NATS_HAND_OFF: usize = 65_536;

impl RecordArgs {
    pub fn config(&self) -> RecordConfig {
        let mut seen = std::collections::HashSet::new();
        let mut symbols = self.symbol.clone();
        symbols.retain(|s| seen.insert(s.clone()));
        RecordConfig {
            symbols,
            depth: self.depth,
            speed: self.speed,
            streams: self.streams.clone(),
            endpoint: self.endpoint.clone(),
            market_endpoint: self.market_endpoint.clone(),
            rest_endpoint: self.rest_endpoint.clone(),
            data_dir: self.data_dir.clone(),
            run_for: self.run_minutes,
            print_every: self.print_interval,
            stale_after: self.stale_sec,
            ping_every: self.ping_sec,
            max_conn_age: self.max_conn_age,
            // Names carry whole seconds: a shorter period would reuse a name.
            file_period: self.file_minutes.max(Duration::from_secs(1)),
            flush_every: Duration::from_millis(self.flush_ms),
            queue: usize::try_from(self.queue).unwrap_or(usize::MAX),
            gzip_level: self.gzip_level,
            metrics_addr: self.metrics_addr.clone(),
            // Started by `record`, which owns the tap's and the publisher's lifetimes.
            tap: None,
            nats: None,
        }
    }

    pub fn log_options(&self) -> LogOptions {
        LogOptions {
            dir: self.log_dir.clone(),
            basename: self.symbol.first().map_or("obrec".into(), Symbol::lower),
            rotate: self.rotate,
            rotate_every: Duration::from_secs(self.rotate_sec),
            max_bytes: self.max_bytes,
            backups: self.backups,
            level: self.log_level.clone(),
        }
    }
}

/// Records until a signal or `--run-minutes`.
pub fn record(args: &RecordArgs, shutdown: &Shutdown) -> anyhow::Result<ExitCode> {
    let mut config = args.config();
    if !config.speed.serves(config.depth) {
        return Err(Error::Invalid(format!(
            "--speed {} is served for the diff stream only: use --depth 0, or a speed of 100ms, \
             250ms or 500ms",
            config.speed
        ))
        .into());
    }
    // Both directories are checked before either is created: a typo in one must not leave the
    // other behind.
    usable_dir("log dir", &args.log_dir)?;
    usable_dir("data dir", &config.book_dir())?;
    let lock = config.preflight()?;
    let _log = logging::to_files(&args.log_options())?;
    let publisher = if args.nats.is_empty() {
        None
    } else {
        let stats = Arc::new(NatsStats::default());
        let capacity = usize::try_from(args.nats_queue).unwrap_or(usize::MAX);
        let (relay, lines) = Relay::new(capacity, Arc::clone(&stats));
        let servers = args.nats.clone();
        log::info!("publishing to nats {}", servers.join(","));
        let publisher = Publisher::start(PublishConfig { servers }, lines, stats)?;
        config.nats = Some(relay);
        Some(publisher)
    };
    // The run owns the config and with it the hand-off's sender: once it is over, the publisher
    // sees the hand-off close, sends what is left and ends.
    let recorded = record_with_tap(args, config, &lock, shutdown);
    if let Some(publisher) = publisher {
        publisher.join();
    }
    recorded?;
    Ok(ExitCode::SUCCESS)
}

/// Records, serving the tap too with `--tap`.
fn record_with_tap(
    args: &RecordArgs,
    config: RecordConfig,
    lock: &DirLock,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let Some(listen) = &args.tap else {
        recorder::run(&config, lock, shutdown).context("recording failed")?;
        return Ok(());
    };
    let stats = Arc::new(TapStats::default());
    let (tee, items) = Tee::new(HAND_OFF_CAPACITY, Arc::clone(&stats));
    let tap = TapConfig {
        queue: usize::try_from(args.tap_queue).unwrap_or(usize::MAX),
        ..TapConfig::new(listen.clone(), config.stream_names())
    };
    let tap = Tap::start(tap, items, stats).map_err(|cause| Error::Bind {
        addr: listen.clone(),
        cause,
    })?;
    println!("tap on {}", tap.ws_url());
    log::info!("tap on {}", tap.ws_url());
    let config = RecordConfig {
        tap: Some(tee),
        ..config
    };
    let recorded = recorder::run(&config, lock, shutdown);
    tap.shutdown();
    recorded.context("recording failed")?;
    Ok(())
}

/// Fails with a usage error when `dir` cannot be used or created, creating nothing: its nearest
/// existing ancestor must be a directory in which a file can be made.
pub(super) fn usable_dir(what: &str, dir: &Path) -> Result<(), Error> {
    let invalid = |why: String| Error::Invalid(format!("{what} {}: {why}", dir.display()));
    let mut existing = dir;
    while !existing.as_os_str().is_empty() && fs::symlink_metadata(existing).is_err() {
        existing = existing.parent().unwrap_or(Path::new(""));
    }
    let existing = if existing.as_os_str().is_empty() {
        Path::new(".")
    } else {
        existing
    };
    match fs::metadata(existing) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(invalid(format!(
                "{} is not a directory",
                existing.display()
            )));
        }
        Err(e) => return Err(invalid(e.to_string())),
    }
    // Permission bits do not say what root or an ACL allows; making a file does.
    let probe = existing.join(format!(".obrec-probe-{}", std::process::id()));
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(invalid(format!(
            "{} is not writable: {e}",
            existing.display()
        ))),
    }
}
