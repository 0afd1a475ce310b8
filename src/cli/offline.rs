//! The offline commands' flags: `replay`, `export`, `import`, `health` and `demo`.

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};

use super::{parse, passed};
use crate::metrics::health::{self, HealthCheck};
use crate::offline::interop;
use crate::offline::replay::{self, BookOutput};
use crate::store::names;
use crate::store::staged::write_atomic;

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

/// `obrec replay`: prints the summary and damaged files; exit 0 when the run passed (every file
/// whole and, with `--strict`, no break).
pub fn replay(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let files = names::expand(&args.paths)?;
    let stdout = io::stdout();
    let mut lock = io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let books = args.book.map(|levels| BookOutput {
        levels: usize::from(levels),
        writer: &mut lock,
    });
    let book_mode = books.is_some();
    let report = replay::replay_with(&files, books)?;
    drop(lock);
    for f in report.files.iter().filter(|f| !f.complete) {
        eprintln!("{}: {}", f.file, f.error.as_deref().unwrap_or("incomplete"));
    }
    for b in &report.breaks {
        eprintln!(
            "break: {} line {} {}: expected pu={}, got pu={}",
            b.file, b.line, b.symbol, b.expected_pu, b.got_pu
        );
    }
    let summary = format!(
        "files={} {}",
        report.files.len(),
        report.metrics.summary_line()
    );
    // With --book, stdout carries the books; the summary goes beside the errors.
    if book_mode {
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    if let Some(path) = &args.json {
        let body = serde_json::to_vec_pretty(&report).expect("report serialises");
        write_atomic(path, &body)?;
    }
    let breaks_fail = args.strict && !report.breaks.is_empty();
    Ok(passed(report.all_complete() && !breaks_fail))
}

/// Formats `export` writes and `import` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// hftbacktest's raw feed files (`<19-digit ns> <json>` per line, gzip, one symbol per
    /// file), read by hftbacktest.data.utils.binancefutures.convert.
    Hftbacktest,
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
    pub format: Format,
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
    pub format: Format,
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

/// `obrec export`: exit 0 when every input was read whole.
pub fn export(args: &ExportArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let Format::Hftbacktest = args.format;
    let outcome = interop::export(&args.paths, &args.output, args.gzip_level)?;
    Ok(passed(outcome.print("exported", started)))
}

/// `obrec import`: exit 0 when every input was read whole.
pub fn import(args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let Format::Hftbacktest = args.format;
    let outcome = interop::import(&args.files, &args.output, args.gzip_level)?;
    Ok(passed(outcome.print("imported", started)))
}

/// `obrec health`. Every threshold defaults to [`HealthCheck::default`].
#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// The recorder's metrics file.
    #[arg(long, env = "OBREC_METRICS", default_value_os_t = HealthCheck::default().metrics)]
    pub metrics: PathBuf,
    /// Oldest acceptable metrics.json, in seconds (the recorder rewrites it every print interval).
    #[arg(long, env = "OBREC_MAX_AGE", default_value_t = HealthCheck::default().max_age)]
    pub max_age: f64,
    /// Longest acceptable silence of the feed: age of the newest recorded event, in seconds.
    #[arg(long, env = "OBREC_MAX_SILENCE", default_value_t = HealthCheck::default().max_silence)]
    pub max_silence: f64,
    /// Lowest acceptable receive rate over the last interval, events/s.
    #[arg(long, env = "OBREC_MIN_RATE", default_value_t = HealthCheck::default().min_rate)]
    pub min_rate: f64,
    /// Highest acceptable p50 event latency over the last interval, ms.
    #[arg(long, env = "OBREC_MAX_P50", default_value_t = HealthCheck::default().max_p50)]
    pub max_p50: f64,
    /// Highest acceptable p95 event latency, ms.
    #[arg(long, env = "OBREC_MAX_P95", default_value_t = HealthCheck::default().max_p95)]
    pub max_p95: f64,
    /// Highest acceptable p99 event latency, ms.
    #[arg(long, env = "OBREC_MAX_P99", default_value_t = HealthCheck::default().max_p99)]
    pub max_p99: f64,
    /// How far back breaks, resyncs, reconnects and drops count (at most 24h; the recorder's
    /// /healthz uses the default).
    #[arg(long, env = "OBREC_WINDOW", default_value = "15m", value_parser = parse::duration)]
    pub window: Duration,
    /// Most continuity breaks within the window.
    #[arg(long, env = "OBREC_MAX_BREAKS", default_value_t = HealthCheck::default().max_breaks)]
    pub max_breaks: u64,
    /// Most resyncs within the window.
    #[arg(long, env = "OBREC_MAX_RESYNCS", default_value_t = HealthCheck::default().max_resyncs)]
    pub max_resyncs: u64,
    /// Most reconnects within the window.
    #[arg(long, env = "OBREC_MAX_RECONNECTS", default_value_t = HealthCheck::default().max_reconnects)]
    pub max_reconnects: u64,
    /// Most queue drops within the window.
    #[arg(long, env = "OBREC_MAX_DROPS", default_value_t = HealthCheck::default().max_drops)]
    pub max_drops: u64,
}

/// `obrec health`: prints `healthy` (exit 0) or `unhealthy: <reason>` (exit 1).
pub fn health(args: &HealthArgs) -> anyhow::Result<ExitCode> {
    let check = HealthCheck {
        metrics: args.metrics.clone(),
        max_age: args.max_age,
        max_silence: args.max_silence,
        min_rate: args.min_rate,
        max_p50: args.max_p50,
        max_p95: args.max_p95,
        max_p99: args.max_p99,
        window: args.window,
        max_breaks: args.max_breaks,
        max_resyncs: args.max_resyncs,
        max_reconnects: args.max_reconnects,
        max_drops: args.max_drops,
    };
    match health::check(&check, std::time::SystemTime::now())? {
        None => {
            println!("healthy");
            Ok(ExitCode::SUCCESS)
        }
        Some(reason) => {
            println!("unhealthy: {reason}");
            Ok(ExitCode::FAILURE)
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Seconds to record.
    #[arg(long, env = "OBREC_SECONDS", default_value = "5", value_parser = parse::positive)]
    pub seconds: f64,
    /// Where the demo writes its data and logs (a fresh temporary directory when absent).
    #[arg(long, env = "OBREC_DIR")]
    pub dir: Option<PathBuf>,
}
