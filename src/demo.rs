//! `obrec demo`: the whole product in a few seconds with no network. An embedded simulator
//! serves two symbols on loopback, the real recorder records them, and the files are read back
//! and checked against what the simulator sent.

use std::time::Duration;

use anyhow::{Context, bail};

use crate::cli::DemoArgs;
use crate::logging::{self, LogOptions, Rotate};
use crate::recorder::{self, RecordConfig, Speed};
use crate::shutdown::Shutdown;
use crate::sim::{Rate, Sim, SimConfig};

/// Symbols the demo records: two, to show per-symbol files and metrics.
const DEMO_SYMBOLS: [&str; 2] = ["ETHUSDT", "BTCUSDT"];
/// Events per second per symbol: Binance's 100 ms partial depth.
const DEMO_RATE: f64 = 10.0;

pub fn run(args: &DemoArgs, shutdown: &Shutdown) -> anyhow::Result<()> {
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("obrec-demo-{}", std::process::id())),
    };
    let _log = logging::to_files(&LogOptions {
        dir: dir.join("logs"),
        basename: "demo".into(),
        rotate: Rotate::Size,
        rotate_every: Duration::from_secs(3600),
        max_bytes: 50_000_000,
        backups: 2,
        level: "info".into(),
    })?;
    let symbols: Vec<String> = DEMO_SYMBOLS.iter().map(|s| s.to_string()).collect();
    let sim = Sim::start(
        "127.0.0.1:0",
        SimConfig {
            symbols: symbols.clone(),
            rate: Rate::PerSecond(DEMO_RATE),
            record_sent: true,
            ..SimConfig::default()
        },
    )
    .context("cannot start the embedded simulator")?;
    println!("simulator listening on {}", sim.local_addr());
    let config = RecordConfig {
        symbols,
        depth: 5,
        speed: Speed::Ms100,
        endpoint: sim.ws_url(),
        rest_endpoint: sim.rest_url(),
        data_dir: dir.join("data"),
        run_for: Some(Duration::from_secs_f64(args.seconds)),
        print_every: Duration::from_secs(1),
        stale_after: Duration::from_secs(10),
        ping_every: Duration::from_secs(20),
        max_conn_age: Duration::from_secs(23 * 3600),
        file_period: Duration::from_secs(3600),
        flush_every: Duration::from_millis(200),
        queue: 65536,
        gzip_level: 3,
        metrics_addr: None,
    };
    config.preflight()?;
    println!(
        "recording {:.0} s of {} into {}",
        args.seconds,
        DEMO_SYMBOLS.join(", "),
        config.book_dir().display()
    );
    let report = recorder::run(&config, shutdown)?;
    let sent = sim.sent();
    sim.shutdown();

    let files = crate::replay::expand(&[config.book_dir()])?;
    let replayed = crate::replay::replay(&files)?;
    println!();
    for f in &replayed.files {
        println!(
            "  {} — {} lines{}",
            f.file,
            f.lines,
            if f.complete { "" } else { " (damaged)" }
        );
    }
    println!("replay: {}", replayed.metrics.summary_line());
    let recorded = replayed.metrics.total_messages;
    println!(
        "recorded {recorded} events; the simulator sent {}; metrics.json counted {}; {} continuity breaks",
        sent.len(),
        report.total_messages,
        replayed.breaks.len()
    );
    if recorded != report.total_messages || !replayed.all_complete() {
        bail!(
            "the files do not match the metrics: {recorded} lines, {} counted",
            report.total_messages
        );
    }
    println!(
        "metrics: {}",
        config.book_dir().join("metrics.json").display()
    );
    Ok(())
}
