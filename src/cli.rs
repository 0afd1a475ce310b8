//! Command-line flags. Every flag also reads `OBREC_<FLAG>` from the environment, so a
//! supervisor's env file can configure a run.
//!
//! Values are validated while parsing, so bad input is a usage error (exit 2) before anything is
//! created on disk.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::logging::{LogOptions, Rotate};
use crate::recorder::{RecordConfig, Speed};

/// Records Binance USD-M futures order-book streams to gzip NDJSON, proves their continuity,
/// reports live health metrics, and replays recordings offline.
#[derive(Debug, Parser)]
#[command(name = "obrec", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// With no subcommand, obrec records (the same flags as `obrec record`).
    #[command(flatten)]
    pub record: RecordArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Record live depth streams (the default command).
    Record(Box<RecordArgs>),
    /// Verify and summarise recordings: continuity, latency, damaged files.
    Replay(ReplayArgs),
    /// Run a local Binance USD-M look-alike exchange, with fault injection.
    Sim(Box<crate::sim::SimArgs>),
    /// Play recordings back as a live Binance-compatible stream, paced as recorded.
    ///
    /// Same paths, SUBSCRIBE handling and REST endpoints as `obrec sim`. Every connection plays
    /// the recording from the beginning; a subscription gets the recorded events of its symbol and
    /// kind (diff `<sym>@depth…` or partial `<sym>@depth<N>…`, whatever speed was recorded) under
    /// the name it subscribed, payloads byte for byte; the connection is closed (1000) after the
    /// last event. /fapi/v1/depth answers the recorded snapshot in force at the playback position.
    Serve(crate::serve::ServeArgs),
    /// Record a few seconds from an embedded simulator and summarise them: no network needed.
    Demo(DemoArgs),
    /// Exit 0 when a recorder's metrics.json is fresh and inside the alert thresholds, else 1.
    Health(crate::health::HealthArgs),
    /// Convert recordings to hftbacktest's raw feed files (for its binancefutures.convert).
    ///
    /// Writes one gzip file per symbol and UTC day of receipt, `<symbol>_<YYYYMMDD>.gz`, each line
    /// `<19-digit receive ns> <message>`: depth events in their combined-stream envelope (payload
    /// byte-exact), REST snapshots as their raw body, merged in receive order; a connection change is
    /// a `{"stream":"_meta","data":{"e":"connection","conn":N}}` line, which the converter ignores.
    Export(ExportArgs),
    /// Convert hftbacktest's raw feed files into obrec recordings (depth and snapshots).
    ///
    /// Writes each file's depth events as obrec depth lines and its REST snapshots as snapshot lines,
    /// under <DIR>/order_book/, named like the recorder's files after their first receipt second.
    /// `conn` is 1, or what the file's `_meta` connection lines say; `latency_pipeline_ms` is 0.000
    /// (the file does not record it). bookTicker, trade and other streams are counted and left out.
    Import(ImportArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RecordArgs {
    /// Symbol to record; repeatable and comma-separated (ETHUSDT,BTCUSDT).
    #[arg(long, env = "OBREC_SYMBOL", value_delimiter = ',', default_value = "ETHUSDT", value_parser = parse_symbol)]
    pub symbol: Vec<String>,
    /// Book levels: 5, 10 or 20 for the partial stream; 0 for the diff stream with REST snapshots.
    #[arg(long, env = "OBREC_DEPTH", default_value_t = 5, value_parser = parse_depth)]
    pub depth: u8,
    /// Update speed of the stream.
    #[arg(long, env = "OBREC_SPEED", value_enum, default_value = "100ms")]
    pub speed: Speed,
    /// Stop after this many minutes (decimals allowed: 0.1 = 6 s); runs forever when absent.
    #[arg(long, env = "OBREC_RUN_MINUTES", value_parser = parse_non_negative)]
    pub run_minutes: Option<f64>,
    /// WebSocket endpoint; streams are read from <endpoint>/stream?streams=….
    #[arg(long, env = "OBREC_ENDPOINT", default_value = "wss://fstream.binance.com/public", value_parser = parse_ws_url)]
    pub endpoint: String,
    /// REST endpoint for depth snapshots (--depth 0).
    #[arg(long, env = "OBREC_REST_ENDPOINT", default_value = "https://fapi.binance.com", value_parser = parse_http_url)]
    pub rest_endpoint: String,
    /// Data directory: files and metrics.json go to <data-dir>/order_book/.
    #[arg(long, env = "OBREC_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Log directory.
    #[arg(long, env = "OBREC_LOG_DIR", default_value = "logs")]
    pub log_dir: PathBuf,
    /// Log rotation: a new file every --rotate-sec (interval) or past --max-bytes (size).
    #[arg(long, env = "OBREC_ROTATE", value_enum, default_value = "interval")]
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
    #[arg(long, env = "OBREC_PRINT_INTERVAL", default_value = "10", value_parser = parse_positive)]
    pub print_interval: f64,
    /// Replace a connection that delivered no data for this many seconds.
    #[arg(long, env = "OBREC_STALE_SEC", default_value = "10", value_parser = parse_positive)]
    pub stale_sec: f64,
    /// Seconds between client pings; a missing pong replaces the connection.
    #[arg(long, env = "OBREC_PING_SEC", default_value = "20", value_parser = parse_positive)]
    pub ping_sec: f64,
    /// Replace a connection this old (before Binance's 24 h cut), opening the new one first.
    #[arg(long, env = "OBREC_MAX_CONN_AGE", default_value = "23h30m", value_parser = parse_duration)]
    pub max_conn_age: Duration,
    /// Minutes per data file; files start on UTC-aligned boundaries.
    #[arg(long, env = "OBREC_FILE_MINUTES", default_value = "60", value_parser = parse_positive)]
    pub file_minutes: f64,
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
    #[arg(long, env = "OBREC_METRICS_ADDR", value_name = "ADDR", value_parser = parse_socket_addr)]
    pub metrics_addr: Option<String>,
    /// Log filter: error, warn, info, debug (per message), trace; or a RUST_LOG-style spec.
    #[arg(long, env = "OBREC_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

impl RecordArgs {
    pub fn config(&self) -> RecordConfig {
        let secs = Duration::from_secs_f64;
        let mut symbols = self.symbol.clone();
        dedup_keep_order(&mut symbols);
        RecordConfig {
            symbols,
            depth: self.depth,
            speed: self.speed,
            endpoint: self.endpoint.clone(),
            rest_endpoint: self.rest_endpoint.clone(),
            data_dir: self.data_dir.clone(),
            run_for: self.run_minutes.map(|m| secs(m * 60.0)),
            print_every: secs(self.print_interval),
            stale_after: secs(self.stale_sec),
            ping_every: secs(self.ping_sec),
            max_conn_age: self.max_conn_age,
            file_period: secs(self.file_minutes * 60.0).max(Duration::from_secs(1)),
            flush_every: Duration::from_millis(self.flush_ms),
            queue: usize::try_from(self.queue).unwrap_or(usize::MAX),
            gzip_level: self.gzip_level,
            metrics_addr: self.metrics_addr.clone(),
        }
    }

    pub fn log_options(&self) -> LogOptions {
        LogOptions {
            dir: self.log_dir.clone(),
            basename: self
                .symbol
                .first()
                .map_or("obrec".into(), |s| s.to_ascii_lowercase()),
            rotate: self.rotate,
            rotate_every: Duration::from_secs(self.rotate_sec),
            max_bytes: self.max_bytes,
            backups: self.backups,
            level: self.log_level.clone(),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// Recordings: files, directories (their depth files) or glob patterns; read in name order.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Also write a report in the metrics.json schema, with every break and connection change.
    #[arg(long, env = "OBREC_JSON")]
    pub json: Option<PathBuf>,
    /// Exit 1 when a continuity break was found, not only when a file is damaged.
    #[arg(long, env = "OBREC_STRICT")]
    pub strict: bool,
    /// Rebuild each symbol's book and print one line per event with its top N levels
    /// (diff streams are synced from the recorded snapshot files).
    #[arg(long, env = "OBREC_BOOK", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub book: Option<u16>,
}

/// `obrec export`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Then, in Python:
  from hftbacktest.data.utils import binancefutures
  data = binancefutures.convert('out/btcusdt_20240808.gz', output_filename='btcusdt_20240808.npz')

Exit status: 0 when every input was read whole; 1 when one was damaged (what came before the \
damage is exported) or a file cannot be written; 2 for bad usage or an output file that exists \
(nothing is written).")]
pub struct ExportArgs {
    /// Format to write.
    #[arg(long, env = "OBREC_FORMAT", value_enum)]
    pub format: crate::interop::Format,
    /// Recordings: files, directories (their depth and snapshot files) or glob patterns, read in
    /// name order. Include the snapshot files: hftbacktest's book starts from them.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Directory for the exported files (created when missing); existing files are never
    /// overwritten.
    #[arg(short, long, env = "OBREC_OUTPUT", value_name = "DIR")]
    pub output: PathBuf,
    /// gzip level: 1 is fastest, 9 smallest.
    #[arg(long, env = "OBREC_GZIP_LEVEL", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub gzip_level: u32,
}

/// `obrec import`.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Then: obrec replay DIR/order_book (add --book N to rebuild the book).

Exit status: 0 when every input was read whole; 1 when one was damaged (what came before the \
damage is imported) or a file cannot be written; 2 for bad usage, an input that is not an \
hftbacktest USD-M futures file, or an output file that exists (nothing is written)."
)]
pub struct ImportArgs {
    /// Format to read.
    #[arg(long, env = "OBREC_FORMAT", value_enum)]
    pub format: crate::interop::Format,
    /// hftbacktest raw files (gzip, one symbol each) or glob patterns, read in name order.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Data directory: files go to <DIR>/order_book/ (created when missing); existing files are
    /// never overwritten.
    #[arg(short, long, env = "OBREC_OUTPUT", value_name = "DIR")]
    pub output: PathBuf,
    /// gzip level: 1 is fastest, 9 smallest.
    #[arg(long, env = "OBREC_GZIP_LEVEL", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub gzip_level: u32,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Seconds to record.
    #[arg(long, env = "OBREC_SECONDS", default_value = "5", value_parser = parse_positive)]
    pub seconds: f64,
    /// Where the demo writes its data and logs (a fresh temporary directory when absent).
    #[arg(long, env = "OBREC_DIR")]
    pub dir: Option<PathBuf>,
}

fn dedup_keep_order(items: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    items.retain(|s| seen.insert(s.clone()));
}

/// Upper-cases and checks `^[A-Z0-9]{2,20}$`: a symbol becomes part of file names and URLs.
pub fn parse_symbol(s: &str) -> Result<String, String> {
    let upper = s.trim().to_ascii_uppercase();
    let ok = (2..=20).contains(&upper.len())
        && upper
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if ok {
        Ok(upper)
    } else {
        Err(format!(
            "{s:?} is not a symbol (2 to 20 letters and digits, like ETHUSDT)"
        ))
    }
}

fn parse_depth(s: &str) -> Result<u8, String> {
    match s.trim() {
        "0" => Ok(0),
        "5" => Ok(5),
        "10" => Ok(10),
        "20" => Ok(20),
        _ => Err(format!(
            "{s:?} is not a depth: use 5, 10, 20 (partial) or 0 (diff + snapshots)"
        )),
    }
}

fn parse_number(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("{s:?} is not a number"))
}

fn parse_non_negative(s: &str) -> Result<f64, String> {
    parse_number(s).and_then(|v| {
        if v >= 0.0 {
            Ok(v)
        } else {
            Err(format!("{s} is negative"))
        }
    })
}

fn parse_positive(s: &str) -> Result<f64, String> {
    parse_number(s).and_then(|v| {
        if v > 0.0 {
            Ok(v)
        } else {
            Err(format!("{s} must be above zero"))
        }
    })
}

/// `23h30m`, `90s`, `1h` (humantime), or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = match parse_positive(s) {
        Ok(secs) => Duration::from_secs_f64(secs),
        Err(_) => humantime::parse_duration(s.trim())
            .map_err(|e| format!("{s:?} is not a duration: {e}"))?,
    };
    if d.is_zero() {
        return Err(format!("{s} must be above zero"));
    }
    Ok(d)
}

fn parse_socket_addr(s: &str) -> Result<String, String> {
    s.trim()
        .parse::<std::net::SocketAddr>()
        .map(|a| a.to_string())
        .map_err(|_| format!("{s:?} is not an address like 127.0.0.1:9464"))
}

fn parse_ws_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    if (s.starts_with("wss://") || s.starts_with("ws://")) && s.len() > "wss://".len() {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a ws:// or wss:// url"))
    }
}

fn parse_http_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    if (s.starts_with("https://") || s.starts_with("http://")) && s.len() > "https://".len() {
        Ok(s.trim_end_matches('/').to_string())
    } else {
        Err(format!("{s:?} is not an http:// or https:// url"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_are_upper_cased_and_checked() {
        assert_eq!(parse_symbol("ethusdt"), Ok("ETHUSDT".into()));
        assert_eq!(parse_symbol("1000PEPEUSDT"), Ok("1000PEPEUSDT".into()));
        for bad in [
            "../x",
            "eth usdt",
            "E",
            "",
            "ETH-USDT",
            "ABCDEFGHIJKLMNOPQRSTU",
        ] {
            assert!(parse_symbol(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_parse_and_reject_bad_values() {
        let cli = Cli::try_parse_from([
            "obrec",
            "--symbol",
            "ethusdt,btcusdt",
            "--symbol",
            "ETHUSDT",
            "--run-minutes",
            "0.1",
        ])
        .unwrap();
        let config = cli.record.config();
        assert_eq!(config.symbols, ["ETHUSDT", "BTCUSDT"]);
        assert_eq!(config.run_for, Some(Duration::from_secs(6)));
        assert_eq!(config.max_conn_age, Duration::from_secs(23 * 3600 + 1800));
        for bad in [
            &["obrec", "--depth", "7"][..],
            &["obrec", "--run-minutes", "-1"],
            &["obrec", "--symbol", "../x"],
            &["obrec", "--endpoint", "http://x"],
            &["obrec", "--gzip-level", "0"],
            &["obrec", "--max-conn-age", "soon"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn export_and_import_need_a_format_an_output_and_inputs() {
        let cli = Cli::try_parse_from([
            "obrec",
            "export",
            "--format",
            "hftbacktest",
            "data/order_book",
            "-o",
            "out",
        ])
        .unwrap();
        let Some(Command::Export(args)) = cli.command else {
            panic!()
        };
        assert_eq!(args.format, crate::interop::Format::Hftbacktest);
        assert_eq!(args.output, PathBuf::from("out"));
        assert_eq!(args.gzip_level, 3);
        let cli = Cli::try_parse_from([
            "obrec",
            "import",
            "--format=hftbacktest",
            "a.gz",
            "b.gz",
            "-o",
            "d",
        ])
        .unwrap();
        let Some(Command::Import(args)) = cli.command else {
            panic!()
        };
        assert_eq!(args.files, [PathBuf::from("a.gz"), PathBuf::from("b.gz")]);
        for bad in [
            &["obrec", "export", "data", "-o", "out"][..],
            &["obrec", "export", "--format", "hftbacktest", "data"],
            &["obrec", "export", "--format", "hftbacktest", "-o", "out"],
            &["obrec", "export", "--format", "tardis", "data", "-o", "out"],
            &[
                "obrec",
                "import",
                "--format",
                "hftbacktest",
                "a.gz",
                "-o",
                "d",
                "--gzip-level",
                "0",
            ],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn subcommand_and_plain_form_are_the_same() {
        let a = Cli::try_parse_from(["obrec", "record", "--depth", "10"]).unwrap();
        let Some(Command::Record(args)) = a.command else {
            panic!()
        };
        assert_eq!(args.depth, 10);
        let b = Cli::try_parse_from(["obrec", "--depth", "10"]).unwrap();
        assert!(b.command.is_none());
        assert_eq!(b.record.depth, 10);
    }
}
