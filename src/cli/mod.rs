//! The command line: the only module that knows clap. Flags (each also an `OBREC_*` variable)
//! are parsed and checked here, turned into the plain configurations of the layers below, and
//! each command's result into an exit status.

mod archive;
mod exchange;
mod offline;
mod parse;
mod record;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::util::logging;
use crate::util::shutdown::Shutdown;
use record::RecordArgs;

/// Records Binance USD-M futures order-book streams to gzip NDJSON, proves their continuity,
/// reports live health metrics, and replays recordings offline.
#[derive(Debug, Parser)]
#[command(name = "obrec", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand, obrec records (the same flags as `obrec record`).
    #[command(flatten)]
    record: RecordArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Record live depth streams (the default command).
    Record(Box<RecordArgs>),
    /// Verify and summarise recordings: continuity, latency, damaged files.
    Replay(offline::ReplayArgs),
    /// Draw recordings as one HTML page: rates, latency, mid price, faults, hourly coverage.
    ///
    /// Per symbol and stream: events per second and latency p50/p99 per minute, the mid price,
    /// a timeline and list of gaps, reconnects, resyncs, silences, server notices and damage, and
    /// each hour as complete, gap or missing. The page is self-contained (inline SVG and CSS, no
    /// script, nothing fetched).
    Report(offline::ReportArgs),
    /// Run a local Binance USD-M look-alike exchange, with fault injection.
    Sim(Box<exchange::SimArgs>),
    /// Play recordings back as a live Binance-compatible stream, paced as recorded.
    ///
    /// Same paths, SUBSCRIBE handling and REST endpoints as `obrec sim`. Every connection plays
    /// the recording from the beginning; a subscription gets the recorded events of its symbol and
    /// kind (diff `<sym>@depth…` or partial `<sym>@depth<N>…`, whatever speed was recorded) under
    /// the name it subscribed, payloads byte for byte; the connection is closed (1000) after the
    /// last event. /fapi/v1/depth answers the recorded snapshot in force at the playback position.
    Serve(exchange::ServeArgs),
    /// Record a few seconds from an embedded simulator and summarise them: no network needed.
    Demo(offline::DemoArgs),
    /// Exit 0 when a recorder's metrics.json is fresh and inside the alert thresholds, else 1.
    Health(offline::HealthArgs),
    /// Convert recordings to hftbacktest's raw feed files, or to Tardis' normalized CSV datasets.
    ///
    /// With --format tardis: incremental_book_L2, book_snapshot_25 and book_snapshot_5 from depth
    /// and snapshots, trades from trade files (aggTrade files for a symbol without), quotes from
    /// bookTicker; one gzip CSV per dataset, symbol and UTC day, named as Tardis' downloads.
    ///
    /// With --format hftbacktest (for its binancefutures.convert): one gzip file per symbol and UTC
    /// day of receipt, `<symbol>_<YYYYMMDD>.gz`, each line `<19-digit receive ns> <message>`: depth
    /// events in their combined-stream envelope (payload byte-exact), REST snapshots as their raw body, merged in receive order; a connection change is
    /// a `{"stream":"_meta","data":{"e":"connection","conn":N}}` line, which the converter ignores.
    Export(offline::ExportArgs),
    /// Convert hftbacktest's raw feed files into obrec recordings (depth and snapshots).
    ///
    /// Writes each file's depth events as obrec depth lines and its REST snapshots as snapshot lines,
    /// under <DIR>/order_book/, named like the recorder's files after their first receipt second.
    /// `conn` is 1, or what the file's `_meta` connection lines say; `latency_pipeline_ms` is 0.000
    /// (the file does not record it). bookTicker, trade and other streams are counted and left out.
    Import(offline::ImportArgs),
    /// Merge the archives of redundant recorders into one: per symbol and kind, the union of
    /// their events by exchange id, each once, payloads byte-exact; reports the gaps no input
    /// covers.
    ///
    /// Copies of one event are written once: where depth copies disagree, the one continuing the
    /// merged chain; else a live copy before a backfilled one, then the earliest receipt. Lines are
    /// copied as recorded (so `conn` is the delivering recorder's). Writes a new data directory,
    /// read by replay, serve and export as any other.
    Merge(offline::MergeArgs),
    /// Write a NATS JetStream stream of recorders (`record --nats`) into recordings.
    ///
    /// A durable consumer of the stream OBREC: the same files, names, gzip members, `.part` files
    /// and crash recovery as the recorder's, each event once however many recorders sent it, in
    /// the order of its exchange ids. A line is confirmed to the servers only once it is on disk,
    /// so a restart loses nothing and, skipping what its files already hold, repeats nothing.
    Archive(archive::ArchiveArgs),
}

/// Parses the command line (exiting with clap's message on a usage error) and runs the command.
///
/// # Errors
/// What the command failed on; [`crate::Error::Invalid`] in the chain means bad input (exit 2).
pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let shutdown = Shutdown::new();
    shutdown
        .on_signals()
        .context("cannot install signal handlers")?;
    match cli.command {
        None => record::record(&cli.record, &shutdown),
        Some(Command::Record(args)) => record::record(&args, &shutdown),
        Some(Command::Replay(args)) => {
            let _log = logging::to_stderr("warn")?;
            offline::replay(&args, &shutdown)
        }
        Some(Command::Export(args)) => offline::export(&args, &shutdown),
        Some(Command::Report(args)) => offline::report(&args, &shutdown),
        Some(Command::Import(args)) => offline::import(&args, &shutdown),
        Some(Command::Merge(args)) => offline::merge(&args, &shutdown),
        Some(Command::Sim(args)) => {
            let _log = logging::to_stderr("info")?;
            exchange::sim(&args, &shutdown)
        }
        Some(Command::Serve(args)) => {
            let _log = logging::to_stderr("info")?;
            exchange::serve(&args, &shutdown)
        }
        Some(Command::Health(args)) => offline::health(&args),
        Some(Command::Demo(args)) => offline::demo(&args, &shutdown),
        Some(Command::Archive(args)) => archive::archive(&args, &shutdown),
    }
}

/// 0 when a check passed, 1 when it found a problem.
fn passed(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::stream::Depth;
    use crate::market::symbol::Symbol;
    use crate::recorder::RecordConfig;
    use std::path::PathBuf;
    use std::time::Duration;

    /// The flags' defaults are the library's: one definition, two spellings checked here.
    #[test]
    fn record_flags_default_to_the_record_config_defaults() {
        let cli = Cli::try_parse_from(["obrec"]).unwrap();
        let from_flags = cli.record.config();
        let defaults = RecordConfig::default();
        assert_eq!(format!("{from_flags:?}"), format!("{defaults:?}"));
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
        assert_eq!(
            config
                .symbols
                .iter()
                .map(Symbol::as_str)
                .collect::<Vec<_>>(),
            ["ETHUSDT", "BTCUSDT"]
        );
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
        assert_eq!(args.format, offline::Format::Hftbacktest);
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
            &["obrec", "export", "--format", "csv", "data", "-o", "out"],
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

    /// `15m` in the flag and `DEFAULT_WINDOW` in the library say the same, as do the other
    /// thresholds.
    #[test]
    fn health_flags_default_to_the_health_check_defaults() {
        let cli = Cli::try_parse_from(["obrec", "health"]).unwrap();
        let Some(Command::Health(args)) = cli.command else {
            panic!()
        };
        assert_eq!(args.check(), crate::metrics::health::HealthCheck::default());
    }

    /// One environment variable, one flag: `OBREC_<FLAG>` everywhere, so a variable set for one
    /// subcommand (scripts/obrec.env sets record's) means the same to every other that reads it.
    #[test]
    fn every_flag_reads_the_variable_named_after_it() {
        use clap::CommandFactory;
        let cli = Cli::command();
        let commands = std::iter::once(&cli).chain(cli.get_subcommands());
        for command in commands {
            for arg in command.get_arguments() {
                let Some(long) = arg.get_long().filter(|l| *l != "help" && *l != "version") else {
                    continue;
                };
                assert_eq!(
                    arg.get_env().map(|e| e.to_string_lossy().into_owned()),
                    Some(format!("OBREC_{}", long.to_uppercase().replace('-', "_"))),
                    "obrec {} --{long}",
                    command.get_name()
                );
            }
        }
    }

    #[test]
    fn subcommand_and_plain_form_are_the_same() {
        let a = Cli::try_parse_from(["obrec", "record", "--depth", "10"]).unwrap();
        let Some(Command::Record(args)) = a.command else {
            panic!()
        };
        assert_eq!(args.depth, Depth::Partial(10));
        let b = Cli::try_parse_from(["obrec", "--depth", "10"]).unwrap();
        assert!(b.command.is_none());
        assert_eq!(b.record.depth, Depth::Partial(10));
    }
}
