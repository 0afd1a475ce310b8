//! Log files via flexi_logger, rotated the way the seed's `--rotate*` flags say.
//!
//! flexi_logger rotates by size, or by age only on calendar units (a minute, an hour), so
//! `--rotate interval --rotate-sec 90` is done here: a small thread triggers the rotation.
//!
//! Its pruning deletes every file of the name pattern past the newest `--backups`, whoever writes
//! it. Two recorders sharing a log directory and a first symbol (two data dirs) would delete each
//! other's current files, so each process's file names end in its pid, which is part of the
//! timestamp pattern flexi_logger prunes by: a process prunes only its own files.

use std::path::PathBuf;
use std::time::Duration;

use flexi_logger::{Cleanup, Criterion, Duplicate, FileSpec, Logger, LoggerHandle, Naming};

use crate::error::{Error, Result};

/// When a log file is rotated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rotate {
    /// A new file every `--rotate-sec` seconds.
    Interval,
    /// A new file when the current one exceeds `--max-bytes`.
    Size,
}

#[derive(Clone, Debug)]
pub struct LogOptions {
    pub dir: PathBuf,
    /// File name stem, e.g. the first symbol in lower case.
    pub basename: String,
    pub rotate: Rotate,
    pub rotate_every: Duration,
    pub max_bytes: u64,
    /// Rotated files kept besides the current one.
    pub backups: usize,
    /// A `RUST_LOG`-style spec, e.g. `info` or `info,obrec::feed=debug`.
    pub level: String,
}

/// Keeps logging alive; dropping it flushes and stops the rotation thread.
pub struct Logging {
    _handle: LoggerHandle,
}

/// Logs to files under `opts.dir` (`<basename>_<date>_<time>_pid<pid>.log`) and warnings also to
/// stderr.
pub fn to_files(opts: &LogOptions) -> Result<Logging> {
    std::fs::create_dir_all(&opts.dir).map_err(|e| Error::file(&opts.dir, e))?;
    let criterion = match opts.rotate {
        Rotate::Size => Criterion::Size(opts.max_bytes),
        // Never by size; the thread below rotates on time.
        Rotate::Interval => Criterion::Size(u64::MAX),
    };
    let handle = Logger::try_with_env_or_str(&opts.level)
        .map_err(|e| Error::Invalid(format!("invalid log level {:?}: {e}", opts.level)))?
        .log_to_file(
            FileSpec::default()
                .directory(&opts.dir)
                .basename(&opts.basename)
                .suffix("log"),
        )
        .rotate(
            criterion,
            Naming::TimestampsCustomFormat {
                current_infix: None,
                format: own_files_format(),
            },
            // Files are written under their final names, so flexi_logger counts the current
            // one too; the seed keeps `backups` besides it.
            Cleanup::KeepLogFiles(opts.backups.saturating_add(1)),
        )
        .format_for_files(flexi_logger::detailed_format)
        .duplicate_to_stderr(Duplicate::Warn)
        .format_for_stderr(flexi_logger::default_format)
        .start()
        .map_err(|e| Error::file(&opts.dir, std::io::Error::other(e)))?;
    if opts.rotate == Rotate::Interval {
        let rotator = handle.clone();
        let every = opts.rotate_every.max(Duration::from_secs(1));
        std::thread::Builder::new()
            .name("log-rotate".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(every);
                    if rotator.trigger_rotation().is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| Error::file(&opts.dir, e))?;
    }
    Ok(Logging { _handle: handle })
}

/// The file names' timestamp pattern, with this process's pid as a literal: flexi_logger prunes
/// only names that parse with it. Leaked once per logger, which lives as long as the process.
fn own_files_format() -> &'static str {
    Box::leak(format!("%Y-%m-%d_%H-%M-%S_pid{}", std::process::id()).into_boxed_str())
}

/// Logs to stderr only (offline commands and the simulator).
pub fn to_stderr(level: &str) -> Result<Logging> {
    let handle = Logger::try_with_env_or_str(level)
        .map_err(|e| Error::Invalid(format!("invalid log level {level:?}: {e}")))?
        .log_to_stderr()
        .start()
        .map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(Logging { _handle: handle })
}
