//! The offline commands' flags: `replay`, `report`, `export`, `import`, `merge`, `health` and
//! `demo`.
//!
//! Each stops between lines on SIGINT, SIGTERM or SIGHUP, writes nothing under a final name, and
//! exits [`INTERRUPTED`]: a cut-short run is never mistaken for a finished one.

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};

use super::{parse, passed};
use crate::demo::{self, DemoEnd};
use crate::market::kind::Kind;
use crate::metrics::health::{self, HealthCheck};
use crate::offline::console::{Console, warn};
use crate::offline::interop;
use crate::offline::merge::{self, MergeReport};
use crate::offline::replay::{self, BookOutput, ReplayReport, Stopped};
use crate::offline::report;
use crate::store::names::{no_recordings, recordings};
use crate::store::staged::write_atomic;
use crate::util::clock::push_iso_millis;
use crate::util::shutdown::Shutdown;

/// The exit status of a command a signal stopped before it finished: the shell's status for
/// Ctrl-C, whichever signal it was, so that scripts tell it from success (0), a finding (1) and bad
/// usage (2).
pub const INTERRUPTED: u8 = 130;

/// The `--json` path that means standard output.
const STDOUT_NAME: &str = "-";

/// Says on stderr that `what` was cut short, and gives the [`INTERRUPTED`] status.
fn interrupted(what: &str) -> ExitCode {
    warn(format_args!("obrec: interrupted: {what}"));
    ExitCode::from(INTERRUPTED)
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// Recordings: files, directories (their recordings of every kind; a data directory's
    /// order_book/) or glob patterns; read in name order. Trade, aggTrade, bookTicker, markPrice
    /// and forceOrder files are checked per symbol and kind.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Also write a report in the metrics.json schema, with every break and connection change
    /// (`-`: on stdout, the summary going to stderr).
    #[arg(long, env = "OBREC_JSON")]
    pub json: Option<PathBuf>,
    /// Exit 1 when a continuity break was found (beside the book: one no backfill closed), not
    /// only when a file is damaged.
    #[arg(long, env = "OBREC_STRICT")]
    pub strict: bool,
    /// Rebuild each symbol's book and print one line per event with its top N levels
    /// (diff streams are synced from the recorded snapshot files); the trades of trade and
    /// aggTrade files among the inputs are printed between them, in receipt order.
    #[arg(long, env = "OBREC_BOOK", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub book: Option<u16>,
}

/// `obrec replay`: prints a line per symbol, the SUMMARY and damaged files; exit 0 when the run
/// passed (every file whole and, with `--strict`, no break), [`INTERRUPTED`] when a signal cut it
/// short (no `--json` report then).
pub fn replay(args: &ReplayArgs, shutdown: &Shutdown) -> anyhow::Result<ExitCode> {
    let files = recordings(&args.paths)?;
    let stdout = io::stdout();
    let mut lock = io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let books = args.book.map(|levels| BookOutput {
        levels: usize::from(levels),
        writer: &mut lock,
    });
    let book_mode = books.is_some();
    let report = replay::replay_with(&files, books, shutdown)?;
    // Dropping flushes what is buffered, ignoring a reader gone: it has what it wanted.
    drop(lock);
    if report.stopped == Some(Stopped::ReaderGone) {
        return Ok(ExitCode::SUCCESS);
    }
    let read_all = report.stopped.is_none();
    if read_all && !report.has_events() && report.all_complete() {
        return Err(no_recordings(&args.paths).into());
    }
    for f in report.files.iter().filter(|f| !f.complete) {
        warn(format_args!(
            "{}: {}",
            f.file,
            f.error.as_deref().unwrap_or("incomplete")
        ));
    }
    for b in &report.breaks {
        warn(format_args!(
            "break: {} line {} {}: expected pu={}, got pu={}",
            b.file, b.line, b.symbol, b.expected_pu, b.got_pu
        ));
    }
    if report.breaks_unlisted > 0 {
        warn(format_args!(
            "… and {} more breaks (the per-symbol counts below include them)",
            report.breaks_unlisted
        ));
    }
    for g in &report.kind_gaps {
        let on = if g.reconnect {
            "reconnect gap"
        } else {
            "break"
        };
        let what = if g.kind == Kind::MarkPrice.name() {
            format!("no event between E={} and E={}", g.from, g.to)
        } else {
            format!("missing ids {}..={}", g.from, g.to)
        };
        let closed = if g.filled { ", filled by backfill" } else { "" };
        warn(format_args!(
            "{on}: {} line {} {} {}: {what}{closed}",
            g.file, g.line, g.symbol, g.kind
        ));
    }
    if report.kind_gaps_unlisted > 0 {
        warn(format_args!(
            "… and {} more gaps in streams beside the book (the per-kind counts below include them)",
            report.kind_gaps_unlisted
        ));
    }
    // With --book or --json -, stdout carries those; the summary goes beside the errors.
    let json_to_stdout = args.json.as_deref() == Some(Path::new(STDOUT_NAME));
    let summary = summary_lines(&report);
    if book_mode || json_to_stdout {
        summary.iter().for_each(|l| warn(format_args!("{l}")));
    } else {
        let mut out = Console::new();
        for l in &summary {
            out.line(format_args!("{l}"))?;
        }
    }
    if !read_all {
        let what = format!(
            "{} of {} files read; the rest is not verified",
            report.files.len(),
            files.len()
        );
        return Ok(interrupted(&what));
    }
    if let Some(path) = &args.json {
        let body = serde_json::to_string_pretty(&report).expect("report serialises");
        if json_to_stdout {
            Console::new().line(format_args!("{body}"))?;
        } else {
            write_atomic(path, body.as_bytes())?;
        }
    }
    let breaks_fail = args.strict && report.has_open_breaks();
    Ok(passed(report.all_complete() && !breaks_fail))
}

/// One line per symbol, then one per series of a stream beside the book (kind by kind), the meta
/// lines passed over, and the SUMMARY (of depth) with the number of files:
///
/// ```text
/// ETHUSDT events=1234 first=2026-11-20T08:38:01.509Z last=2026-11-20T09:38:01.412Z breaks=0 resyncs=0 reconnect_gaps=1
/// trade ETHUSDT events=800 first=… last=… breaks=1 reconnect_gaps=0 duplicates=0 missing_ids=3 backfilled=3 gaps_filled=1 missing_after_backfill=0 open_breaks=0
/// serverShutdown notices: 2 (lines, one per file of each stream of the connection)
/// SUMMARY | t=3600s | msgs=1234 | … | files=3
/// ```
fn summary_lines(report: &ReplayReport) -> Vec<String> {
    let mut lines: Vec<String> = report
        .metrics
        .symbols
        .iter()
        .filter_map(|(symbol, s)| {
            let receipts = report.receipts.get(symbol)?;
            Some(format!(
                "{symbol} events={} first={} last={} breaks={} resyncs={} reconnect_gaps={}",
                s.messages,
                iso(receipts.first_ns),
                iso(receipts.last_ns),
                s.breaks,
                s.resyncs,
                s.reconnect_gaps
            ))
        })
        .collect();
    for k in &report.kinds {
        let mut line = format!(
            "{} {} events={} first={} last={} breaks={} reconnect_gaps={} duplicates={} \
             missing_ids={} backfilled={} gaps_filled={} missing_after_backfill={} open_breaks={}",
            k.kind,
            k.symbol,
            k.events,
            iso(k.first_ns),
            iso(k.last_ns),
            k.breaks,
            k.reconnect_gaps,
            k.duplicates,
            k.missing_ids,
            k.backfilled,
            k.gaps_filled,
            k.missing_after_backfill,
            k.open_breaks
        );
        if k.untracked > 0 {
            line.push_str(&format!(" untracked={}", k.untracked));
        }
        lines.push(line);
    }
    for (meta, n) in &report.meta_lines {
        lines.push(format!(
            "{meta} notices: {n} (lines, one per file of each stream of the connection)"
        ));
    }
    lines.push(format!(
        "{} | files={}",
        report.metrics.summary_line(),
        report.files.len()
    ));
    lines
}

/// Formats `export` writes and `import` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// hftbacktest's raw feed files (`<19-digit ns> <json>` per line, gzip, one symbol per
    /// file), read by hftbacktest.data.utils.binancefutures.convert.
    Hftbacktest,
    /// Tardis' normalized CSV (export only): incremental_book_L2, book_snapshot_25 and
    /// book_snapshot_5 from depth, trades from trade files (aggTrade files when a symbol has
    /// none), quotes from bookTicker; gzip, one file per dataset, symbol and UTC day.
    Tardis,
    /// The Tardis rows as typed Parquet tables (export only): book_deltas, book_snapshot_25,
    /// book_snapshot_5, trades, quotes, in <DIR>/<dataset>/symbol=<SYMBOL>/date=<YYYY-MM-DD>/
    /// (Hive partitions, as duckdb and pyarrow read them); zstd, no gzip level.
    Parquet,
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
    /// Recordings: files, directories (their depth, snapshot and stream files) or glob patterns,
    /// read in name order. Include the snapshot files: hftbacktest's book and Tardis' rows start
    /// from them.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Directory for the exported files (created when missing); existing files are never
    /// overwritten.
    #[arg(short, long, env = "OBREC_OUTPUT", value_name = "DIR")]
    pub output: PathBuf,
    /// gzip level: 1 is fastest, 9 smallest (Parquet pages are zstd-compressed instead).
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
pub fn export(args: &ExportArgs, shutdown: &Shutdown) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let outcome = match args.format {
        Format::Hftbacktest => {
            interop::export(&args.paths, &args.output, args.gzip_level, shutdown)?
        }
        Format::Tardis => {
            interop::export_tardis(&args.paths, &args.output, args.gzip_level, shutdown)?
        }
        Format::Parquet => interop::export_parquet(&args.paths, &args.output, shutdown)?,
    };
    if outcome.interrupted {
        return Ok(interrupted("export stopped, nothing written"));
    }
    Ok(passed(outcome.print("exported", started)?))
}

/// `obrec import`: exit 0 when every input was read whole.
pub fn import(args: &ImportArgs, shutdown: &Shutdown) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    if args.format != Format::Hftbacktest {
        let name = args
            .format
            .to_possible_value()
            .map(|v| v.get_name().to_string());
        return Err(crate::error::Error::Invalid(format!(
            "import --format {}: not supported (obrec imports hftbacktest files only)",
            name.unwrap_or_default()
        ))
        .into());
    }
    let outcome = interop::import(&args.files, &args.output, args.gzip_level, shutdown)?;
    if outcome.interrupted {
        return Ok(interrupted("import stopped, nothing written"));
    }
    Ok(passed(outcome.print("imported", started)?))
}

/// `obrec report`.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Exit status: 0 when every input was read whole; 1 when one was damaged (the \
page shows what came before the damage) or the page cannot be written; 2 for bad usage, inputs \
without a recording, or an output that exists (nothing is written)."
)]
pub struct ReportArgs {
    /// Recordings: files, directories (every recording in them; a data directory's order_book/)
    /// or glob patterns; read in name order.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// The HTML file to write; an existing file is never overwritten.
    #[arg(short, long, env = "OBREC_OUTPUT", value_name = "FILE")]
    pub output: PathBuf,
}

/// `obrec report`: exit 0 when every input was read whole.
pub fn report(args: &ReportArgs, shutdown: &Shutdown) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let outcome = report::report(&args.paths, &args.output, shutdown)?;
    if outcome.interrupted {
        return Ok(interrupted("report stopped, nothing written"));
    }
    Console::new().line(format_args!(
        "{}: {} series, {} events, {} faults in {:.2} s",
        args.output.display(),
        outcome.series,
        outcome.events,
        outcome.faults,
        started.elapsed().as_secs_f64()
    ))?;
    for d in &outcome.damaged {
        warn(format_args!("{d}"));
    }
    Ok(passed(outcome.damaged.is_empty()))
}

/// `obrec merge`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Then: obrec replay --strict OUT

Exit status: 0 when merged (gaps no input covers are reported, not errors); 1 when an input was \
damaged (what came before the damage is merged) or a file cannot be written; 2 for bad usage, an \
input without recordings, or an OUT that exists and is not empty (nothing is written).")]
pub struct MergeArgs {
    /// The recorders' archives: data directories (or their order_book/), files or glob patterns,
    /// one argument per recorder.
    #[arg(required = true, value_name = "DIR")]
    pub inputs: Vec<PathBuf>,
    /// The new data directory (files go to <OUT>/order_book/): must not exist, or be empty.
    #[arg(short, long, env = "OBREC_OUTPUT", value_name = "OUT")]
    pub output: PathBuf,
    /// Also write the report as JSON: per series the events of each input, written, only in one
    /// input, left out as copies, and every gap no input covers.
    #[arg(long, env = "OBREC_JSON")]
    pub json: Option<PathBuf>,
    /// gzip level: 1 is fastest, 9 smallest.
    #[arg(long, env = "OBREC_GZIP_LEVEL", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub gzip_level: u32,
}

/// `obrec merge`: one line per series, the gaps no input covers and damaged inputs on stderr,
/// and what was written.
pub fn merge(args: &MergeArgs, shutdown: &Shutdown) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let report = merge::merge(&args.inputs, &args.output, args.gzip_level, shutdown)?;
    if report.interrupted {
        return Ok(interrupted("merge stopped, nothing written"));
    }
    let mut out = Console::new();
    for line in merge_lines(&report, &args.output, started.elapsed()) {
        out.line(format_args!("{line}"))?;
    }
    for g in &report.gaps {
        warn(format_args!(
            "gap: {} {}: no input has {}, between {} and {}",
            g.symbol,
            g.kind,
            g.missing(),
            iso(g.after_ns),
            iso(g.before_ns)
        ));
    }
    if report.gaps_unlisted > 0 {
        warn(format_args!(
            "… and {} more gaps (the per-series counts above include them)",
            report.gaps_unlisted
        ));
    }
    for d in &report.damaged {
        warn(format_args!("{d}"));
    }
    if let Some(path) = &args.json {
        let body = serde_json::to_string_pretty(&report).expect("report serialises");
        write_atomic(path, body.as_bytes())?;
    }
    Ok(passed(report.damaged.is_empty()))
}

/// One line per series, then the files and the throughput:
///
/// ```text
/// depth ETHUSDT events=1300 inputs=1200+1180 only=120+100 duplicates=1080 gaps=0
/// merged 1300 events from 2 inputs (4.1 MB) into 3 files under OUT in 0.52 s: 2500 events/s, 7.9 MB/s
/// ```
fn merge_lines(report: &MergeReport, out: &Path, took: Duration) -> Vec<String> {
    let join = |counts: &[u64]| {
        let shown: Vec<String> = counts.iter().map(u64::to_string).collect();
        shown.join("+")
    };
    let mut lines: Vec<String> = report
        .series
        .iter()
        .map(|s| {
            let mut line = format!(
                "{} {} events={} inputs={} only={} duplicates={} gaps={}",
                s.kind,
                s.symbol,
                s.events,
                join(&s.inputs),
                join(&s.only),
                s.duplicates,
                s.gaps
            );
            if s.missing_ids > 0 {
                line.push_str(&format!(" missing_ids={}", s.missing_ids));
            }
            if s.went_back > 0 {
                line.push_str(&format!(" went_back={}", s.went_back));
            }
            if s.meta_lines > 0 {
                line.push_str(&format!(" meta_lines={}", s.meta_lines));
            }
            line
        })
        .collect();
    let secs = took.as_secs_f64().max(1e-9);
    let events = report.events();
    lines.push(format!(
        "merged {events} events from {} inputs ({:.1} MB) into {} files under {} in {secs:.2} \
         s: {:.0} events/s, {:.1} MB/s",
        report.inputs.len(),
        report.input_bytes as f64 / 1e6,
        report.files.len(),
        out.display(),
        events as f64 / secs,
        report.input_bytes as f64 / 1e6 / secs
    ));
    lines
}

/// A receipt in ns as `2026-11-20T08:38:01.509Z`.
fn iso(ns: u64) -> String {
    let mut out = Vec::new();
    push_iso_millis(&mut out, ns / 1_000_000);
    String::from_utf8_lossy(&out).into_owned()
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

impl HealthArgs {
    pub fn check(&self) -> HealthCheck {
        HealthCheck {
            metrics: self.metrics.clone(),
            max_age: self.max_age,
            max_silence: self.max_silence,
            min_rate: self.min_rate,
            max_p50: self.max_p50,
            max_p95: self.max_p95,
            max_p99: self.max_p99,
            window: self.window,
            max_breaks: self.max_breaks,
            max_resyncs: self.max_resyncs,
            max_reconnects: self.max_reconnects,
            max_drops: self.max_drops,
        }
    }
}

/// `obrec health`: prints `healthy` (exit 0) or `unhealthy: <reason>` (exit 1).
pub fn health(args: &HealthArgs) -> anyhow::Result<ExitCode> {
    let check = args.check();
    let verdict = health::check(&check, std::time::SystemTime::now())?;
    let mut out = Console::new();
    match &verdict {
        None => out.line(format_args!("healthy"))?,
        Some(reason) => out.line(format_args!("unhealthy: {reason}"))?,
    }
    Ok(passed(verdict.is_none()))
}

/// `obrec demo`: exit 0 when the files agree with the simulator and the metrics.
pub fn demo(args: &DemoArgs, shutdown: &Shutdown) -> anyhow::Result<ExitCode> {
    match demo::run(args.seconds, args.dir.clone(), shutdown)? {
        DemoEnd::Checked => Ok(ExitCode::SUCCESS),
        DemoEnd::Interrupted => Ok(interrupted("the recording stopped before the check")),
    }
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Seconds to record.
    #[arg(long, env = "OBREC_SECONDS", default_value = "5", value_parser = parse::seconds)]
    pub seconds: Duration,
    /// Where the demo writes its data and logs (a fresh temporary directory when absent).
    #[arg(long, env = "OBREC_DIR")]
    pub dir: Option<PathBuf>,
}
