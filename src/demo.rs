//! `obrec demo`: the whole product in a few seconds with no network. An embedded simulator
//! serves two symbols on loopback, the real recorder records their depth, trades, aggregate
//! trades and best bid/ask, each from its route, and the files are read back and checked against
//! what the simulator sent.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::exchange::sim::{Rate, Sim, SimConfig};
use crate::market::symbol::Symbol;
use crate::offline::console::Console;
use crate::offline::replay;
use crate::recorder::{self, RecordConfig};
use crate::store::names::{self, METRICS_FILE};
use crate::util::logging::{self, LogOptions, Rotate};
use crate::util::shutdown::Shutdown;

/// Symbols the demo records: two, to show per-symbol files and metrics.
const DEMO_SYMBOLS: [&str; 2] = ["ETHUSDT", "BTCUSDT"];
/// Events per second per symbol: Binance's 100 ms partial depth.
const DEMO_RATE: f64 = 10.0;
/// What the demo records: depth and the busiest streams beside it, on both routes.
const DEMO_STREAMS: &str = "depth,trade,aggTrade,bookTicker";
/// Where the embedded simulator listens: loopback, any free port.
const DEMO_LISTEN: &str = "127.0.0.1:0";

/// How a demo ended.
#[derive(Debug, PartialEq, Eq)]
pub enum DemoEnd {
    /// Recorded, and the files agree with the simulator and the metrics.
    Checked,
    /// A signal stopped the recording: the files are whole, but the check was not made.
    Interrupted,
}

/// Records for `length` from an embedded simulator into `dir` (a fresh temporary directory when
/// `None`), then checks the files against the simulator and the metrics.
///
/// # Errors
/// [`Error::Check`] when the files and the metrics disagree; a file or socket error otherwise.
pub fn run(length: Duration, dir: Option<PathBuf>, shutdown: &Shutdown) -> Result<DemoEnd> {
    let mut out = Console::new();
    let dir = dir
        .unwrap_or_else(|| std::env::temp_dir().join(format!("obrec-demo-{}", std::process::id())));
    let _log = logging::to_files(&LogOptions {
        dir: dir.join("logs"),
        basename: "demo".into(),
        rotate: Rotate::Size,
        rotate_every: Duration::from_secs(3600),
        max_bytes: 50_000_000,
        backups: 2,
        level: "info".into(),
    })?;
    let symbols: Vec<Symbol> = DEMO_SYMBOLS
        .iter()
        .map(|s| Symbol::new(s).expect("valid symbols"))
        .collect();
    let sim = Sim::start(
        DEMO_LISTEN,
        SimConfig {
            symbols: DEMO_SYMBOLS.iter().map(|s| s.to_string()).collect(),
            rate: Rate::PerSecond(DEMO_RATE),
            record_sent: true,
            ..SimConfig::default()
        },
    )
    .map_err(|cause| Error::Bind {
        addr: DEMO_LISTEN.into(),
        cause,
    })?;
    out.line(format_args!("simulator listening on {}", sim.local_addr()))?;
    let config = RecordConfig {
        symbols,
        streams: DEMO_STREAMS.parse().map_err(Error::Invalid)?,
        endpoint: sim.ws_url(),
        rest_endpoint: sim.rest_url(),
        data_dir: dir.join("data"),
        run_for: Some(length),
        print_every: Duration::from_secs(1),
        flush_every: Duration::from_millis(200),
        ..RecordConfig::default()
    };
    let lock = config.preflight()?;
    out.line(format_args!(
        "recording {:.1} s of {} ({DEMO_STREAMS}) into {}",
        length.as_secs_f64(),
        DEMO_SYMBOLS.join(", "),
        config.book_dir().display()
    ))?;
    let report = recorder::run(&config, &lock, shutdown)?;
    let sent = sim.sent();
    sim.shutdown();
    if shutdown.by_signal() {
        return Ok(DemoEnd::Interrupted);
    }

    let files = names::expand(&[config.book_dir()])?;
    let replayed = replay::replay(&files)?;
    out.line(format_args!(""))?;
    for f in &replayed.files {
        out.line(format_args!(
            "  {} — {} lines{}",
            f.file,
            f.lines,
            if f.complete { "" } else { " (damaged)" }
        ))?;
    }
    out.line(format_args!("replay: {}", replayed.metrics.summary_line()))?;
    let depth = replayed.metrics.total_messages;
    let beside: u64 = replayed.kinds.iter().map(|k| k.events).sum();
    let counted = report.total_messages + report.streams.values().map(|s| s.messages).sum::<u64>();
    let gaps: u64 = replayed.kinds.iter().map(|k| k.breaks).sum();
    out.line(format_args!(
        "recorded {} events ({depth} depth, {beside} beside the book); the simulator sent {}; \
         metrics.json counted {counted}; {} continuity breaks, {gaps} gaps beside the book",
        depth + beside,
        sent.len(),
        replayed.breaks.len()
    ))?;
    if depth + beside != counted || !replayed.all_complete() {
        return Err(Error::Check(format!(
            "the files do not match the metrics: {} lines, {counted} counted",
            depth + beside
        )));
    }
    out.line(format_args!(
        "metrics: {}",
        config.book_dir().join(METRICS_FILE).display()
    ))?;
    Ok(DemoEnd::Checked)
}
