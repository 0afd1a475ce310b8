//! `obrec archive`: its flags, and the run they configure.

use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::parse;
use super::record::usable_dir;
use crate::error::Error;
use crate::relay::archive::{self, ArchiveConfig};
use crate::store::lock;
use crate::store::names::book_dir;
use crate::util::logging;
use crate::util::shutdown::Shutdown;

#[derive(Debug, Clone, Args)]
pub struct ArchiveArgs {
    /// NATS servers holding the stream OBREC (nats://host:port, comma-separated).
    #[arg(long, env = "OBREC_NATS", value_name = "URL", value_delimiter = ',', required = true, value_parser = parse::nats_url)]
    pub nats: Vec<String>,
    #[command(flatten)]
    pub market_flag: parse::MarketFlag,
    /// Data directory: files and archive.json go to <data-dir>/order_book/.
    #[arg(long, env = "OBREC_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Name of the durable consumer: the servers keep the archiver's place under it, so a
    /// restarted archiver carries on where it was.
    #[arg(long, env = "OBREC_DURABLE", default_value = "obrec-archive")]
    pub durable: String,
    /// Minutes per data file; files start on UTC-aligned boundaries.
    #[arg(long, env = "OBREC_FILE_MINUTES", default_value = "60", value_parser = parse::minutes)]
    pub file_minutes: Duration,
    /// gzip level: 1 is fastest, 9 smallest.
    #[arg(long, env = "OBREC_GZIP_LEVEL", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub gzip_level: u32,
    /// Seconds between ARCHIVE lines and archive.json refreshes.
    #[arg(long, env = "OBREC_PRINT_INTERVAL", default_value = "10", value_parser = parse::seconds)]
    pub print_interval: Duration,
    /// Serve Prometheus metrics on http://ADDR/metrics (e.g. 127.0.0.1:9465; port 0 picks a
    /// free port, printed at start).
    #[arg(long, env = "OBREC_METRICS_ADDR", value_name = "ADDR", value_parser = parse::socket_addr)]
    pub metrics_addr: Option<String>,
}

/// Archives the stream until a signal; SIGTERM finishes every file and exits 0.
pub fn archive(args: &ArchiveArgs, shutdown: &Shutdown) -> anyhow::Result<ExitCode> {
    let _log = logging::to_stderr("warn")?;
    let dir = book_dir(&args.data_dir);
    usable_dir("data dir", &dir)?;
    fs::create_dir_all(&dir)
        .map_err(|e| Error::Invalid(format!("data dir {} is not writable: {e}", dir.display())))?;
    let lock = lock::hold(&dir)?;
    let config = ArchiveConfig {
        servers: args.nats.clone(),
        durable: args.durable.clone(),
        market: args.market_flag.market,
        // Names carry whole seconds: a shorter period would reuse a name.
        file_period: args.file_minutes.max(Duration::from_secs(1)),
        gzip_level: args.gzip_level,
        print_every: args.print_interval,
        metrics_addr: args.metrics_addr.clone(),
    };
    archive::run(config, &lock, shutdown).context("archiving failed")?;
    Ok(ExitCode::SUCCESS)
}
