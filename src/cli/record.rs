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
use crate::market::listing::Filter;
use crate::market::stream::{Depth, Speed};
use crate::market::symbol::Symbol;
use crate::metrics::nats::{NatsStats, Relay};
use crate::metrics::tap::{TapStats, Tee};
use crate::recorder::{
    self, Budget, DEFAULT_QUEUE_BYTES, DEFAULT_QUEUE_EVENTS, RecordConfig, Universe,
    default_endpoint,
};
use crate::relay::publish::{PublishConfig, Publisher};
use crate::store::lock::DirLock;
use crate::util::logging::{self, LogOptions, Rotate};
use crate::util::shutdown::Shutdown;

#[derive(Debug, Clone, Args)]
pub struct RecordArgs {
    /// Symbol to record; repeatable and comma-separated (ETHUSDT,BTCUSDT). `all`: every symbol
    /// the exchange lists as trading (exchangeInfo), narrowed by --quote and --symbol-pattern,
    /// followed live: listings are subscribed, delisted symbols have their files finished.
    #[arg(long, env = "OBREC_SYMBOL", value_delimiter = ',', default_value = "ETHUSDT", value_parser = parse::symbol)]
    pub symbol: Vec<Symbol>,
    /// With --symbol all: only the symbols quoted in this asset (e.g. USDT).
    #[arg(long, env = "OBREC_QUOTE", value_name = "ASSET", value_parser = parse::asset)]
    pub quote: Option<String>,
    /// With --symbol all: only the symbols whose name matches this glob (e.g. 'BTC*', '*USDT').
    #[arg(long, env = "OBREC_SYMBOL_PATTERN", value_name = "GLOB", value_parser = parse::symbol_pattern)]
    pub symbol_pattern: Option<glob::Pattern>,
    /// With --symbol all: seconds between reads of the exchange's listing (weight 1 each).
    // Binance announces listings hours ahead: a minute is prompt, at a weight of 1 a minute
    // against the recorder's REST budget of 1,200.
    #[arg(long, env = "OBREC_UNIVERSE_REFRESH_SEC", value_name = "S", default_value = "60", value_parser = parse::seconds)]
    pub universe_refresh_sec: Duration,
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
    #[command(flatten)]
    pub market_flag: parse::MarketFlag,
    /// WebSocket endpoint of the public route (depth, bookTicker, trade), or of every stream on
    /// markets without routes; streams are read from <endpoint>/stream?streams=…. One URL that
    /// serves every stream works too. Default: the market's (usdm:
    /// wss://fstream.binance.com/public, coinm: wss://dstream.binance.com, spot:
    /// wss://stream.binance.com:9443).
    #[arg(long, env = "OBREC_ENDPOINT", value_parser = parse::ws_url)]
    pub endpoint: Option<String>,
    /// WebSocket endpoint of the market route (aggTrade, markPrice, forceOrder); by default
    /// --endpoint with /public swapped for /market, or with /market added when it has no path,
    /// else --endpoint itself.
    #[arg(long, env = "OBREC_MARKET_ENDPOINT", value_parser = parse::ws_url)]
    pub market_endpoint: Option<String>,
    /// REST endpoint for depth snapshots (--depth 0) and aggTrade backfills. Default: the
    /// market's (https://fapi.binance.com, https://dapi.binance.com, https://api.binance.com).
    #[arg(long, env = "OBREC_REST_ENDPOINT", value_parser = parse::http_url)]
    pub rest_endpoint: Option<String>,
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
    /// Bytes of received frames the queue between readers and the writer may hold; past it the
    /// readers wait (the exchange's sends wait in TCP buffers) instead of dropping anything.
    /// The default keeps the whole process within 256 MB.
    #[arg(long, env = "OBREC_QUEUE_BYTES", default_value_t = DEFAULT_QUEUE_BYTES as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub queue_bytes: u64,
    /// Events the queue between readers and the writer may hold: a safety cap behind
    /// --queue-bytes; past it the readers wait as well.
    #[arg(long, env = "OBREC_QUEUE", default_value_t = DEFAULT_QUEUE_EVENTS as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub queue: u64,
    /// gzip level: 1 is fastest, 9 smallest. While compression falls behind, members are written
    /// at level 1, then stored (level 0), until it catches up.
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

/// What `--symbol` takes for the whole listing.
const ALL: &str = "ALL";
/// Lines the writer may hand the NATS publisher ahead of it: about 20 s of a whole market, the
/// same slack the writer's own queue gives a slow disk, for a server failing over.
const NATS_HAND_OFF: usize = 65_536;

impl RecordArgs {
    /// `--symbol all`.
    fn wants_all(&self) -> bool {
        self.symbol.iter().any(|s| s.as_str() == ALL)
    }

    /// The run's configuration; with `--symbol all`, its symbols are left for the listing.
    pub fn config(&self) -> RecordConfig {
        let mut seen = std::collections::HashSet::new();
        let mut symbols = self.symbol.clone();
        symbols.retain(|s| seen.insert(s.clone()));
        let universe = self.wants_all().then(|| Universe {
            filter: Filter {
                quote: self.quote.clone(),
                pattern: self.symbol_pattern.clone(),
            },
            refresh: self.universe_refresh_sec,
            path: self.market_flag.market.exchange_info_path(),
        });
        if universe.is_some() {
            symbols.clear();
        }
        RecordConfig {
            symbols,
            depth: self.depth,
            speed: self.speed,
            streams: self.streams.clone(),
            market: self.market_flag.market,
            endpoint: self
                .endpoint
                .clone()
                .unwrap_or_else(|| default_endpoint(self.market_flag.market)),
            market_endpoint: self.market_endpoint.clone(),
            rest_endpoint: self
                .rest_endpoint
                .clone()
                .unwrap_or_else(|| self.market_flag.market.rest_endpoint().into()),
            data_dir: self.data_dir.clone(),
            run_for: self.run_minutes,
            print_every: self.print_interval,
            stale_after: self.stale_sec,
            ping_every: self.ping_sec,
            max_conn_age: self.max_conn_age,
            // Names carry whole seconds: a shorter period would reuse a name.
            file_period: self.file_minutes.max(Duration::from_secs(1)),
            flush_every: Duration::from_millis(self.flush_ms),
            queue: Budget {
                bytes: usize::try_from(self.queue_bytes).unwrap_or(usize::MAX),
                events: usize::try_from(self.queue).unwrap_or(usize::MAX),
            },
            gzip_level: self.gzip_level,
            metrics_addr: self.metrics_addr.clone(),
            // Started by `record`, which owns the tap's and the publisher's lifetimes.
            tap: None,
            universe,
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

/// Refuses what the market does not publish, or obrec cannot record on it yet.
fn check_market(config: &RecordConfig) -> Result<(), Error> {
    let market = config.market;
    if let Some(kind) = config.streams.kinds.iter().find(|&&k| !market.publishes(k)) {
        return Err(Error::Invalid(format!(
            "--streams {kind}: the {market} market publishes no {kind} stream"
        )));
    }
    Ok(())
}

/// Records until a signal or `--run-minutes`.
pub fn record(args: &RecordArgs, shutdown: &Shutdown) -> anyhow::Result<ExitCode> {
    let mut config = args.config();
    if args.wants_all() && args.symbol.len() > 1 {
        return Err(Error::Invalid(
            "--symbol all names every listed symbol: give no others beside it".into(),
        )
        .into());
    }
    if !args.wants_all() && (args.quote.is_some() || args.symbol_pattern.is_some()) {
        return Err(Error::Invalid(
            "--quote and --symbol-pattern narrow --symbol all: add it, or drop them".into(),
        )
        .into());
    }
    if !config.speed.serves(config.depth) {
        return Err(Error::Invalid(format!(
            "--speed {} is served for the diff stream only: use --depth 0, or a speed of 100ms, \
             250ms or 500ms",
            config.speed
        ))
        .into());
    }
    check_market(&config)?;
    // Both directories are checked before either is created: a typo in one must not leave the
    // other behind.
    usable_dir("log dir", &args.log_dir)?;
    usable_dir("data dir", &config.book_dir())?;
    if let Some(universe) = &config.universe {
        config.symbols = recorder::load_symbols(&config.rest_endpoint, universe)?;
        eprintln!(
            "recording {} symbol(s) listed as trading ({})",
            config.symbols.len(),
            universe.filter
        );
    }
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
        let publisher = Publisher::start(
            PublishConfig {
                servers,
                market: config.market,
            },
            lines,
            stats,
        )?;
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
