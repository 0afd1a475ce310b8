//! File names: `<data-dir>/order_book/<symbol>_<kind>_<UTC start>.ndjson.gz[.part]`.
//!
//! The name carries what a reader needs to find its files without opening them: the symbol and
//! kind group them, and the compact UTC start sorts them by time. Everything that names, finds or
//! classifies a recording goes through here.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::market::kind::Kind;
use crate::market::symbol::Symbol;
use crate::util::clock::compact_utc;

/// The directory under `--data-dir` that holds recordings and `metrics.json`.
const BOOK_DIR: &str = "order_book";
/// The recorder's report, replaced every print interval.
pub const METRICS_FILE: &str = "metrics.json";
/// What a finished recording's name ends with.
const EXTENSION: &str = ".ndjson.gz";
/// What a recording being written (or left by a crash) ends with, after [`EXTENSION`].
const PART_SUFFIX: &str = ".part";

/// What a recording file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// Depth lines: one per exchange event.
    Depth,
    /// Snapshot lines: one per REST snapshot.
    Snapshot,
    /// Lines of a stream beside the book: one per exchange event.
    Stream(Kind),
}

impl FileKind {
    pub const ALL: [FileKind; 7] = [
        FileKind::Depth,
        FileKind::Snapshot,
        FileKind::Stream(Kind::Trade),
        FileKind::Stream(Kind::AggTrade),
        FileKind::Stream(Kind::BookTicker),
        FileKind::Stream(Kind::MarkPrice),
        FileKind::Stream(Kind::ForceOrder),
    ];

    /// What follows the symbol and `_` in a name.
    pub fn marker(self) -> &'static str {
        match self {
            FileKind::Depth => "depth",
            FileKind::Snapshot => "snapshot",
            FileKind::Stream(kind) => kind.name(),
        }
    }
}

/// `<data-dir>/order_book`.
pub fn book_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(BOOK_DIR)
}

/// A data directory's `order_book/`, when `path` is one (`--data-dir` given where recordings
/// are expected); else `path` itself.
fn resolve_book_dir(path: &Path) -> PathBuf {
    let book = book_dir(path);
    if path.is_dir() && book.is_dir() {
        book
    } else {
        path.to_path_buf()
    }
}

/// `ethusdt_depth`: what every file of a symbol's series starts with.
pub fn series(symbol: &Symbol, kind: FileKind) -> String {
    format!("{}_{}", symbol.lower(), kind.marker())
}

/// `ethusdt_depth_20261120T080000Z.ndjson.gz`: a series' file whose data starts at `secs`.
pub fn file_name(series: &str, secs: u64) -> String {
    format!("{series}_{}{EXTENSION}", compact_utc(secs))
}

/// `<name>.part`: where a file is written until it is finished.
pub fn part_of(done: &Path) -> PathBuf {
    let mut name = done.as_os_str().to_owned();
    name.push(PART_SUFFIX);
    PathBuf::from(name)
}

/// A recording's kind and its symbol as the name spells it (lower case), finished or `.part`;
/// `None` for any other file.
pub fn classify(path: &Path) -> Option<(&str, FileKind)> {
    let name = path.file_name()?.to_str()?;
    let stem = name
        .strip_suffix(PART_SUFFIX)
        .unwrap_or(name)
        .strip_suffix(EXTENSION)?;
    // `<symbol>_<kind>_<start>`, read from the right: symbols may hold underscores.
    let (series, _start) = stem.rsplit_once('_')?;
    let (symbol, marker) = series.rsplit_once('_')?;
    let kind = FileKind::ALL.into_iter().find(|k| k.marker() == marker)?;
    (!symbol.is_empty()).then_some((symbol, kind))
}

/// Whether `path` is a recording of `kind`.
pub fn is_kind(path: &Path, kind: FileKind) -> bool {
    classify(path).is_some_and(|(_, k)| k == kind)
}

/// Whether `name` is a `.part` file of one of `series`.
pub fn is_part_of_series(name: &str, series: &[String]) -> bool {
    let is_part = name
        .strip_suffix(PART_SUFFIX)
        .is_some_and(|n| n.ends_with(EXTENSION));
    is_part
        && series.iter().any(|s| {
            name.strip_prefix(s.as_str())
                .is_some_and(|r| r.starts_with('_'))
        })
}

/// Expands files, directories (their recordings; a data directory is read as its `order_book/`)
/// and glob patterns, in name order (which is time order within a series).
///
/// # Errors
/// [`Error::Invalid`] for a path that does not exist or a pattern that matches nothing.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        let path = &resolve_book_dir(path);
        let text = path.to_string_lossy();
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|e| Error::file(path, e))?;
            files.extend(
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| classify(p).is_some()),
            );
        } else if path.exists() {
            files.push(path.clone());
        } else if text.contains(['*', '?', '[']) {
            let matches = glob::glob(&text)
                .map_err(|e| Error::Invalid(format!("bad pattern {text}: {e}")))?;
            let before = files.len();
            files.extend(matches.filter_map(|m| m.ok()).filter(|p| p.is_file()));
            if files.len() == before {
                return Err(Error::Invalid(format!("{text}: no file matches")));
            }
        } else {
            return Err(Error::Invalid(format!("{text}: no such file or directory")));
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()).then(a.cmp(b)));
    files.dedup();
    Ok(files)
}

/// The recordings a command over depth events reads: [`expand`], refused when no depth file is
/// among them (any file named otherwise than a snapshot file is read as one).
///
/// # Errors
/// As [`expand`]; and [`no_recordings`] for inputs without a single depth file.
pub fn recordings(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let files = expand(paths)?;
    if files.iter().all(|f| is_kind(f, FileKind::Snapshot)) {
        return Err(no_recordings(paths));
    }
    Ok(files)
}

/// `no recordings in PATH…`: inputs without a depth event.
pub fn no_recordings(paths: &[PathBuf]) -> Error {
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    Error::Invalid(format!("no recordings in {}", shown.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_and_read_back() {
        let eth = Symbol::new("ETHUSDT").unwrap();
        let series = series(&eth, FileKind::Depth);
        let done = PathBuf::from("/d").join(file_name(&series, 1_763_627_881));
        assert_eq!(
            done,
            Path::new("/d/ethusdt_depth_20251120T083801Z.ndjson.gz")
        );
        let part = part_of(&done);
        assert_eq!(
            part,
            Path::new("/d/ethusdt_depth_20251120T083801Z.ndjson.gz.part")
        );
        assert_eq!(classify(&done), Some(("ethusdt", FileKind::Depth)));
        assert_eq!(classify(&part), Some(("ethusdt", FileKind::Depth)));
        let snap = file_name(&super::series(&eth, FileKind::Snapshot), 0);
        assert_eq!(
            classify(Path::new(&snap)),
            Some(("ethusdt", FileKind::Snapshot))
        );
        let trades = file_name(
            &super::series(
                &Symbol::new("BTCUSD_PERP").unwrap(),
                FileKind::Stream(Kind::AggTrade),
            ),
            0,
        );
        assert_eq!(trades, "btcusd_perp_aggTrade_19700101T000000Z.ndjson.gz");
        assert_eq!(
            classify(Path::new(&trades)),
            Some(("btcusd_perp", FileKind::Stream(Kind::AggTrade)))
        );
        for other in [
            "metrics.json",
            "capture.ndjson.gz",
            "x_depth.txt",
            "ethusdt_kline_1.ndjson.gz",
            "_depth_1.ndjson.gz",
            "ethusdt_depthx_1.ndjson.gz",
        ] {
            assert_eq!(classify(Path::new(other)), None, "{other}");
        }
    }

    #[test]
    fn a_data_dir_is_read_as_its_order_book() {
        let data = tempfile::tempdir().unwrap();
        let book = book_dir(data.path());
        assert_eq!(
            resolve_book_dir(data.path()),
            data.path(),
            "no order_book/ yet"
        );
        std::fs::create_dir(&book).unwrap();
        assert_eq!(resolve_book_dir(data.path()), book);
        assert_eq!(resolve_book_dir(&book), book, "already the book dir");
        let file = book.join("ethusdt_depth_x.ndjson.gz");
        assert_eq!(resolve_book_dir(&file), file, "a file is itself");
    }

    #[test]
    fn parts_belong_to_their_series_only() {
        let series = vec!["ethusdt_depth".to_string()];
        assert!(is_part_of_series(
            "ethusdt_depth_20261120T000000Z.ndjson.gz.part",
            &series
        ));
        assert!(!is_part_of_series(
            "ethusdt_depth_20261120T000000Z.ndjson.gz",
            &series
        ));
        assert!(!is_part_of_series(
            "ethusdt_depthx_1.ndjson.gz.part",
            &series
        ));
        assert!(!is_part_of_series(
            "btcusdt_depth_1.ndjson.gz.part",
            &series
        ));
    }
}
