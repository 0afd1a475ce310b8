//! The progress bar of the offline commands that read recordings (`replay`, `report`, `export`,
//! `import`): one bar over the inputs' compressed bytes, on a terminal only, so that a pipe or a
//! log file never receives its control characters.

use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};

/// Below this much compressed data a command is over before a bar would help.
const PROGRESS_MIN_BYTES: u64 = 32 << 20;

/// A bar over the files' compressed bytes, only when stderr is a terminal and the job is long.
pub fn progress_bar(files: &[PathBuf]) -> Option<indicatif::ProgressBar> {
    let total: u64 = files
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    if !io::stderr().is_terminal() || total < PROGRESS_MIN_BYTES {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    let style = indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .expect("valid template");
    bar.set_style(style);
    Some(bar)
}

/// Advances `bar` by the size of `path`, an input read whole: for commands that take their
/// inputs a file at a time.
pub fn file_done(bar: Option<&indicatif::ProgressBar>, path: &Path) {
    if let Some(bar) = bar {
        bar.inc(std::fs::metadata(path).map_or(0, |m| m.len()));
    }
}
